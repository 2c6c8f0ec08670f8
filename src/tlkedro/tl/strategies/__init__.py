"""Transfer-learning strategies: how source weights become the target model, and how it is trained.

A strategy is one module with one registered class; importing this package registers them all. Look
one up with ``create_strategy(name, **kwargs)``; ``list_strategies()`` gives the valid names.
"""

from __future__ import annotations

from typing import Any

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

__all__ = [
    "MissingSourceError",
    "SourceMismatchError",
    "Strategy",
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
        name: A registered name (see ``list_strategies``).
        **kwargs: The strategy's keyword arguments (the YAML ``strategy.kwargs``).

    Raises:
        UnknownComponentError: If ``name`` is not registered; the message lists the valid names.
        TypeError: If ``kwargs`` do not fit the strategy; the message lists the arguments it takes.
    """
    return STRATEGIES.create(name, **kwargs)


def list_strategies() -> list[str]:
    """The registered strategy names, sorted."""
    return STRATEGIES.names()
