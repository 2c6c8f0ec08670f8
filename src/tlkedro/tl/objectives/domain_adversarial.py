"""``domain_adversarial``: unsupervised domain adaptation with a gradient-reversal layer (DANN).

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand and Lempitsky, "Domain-Adversarial
Training of Neural Networks", JMLR 17(59), 2016. The labelled images come from the source site(s), the
unlabelled ones (``fit(unlabelled=...)``; in the pipelines ``unlabelled_from: external``) from the
target site, whose labels are never used. A domain classifier (two linear layers) learns to tell the
two apart from the encoder's pooled features; between the encoder and the classifier a gradient-reversal
layer is the identity going forward and multiplies the gradient by ``-lambda`` going back, so the same
loss that trains the classifier trains the encoder to make the sites indistinguishable, while the
primary loss keeps the features useful for the task.

``lambda`` follows the paper's schedule, ``2 / (1 + exp(-gamma * p)) - 1`` with ``p`` the fraction of
training done (0 at the start, rising towards 1; ``gamma`` = 10 in the paper), so the noisy early domain
signal does not disturb the encoder; ``schedule: constant`` keeps it at 1. The term's weight in the
objective scales the classifier's loss (and so both of its gradients) on top of ``lambda``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlkedro.tl.objectives.base import AUXILIARY_TERMS, PROGRESS, UNLABELLED, check_positive


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * gradient, None


def reverse_gradient(features: Tensor, coefficient: float = 1.0) -> Tensor:
    """Identity going forward; the gradient times ``-coefficient`` going back."""
    return _GradientReversal.apply(features, coefficient)


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """The DANN schedule ``2 / (1 + exp(-gamma * progress)) - 1``: 0 at the start, towards 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


@AUXILIARY_TERMS.register("domain_adversarial")
class DomainAdversarial(nn.Module):
    """A domain classifier behind a gradient-reversal layer: labelled (source) vs unlabelled (target).

    Args:
        hidden: Width of the domain classifier's hidden layer.
        schedule: ``dann`` (the paper's ramp of ``lambda``) or ``constant`` (``lambda`` = 1).
        gamma: Steepness of the ``dann`` ramp.
    """

    needs = (UNLABELLED, PROGRESS)

    def __init__(
        self, hidden: int = 64, schedule: Literal["dann", "constant"] = "dann", gamma: float = 10.0
    ) -> None:
        super().__init__()
        check_positive("hidden", hidden)
        check_positive("gamma", gamma)
        if schedule not in ("dann", "constant"):
            raise ValueError(f"schedule must be 'dann' or 'constant'; got {schedule!r}")
        self.name = "domain_adversarial"
        self.hidden = int(hidden)
        self.schedule = schedule
        self.gamma = gamma
        self.classifier: nn.Sequential | None = None

    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """Build the domain classifier on the model's features."""
        self.classifier = nn.Sequential(
            nn.Linear(model.num_features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)
        )

    def coefficient(self, progress: float) -> float:
        """``lambda`` at ``progress``, the fraction of training done."""
        return dann_coefficient(progress, self.gamma) if self.schedule == "dann" else 1.0

    def forward(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor, **extras: Any
    ) -> Tensor:
        """Binary cross-entropy of the domain classifier: labelled images 0, unlabelled images 1."""
        unlabelled = extras[UNLABELLED].to(inputs)
        features = model.forward_features(torch.cat([inputs, unlabelled]))
        logits = self.classifier(
            reverse_gradient(features, self.coefficient(float(extras[PROGRESS])))
        )
        domains = torch.cat([inputs.new_zeros(len(inputs)), inputs.new_ones(len(unlabelled))])
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), domains)
