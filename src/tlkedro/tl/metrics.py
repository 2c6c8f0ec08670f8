"""Metric collections per task, one object per stage, named ``"<stage>/<metric>"``.

Classification collections take ``(probabilities (B, C), targets (B,))``: ``auroc``, ``auprc`` (average
precision), ``accuracy``, ``balanced_accuracy`` (mean recall over classes) and ``cross_entropy``. With two
classes, AUROC and AUPRC are the binary ones of class 1 (e.g. male), as scikit-learn computes them; with
more, they are macro averages over classes (one-vs-rest).

Regression collections take ``(predictions (B,), targets (B,))`` in the target's units (years, not
standardised): ``mae``, ``mse``, ``rmse``, ``pearson_r`` and ``r2``.

``trivial_check`` compares a trained model's validation metric with the trivial predictor's (the
training mean, the training class frequencies): a model far worse than it is broken, not merely weak.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
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

log = logging.getLogger(__name__)

# The metric trivial_check compares, per task: lower is better for both.
CHECKED_METRIC = {"regression": "mae", "classification": "cross_entropy"}
# How many times the trivial predictor's error a model must exceed to be flagged. A model on a few dozen
# subjects is often somewhat worse than the mean; twice as bad is a model that is not working.
FAR_WORSE = 2.0


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


def trivial_check(
    info: TaskInfo,
    train_targets: np.ndarray,
    val_targets: np.ndarray,
    best: Mapping[str, float],
) -> dict[str, float | bool]:
    """The best epoch's validation metric against the trivial predictor's, and whether it is far worse.

    The trivial predictor predicts the training mean (regression) or the training class frequencies
    (classification) for every validation row. Logs a warning when the model is ``FAR_WORSE`` times
    worse: in evaluation mode it then predicts something training did not teach it (e.g. BatchNorm
    running statistics that do not describe the data, ``tlkedro.tl.batchnorm``).

    Args:
        info: The task statistics of the training rows.
        train_targets: The training rows' targets.
        val_targets: The validation rows' targets.
        best: The history row of the best epoch (``val/<metric>``).

    Returns:
        ``best_val_<metric>``, ``trivial_val_<metric>`` and ``worse_than_trivial`` (with ``<metric>``
        ``mae`` or ``cross_entropy``).
    """
    name = CHECKED_METRIC[info.task]
    targets = torch.as_tensor(val_targets)
    if info.task == "regression":
        metric: Metric = MeanAbsoluteError()
        metric.update(torch.full(targets.shape, float(np.mean(train_targets))), targets.float())
    else:
        counts = np.bincount(train_targets, minlength=info.num_classes)
        # Laplace smoothing: a class absent from the training rows would get probability 0.
        frequencies = torch.tensor((counts + 1) / (counts.sum() + info.num_classes))
        metric = CrossEntropy()
        metric.update(frequencies.expand(len(targets), -1), targets)
    trivial = float(metric.compute())
    model = float(best[f"val/{name}"])
    worse = model > FAR_WORSE * trivial
    if worse:
        log.warning(
            "The trained model's validation %s (%.4g, evaluation mode) is more than %g times the trivial "
            "predictor's (%.4g): it does not work as evaluated. With BatchNorm, few or small batches "
            "leave running statistics that do not describe the data: set "
            "trainer.recalibrate_batchnorm: true.",
            name,
            model,
            FAR_WORSE,
            trivial,
        )
    return {f"best_val_{name}": model, f"trivial_val_{name}": trivial, "worse_than_trivial": worse}
