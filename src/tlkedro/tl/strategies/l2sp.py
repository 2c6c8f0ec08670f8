"""``l2sp``: full fine-tuning regularised towards the starting point (L2-SP).

Schedule: the source encoder's weights ``w0`` are loaded and everything is fine-tuned at the base
learning rate, with the penalty ``alpha/2 * ||w - w0||^2`` on the transferred (encoder) parameters
plus ``beta/2 * ||w||^2`` on the new ones (the head) added to the loss. ``w0`` is a detached copy
kept by the strategy, never trained. The penalty replaces weight decay, whose pull towards zero
would fight the pull towards ``w0``, so the parameter groups set ``weight_decay`` to 0.

Reference: Li, Grandvalet and Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML 2018.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tlkedro.tl.strategies.base import Strategy, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("l2sp")
@dataclasses.dataclass
class L2SP(Strategy):
    """Load the source encoder and fine-tune everything under the L2-SP penalty.

    The starting point is recorded by ``prepare``, so one instance regularises the model it prepared.

    Args:
        alpha: Strength of the pull of the transferred parameters towards their source values.
        beta: Strength of the L2 penalty on the new parameters.
    """

    alpha: float = 0.01
    beta: float = 0.01
    _start: dict[str, Tensor] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(
                f"l2sp: alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}"
            )

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and record it as the starting point ``w0``."""
        model = super().prepare(model, source_state)
        self._start = {
            f"encoder.{name}": param.detach().clone()
            for name, param in model.encoder.named_parameters()
        }
        return model

    def param_groups(self, model: TLModel, lr: float) -> list[dict[str, Any]]:
        """The base groups with ``weight_decay`` 0: the penalty takes its place."""
        return [{**group, "weight_decay": 0.0} for group in super().param_groups(model, lr)]

    def penalty(self, model: TLModel) -> Tensor:
        """``alpha/2 * ||w - w0||^2`` over the transferred parameters plus ``beta/2 * ||w||^2`` over the rest.

        Raises:
            RuntimeError: If ``prepare`` has not recorded a starting point.
        """
        if not self._start:
            raise RuntimeError("l2sp: penalty() needs the starting point that prepare() records")
        to_start = to_zero = torch.zeros((), device=next(model.parameters()).device)
        for name, param in model.named_parameters():
            start = self._start.get(name)
            if start is None:
                to_zero = to_zero + param.square().sum()
                continue
            if start.device != param.device:
                # Lightning moves the model to its device after prepare(); move w0 once, not every step.
                start = self._start[name] = start.to(param.device)
            to_start = to_start + (param - start).square().sum()
        return self.alpha / 2 * to_start + self.beta / 2 * to_zero
