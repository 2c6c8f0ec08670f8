"""Training objectives, found by name: ``create_objective("mse")``, ``list_objectives()``.

An objective is a primary term for the task plus optional weighted auxiliary terms (see ``base``).
Classification: ``cross_entropy``. Regression: ``mse``, ``l1``, ``soft_label_kl``. Segmentation:
``dice_ce`` (``tlkedro.tl.segmentation``). Self-supervised, needing
no label (``SelfSupervisedTerm``): ``simclr`` (contrastive), ``masked_autoencoder`` (reconstruction).
Auxiliary terms,
found by name with ``create_auxiliary_term`` and combined with a primary one by ``build_objective``:
``task`` (multitask: a head for another label), ``reconstruction`` and ``consistency`` (self- and
semi-supervised), ``domain_adversarial`` (DANN).

An objective outside the package is named by class path (``mypkg.losses:huber``): a callable returning an
``Objective``, or a ``PrimaryTerm`` (subclass or factory), which becomes an objective without auxiliary
terms. What it builds is checked for what training calls (``check_objective``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from tlkedro.tl.objectives import (  # noqa: F401  (imported for their registrations)
    classification,
    contrastive,
    domain_adversarial,
    multitask,
    reconstruction,
    regression,
    segmentation,
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
    SelfSupervisedTerm,
    Task,
    TaskInfo,
)
from tlkedro.tl.registry import ContractError

# What the training module and the predictions call on the primary term.
PRIMARY_TERM_METHODS = ("num_outputs", "loss", "predict")

__all__ = [
    "AUXILIARY_TERMS",
    "OBJECTIVES",
    "PROGRESS",
    "UNLABELLED",
    "AuxiliaryTerm",
    "Objective",
    "Prediction",
    "PrimaryTerm",
    "SelfSupervisedTerm",
    "Task",
    "TaskInfo",
    "build_objective",
    "check_objective",
    "create_auxiliary_term",
    "create_objective",
    "list_auxiliary_terms",
    "list_objectives",
]


def create_objective(name: str, **kwargs: Any) -> Objective:
    """Build the objective registered as ``name``.

    Args:
        name: A registered name (see ``list_objectives``) or a class path ``package.module:Name``.
        **kwargs: The objective's keyword arguments (the YAML ``objective.kwargs``).

    Raises:
        UnknownComponentError: If ``name`` is neither registered nor an importable class path; the
            message lists the valid names.
        TypeError: If ``kwargs`` do not fit the objective; the message lists the arguments it takes.
        ValueError: If a keyword argument has a value the objective rejects.
        ContractError: If an objective named by class path lacks what training calls.
    """
    return OBJECTIVES.create(name, **kwargs)


def check_objective(objective: Any, name: str) -> Objective:
    """``objective`` as an ``Objective`` (a ``PrimaryTerm`` is wrapped in one), checked for what training
    calls: an ``Objective`` whose primary term has a ``task`` and ``PRIMARY_TERM_METHODS``.

    Raises:
        ContractError: Naming what is missing.
    """
    if isinstance(objective, PrimaryTerm):
        objective = Objective(objective)
    if not isinstance(objective, Objective):
        raise ContractError(
            f"objective {name!r} built a {type(objective).__name__}; it must build a "
            "tlkedro.tl.objectives.Objective or PrimaryTerm (docs/architectures.md)"
        )
    primary = objective.primary
    missing = [m for m in PRIMARY_TERM_METHODS if not callable(getattr(primary, m, None))]
    task = getattr(primary, "task", None)
    if task not in get_args(Task):
        missing.append(f"a task class attribute, one of {', '.join(get_args(Task))} (got {task!r})")
    if missing:
        raise ContractError(
            f"objective {name!r}: its primary term {type(primary).__name__} lacks {', '.join(missing)}"
        )
    return objective


def _from_class_path(path: str, obj: Any) -> Callable[..., Objective]:
    if not callable(obj):
        raise ContractError(
            f"objective {path!r} is a {type(obj).__name__}, not a callable returning an Objective"
        )

    @functools.wraps(obj, assigned=("__doc__",), updated=())
    def build(**kwargs: Any) -> Objective:
        return check_objective(obj(**kwargs), path)

    build.__signature__ = inspect.signature(obj)  # type: ignore[attr-defined]
    return build


OBJECTIVES.accept_class_paths(_from_class_path)


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
