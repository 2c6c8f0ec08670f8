"""Regression on a standardised target: MSE and L1 over one output.

The targets are standardised with the training set's mean and standard deviation (``TaskInfo``), so
the head starts near the right scale for ages of 45-82 years; predictions are mapped back to years.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from tlkedro.tl.objectives.base import OBJECTIVES, Objective, Prediction, PrimaryTerm, TaskInfo


class StandardisedRegression(PrimaryTerm):
    """A pointwise loss between the single output and the standardised target.

    Args:
        kind: ``"mse"`` (squared error) or ``"l1"`` (absolute error).
    """

    task = "regression"
    _losses = {"mse": F.mse_loss, "l1": F.l1_loss}

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._loss = self._losses[kind]

    def num_outputs(self, info: TaskInfo) -> int:
        return 1

    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        standardised = (targets.to(outputs.dtype) - info.target_mean) / info.target_std
        return self._loss(outputs.squeeze(1), standardised)

    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        return Prediction(
            values=outputs.squeeze(1) * info.target_std + info.target_mean, probabilities=None
        )


@OBJECTIVES.register()
def mse() -> Objective:
    """Mean squared error on the standardised target."""
    return Objective(StandardisedRegression("mse"))


@OBJECTIVES.register()
def l1() -> Objective:
    """Mean absolute error on the standardised target."""
    return Objective(StandardisedRegression("l1"))
