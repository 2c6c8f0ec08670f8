"""Transfer-learning strategies: how source weights become the target model, and how it is trained.

A strategy is one module with one registered class; importing this package registers them all. Look
one up with ``create_strategy(name, **kwargs)``; ``list_strategies()`` gives the valid names. A strategy
outside the package is named by class path (``mypkg.tl:MyStrategy``) and checked for the methods that
training calls (``check_strategy``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

from tlkedro.tl.registry import ContractError
from tlkedro.tl.strategies import (  # noqa: F401  (imported for their registrations)
    dapt,
    freeze_up_to,
    full,
    l2sp,
    linear_probe,
    lwft,
    mean_var,
    scratch,
    transfusion,
    truncated,
)
from tlkedro.tl.strategies.base import (
    STRATEGIES,
    MissingSourceError,
    SourceMismatchError,
    Strategy,
    freeze,
    load_encoder,
    phase_at,
    unfreeze,
)
from tlkedro.tl.strategies.truncated import truncation_candidates

# What the training module, the reports and the energy analysis call on a strategy.
STRATEGY_METHODS = ("prepare", "param_groups", "penalty", "callbacks", "phases", "summary")

__all__ = [
    "MissingSourceError",
    "SourceMismatchError",
    "STRATEGY_METHODS",
    "Strategy",
    "check_strategy",
    "create_strategy",
    "freeze",
    "list_strategies",
    "load_encoder",
    "phase_at",
    "truncation_candidates",
    "unfreeze",
]


def create_strategy(name: str, **kwargs: Any) -> Strategy:
    """Build the strategy registered as ``name``.

    Args:
        name: A registered name (see ``list_strategies``) or a class path ``package.module:Name``.
        **kwargs: The strategy's keyword arguments (the YAML ``strategy.kwargs``).

    Raises:
        UnknownComponentError: If ``name`` is neither registered nor an importable class path; the
            message lists the valid names.
        TypeError: If ``kwargs`` do not fit the strategy; the message lists the arguments it takes.
        ContractError: If a strategy named by class path lacks a method training calls.
    """
    return STRATEGIES.create(name, **kwargs)


def check_strategy(strategy: Any, name: str) -> None:
    """Check that ``strategy`` has what training calls: ``STRATEGY_METHODS``, and, if it keeps
    ``Strategy.summary``, every constructor argument as a dataclass field, which that method reports.

    Raises:
        ContractError: Naming what is missing.
    """
    missing = [m for m in STRATEGY_METHODS if not callable(getattr(strategy, m, None))]
    if missing:
        raise ContractError(
            f"strategy {name!r} ({type(strategy).__name__}) lacks {', '.join(missing)}; subclass "
            "tlkedro.tl.strategies.Strategy, which has them all (docs/strategies.md)"
        )
    if type(strategy).summary is Strategy.summary:
        fields = (
            {f.name for f in dataclasses.fields(strategy) if f.init}
            if dataclasses.is_dataclass(strategy)
            else set()
        )
        unreported = sorted(set(inspect.signature(type(strategy)).parameters) - fields)
        if unreported:
            raise ContractError(
                f"strategy {name!r}: Strategy.summary reports the dataclass fields, and "
                f"{', '.join(unreported)} of {type(strategy).__name__} are not; decorate it with "
                "@dataclasses.dataclass and declare them as fields"
            )


def _from_class_path(path: str, obj: Any) -> Callable[..., Strategy]:
    if not callable(obj):
        raise ContractError(
            f"strategy {path!r} is a {type(obj).__name__}, not a class: name a Strategy subclass"
        )

    @functools.wraps(obj, assigned=("__doc__",), updated=())
    def build(**kwargs: Any) -> Strategy:
        strategy = obj(**kwargs)
        check_strategy(strategy, path)
        # The name reports and records show; a subclass of a registered strategy would inherit its name.
        object.__setattr__(strategy, "name", path)
        return strategy

    build.__signature__ = inspect.signature(obj)  # type: ignore[attr-defined]
    build.renamed_kwargs = getattr(obj, "renamed_kwargs", {})  # type: ignore[attr-defined]
    return build


STRATEGIES.accept_class_paths(_from_class_path)


def list_strategies() -> list[str]:
    """The registered strategy names, sorted."""
    return STRATEGIES.names()
