"""Baselines that every deep model must beat, as predictions tables on the same splits or folds.

Kinds (``BASELINE_KINDS``):

- ``trivial``: the training subjects' mean (regression); the majority class of the training subjects,
  with the training class prior as its probabilities (classification). Its AUROC is 0.5.
- ``linear``: scikit-learn's ``RidgeCV`` (regression; leave-one-out choice of the penalty) or
  ``LogisticRegressionCV`` (classification; stratified inner k-fold) on standardised features of the
  downsampled model-input images: each image average-pooled to ``pooled_size`` voxels per spatial axis,
  a subject's images (its slices) averaged; for 1D ROI time series, ``(N, ROIs, T)``, on each series'
  ROI correlation matrix (its upper triangle: the functional connectome, nilearn's
  ``ConnectivityMeasure``), what a connectivity study would fit.
- ``covariate``: the same linear models on one label column only, by default ``head_scale`` (the
  affine scale of the normalisation, a head-size proxy): what a model could learn from head size alone.
  Skipped, with a warning, where the labels lack the column.

Every baseline is fitted on the training subjects only; the penalty is chosen by an inner
cross-validation within them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tlkedro.imaging.folds import check_fold_leakage, fold_subjects
from tlkedro.tl.data import subject_labels
from tlkedro.tl.labels import target_values

logger = logging.getLogger(__name__)

BASELINE_KINDS = ("trivial", "linear", "covariate")
DEFAULT_COVARIATE = "head_scale"
_RIDGE_ALPHAS = np.logspace(-3, 5, 17)
_LOGISTIC_CS = np.logspace(-4, 2, 7)
_CHUNK = 256


class MissingCovariateError(ValueError):
    """The labels lack the covariate column a ``covariate`` baseline needs."""


def subject_targets(labels: pd.DataFrame, target: str, task: str) -> pd.Series:
    """One target per subject (index: subject id, sorted): its class, or the mean of its rows' values.

    Raises:
        ValueError: The column is missing or invalid, or a subject's rows carry different classes.
    """
    values = target_values(labels, target, task)
    subjects = labels["subject_id"].astype(str).reset_index(drop=True)
    if task == "classification":
        return subject_labels(subjects, values)
    return pd.Series(values.astype(float), index=subjects.to_numpy()).groupby(level=0).mean()


def image_features(images: np.ndarray, labels: pd.DataFrame, pooled_size: int = 8) -> pd.DataFrame:
    """Downsampled images as features, one row per subject (index: subject id, sorted).

    Each ``(1, ...)`` image is average-pooled (torch's adaptive average pooling) to ``pooled_size``
    voxels per spatial axis and flattened; the rows of one subject are averaged. Memory-mapped arrays
    are read in chunks.

    ROI time series, ``(N, ROIs, T)``, give their correlation matrices' upper triangles instead
    (``pooled_size`` unused): pooling a z-scored series over time would leave nothing of its signal.

    Raises:
        ValueError: ``images`` and ``labels`` have different numbers of rows, or the images are not
            ``(N, C, T)``, ``(N, C, H, W)`` or ``(N, C, X, Y, Z)``.
    """
    if len(images) != len(labels):
        raise ValueError(
            f"images have {len(images)} rows but the labels {len(labels)}: they must be row-aligned"
        )
    spatial = images.ndim - 2
    if spatial not in (1, 2, 3):
        raise ValueError(
            f"images must be (N, C, T), (N, C, H, W) or (N, C, X, Y, Z); got shape {images.shape}"
        )
    if spatial == 1:
        return _connectome_features(images, labels)
    pool = (
        torch.nn.functional.adaptive_avg_pool2d
        if spatial == 2
        else torch.nn.functional.adaptive_avg_pool3d
    )
    chunks = []
    for start in range(0, len(images), _CHUNK):
        batch = torch.as_tensor(np.asarray(images[start : start + _CHUNK], dtype=np.float32))
        chunks.append(pool(batch, pooled_size).flatten(1).numpy())
    features = pd.DataFrame(
        np.concatenate(chunks), index=labels["subject_id"].astype(str).to_numpy()
    )
    return features.groupby(level=0).mean()


def _connectome_features(series: np.ndarray, labels: pd.DataFrame) -> pd.DataFrame:
    from nilearn.connectome import ConnectivityMeasure  # nilearn is slow to import

    measure = ConnectivityMeasure(kind="correlation", vectorize=True, discard_diagonal=True)
    # nilearn takes (time points, ROIs) per subject.
    vectors = measure.fit_transform([np.asarray(s, dtype=np.float64).T for s in series])
    features = pd.DataFrame(vectors, index=labels["subject_id"].astype(str).to_numpy())
    return features.groupby(level=0).mean()


def covariate_features(labels: pd.DataFrame, column: str = DEFAULT_COVARIATE) -> pd.DataFrame:
    """One label column as a feature, its mean per subject (index: subject id, sorted).

    Raises:
        MissingCovariateError: The labels have no such column, or it is empty for every row (as
            ``head_scale`` is for scans that were not spatially normalised).
        ValueError: The column has missing or non-numeric values for some rows only.
    """
    if column not in labels.columns:
        raise MissingCovariateError(
            f"the covariate baseline needs the label column {column!r}, which the labels lack "
            f"(columns: {list(labels.columns)})"
        )
    values = pd.to_numeric(labels[column], errors="coerce")
    if values.isna().all():
        raise MissingCovariateError(f"the label column {column!r} has no values")
    if values.isna().any():
        subjects = labels.loc[values.isna(), "subject_id"].astype(str).unique()[:5]
        raise ValueError(
            f"covariate {column!r} is missing or not a number for subjects {list(subjects)}"
        )
    return values.groupby(labels["subject_id"].astype(str).to_numpy()).mean().to_frame(column)


def _classes(*targets: pd.Series) -> int:
    return max(2, int(max(t.max() for t in targets)) + 1)


def _table(
    test_targets: pd.Series, task: str, prediction: np.ndarray, probabilities: np.ndarray | None
) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "subject_id": test_targets.index.astype(str),
            "target": test_targets.to_numpy(),
            "prediction": prediction,
        }
    )
    if task == "classification":
        if probabilities.shape[1] == 2:
            table["probability"] = probabilities[:, 1]
        else:
            for k in range(probabilities.shape[1]):
                table[f"probability_{k}"] = probabilities[:, k]
    return table


def _linear_model(task: str, train_targets: pd.Series, inner_folds: int, seed: int):
    if task == "regression":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=_RIDGE_ALPHAS))
    smallest = int(train_targets.value_counts().min())
    if train_targets.nunique() < 2 or smallest < 2:
        raise ValueError(
            "a logistic baseline needs at least 2 training subjects of each of at least 2 classes; class "
            f"counts: {train_targets.value_counts().sort_index().to_dict()}"
        )
    inner = StratifiedKFold(min(inner_folds, smallest), shuffle=True, random_state=seed)
    return make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=_LOGISTIC_CS,
            l1_ratios=(0.0,),  # L2
            cv=inner,
            scoring="neg_log_loss",
            max_iter=5000,
            use_legacy_attributes=False,
        ),
    )


def fit_predict(
    kind: str,
    train_features: pd.DataFrame | None,
    train_targets: pd.Series,
    test_features: pd.DataFrame | None,
    test_targets: pd.Series,
    task: str,
    inner_folds: int = 5,
    seed: int = 0,
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Fit one baseline on per-subject features and targets; its predictions table on the test subjects.

    Args:
        kind: ``trivial`` (features unused, may be ``None``), ``linear`` or ``covariate``.
        train_features: One row per training subject, indexed like ``train_targets``.
        train_targets: Target per training subject (``subject_targets``).
        test_features: As ``train_features``, for the test subjects.
        test_targets: As ``train_targets``.
        task: ``regression`` or ``classification``.
        inner_folds: Folds of the inner cross-validation that picks the logistic penalty.
        seed: Seed of the inner folds.
        num_classes: Classes of the task (probability columns); ``None``: the highest class seen, plus 1.

    Raises:
        ValueError: Unknown kind, or subjects without features.
    """
    if kind not in BASELINE_KINDS:
        raise ValueError(f"baseline kind {kind!r} is unknown; valid: {', '.join(BASELINE_KINDS)}")
    if task == "classification":
        classes = num_classes or _classes(train_targets, test_targets)
    if kind == "trivial":
        n = len(test_targets)
        if task == "regression":
            return _table(test_targets, task, np.full(n, float(train_targets.mean())), None)
        prior = np.bincount(train_targets.to_numpy(int), minlength=classes) / len(train_targets)
        return _table(test_targets, task, np.full(n, int(prior.argmax())), np.tile(prior, (n, 1)))
    for features, targets, split in (
        (train_features, train_targets, "training"),
        (test_features, test_targets, "test"),
    ):
        absent = targets.index.difference(features.index)
        if len(absent):
            raise ValueError(
                f"{len(absent)} {split} subjects have no features (e.g. {list(absent[:5])})"
            )
    model = _linear_model(task, train_targets, inner_folds, seed)
    # A few hundred subjects by a few hundred features: threaded BLAS costs more than it saves here
    # (a hundred times more on a loaded machine).
    with threadpool_limits(limits=1):
        model.fit(train_features.loc[train_targets.index].to_numpy(), train_targets.to_numpy())
    x_test = test_features.loc[test_targets.index].to_numpy()
    if task == "regression":
        return _table(test_targets, task, model.predict(x_test), None)
    probabilities = np.zeros((len(test_targets), classes))
    probabilities[:, model.classes_.astype(int)] = model.predict_proba(x_test)
    return _table(test_targets, task, probabilities.argmax(axis=1), probabilities)


def _features(
    kind: str, images: np.ndarray, labels: pd.DataFrame, covariate: str, pooled_size: int
) -> pd.DataFrame | None:
    if kind == "linear":
        return image_features(images, labels, pooled_size)
    if kind == "covariate":
        return covariate_features(labels, covariate)
    return None


def baseline_predictions(
    kind: str,
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    test_images: np.ndarray,
    test_labels: pd.DataFrame,
    task: str,
    target: str,
    covariate: str = DEFAULT_COVARIATE,
    pooled_size: int = 8,
    inner_folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """One baseline fitted on a training split and evaluated on a test split (e.g. finetune and test).

    Returns:
        A predictions table (``subject_id``, ``target``, ``prediction``, probabilities) of the test subjects.

    Raises:
        MissingCovariateError: ``kind`` is ``covariate`` and the labels lack the column.
        ValueError: Unknown kind, misaligned images and labels, or invalid targets.
    """
    train = _features(kind, train_images, train_labels, covariate, pooled_size)
    test = _features(kind, test_images, test_labels, covariate, pooled_size)
    return fit_predict(
        kind,
        train,
        subject_targets(train_labels, target, task),
        test,
        subject_targets(test_labels, target, task),
        task,
        inner_folds,
        seed,
    )


def cross_validated_baselines(
    images: np.ndarray,
    labels: pd.DataFrame,
    folds: pd.DataFrame,
    task: str,
    target: str,
    kinds: Sequence[str] = BASELINE_KINDS,
    covariate: str = DEFAULT_COVARIATE,
    pooled_size: int = 8,
    inner_folds: int = 5,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Out-of-fold predictions of each baseline kind on the folds the models use.

    Args:
        images: ``(N, 1, ...)`` images of the cross-validated subjects.
        labels: One row per image row with ``subject_id``, the target and (for ``covariate``) its column.
        folds: The fold table (``tlkedro.imaging.folds.assign_folds``) of exactly these subjects.
        task: ``regression`` or ``classification``.
        target: The target column.
        kinds: Baseline kinds to fit; ``covariate`` is skipped with a warning where the labels lack
            ``covariate``.
        covariate: The covariate baseline's label column.
        pooled_size: Voxels per spatial axis of the downsampled images (``linear``).
        inner_folds: Folds of the logistic baseline's inner cross-validation.
        seed: Seed of the inner folds.

    Returns:
        ``{kind: predictions table}`` with ``repeat`` and ``fold`` columns: every subject once per repeat.

    Raises:
        ValueError: Unknown kind, or the folds and the labels hold different subjects.
        FoldLeakageError: The fold table puts a subject in two folds of a repeat.
    """
    unknown = [k for k in kinds if k not in BASELINE_KINDS]
    if unknown:
        raise ValueError(
            f"baseline kinds {unknown} are unknown; valid: {', '.join(BASELINE_KINDS)}"
        )
    check_fold_leakage(folds)
    targets = subject_targets(labels, target, task)
    in_folds = set(folds["subject_id"].astype(str))
    if in_folds != set(targets.index):
        only_labels = sorted(set(targets.index) - in_folds)[:5]
        only_folds = sorted(in_folds - set(targets.index))[:5]
        raise ValueError(
            "the folds and the labels must hold the same subjects; only in the labels: "
            f"{only_labels or 'none'}, only in the folds: {only_folds or 'none'}"
        )
    classes = _classes(targets) if task == "classification" else None
    results = {}
    for kind in kinds:
        try:
            features = _features(kind, images, labels, covariate, pooled_size)
        except MissingCovariateError as error:
            logger.warning("covariate baseline skipped: %s", error)
            continue
        parts = []
        for (repeat, fold), _ in folds.groupby(["repeat", "fold"], sort=True):
            train, test = fold_subjects(folds, repeat, fold)
            predictions = fit_predict(
                kind,
                features,
                targets.loc[train],
                features,
                targets.loc[test],
                task,
                inner_folds,
                seed,
                classes,
            )
            parts.append(predictions.assign(repeat=repeat, fold=fold))
        results[kind] = pd.concat(parts, ignore_index=True)
    return results
