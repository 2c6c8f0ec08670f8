"""``mean_var``: Mean-Var initialisation, the pretrained weights' scaling without their features.

Schedule: the source encoder's weights are loaded, then every encoder parameter tensor (convolution
and linear weights and biases, BatchNorm scales and shifts) is re-drawn i.i.d. from a normal
distribution with that tensor's own mean and standard deviation; the head is new. Everything is
fine-tuned at the base learning rate. This keeps the per-layer scale of the pretrained weights and
destroys what they encode, which separates the two benefits of transfer.

BatchNorm running statistics: the paper specifies the re-drawing for the weights only. The running
means and variances measured the activations of the pretrained weights, which no longer exist, so
they are reset (mean 0, variance 1) and re-estimated while fine-tuning, as for a randomly
initialised model.

Reference: Raghu, Zhang, Kleinberg and Bengio, "Transfusion: Understanding Transfer Learning for
Medical Imaging", NeurIPS 2019 (Section 6, "Mean Var Init").
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from tlkedro.tl.strategies.base import Strategy, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("mean_var")
@dataclasses.dataclass
class MeanVar(Strategy):
    """Re-draw each source encoder tensor from a normal with its mean and standard deviation."""

    @torch.no_grad()
    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model``, re-draw its parameters, reset its BatchNorm statistics."""
        model = super().prepare(model, source_state)
        for param in model.encoder.parameters():
            # correction=0: a one-element tensor has std 0 (kept as is), not NaN.
            param.normal_(param.mean().item(), param.std(correction=0).item())
        for layer in model.encoder.modules():
            if isinstance(layer, _BatchNorm):
                layer.reset_running_stats()
        return model
