"""Comparison tables and plots over training variants (Kedro-agnostic: takes and returns data)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # reports are written by headless runs (CI, Slurm, Argo)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

#: Columns shown first in a comparison table, when present.
LEADING_COLUMNS = [
    "variant",
    "group",
    "architecture",
    "strategy",
    "init_from",
    "seed",
    "lr",
    "total_params",
    "trainable_params",
    "macs_per_image",
    "cpu_latency_ms",
    "file_size_bytes",
    "epochs_run",
    "fit_seconds",
]


def comparison_table(records: list[Mapping[str, object]]) -> pd.DataFrame:
    """One row per variant, the descriptive columns first, then the metrics in sorted order."""
    table = pd.DataFrame([dict(r) for r in records])
    leading = [c for c in LEADING_COLUMNS if c in table.columns]
    metrics = sorted(c for c in table.columns if c not in leading)
    return table[leading + metrics].reset_index(drop=True)


#: Complexity columns of a comparison table, averaged per group by ``group_comparison``.
COMPLEXITY_COLUMNS = ["total_params", "macs_per_image", "cpu_latency_ms"]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (``test/auroc``, ``val/loss``, ...) is better."""
    return metric.endswith(("auroc", "auprc", "accuracy", "r2", "pearson_r"))


def group_summary(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric per group (variants that differ only by seed)."""
    present = [m for m in metrics if m in table.columns]
    grouped = table.groupby("group", sort=False)[present]
    summary = grouped.agg(["mean", "std", "count"])
    summary.columns = [f"{metric} {stat}" for metric, stat in summary.columns]
    return summary.reset_index()


def group_comparison(table: pd.DataFrame, metrics: list[str], reference: str) -> pd.DataFrame:
    """Each group's metrics (mean, std, count over seeds) and complexity against a reference group.

    Args:
        table: A comparison table (``comparison_table``).
        metrics: Metric columns to aggregate, e.g. ``["test/auroc", "val/auprc"]``.
        reference: The group the others are compared with, e.g. ``full`` (full fine-tuning).

    Returns:
        One row per group, in the table's order: the ``group_summary`` columns, the mean of each
        complexity column, ``params_reduction`` and ``macs_reduction`` (the reference's value over the
        group's: 3.0 is three times fewer) and ``speedup`` (the reference's CPU latency over the group's).

    Raises:
        ValueError: If no variant belongs to ``reference``.
    """
    present = [c for c in COMPLEXITY_COLUMNS if c in table.columns]
    complexity = table.groupby("group", sort=False)[present].mean()
    if reference not in complexity.index:
        raise ValueError(
            f"reference group {reference!r} is not among the groups {list(complexity.index)}"
        )
    ratios = pd.DataFrame(index=complexity.index)
    for column, name in (
        ("total_params", "params_reduction"),
        ("macs_per_image", "macs_reduction"),
        ("cpu_latency_ms", "speedup"),
    ):
        if column in complexity:
            ratios[name] = complexity.loc[reference, column] / complexity[column]
    summary = group_summary(table, metrics).set_index("group")
    return summary.join(complexity).join(ratios).reset_index()


def rank_cutoffs(table: pd.DataFrame, cutoffs: Mapping[str, str], metric: str) -> pd.DataFrame:
    """Truncation cutoffs ranked by a metric's mean over the seeds of their group, best first.

    Args:
        table: A comparison table (``comparison_table``).
        cutoffs: The cutoff of each truncated variant, by variant (``{"finetune.ttl_layer3_0": "layer3"}``);
            variants of the table not named here are ignored, and variants named here but absent from
            the table have not run yet.
        metric: The selection metric, e.g. ``val/auprc`` (never a test metric: it would select on test).

    Returns:
        Columns ``cutoff``, ``group``, ``<metric> mean``, ``<metric> std``, ``<metric> count``; ties keep
        the table's order.

    Raises:
        ValueError: If the variants of one group have different cutoffs, which a mean would blur.
    """
    rows = table[table["variant"].isin(list(cutoffs))].assign(
        cutoff=lambda t: t["variant"].map(cutoffs)
    )
    mixed = rows.groupby("group")["cutoff"].nunique()
    if (mixed > 1).any():
        raise ValueError(
            f"groups {list(mixed[mixed > 1].index)} mix truncation cutoffs; give each its own group"
        )
    summary = group_summary(rows, [metric])
    summary.insert(0, "cutoff", summary["group"].map(rows.groupby("group")["cutoff"].first()))
    return summary.sort_values(
        f"{metric} mean", ascending=not higher_is_better(metric), kind="stable", ignore_index=True
    )


def bootstrap_interval(
    predictions: pd.DataFrame, *, n_resamples: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC over subjects (classification predictions)."""
    rng = np.random.default_rng(seed)
    y = predictions["target"].to_numpy()
    p = predictions["probability"].to_numpy()
    scores = []
    for _ in range(n_resamples):
        index = rng.integers(0, len(y), len(y))
        if len(np.unique(y[index])) == 2:
            scores.append(roc_auc_score(y[index], p[index]))
    tail = (1 - level) / 2 * 100
    return float(np.percentile(scores, tail)), float(np.percentile(scores, 100 - tail))


def _format(value: object) -> str:
    if value is None or pd.isna(value):  # e.g. init_from of a variant without a source model
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no optional dependency such as tabulate)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = [
        "| " + " | ".join(_format(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def markdown_report(
    title: str, table: pd.DataFrame, summary: pd.DataFrame, columns: list[str]
) -> str:
    """The comparison as a readable markdown document."""
    shown = [c for c in columns if c in table.columns]
    parts = [f"# {title}", "", "## Variants", "", markdown_table(table[shown]), ""]
    if summary["group"].nunique() < len(table):
        parts += ["## Groups (mean, std and count over seeds)", "", markdown_table(summary), ""]
    return "\n".join(parts)


def plot_metric_by_variant(
    table: pd.DataFrame, metric: str, intervals: Mapping[str, tuple[float, float]] | None = None
) -> Figure:
    """A metric per variant; error bars show the bootstrap interval over subjects when given."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(table) + 2), 3.5), layout="constrained")
    values = table[metric].to_numpy(dtype=float)
    names = table["variant"].str.split(".").str[-1]
    errors = None
    if intervals:
        lows = np.array([intervals[v][0] for v in table["variant"]])
        highs = np.array([intervals[v][1] for v in table["variant"]])
        errors = np.vstack([values - lows, highs - values]).clip(min=0)
    ax.bar(names, values, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per variant" + (" (95% bootstrap interval)" if intervals else ""))
    ax.tick_params(axis="x", rotation=30)
    return fig


def plot_learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Training and validation loss per epoch, one line pair per variant."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for (name, history), color in zip(histories.items(), plt.cm.tab10.colors * 10):
        label = name.split(".")[-1]
        if "train/loss" in history:
            ax.plot(history["epoch"], history["train/loss"], "--", color=color, alpha=0.6)
        ax.plot(history["epoch"], history["val/loss"], "-", color=color, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (dashed: train, solid: validation)")
    ax.legend(fontsize="small")
    return fig


def plot_roc_curves(predictions: Mapping[str, pd.DataFrame], title: str) -> Figure:
    """ROC curve of each variant's per-subject predictions."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    for name, frame in predictions.items():
        fpr, tpr, _ = roc_curve(frame["target"], frame["probability"])
        auc = roc_auc_score(frame["target"], frame["probability"])
        ax.plot(fpr, tpr, label=f"{name.split('.')[-1]} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_predicted_vs_true(predictions: Mapping[str, pd.DataFrame], quantity: str) -> Figure:
    """Scatter of predicted against true values (e.g. brain age), with the identity line and MAE."""
    fig, axes = plt.subplots(
        1, len(predictions), figsize=(4 * len(predictions), 4), squeeze=False, layout="constrained"
    )
    for ax, (name, frame) in zip(axes[0], predictions.items()):
        mae = float(np.mean(np.abs(frame["prediction"] - frame["target"])))
        ax.scatter(frame["target"], frame["prediction"], s=8, alpha=0.6)
        low = float(min(frame["target"].min(), frame["prediction"].min()))
        high = float(max(frame["target"].max(), frame["prediction"].max()))
        ax.plot([low, high], [low, high], "--", color="grey")
        ax.set_xlabel(f"true {quantity}")
        ax.set_ylabel(f"predicted {quantity}")
        ax.set_title(f"{name} (MAE {mae:.2f})")
    return fig
