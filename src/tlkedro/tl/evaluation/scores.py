"""Metrics on predictions tables, bootstrap intervals over subjects and paired differences.

The metrics are computed on a batch of resamples at once (an ``(B, n)`` array of subject indices), so
that ``scipy.stats.bootstrap`` can evaluate thousands of resamples in a few array operations:
scikit-learn's metric functions take one sample per call. Each is tested against scikit-learn's on the
full sample. Binary AUROC is the Mann-Whitney statistic from ``scipy.stats.rankdata`` (ties count half,
as in ``roc_auc_score``); macro AUROC over more classes calls ``roc_auc_score`` per resample.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from tlkedro.tl.evaluation.predictions import (
    class_probabilities,
    paired_tables,
    pool_repeats,
    repeat_count,
)

logger = logging.getLogger(__name__)

METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("mae", "rmse", "r2", "pearson_r"),
    "classification": ("auroc", "balanced_accuracy", "accuracy"),
}
HIGHER_IS_BETTER: dict[str, bool] = {
    "mae": False,
    "rmse": False,
    "r2": True,
    "pearson_r": True,
    "auroc": True,
    "balanced_accuracy": True,
    "accuracy": True,
}
BOOTSTRAP_METHODS = ("BCa", "percentile")


def default_metric(task: str) -> str:
    """The headline metric of a task: ``mae`` for regression, ``auroc`` for classification."""
    return METRICS[task][0]


def _check_metric(metric: str, task: str) -> None:
    if metric not in METRICS.get(task, ()):
        raise ValueError(
            f"metric {metric!r} is not a {task} metric; valid: {', '.join(METRICS.get(task, ()))}"
        )


@dataclasses.dataclass(frozen=True)
class _Arrays:
    """One model's pooled predictions as arrays, in subject order."""

    target: np.ndarray
    prediction: np.ndarray
    probabilities: np.ndarray | None

    @classmethod
    def of(cls, pooled: pd.DataFrame, task: str) -> _Arrays:
        if task == "regression":
            return cls(pooled["target"].to_numpy(float), pooled["prediction"].to_numpy(float), None)
        return cls(
            pooled["target"].to_numpy(int),
            pooled["prediction"].to_numpy(int),
            class_probabilities(pooled),
        )


def _pearson(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    tc = t - t.mean(axis=-1, keepdims=True)
    pc = p - p.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((tc**2).sum(axis=-1) * (pc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (tc * pc).sum(axis=-1) / denominator, np.nan)


def _r2(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    total = ((t - t.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1 - ((t - p) ** 2).sum(axis=-1) / total, np.nan)


def _binary_auroc(t: np.ndarray, scores: np.ndarray) -> np.ndarray:
    positive = t == 1
    n1 = positive.sum(axis=-1)
    n0 = t.shape[-1] - n1
    ranks = stats.rankdata(scores, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _macro_auroc(t: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    classes = np.arange(probabilities.shape[-1])
    values = np.full(t.shape[0], np.nan)
    for row in range(t.shape[0]):
        if len(np.unique(t[row])) == len(classes):  # one-vs-rest needs every class
            values[row] = roc_auc_score(
                t[row], probabilities[row], multi_class="ovr", average="macro", labels=classes
            )
    return values


def _balanced_accuracy(t: np.ndarray, p: np.ndarray, num_classes: int) -> np.ndarray:
    # scikit-learn's definition: mean recall over the classes present in the targets.
    recalls, present = [], []
    for k in range(num_classes):
        members = (t == k).sum(axis=-1)
        hits = ((t == k) & (p == k)).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(members > 0, hits / members, 0.0))
        present.append(members > 0)
    return np.sum(recalls, axis=0) / np.sum(present, axis=0)


def _values(arrays: _Arrays, metric: str, index: np.ndarray) -> np.ndarray:
    """``metric`` on each row of subject indices ``index`` (shape ``(B, n)``): shape ``(B,)``."""
    t, p = arrays.target[index], arrays.prediction[index]
    if metric == "mae":
        return np.abs(p - t).mean(axis=-1)
    if metric == "rmse":
        return np.sqrt(((p - t) ** 2).mean(axis=-1))
    if metric == "r2":
        return _r2(t, p)
    if metric == "pearson_r":
        return _pearson(t, p)
    if metric == "accuracy":
        return (p == t).mean(axis=-1)
    if metric == "balanced_accuracy":
        return _balanced_accuracy(t, p, arrays.probabilities.shape[1])
    if metric == "auroc":
        probabilities = arrays.probabilities[index]
        if probabilities.shape[-1] == 2:
            return _binary_auroc(t, probabilities[..., 1])
        return _macro_auroc(t, probabilities)
    raise ValueError(f"unknown metric {metric!r}")


def _on_full_sample(arrays: _Arrays, metric: str) -> float:
    return float(_values(arrays, metric, np.arange(len(arrays.target))[None, :])[0])


def metric_values(table: pd.DataFrame, task: str) -> dict[str, float]:
    """Every metric of ``task`` on the table, its repeats pooled first (``pool_repeats``); NaN if undefined."""
    arrays = _Arrays.of(pool_repeats(table, task), task)
    return {metric: _on_full_sample(arrays, metric) for metric in METRICS[task]}


def _resampling_groups(arrays: _Arrays, task: str) -> list[np.ndarray]:
    """Subject indices to resample: all together, or within each class for classification."""
    if task == "regression":
        return [np.arange(len(arrays.target))]
    return [np.flatnonzero(arrays.target == k) for k in np.unique(arrays.target)]


def _bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    groups: list[np.ndarray],
    estimate: float,
    confidence: float,
    n_resamples: int,
    seed: int,
    method: str,
) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` of ``statistic(subject indices (B, n))``, resampling within each group."""
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(
            f"bootstrap method {method!r} is unknown; valid: {', '.join(BOOTSTRAP_METHODS)}"
        )
    if not math.isfinite(estimate) or min(len(g) for g in groups) < 2:
        return math.nan, math.nan

    def batched(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        batch = np.broadcast_shapes(*(s.shape[:-1] for s in samples))
        index = np.concatenate([np.broadcast_to(s, batch + s.shape[-1:]) for s in samples], axis=-1)
        values = statistic(index.reshape(-1, index.shape[-1]).astype(np.intp))
        return values.reshape(batch)

    # Resampling groups separately (paired=False) is the stratified bootstrap; within a group the
    # statistic indexes every model's arrays with the same subjects, which pairs them.
    options = dict(vectorized=True, paired=False, confidence_level=confidence)
    result = stats.bootstrap(
        tuple(groups),
        batched,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
        **options,
    )
    distribution = result.bootstrap_distribution
    if np.isnan(distribution).any():
        # e.g. a Pearson r on a resample whose predictions are all equal: no interval to speak of.
        return math.nan, math.nan
    if np.ptp(distribution) == 0:  # every resample gives the estimate: the interval has zero width
        return float(distribution[0]), float(distribution[0])
    low, high = result.confidence_interval
    if method == "BCa":
        # Reuses the resamples drawn above; adds the jackknife BCa needs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            bca = stats.bootstrap(
                tuple(groups),
                batched,
                n_resamples=0,
                method="BCa",
                bootstrap_result=result,
                **options,
            ).confidence_interval
        if np.isfinite(bca).all():
            low, high = bca
        else:  # nearly every resample gives the estimate: BCa's bias correction is infinite
            logger.warning(
                "BCa interval undefined (degenerate resamples); giving the percentile one"
            )
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A metric with its bootstrap interval over subjects.

    Attributes:
        metric: The metric's name (``mae``, ``auroc``, ...).
        estimate: The metric on all subjects.
        low: Lower end of the interval (NaN when undefined: too few subjects, or the metric itself).
        high: Upper end.
        n: Number of subjects.
        confidence: The interval's confidence level.
        method: ``BCa`` or ``percentile``.
        repeats: Cross-validation repeats whose out-of-fold predictions were averaged per subject.
    """

    metric: str
    estimate: float
    low: float
    high: float
    n: int
    confidence: float
    method: str
    repeats: int = 1

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval (False when the interval is undefined)."""
        return bool(self.low > value or self.high < value)


def metric_interval(
    table: pd.DataFrame,
    metric: str,
    task: str,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """A metric with its bootstrap interval over subjects.

    Subjects are resampled with replacement, target and prediction together; for classification within
    each class (a stratified bootstrap), so that every resample holds every class and AUROC is defined.
    A cross-validated table's out-of-fold predictions are first averaged over the repeats per subject,
    so each subject counts once.

    Args:
        table: A predictions table (see ``tlkedro.tl.evaluation``).
        metric: One of ``METRICS[task]``.
        task: ``regression`` or ``classification``.
        confidence: Confidence level of the interval.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        method: ``BCa`` (bias-corrected and accelerated) or ``percentile``.

    Raises:
        ValueError: The metric does not belong to the task, or the table breaks the contract.
    """
    _check_metric(metric, task)
    pooled = pool_repeats(table, task)
    arrays = _Arrays.of(pooled, task)
    estimate = _on_full_sample(arrays, metric)
    low, high = _bootstrap(
        lambda index: _values(arrays, metric, index),
        _resampling_groups(arrays, task),
        estimate,
        confidence,
        n_resamples,
        seed,
        method,
    )
    return Interval(
        metric, estimate, low, high, len(pooled), confidence, method, repeat_count(table)
    )


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """``metric(a) - metric(b)`` on the subjects both models predicted, with a bootstrap interval.

    Attributes:
        metric: The metric's name.
        estimate: The difference on all shared subjects.
        low: Lower end of the interval (NaN when undefined).
        high: Upper end.
        n: Number of shared subjects.
        confidence: The interval's confidence level.
        method: ``BCa`` or ``percentile``.
        value_a: ``metric(a)`` on the shared subjects.
        value_b: ``metric(b)`` on the shared subjects.
    """

    metric: str
    estimate: float
    low: float
    high: float
    n: int
    confidence: float
    method: str
    value_a: float
    value_b: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (a difference the data supports)."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def a_is_better(self) -> bool | None:
        """True or False where the interval excludes 0, ``None`` where it does not."""
        if not self.excludes_zero:
            return None
        return (self.estimate > 0) == HIGHER_IS_BETTER[self.metric]

    def figures(self) -> str:
        """Both values, the difference and its interval, e.g. ``mae 7.1 against 8.3, difference ...``."""
        return (
            f"{self.metric} {self.value_a:.3g} against {self.value_b:.3g}, difference "
            f"{self.estimate:+.3g} ({self.confidence:.0%} interval {self.low:.3g} to {self.high:.3g}, "
            f"{self.n} subjects)"
        )

    def verdict(self, name_b: str = "b") -> str:
        """``better than b``, ``worse than b``, or ``not distinguishable from b`` (interval holds 0)."""
        if self.a_is_better is None:
            return f"not distinguishable from {name_b}"
        return f"{'better' if self.a_is_better else 'worse'} than {name_b}"

    def statement(self, name_a: str = "a", name_b: str = "b") -> str:
        """The comparison in words, claiming a difference only where the interval excludes 0."""
        return f"{name_a} is {self.verdict(name_b)}: {self.figures()}"


def paired_difference(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    metric: str,
    task: str,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
    names: tuple[str, str] = ("a", "b"),
) -> PairedDifference:
    """The difference of a metric between two models on the same subjects, with a bootstrap interval.

    Both tables are pooled over repeats (``pool_repeats``) and joined on ``subject_id``; each resample
    draws the same subjects for both models (within each class for classification), so what the two
    share (hard subjects, the test set's make-up) cancels out of the difference.

    Raises:
        ValueError: The tables share no subject, disagree on a target, or break the contract.
    """
    _check_metric(metric, task)
    a, b = paired_tables(table_a, table_b, task, names)
    arrays_a, arrays_b = _Arrays.of(a, task), _Arrays.of(b, task)
    value_a, value_b = _on_full_sample(arrays_a, metric), _on_full_sample(arrays_b, metric)
    estimate = value_a - value_b
    low, high = _bootstrap(
        lambda index: _values(arrays_a, metric, index) - _values(arrays_b, metric, index),
        _resampling_groups(arrays_a, task),
        estimate,
        confidence,
        n_resamples,
        seed,
        method,
    )
    return PairedDifference(
        metric, estimate, low, high, len(a), confidence, method, value_a, value_b
    )
