"""Node of the cross-validation pipeline."""

from __future__ import annotations

import pandas as pd

from tlkedro.imaging.folds import assign_folds
from tlkedro.plan import CrossValidation


def split_into_folds(labels: pd.DataFrame, *, config: CrossValidation) -> pd.DataFrame:
    """Assign every subject of the split to one fold per repetition, stratified by sex and age
    (by class for 2D images).

    Args:
        labels: The split's label table (one row per image; a subject's rows share its fold).
        config: The cross-validation settings.

    Returns:
        ``subject_id``, ``repeat``, ``fold``.
    """
    # 2D images carry a class `label` instead of age and sex: the folds are stratified by it.
    columns = ["subject_id", "age", "sex", *(["label"] if "label" in labels else [])]
    subjects = labels.drop_duplicates("subject_id")[columns]
    return assign_folds(
        subjects.reset_index(drop=True),
        k=config.folds,
        repeats=config.repeats,
        seed=config.seed,
        age_bins=config.age_bins,
    )
