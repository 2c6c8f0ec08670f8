"""The report's figure of predicted label maps next to the truth, a few subjects, one slice each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from tlkedro.tl.reports.figures import _subplots
from tlkedro.tl.segmentation.metrics import subject_volumes


def _middle_slice(volume: np.ndarray) -> np.ndarray:
    """A 2D view of a subject's map: its middle slice along the first axis (itself when 2D)."""
    return volume if volume.ndim == 2 else _middle_slice(volume[volume.shape[0] // 2])


def plot_predicted_masks(
    images: np.ndarray,
    truth: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    labels: pd.DataFrame,
    class_names: Sequence[str],
    subjects: int = 4,
) -> Figure:
    """One row per subject (the first ``subjects`` in id order): image, truth, each model's prediction.

    Each panel is the middle slice of the subject's stacked slices (or of its volume).

    Args:
        images: ``(N, 1, *spatial)`` images of a split.
        truth: Its true label maps, the same shape.
        predicted: ``{model name: predicted label maps}``, each the same shape.
        labels: The split's labels table (``subject_id``, ``slice``).
        class_names: Every class, background first (the colours' legend).
        subjects: How many subjects to show.
    """
    image_volumes = subject_volumes(images, labels)
    maps = {"truth": subject_volumes(truth, labels)}
    maps.update({name: subject_volumes(p, labels) for name, p in predicted.items()})
    shown = sorted(image_volumes)[:subjects]
    columns = 1 + len(maps)
    fig, axes = _subplots(
        len(shown), columns, figsize=(2.0 * columns, 2.0 * len(shown)), squeeze=False
    )
    colours = ListedColormap(
        [
            "black",
            "tab:blue",
            "tab:gray",
            "white",
            "tab:red",
            "tab:green",
            "tab:orange",
            "tab:purple",
        ][: len(class_names)]
    )
    for row, subject in zip(axes, shown, strict=True):
        row[0].imshow(_middle_slice(image_volumes[subject]).T, cmap="gray", origin="lower")
        row[0].set_ylabel(subject, fontsize=7)
        for ax, (name, volumes) in zip(row[1:], maps.items(), strict=True):
            ax.imshow(
                _middle_slice(volumes[subject]).T,
                cmap=colours,
                vmin=0,
                vmax=len(class_names) - 1,
                origin="lower",
                interpolation="nearest",
            )
            if subject == shown[0]:
                ax.set_title(name, fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image", fontsize=8)
    fig.suptitle("labels: " + ", ".join(f"{i} {n}" for i, n in enumerate(class_names)), fontsize=7)
    return fig
