"""Training objectives, found by name: ``create_objective("mse")``, ``list_objectives()``.

An objective is a primary term for the task plus optional weighted auxiliary terms (see ``base``).
Classification: ``cross_entropy``. Regression: ``mse``, ``l1``, ``soft_label_kl``. Auxiliary terms,
found by name with ``create_auxiliary_term`` and combined with a primary one by ``build_objective``:
``task`` (multitask: a head for another label), ``reconstruction`` and ``consistency`` (self- and
semi-supervised), ``domain_adversarial`` (DANN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tlkedro.tl.objectives import (  # noqa: F401  (imported for their registrations)
    classification,
    domain_adversarial,
    multitask,
    regression,
    semi_supervised,
    soft_label,
)
from tlkedro.tl.objectives.base import (
    AUXILIARY_TERMS,
    OBJECTIVES,
    PROGRESS,
    UNLABELLED,
    AuxiliaryTerm,
    Objective,
    Prediction,
    PrimaryTerm,
    Task,
    TaskInfo,
)

__all__ = [
    "AUXILIARY_TERMS",
    "OBJECTIVES",
    "PROGRESS",
    "UNLABELLED",
    "AuxiliaryTerm",
    "Objective",
    "Prediction",
    "PrimaryTerm",
    "Task",
    "TaskInfo",
    "build_objective",
    "create_auxiliary_term",
    "create_objective",
    "list_auxiliary_terms",
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
    return OBJECTIVES.create(name, **kwargs)


def create_auxiliary_term(name: str, **kwargs: Any) -> AuxiliaryTerm:
    """Build the auxiliary term registered as ``name``.

    Args:
        name: A registered name (see ``list_auxiliary_terms``).
        **kwargs: The term's keyword arguments (the YAML ``objective.auxiliary[].kwargs``).

    Raises:
        UnknownComponentError: If ``name`` is not registered; the message lists the valid names.
        TypeError: If ``kwargs`` do not fit the term; the message lists the arguments it takes.
        ValueError: If a keyword argument has a value the term rejects.
    """
    return AUXILIARY_TERMS.create(name, **kwargs)


def build_objective(
    name: str, kwargs: Mapping[str, Any] | None = None, auxiliary: Sequence[Mapping[str, Any]] = ()
) -> Objective:
    """The objective ``name`` plus weighted auxiliary terms: the YAML ``objective`` section.

    Args:
        name: The primary objective (``create_objective``).
        kwargs: Its keyword arguments.
        auxiliary: ``{"name": ..., "weight": ..., "kwargs": {...}}`` of each auxiliary term.
    """
    objective = create_objective(name, **(kwargs or {}))
    terms = [
        (float(spec["weight"]), create_auxiliary_term(spec["name"], **spec.get("kwargs", {})))
        for spec in auxiliary
    ]
    return Objective(objective.primary, [*objective.auxiliary, *terms])


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return OBJECTIVES.names()


def list_auxiliary_terms() -> list[str]:
    """Registered auxiliary term names, sorted."""
    return AUXILIARY_TERMS.names()
