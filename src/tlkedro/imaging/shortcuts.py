"""Shortcut check: can simple global features of the scans already predict a label?

A cohort whose labels leak through a trivial cue (brighter images for men, larger brains for the old,
files sorted by age) rewards a network for learning the cue instead of the anatomy, and makes every
transfer-learning comparison on it meaningless. :func:`scan_features` summarises each scan by a few
numbers that need no anatomy: the number of brain (nonzero) voxels, intensity statistics over them and
the position of the file in the sorted file listing. :func:`shortcut_check` fits a cross-validated
linear model on them (logistic regression for a class, ridge regression for a number) and reports its
score beside chance, the score of a model that always predicts the training folds' majority class or
mean. A network should clearly beat this baseline; if the baseline already solves the task, the cohort
has a shortcut.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, mean_absolute_error
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlkedro.parallel import imap_ordered

INTENSITY_PERCENTILES = (5, 25, 50, 75, 95)
# Share of brain voxels darker than this fraction of the 95th percentile (about white matter): roughly
# CSF and dark grey matter, the cue that atrophy moves.
_DARK_LEVEL = 0.55
FEATURES = (
    "brain_voxels",
    "mean",
    "sd",
    *(f"p{q}" for q in INTENSITY_PERCENTILES),
    "dark_fraction",
    "file_order",
)
"""Columns of :func:`scan_features`."""


def global_features(path: str | Path) -> dict[str, float]:
    """Label-free summary statistics of one scan's nonzero (brain) voxels.

    Args:
        path: A NIfTI file, brain-extracted (zero outside the brain).

    Returns:
        ``brain_voxels`` (count of nonzero voxels), ``mean``, ``sd``, the percentiles ``p5`` ... ``p95``
        of the brain's intensities and ``dark_fraction`` (share darker than 0.55 x its 95th percentile).
    """
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    brain = data[data != 0]
    if brain.size == 0:
        raise ValueError(f"{path} has no nonzero voxels")
    percentiles = np.percentile(brain, INTENSITY_PERCENTILES)
    return {
        "brain_voxels": float(brain.size),
        "mean": float(brain.mean()),
        "sd": float(brain.std()),
        **{f"p{q}": float(v) for q, v in zip(INTENSITY_PERCENTILES, percentiles, strict=True)},
        "dark_fraction": float((brain < _DARK_LEVEL * percentiles[-1]).mean()),
    }


def scan_features(paths: Sequence[str | Path], workers: int | None = None) -> pd.DataFrame:
    """:func:`global_features` of every scan, plus ``file_order``, computed in a process pool.

    Args:
        paths: The scans, one row each in this order.
        workers: Processes reading the scans (``None``: one per core).

    Returns:
        One row per path with the :data:`FEATURES` columns; ``file_order`` is the rank of the path in
        sorted order, as a directory listing or a glob returns the files.
    """
    rows = list(imap_ordered(global_features, [str(p) for p in paths], workers=workers))
    table = pd.DataFrame(rows, columns=[f for f in FEATURES if f != "file_order"])
    table["file_order"] = pd.Series([str(p) for p in paths]).rank(method="first").to_numpy() - 1
    return table


@dataclasses.dataclass(frozen=True)
class ShortcutReport:
    """Cross-validated score of a linear model on global features, against chance.

    Attributes:
        task: ``classification`` (the metric is accuracy, higher is better) or ``regression`` (mean
            absolute error, lower is better).
        metric: ``accuracy`` or ``mae``.
        score: The model on all features together.
        chance: Always the training folds' majority class (classification) or mean (regression).
        per_feature: The same model on each feature alone.
        n_subjects: Rows scored.
    """

    task: Literal["classification", "regression"]
    metric: str
    score: float
    chance: float
    per_feature: dict[str, float]
    n_subjects: int

    @property
    def gain(self) -> float:
        """Improvement over chance in the metric's units (positive: better than chance)."""
        return (
            self.score - self.chance if self.task == "classification" else self.chance - self.score
        )

    @property
    def best_feature(self) -> tuple[str, float]:
        """The single feature whose model scores best, and that score."""
        pick = max if self.task == "classification" else min
        name = pick(self.per_feature, key=self.per_feature.__getitem__)
        return name, self.per_feature[name]


def shortcut_check(
    features: pd.DataFrame,
    target: Sequence[float] | np.ndarray | pd.Series,
    task: Literal["classification", "regression"],
    *,
    folds: int = 5,
    seed: int = 0,
) -> ShortcutReport:
    """How well a linear model on ``features`` predicts ``target``, under k-fold cross-validation.

    Features are standardised within each training fold; classification uses an L2-regularised
    logistic regression and stratified folds, regression a ridge regression whose penalty is chosen by
    an inner leave-one-out search (``RidgeCV``). Every score is computed from out-of-fold predictions.

    Args:
        features: One row per subject, numeric columns (e.g. from :func:`scan_features`).
        target: One label per row: class labels, or numbers.
        task: ``classification`` or ``regression``.
        folds: Number of cross-validation folds.
        seed: Seed of the fold assignment.

    Returns:
        The score on all features, on each feature alone, and chance.
    """
    y = np.asarray(target)
    x = features.to_numpy(dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} targets")
    if task == "classification":
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        baseline, score = DummyClassifier(strategy="most_frequent"), accuracy_score
        metric = "accuracy"
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        baseline, score = DummyRegressor(strategy="mean"), mean_absolute_error
        metric = "mae"

    def cross_validated(estimator: object, columns: np.ndarray) -> float:
        return float(score(y, cross_val_predict(estimator, columns, y, cv=splitter)))

    return ShortcutReport(
        task=task,
        metric=metric,
        score=cross_validated(model, x),
        chance=cross_validated(baseline, x),
        per_feature={
            name: cross_validated(model, x[:, [i]]) for i, name in enumerate(features.columns)
        },
        n_subjects=len(y),
    )
