"""Metric collections: names per stage, and values equal to scikit-learn's on small examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from tlkedro.tl.metrics import metric_collection
from tlkedro.tl.objectives import TaskInfo


def update_in_two_batches(
    metrics, predictions: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    metrics.update(predictions[:7], targets[:7])
    metrics.update(predictions[7:], targets[7:])
    return {name: float(value) for name, value in metrics.compute().items()}


def test_binary_classification_matches_sklearn() -> None:
    targets = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1])
    positive = torch.tensor([0.2, 0.8, 0.4, 0.3, 0.9, 0.6, 0.1, 0.7, 0.55, 0.45, 0.35, 0.65])
    probabilities = torch.stack([1 - positive, positive], dim=1)
    values = update_in_two_batches(
        metric_collection(TaskInfo("classification", 2), "val"), probabilities, targets
    )

    y, p = targets.numpy(), probabilities.numpy().astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)  # exactly 1 in float64, as sklearn checks
    predicted = p.argmax(axis=1)
    assert values == pytest.approx(
        {
            "val/auroc": roc_auc_score(y, p[:, 1]),
            "val/auprc": average_precision_score(y, p[:, 1]),
            "val/accuracy": accuracy_score(y, predicted),
            "val/balanced_accuracy": balanced_accuracy_score(y, predicted),
            "val/cross_entropy": log_loss(y, p),
        },
        rel=1e-5,
    )
    assert values["val/accuracy"] == 0.75
    assert values["val/balanced_accuracy"] == pytest.approx((5 / 7 + 4 / 5) / 2)


def test_multiclass_classification_averages_over_classes() -> None:
    generator = torch.Generator().manual_seed(1)
    targets = torch.tensor([0, 1, 2, 2, 1, 0, 2, 2, 1, 0, 2, 1])
    probabilities = (torch.rand(12, 3, generator=generator) + torch.eye(3)[targets]).softmax(dim=1)
    values = update_in_two_batches(
        metric_collection(TaskInfo("classification", 3), "test"), probabilities, targets
    )

    y, p = targets.numpy(), probabilities.numpy().astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    assert values["test/auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), rel=1e-5)
    assert values["test/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, p.argmax(axis=1))
    )
    assert values["test/cross_entropy"] == pytest.approx(log_loss(y, p), rel=1e-5)


def test_regression_matches_sklearn_and_scipy() -> None:
    targets = torch.tensor([45.0, 52.0, 60.0, 61.0, 66.0, 70.0, 73.0, 75.0, 79.0, 81.0])
    predictions = targets + torch.tensor([3.0, -2.0, 5.0, 0.5, -4.0, 1.0, 2.0, -6.0, 0.0, -1.5])
    values = update_in_two_batches(
        metric_collection(TaskInfo("regression"), "train"), predictions, targets
    )

    y, p = targets.numpy(), predictions.numpy()
    assert values == pytest.approx(
        {
            "train/mae": mean_absolute_error(y, p),
            "train/mse": mean_squared_error(y, p),
            "train/rmse": np.sqrt(mean_squared_error(y, p)),
            "train/pearson_r": pearsonr(y, p).statistic,
            "train/r2": r2_score(y, p),
        },
        rel=1e-5,
    )


def test_each_stage_has_its_own_state() -> None:
    train = metric_collection(TaskInfo("regression"), "train")
    val = metric_collection(TaskInfo("regression"), "val")
    train.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    val.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
    assert float(train.compute()["train/mae"]) == 1.0
    assert float(val.compute()["val/mae"]) == 0.0
