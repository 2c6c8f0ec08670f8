"""Figures of the reports, built without pyplot (no backend is chosen, so a notebook keeps its own)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs: object) -> tuple[Figure, object]:
    """A figure and its axes without pyplot: no backend is chosen, so a notebook keeps its own, and a
    headless run (CI, Slurm, Argo) needs no display."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **kwargs)


def plot_metric_by_variant(
    table: pd.DataFrame, metric: str, intervals: Mapping[str, tuple[float, float]] | None = None
) -> Figure:
    """A metric per variant; error bars show the bootstrap interval over subjects when given."""
    fig, ax = _subplots(figsize=(max(4.0, 0.9 * len(table) + 2), 3.5))
    values = table[metric].to_numpy(dtype=float)
    names = table["variant"].str.split(".").str[-1]
    errors = None
    if intervals:
        lows = np.array([intervals[v][0] for v in table["variant"]])
        highs = np.array([intervals[v][1] for v in table["variant"]])
        errors = np.nan_to_num(np.vstack([values - lows, highs - values]).clip(min=0))
    ax.bar(names, values, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per variant" + (" (95% bootstrap interval)" if intervals else ""))
    ax.tick_params(axis="x", rotation=30)
    return fig


def plot_learning_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Training and validation loss per epoch, one line pair per variant."""
    fig, ax = _subplots(figsize=(6, 4))
    for (name, history), color in zip(histories.items(), matplotlib.colormaps["tab10"].colors * 10):
        label = name.split(".")[-1]
        # Markers, so that a run of one epoch (a single point) shows too.
        if "train/loss" in history:
            ax.plot(history["epoch"], history["train/loss"], "x--", color=color, alpha=0.6)
        ax.plot(history["epoch"], history["val/loss"], "o-", color=color, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (dashed: train, solid: validation)")
    ax.legend(fontsize="small")
    return fig


def plot_roc_curves(predictions: Mapping[str, pd.DataFrame], title: str) -> Figure:
    """ROC curve of each variant's per-subject predictions; with more than two classes, one curve per
    class against the others (``probability_<k>``)."""
    fig, ax = _subplots(figsize=(4.5, 4.5))
    for name, frame in predictions.items():
        scores = (
            {"": frame["probability"]}
            if "probability" in frame
            else {
                f" class {c.split('_')[-1]}": frame[c]
                for c in frame.columns
                if c.startswith("probability_")
            }
        )
        for suffix, score in scores.items():
            positive = frame["target"] == (int(suffix.split()[-1]) if suffix else 1)
            fpr, tpr, _ = roc_curve(positive, score)
            auc = roc_auc_score(positive, score)
            ax.plot(fpr, tpr, label=f"{name.split('.')[-1]}{suffix} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_predicted_vs_true(predictions: Mapping[str, pd.DataFrame], quantity: str) -> Figure:
    """Scatter of predicted against true values (e.g. brain age), with the identity line and MAE."""
    fig, axes = _subplots(1, len(predictions), figsize=(4 * len(predictions), 4), squeeze=False)
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


def plot_metric_by_training_size(
    table: pd.DataFrame, train_sizes: Mapping[str, float], lines: Mapping[str, str]
) -> Figure:
    """The metric against the number of target training subjects, one line per setting (e.g. strategy).

    Each model is a point with its interval (``low`` to ``high``) at its real training-set size, so the
    variants trained on every training subject close each line. Several models of one line at one size
    (seeds) are separate points; the line joins their means.

    Args:
        table: An evaluation table (``evaluation_table``).
        train_sizes: Target training subjects per model (the mean over folds for a cross-validated one);
            models not named here are not plotted.
        lines: The line each model belongs to (e.g. its strategy), by model; default: the model's name.

    Raises:
        ValueError: No model of the table has a training size.
    """
    rows = table[table["model"].isin(list(train_sizes))].assign(
        train_size=lambda t: t["model"].map(train_sizes).astype(float),
        line=lambda t: t["model"].map(lambda m: lines.get(m, m)),
    )
    if rows.empty:
        raise ValueError(
            f"no model of the evaluation table has a training size: {list(table['model'])}"
        )
    metric = rows["metric"].iloc[0]
    fig, ax = _subplots(figsize=(6, 4))
    for (line, part), color in zip(
        rows.groupby("line", sort=False), matplotlib.colormaps["tab10"].colors * 10
    ):
        part = part.sort_values("train_size", kind="stable")
        values = part["estimate"].to_numpy(float)
        errors = np.vstack([values - part["low"], part["high"] - values]).clip(min=0)
        # Markers without a line for the points, so that a one-point line shows too.
        ax.errorbar(
            part["train_size"],
            values,
            yerr=np.nan_to_num(errors),
            fmt="o",
            color=color,
            capsize=3,
            label=line,
        )
        means = part.groupby("train_size")["estimate"].mean()
        if len(means) > 1:
            ax.plot(means.index, means.to_numpy(), "-", color=color)
    if rows["train_size"].max() >= 10 * rows["train_size"].min():
        ax.set_xscale("log")
    ax.set_xlabel("target training subjects (mean over folds when cross-validated)")
    ax.set_ylabel(metric)
    ax.set_title(
        f"{metric} against training-set size ({rows['confidence'].iloc[0]:.0%} bootstrap intervals)"
    )
    ax.legend(fontsize="small")
    return fig


def plot_confusion_matrices(matrices: Mapping[str, pd.DataFrame]) -> Figure:
    """One confusion matrix per model (rows true, columns predicted; counts, shaded by row share).

    Drawn with ``imshow`` rather than scikit-learn's ``ConfusionMatrixDisplay``, which imports pyplot.
    """
    fig, axes = _subplots(1, len(matrices), figsize=(3.6 * len(matrices) + 0.4, 3.8), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        counts = matrix.to_numpy(dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(counts):
            ax.text(
                j,
                i,
                f"{count:.0f}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
            )
        ticks = range(len(matrix))
        ax.set_xticks(ticks, matrix.columns, rotation=30, ha="right")
        ax.set_yticks(ticks, matrix.index)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name.split(".", 1)[-1] if not name.startswith("baseline.") else name)
    return fig
