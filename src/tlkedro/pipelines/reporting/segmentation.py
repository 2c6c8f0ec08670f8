"""The segmentation section of the reports: the ``segment`` variants compared with intervals, and masks.

Each variant's test Dice (mean over subjects, ``dice_mean``) and HD95 come with 95% BCa intervals over
subjects; each variant that has a baseline (a ``scratch`` variant of the same ``train_size``) gets the
paired difference to it, with its interval, and a verdict that claims a difference only where the interval
excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tlkedro.tl.segmentation import (
    DICE_MEAN,
    HD95,
    HIGHER_IS_BETTER,
    MeanInterval,
    mean_interval,
    paired_mean_difference,
    plot_predicted_masks,
)


def _verdict(difference: MeanInterval, metric: str, baseline: str) -> str:
    if not difference.excludes_zero:
        return f"not distinguishable from {baseline}"
    better = (difference.estimate > 0) == HIGHER_IS_BETTER[metric]
    return f"{'better' if better else 'worse'} than {baseline}"


def compare_segmenters(
    *tables: pd.DataFrame,
    names: Sequence[str],
    baselines: Mapping[str, str | None],
    settings: Mapping[str, Mapping[str, object]],
    split: str = "test",
) -> tuple[pd.DataFrame, str]:
    """One row per variant: Dice and HD95 with intervals, the paired Dice difference to its baseline.

    Args:
        *tables: Each variant's per-subject metrics of ``split``, in the order of ``names``.
        names: The variants' namespaces (``segment.full``).
        baselines: Each variant's baseline namespace, or ``None`` (a baseline itself, or none exists).
        settings: Each variant's ``strategy``, ``init_from`` and ``train_size``, shown in the table.
        split: The split the tables score.

    Returns:
        The comparison table and its markdown section.
    """
    by_name = dict(zip(names, tables, strict=True))
    rows = []
    for name, table in by_name.items():
        row: dict[str, object] = {"variant": name, **settings[name], "n_subjects": len(table)}
        for metric in (DICE_MEAN, HD95):
            interval = mean_interval(table[metric], metric)
            row.update(
                {
                    metric: interval.estimate,
                    f"{metric}_low": interval.low,
                    f"{metric}_high": interval.high,
                }
            )
        baseline = baselines.get(name)
        row["baseline"] = baseline or ""
        if baseline:
            difference = paired_mean_difference(table, by_name[baseline], DICE_MEAN)
            row.update(
                {
                    "dice_difference": difference.estimate,
                    "dice_difference_low": difference.low,
                    "dice_difference_high": difference.high,
                    "verdict": _verdict(difference, DICE_MEAN, baseline.rpartition(".")[2]),
                }
            )
        rows.append(row)
    comparison = pd.DataFrame(rows)
    return comparison, _markdown(comparison, split)


def _interval(row: pd.Series, metric: str) -> str:
    value, low, high = row[metric], row[f"{metric}_low"], row[f"{metric}_high"]
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _size(train_size: object) -> str:
    """``all`` for no ``train_size``; a count without the float that a column with gaps made of it."""
    if train_size is None or pd.isna(train_size):
        return "all"
    return f"{train_size:g}"


def _markdown(comparison: pd.DataFrame, split: str) -> str:
    lines = [
        "# Segmentation",
        "",
        f"Mean over {split} subjects of each subject's Dice (tissue classes, background excluded) and "
        "HD95 (voxels), with 95% BCa bootstrap intervals over subjects; the Dice difference to the "
        "baseline (scratch at the same training-set size) is paired by subject.",
        "",
        "| variant | strategy | train size | subjects | Dice | HD95 | Dice − baseline | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baselines = set(comparison["baseline"])
    for _, row in comparison.iterrows():
        if row["baseline"]:
            difference, verdict = _interval(row, "dice_difference"), row["verdict"]
        else:
            difference, verdict = "", "baseline" if row["variant"] in baselines else ""
        lines.append(
            f"| {row['variant']} | {row['strategy']} | {_size(row['train_size'])} | "
            f"{row['n_subjects']} | {_interval(row, DICE_MEAN)} | {_interval(row, HD95)} | "
            f"{difference} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def plot_segmentations(
    images: np.ndarray,
    masks: np.ndarray,
    labels: pd.DataFrame,
    *predicted: np.ndarray,
    names: Sequence[str],
    class_names: Sequence[str],
) -> Figure:
    """A few subjects' image, true label map and every variant's prediction (``plot_predicted_masks``)."""
    return plot_predicted_masks(
        images,
        masks,
        {name.rpartition(".")[2]: p for name, p in zip(names, predicted, strict=True)},
        labels,
        class_names,
    )
