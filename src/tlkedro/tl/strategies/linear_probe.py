"""``linear_probe``: the transferred encoder as a fixed feature extractor.

Schedule: the source encoder's weights are loaded and frozen for the whole run (no gradients,
BatchNorm running statistics kept); only the new head is trained, at the base learning rate.

Reference: Kornblith, Shlens and Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019
(logistic regression on fixed features), and Yosinski et al., NeurIPS 2014 (the "frozen" transfer
condition).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from torch import Tensor

from tlkedro.tl.strategies.base import Strategy, freeze, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("linear_probe")
@dataclasses.dataclass
class LinearProbe(Strategy):
    """Load and freeze the whole source encoder; train the head only."""

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and freeze it."""
        model = super().prepare(model, source_state)
        freeze([model.encoder])
        return model
