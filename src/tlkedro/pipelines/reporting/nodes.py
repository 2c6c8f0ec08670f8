"""Nodes of the reporting pipeline: thin wrappers over tlkedro.reporting."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from tlkedro import reporting

REPORT_COLUMNS_FIRST = ["variant", "strategy", "init_from", "seed", "trainable_params", "total_params",
                        "macs_per_image", "cpu_latency_ms", "file_size_bytes"]


def compare_variants(
    *records: dict[str, Any], title: str, primary_metric: str
) -> tuple[pd.DataFrame, str]:
    """The comparison table (CSV) and its markdown report, best variant first."""
    table = reporting.comparison_table(list(records))
    ascending = not primary_metric.endswith(("auroc", "auprc", "accuracy", "r2", "pearson"))
    if primary_metric in table:
        table = table.sort_values(primary_metric, ascending=ascending, kind="stable")
    metrics = [c for c in table.columns if "/" in c]
    summary = reporting.group_summary(table, metrics)
    columns = REPORT_COLUMNS_FIRST + metrics
    return table, reporting.markdown_report(title, table, summary, columns)


def plot_primary_metric(table: pd.DataFrame, *predictions: pd.DataFrame, names: list[str],
                        metric: str) -> Figure:
    """The primary metric per variant, with bootstrap intervals for classification predictions."""
    intervals = None
    if all("probability" in frame for frame in predictions):
        intervals = dict(zip(names, (reporting.bootstrap_interval(frame) for frame in predictions)))
    return reporting.plot_metric_by_variant(table.set_index("variant").loc[names].reset_index(), metric,
                                            intervals)


def plot_learning_curves(*histories: pd.DataFrame, names: list[str]) -> Figure:
    """Loss curves of every variant."""
    return reporting.plot_learning_curves(dict(zip(names, histories)))


def plot_test_predictions(*predictions: pd.DataFrame, names: list[str], task: str, target: str) -> Figure:
    """ROC curves for classification, predicted against true values for regression."""
    by_variant = dict(zip(names, predictions))
    if task == "classification":
        return reporting.plot_roc_curves(by_variant, title=f"{target}: ROC on the test split")
    return reporting.plot_predicted_vs_true(by_variant, quantity=target)
