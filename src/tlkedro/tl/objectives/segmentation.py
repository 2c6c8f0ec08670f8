"""Segmentation: MONAI's Dice plus cross-entropy over one logit per class and voxel.

The targets are label maps (``(B, *spatial)`` class indices, or ``(B, 1, *spatial)``); the loss one-hot
encodes them and applies the softmax itself (``DiceCELoss(to_onehot_y=True, softmax=True)``). The task is
``segmentation``: the classification and regression training (``tlkedro.tl.training.fit``) refuses this
objective; ``tlkedro.tl.segmentation.fit_segmentation`` trains it.
"""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import Tensor

from tlkedro.tl.objectives.base import OBJECTIVES, Objective, Prediction, PrimaryTerm, TaskInfo

SEGMENTATION = "segmentation"


class DiceCE(PrimaryTerm):
    """Dice loss plus cross-entropy of per-voxel class logits against a label map.

    Args:
        lambda_dice: Weight of the Dice term.
        lambda_ce: Weight of the cross-entropy term.
        include_background: Whether the Dice term averages over the background class too.
    """

    task = SEGMENTATION  # type: ignore[assignment]  (a task that classification/regression refuse)

    def __init__(
        self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, include_background: bool = True
    ) -> None:
        if lambda_dice < 0 or lambda_ce < 0 or lambda_dice + lambda_ce == 0:
            raise ValueError(
                f"lambda_dice and lambda_ce must be >= 0 and not both 0; got {lambda_dice}, {lambda_ce}"
            )
        self.criterion = DiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def num_outputs(self, info: TaskInfo) -> int:
        return info.num_classes

    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        if targets.ndim == outputs.ndim - 1:
            targets = targets.unsqueeze(1)
        return self.criterion(outputs, targets.long())

    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        probabilities = outputs.softmax(dim=1)
        return Prediction(values=probabilities.argmax(dim=1), probabilities=probabilities)


@OBJECTIVES.register()
def dice_ce(
    lambda_dice: float = 1.0, lambda_ce: float = 1.0, include_background: bool = True
) -> Objective:
    """Dice plus cross-entropy segmentation (MONAI ``DiceCELoss``); one output channel per class."""
    return Objective(DiceCE(lambda_dice, lambda_ce, include_background))
