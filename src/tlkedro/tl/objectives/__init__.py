"""Training objectives, found by name: ``create_objective("mse")``, ``list_objectives()``.

An objective is a primary term for the task plus optional weighted auxiliary terms (see ``base``).
Classification: ``cross_entropy``. Regression: ``mse``, ``l1``, ``soft_label_kl``.
"""

from __future__ import annotations

import inspect
from typing import Any

from tlkedro.tl.objectives import classification, regression, soft_label  # noqa: F401  (registrations)
from tlkedro.tl.objectives.base import (
    OBJECTIVES,
    AuxiliaryTerm,
    Objective,
    Prediction,
    PrimaryTerm,
    Task,
    TaskInfo,
)

__all__ = [
    "OBJECTIVES",
    "AuxiliaryTerm",
    "Objective",
    "Prediction",
    "PrimaryTerm",
    "Task",
    "TaskInfo",
    "create_objective",
    "list_objectives",
]


def create_objective(name: str, **kwargs: Any) -> Objective:
    """Build the objective registered as ``name``.

    Args:
        name: A registered name (see ``list_objectives``).
        **kwargs: The objective's keyword arguments (the YAML ``objective.kwargs``).

    Raises:
        UnknownComponentError: If ``name`` is not registered; the message lists the valid names.
        TypeError: If ``kwargs`` do not fit the objective; the message lists the arguments it takes.
        ValueError: If a keyword argument has a value the objective rejects.
    """
    builder = OBJECTIVES.get(name)
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        takes = ", ".join(signature.parameters) or "no arguments"
        raise TypeError(f"Objective {name!r}: {error}. It takes: {takes}; got: {kwargs}") from None
    return builder(**kwargs)


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return OBJECTIVES.names()
