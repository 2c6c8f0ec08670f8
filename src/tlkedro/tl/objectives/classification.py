"""Classification: cross-entropy over ``num_classes`` logits (sex: 2 classes, 0 female, 1 male)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from tlkedro.tl.objectives.base import OBJECTIVES, Objective, Prediction, PrimaryTerm, TaskInfo


class CrossEntropy(PrimaryTerm):
    """Cross-entropy of the logits against integer class labels.

    Args:
        label_smoothing: Mass moved from the true class to all classes uniformly, in ``[0, 1)``.
    """

    task = "classification"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def num_outputs(self, info: TaskInfo) -> int:
        return info.num_classes

    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        return F.cross_entropy(outputs, targets.long(), label_smoothing=self.label_smoothing)

    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        probabilities = outputs.softmax(dim=1)
        return Prediction(values=probabilities.argmax(dim=1), probabilities=probabilities)


@OBJECTIVES.register()
def cross_entropy(label_smoothing: float = 0.0) -> Objective:
    """Cross-entropy classification; ``num_outputs`` is the number of classes."""
    return Objective(CrossEntropy(label_smoothing=label_smoothing))
