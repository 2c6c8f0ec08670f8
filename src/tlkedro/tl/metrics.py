"""Metric collections per task, one object per stage, named ``"<stage>/<metric>"``.

Classification collections take ``(probabilities (B, C), targets (B,))``: ``auroc``, ``auprc`` (average
precision), ``accuracy``, ``balanced_accuracy`` (mean recall over classes) and ``cross_entropy``. With two
classes, AUROC and AUPRC are the binary ones of class 1 (e.g. male), as scikit-learn computes them; with
more, they are macro averages over classes (one-vs-rest).

Regression collections take ``(predictions (B,), targets (B,))`` in the target's units (years, not
standardised): ``mae``, ``mse``, ``rmse``, ``pearson_r`` and ``r2``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
)
from torchmetrics.regression import (
    MeanAbsoluteError,
    MeanSquaredError,
    PearsonCorrCoef,
    R2Score,
)
from torchmetrics.wrappers import LambdaInputTransformer

from tlkedro.tl.objectives import TaskInfo


class CrossEntropy(MeanMetric):
    """Mean negative log-probability of the true class (scikit-learn's ``log_loss``)."""

    def update(self, probabilities: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Accumulate a batch of class probabilities ``(B, C)`` and integer targets ``(B,)``."""
        true_class = probabilities.gather(1, target.long().unsqueeze(1)).squeeze(1)
        eps = torch.finfo(probabilities.dtype).eps
        super().update(-torch.log(true_class.clamp(eps, 1.0)))


def _positive_class(probabilities: Tensor) -> Tensor:
    # A module-level function, not a lambda, so the collection stays picklable and deep-copyable.
    return probabilities[:, 1]


def _classification_metrics(num_classes: int) -> dict[str, Metric]:
    if num_classes == 2:
        ranking: dict[str, Metric] = {
            "auroc": LambdaInputTransformer(BinaryAUROC(), transform_pred=_positive_class),
            "auprc": LambdaInputTransformer(
                BinaryAveragePrecision(), transform_pred=_positive_class
            ),
        }
    else:
        ranking = {
            "auroc": MulticlassAUROC(num_classes=num_classes),
            "auprc": MulticlassAveragePrecision(num_classes=num_classes),
        }
    return {
        **ranking,
        "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "balanced_accuracy": MulticlassAccuracy(num_classes=num_classes, average="macro"),
        "cross_entropy": CrossEntropy(),
    }


def _regression_metrics() -> dict[str, Metric]:
    return {
        "mae": MeanAbsoluteError(),
        "mse": MeanSquaredError(),
        "rmse": MeanSquaredError(squared=False),
        "pearson_r": PearsonCorrCoef(),
        "r2": R2Score(),
    }


def metric_collection(info: TaskInfo, stage: str) -> MetricCollection:
    """The metrics of ``info.task`` for one stage, keyed ``"<stage>/<metric>"``.

    Args:
        info: The task (and, for classification, its class count).
        stage: ``"train"``, ``"val"``, ``"test"`` or the name of an evaluation split.
    """
    if info.task == "classification":
        metrics = _classification_metrics(info.num_classes)
    else:
        metrics = _regression_metrics()
    return MetricCollection(metrics, prefix=f"{stage}/")
