"""Per-fold metrics of cross-validated predictions tables, their mean ± std, and per-fold differences."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from tlkedro.tl.evaluation.predictions import check_predictions, pool_repeats
from tlkedro.tl.evaluation.scores import METRICS, _Arrays, _check_metric, _on_full_sample


def fold_metrics(table: pd.DataFrame, task: str, metrics: list[str] | None = None) -> pd.DataFrame:
    """The metrics of each fold of each repeat: ``repeat``, ``fold``, ``n`` and one column per metric.

    Raises:
        ValueError: The table has no ``fold`` column, or breaks the contract.
    """
    check_predictions(table, task)
    if "fold" not in table.columns:
        raise ValueError(
            f"per-fold metrics need a 'fold' column (cross-validated predictions); columns: {list(table.columns)}"
        )
    metrics = list(metrics or METRICS[task])
    for metric in metrics:
        _check_metric(metric, task)
    frame = table if "repeat" in table.columns else table.assign(repeat=0)
    rows = []
    for (repeat, fold), part in frame.groupby(["repeat", "fold"], sort=True):
        arrays = _Arrays.of(pool_repeats(part.drop(columns="repeat"), task), task)
        rows.append(
            {"repeat": repeat, "fold": fold, "n": len(part)}
            | {m: _on_full_sample(arrays, m) for m in metrics}
        )
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class FoldSummary:
    """Mean and sample standard deviation of a metric over folds (and repeats).

    The standard deviation describes how much the metric varies between folds; it is not a standard
    error (folds share training subjects, so their metrics are correlated).
    """

    metric: str
    mean: float
    std: float
    folds: int


def summarise_folds(values: pd.Series, metric: str) -> FoldSummary:
    """``FoldSummary`` of per-fold values (NaN folds, e.g. a single-class fold's AUROC, left out)."""
    finite = values.dropna()
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return FoldSummary(metric, float(finite.mean()) if len(finite) else math.nan, std, len(finite))


def fold_summary(table: pd.DataFrame, metric: str, task: str) -> FoldSummary:
    """Mean ± std of a metric over the folds of a cross-validated predictions table."""
    return summarise_folds(fold_metrics(table, task, [metric])[metric], metric)


def fold_differences(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    metric: str,
    task: str,
    names: tuple[str, str] = ("a", "b"),
) -> pd.DataFrame:
    """Per fold, ``metric`` of two models cross-validated on the same folds, and their difference.

    Returns:
        ``repeat``, ``fold``, ``n``, ``a``, ``b`` and ``difference`` (``a - b``); summarise the last with
        ``summarise_folds``.

    Raises:
        ValueError: A table lacks folds, or the two were not cross-validated on the same folds.
    """
    keys = ["subject_id", "repeat"]
    frames = []
    for table, name in zip((table_a, table_b), names):
        check_predictions(table, task, name)
        if "fold" not in table.columns:
            raise ValueError(f"{name}: per-fold differences need a 'fold' column")
        frames.append(
            (table if "repeat" in table else table.assign(repeat=0)).assign(
                subject_id=table["subject_id"].astype(str)
            )
        )
    joined = frames[0][[*keys, "fold"]].merge(frames[1][[*keys, "fold"]], on=keys, how="outer")
    mismatched = joined[joined["fold_x"] != joined["fold_y"]]
    if len(mismatched):
        raise ValueError(
            f"{names[0]} and {names[1]} were not cross-validated on the same folds: "
            f"{mismatched['subject_id'].nunique()} subjects differ (e.g. "
            f"{', '.join(mismatched['subject_id'].unique()[:5])})"
        )
    per_fold = [
        fold_metrics(frame, task, [metric]).set_index(["repeat", "fold"]) for frame in frames
    ]
    result = per_fold[0][["n"]].assign(a=per_fold[0][metric], b=per_fold[1][metric])
    return result.assign(difference=result["a"] - result["b"]).reset_index()
