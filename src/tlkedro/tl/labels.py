"""Label columns as arrays: the target, optional auxiliary labels and the covariates a model's head takes.

Each function names the column and a few subjects when a value is missing or malformed, so a bad labels
table fails before training with a message that says what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tlkedro.tl.objectives import Task


def target_values(labels: pd.DataFrame, target: str, task: Task) -> np.ndarray:
    """The target column as int64 class indices (classification) or float32 values (regression).

    Raises:
        ValueError: If the column is missing or has missing values, or classification targets are not
            class indices ``0..C-1``.
    """
    if target not in labels.columns:
        raise ValueError(
            f"target {target!r} is not a column of the labels; columns: {list(labels.columns)}"
        )
    values = labels[target].to_numpy()
    missing = pd.isna(values)
    if missing.any():
        subjects = labels.loc[missing, "subject_id"].head(5).tolist()
        raise ValueError(
            f"target {target!r} is missing in {missing.sum()} rows (subjects {subjects}, ...)"
        )
    if task == "regression":
        return values.astype(np.float32)
    numeric = pd.to_numeric(values, errors="coerce")
    if pd.isna(numeric).any() or (numeric != np.round(numeric)).any() or (numeric < 0).any():
        raise ValueError(
            f"classification target {target!r} must hold class indices 0, 1, ...; got values "
            f"{sorted(pd.unique(values).tolist())[:10]}"
        )
    return numeric.astype(np.int64)


def optional_values(labels: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric label column as float32, NaN where a row has no label (auxiliary tasks mask those).

    Raises:
        ValueError: If the column is missing or holds values that are not numbers.
    """
    if column not in labels.columns:
        raise ValueError(
            f"label column {column!r} is not in the labels; columns: {list(labels.columns)}"
        )
    values = pd.to_numeric(labels[column], errors="coerce")
    wrong = values.isna() & labels[column].notna()
    if wrong.any():
        raise ValueError(
            f"label column {column!r} must hold numbers; got {labels[column][wrong].head(3).tolist()}"
        )
    return values.to_numpy(dtype=np.float32)


def covariate_values(labels: pd.DataFrame, columns: Sequence[str]) -> np.ndarray | None:
    """The covariate columns as a ``(N, K)`` float32 array, or ``None`` for no columns.

    Raises:
        ValueError: If a column is missing, not numeric, or has missing values (e.g. ``head_scale`` of
            scans that were not spatially normalised), naming the column and some subjects.
    """
    if not columns:
        return None
    values = np.stack([optional_values(labels, column) for column in columns], axis=1)
    for k, column in enumerate(columns):
        missing = np.isnan(values[:, k])
        if missing.any():
            subjects = labels.loc[missing, "subject_id"].head(5).tolist()
            raise ValueError(
                f"covariate {column!r} is missing in {missing.sum()} rows (subjects {subjects}, ...); "
                "a covariate must be known for every subject (head_scale needs spatial normalisation)"
            )
    return values
