"""Optimizers and learning-rate schedules: the one place that knows their names and arguments.

Optimizers come from timm's factory (``timm.optim.create_optimizer_v2``), so every name of
``timm.optim.list_optimizers()`` works (``adamw``, ``adam``, ``momentum``, ``sgd``, ``lamb``, ``lion``, ...)
with timm's meaning: ``sgd`` is SGD with Nesterov momentum, ``momentum`` SGD with classical momentum.
timm passes ``momentum`` only to optimizers that take one, and the strategies' parameter groups through
unchanged.

Schedules are torch's, stepped once per epoch, in a registry of their own: timm's schedulers
(``timm.scheduler``) step through their own ``step(epoch)`` interface and compute the cosine in closed
form, which changes the learning rates of strategies that add parameter groups part-way (DAPT), and
have no plateau schedule on a monitored loss.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from typing import Any

from timm.optim import create_optimizer_v2, get_optimizer_class, list_optimizers
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau

# Arguments of every optimizer that the configuration sets itself (the parameter groups, the rates).
_OPTIMIZER_FIXED = {"params", "lr", "weight_decay", "momentum"}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A torch learning-rate scheduler as the configuration names it.

    Attributes:
        scheduler: The torch class.
        fixed: Its arguments that training sets itself, or that would break resuming (``last_epoch``).
        monitor: The logged value the scheduler steps on (``ReduceLROnPlateau``); ``None`` for none.
    """

    scheduler: type[LRScheduler | ReduceLROnPlateau]
    fixed: frozenset[str]
    monitor: str | None = None

    def allowed(self) -> list[str]:
        """The keyword arguments a configuration may give."""
        parameters = inspect.signature(self.scheduler).parameters
        return [name for name in parameters if name not in self.fixed]


SCHEDULES: dict[str, Schedule | None] = {
    "cosine": Schedule(
        CosineAnnealingLR, frozenset({"optimizer", "T_max", "last_epoch", "verbose"})
    ),
    "plateau": Schedule(
        ReduceLROnPlateau, frozenset({"optimizer", "mode", "verbose"}), monitor="val/loss"
    ),
    "none": None,
}


def check_optimizer_name(name: str) -> str:
    """``name``, or a ValueError with the closest names unless timm has an optimizer of that name."""
    names = list_optimizers()
    if _base_name(name) not in names:
        close = difflib.get_close_matches(name.lower(), names, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown optimizer {name!r}.{hint} The names are timm's: timm.optim.list_optimizers()"
        )
    return name


def check_optimizer_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise a ValueError naming the keys that optimizer ``name`` does not take or that are set by name."""
    optimizer = get_optimizer_class(_base_name(name), bind_defaults=False)
    parameters = inspect.signature(optimizer).parameters
    allowed = [p for p in parameters if p not in _OPTIMIZER_FIXED]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(
            f"optimizer {name!r} got kwargs {unknown} it does not take or that are set by their own "
            f"keys (lr, weight_decay, momentum); allowed: {', '.join(allowed)}"
        )


def _base_name(name: str) -> str:
    # timm reads "lookahead_adamw" as AdamW wrapped in Lookahead.
    return name.lower().split("_")[-1]


def check_schedule(name: str, kwargs: dict[str, Any]) -> None:
    """Raise a ValueError naming the problem unless schedule ``name`` takes ``kwargs``."""
    schedule = SCHEDULES[name]
    if schedule is None:
        if kwargs:
            raise ValueError(f"scheduler {name!r} takes no kwargs; got {kwargs}")
        return
    unknown = sorted(set(kwargs) - set(schedule.allowed()))
    if unknown:
        raise ValueError(
            f"scheduler {name!r} got kwargs {unknown} it does not take or that are set from the rest "
            f"of the configuration; allowed: {', '.join(schedule.allowed())}"
        )


def create_optimizer(
    groups: list[dict[str, Any]],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    kwargs: dict[str, Any],
) -> Optimizer:
    """Optimizer ``name`` of timm over parameter ``groups`` (each group may set its own ``lr``)."""
    return create_optimizer_v2(
        groups, opt=name, lr=lr, weight_decay=weight_decay, momentum=momentum, **kwargs
    )


def create_schedule(
    optimizer: Optimizer, name: str, kwargs: dict[str, Any], max_epochs: Callable[[], int]
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` entry of schedule ``name``, stepped per epoch; ``None`` for none.

    The cosine anneals over ``max_epochs()`` epochs; the plateau schedule follows the validation loss
    down.
    """
    schedule = SCHEDULES[name]
    if schedule is None:
        return None
    fixed: dict[str, Any] = {}
    if schedule.scheduler is CosineAnnealingLR:
        fixed["T_max"] = max_epochs()
    if schedule.scheduler is ReduceLROnPlateau:
        fixed["mode"] = "min"
    entry = {"scheduler": schedule.scheduler(optimizer, **fixed, **kwargs), "interval": "epoch"}
    if schedule.monitor is not None:
        entry["monitor"] = schedule.monitor
    return entry
