"""Per-subject Dice and HD95 (MONAI), and their means over subjects with BCa bootstrap intervals.

A subject is scored once, on its whole label map: a 2D model's slices of one subject are stacked back into
a volume (ordered by the labels' ``slice`` column) before Dice and the 95th-percentile Hausdorff distance are
computed, so a subject with many slices counts as much as one with few. Dice is per class, background
excluded; a class absent from both the truth and the prediction has no Dice (NaN) and is left out of the
subject's mean. HD95 is in voxels (of the model input's grid), averaged over the classes where it is
defined (both masks non-empty).

The intervals are the predictions tables' (``tlkedro.tl.evaluation.scores``): ``scipy.stats.bootstrap``
with BCa over subjects, paired (the same resampled subjects for both models) for differences.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

# The bootstrap every interval of the project uses (stratification aside: per-subject values here).
from tlkedro.tl.evaluation.scores import _bootstrap as bootstrap_interval

HD95 = "hd95"
DICE_MEAN = "dice_mean"
# Columns where higher is better; HD95 is a distance (lower is better).
HIGHER_IS_BETTER = {DICE_MEAN: True, HD95: False}


def subject_scores(
    prediction: np.ndarray, truth: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Dice per class, their mean and HD95 of one subject's label maps (same shape, class indices).

    Args:
        prediction: The predicted label map, ``(*spatial)`` (a volume, or stacked slices).
        truth: The true label map.
        class_names: Name of every class, index 0 the background (not scored).

    Returns:
        ``dice_<class>`` for every class but the background, ``dice_mean`` and ``hd95``.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    k = len(class_names)
    as_one_hot = [
        one_hot(torch.as_tensor(np.asarray(a, dtype=np.int64))[None, None], num_classes=k)
        for a in (prediction, truth)
    ]
    # ignore_empty=False: a class predicted where the truth has none scores 0 (MONAI's default gives NaN);
    # a class absent from both is set to NaN below.
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # per class absent from a map: NaN says it
        # MONAI 1.6's HD95 calls its own deprecated get_mask_edges argument, once per subject.
        warnings.simplefilter("ignore", FutureWarning)
        per_class = dice(*as_one_hot)[0].numpy().astype(float)
        distances = hd95(*as_one_hot)[0].numpy().astype(float)
    distances[~np.isfinite(distances)] = np.nan  # a class empty in one of the maps
    present = np.isin(
        np.arange(1, k), np.unique(np.concatenate([prediction.ravel(), truth.ravel()]))
    )
    per_class[~present] = np.nan  # absent from both: undefined, not a perfect score
    scores = {f"dice_{name}": float(v) for name, v in zip(class_names[1:], per_class, strict=True)}
    scores[DICE_MEAN] = _nanmean(per_class)
    scores[HD95] = _nanmean(distances)
    return scores


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def subject_volumes(maps: np.ndarray, labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each subject's label map: its rows of ``maps`` (``(N, *spatial)`` or ``(N, 1, *spatial)``) stacked.

    A subject with one row (a 3D model's volume) keeps it as it is; several rows (slices) are ordered by
    ``labels["slice"]`` and stacked along a new first axis.
    """
    if len(maps) != len(labels):
        raise ValueError(f"{len(maps)} label maps for {len(labels)} label rows")
    if maps.ndim > 3 and maps.shape[1] == 1:  # the channel axis of (N, 1, *spatial)
        maps = maps[:, 0]
    subjects = labels["subject_id"].astype(str).to_numpy()
    order = np.lexsort((labels["slice"].to_numpy(), subjects))
    volumes = {}
    for subject in pd.unique(subjects[order]):
        rows = order[subjects[order] == subject]
        volumes[subject] = maps[rows[0]] if len(rows) == 1 else np.stack([maps[r] for r in rows])
    return volumes


def subject_metrics(
    predicted: np.ndarray, truth: np.ndarray, labels: pd.DataFrame, class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per subject: ``subject_id``, ``dice_<class>``, ``dice_mean``, ``hd95``.

    Args:
        predicted: Predicted label maps, one per image row (``(N, 1, *spatial)`` or ``(N, *spatial)``).
        truth: The true label maps, the same shape (the ``<split>_masks`` array).
        labels: The split's labels table (``subject_id``, ``slice``), one row per image row.
        class_names: Every class, background first.
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted masks {predicted.shape} and true masks {truth.shape} differ")
    predicted_volumes = subject_volumes(predicted, labels)
    true_volumes = subject_volumes(truth, labels)
    rows = [
        {"subject_id": s, **subject_scores(predicted_volumes[s], true_volumes[s], class_names)}
        for s in predicted_volumes
    ]
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class MeanInterval:
    """The mean of a per-subject score (or of a paired difference) with its bootstrap interval."""

    metric: str
    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    method: str = "BCa"

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0."""
        return bool(self.low > 0 or self.high < 0)


def mean_interval(
    values: np.ndarray | pd.Series,
    metric: str,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> MeanInterval:
    """The mean of per-subject ``values`` over the subjects where it is defined, with its interval."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    estimate = float(values.mean()) if len(values) else float("nan")
    low, high = bootstrap_interval(
        lambda index: values[index].mean(axis=-1),
        [np.arange(len(values))],
        estimate,
        confidence,
        n_resamples,
        seed,
        method,
    )
    return MeanInterval(metric, estimate, low, high, len(values), confidence, method)


def paired_mean_difference(
    table_a: pd.DataFrame, table_b: pd.DataFrame, metric: str, **kwargs: float | int | str
) -> MeanInterval:
    """``mean(a - b)`` of a per-subject metric over the subjects both tables score, with its interval.

    Each resample draws the same subjects for both models, so the subjects' difficulty cancels out.

    Raises:
        ValueError: If the tables share no subject with the metric defined in both.
    """
    joined = table_a[["subject_id", metric]].merge(
        table_b[["subject_id", metric]], on="subject_id", suffixes=("_a", "_b")
    )
    difference = (joined[f"{metric}_a"] - joined[f"{metric}_b"]).to_numpy(dtype=float)
    if not np.isfinite(difference).any():
        raise ValueError(f"the two tables share no subject with {metric} defined in both")
    return mean_interval(difference, metric, **kwargs)  # type: ignore[arg-type]
