"""The predictions table: checking it, pooling cross-validation repeats, pairing two models' tables."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

TASKS = ("regression", "classification")
_PROBABILITY_K = re.compile(r"probability_(\d+)")


def probability_columns(table: pd.DataFrame) -> list[str]:
    """``["probability"]`` (class 1 of two) or the ``probability_<k>`` columns in class order; or ``[]``."""
    if "probability" in table.columns:
        return ["probability"]
    numbered = [c for c in table.columns if _PROBABILITY_K.fullmatch(str(c))]
    return sorted(numbered, key=lambda c: int(_PROBABILITY_K.fullmatch(c).group(1)))


def class_probabilities(table: pd.DataFrame) -> np.ndarray:
    """``(n, C)`` class probabilities of a classification table (two columns from ``probability``)."""
    columns = probability_columns(table)
    values = table[columns].to_numpy(dtype=float)
    return (
        np.column_stack([1 - values[:, 0], values[:, 0]]) if columns == ["probability"] else values
    )


def check_predictions(table: pd.DataFrame, task: str, name: str = "predictions") -> None:
    """Check that ``table`` follows the predictions-table contract (see ``tlkedro.tl.evaluation``).

    Raises:
        ValueError: Naming ``name`` and the reason: an unknown task, a missing column, missing values,
            or a subject with two rows in one repeat.
    """
    if task not in TASKS:
        raise ValueError(f"{name}: task {task!r} is unknown; valid: {', '.join(TASKS)}")
    required = ["subject_id", "target", "prediction"]
    missing = [c for c in required if c not in table.columns]
    probabilities = probability_columns(table)
    if task == "classification" and not probabilities:
        missing.append("probability (or probability_<k>)")
    if missing:
        raise ValueError(
            f"{name}: the predictions table lacks {', '.join(missing)} (columns: {list(table.columns)})"
        )
    if table.empty:
        raise ValueError(f"{name}: the predictions table has no rows")
    for column in [*required, *probabilities, *(c for c in ("repeat", "fold") if c in table)]:
        gaps = int(table[column].isna().sum())
        if gaps:
            raise ValueError(f"{name}: column {column!r} is missing in {gaps} of {len(table)} rows")
    keys = ["subject_id", "repeat"] if "repeat" in table.columns else ["subject_id"]
    repeated = table[table.duplicated(keys, keep=False)]
    if len(repeated):
        raise ValueError(
            f"{name}: {repeated['subject_id'].nunique()} subjects have more than one row"
            + (" in one repeat" if "repeat" in keys else "")
            + f" (e.g. {', '.join(map(str, repeated['subject_id'].unique()[:5]))}); the table holds "
            "one prediction per subject (per repeat for cross-validation)"
        )


def repeat_count(table: pd.DataFrame) -> int:
    """How many cross-validation repeats the table holds (1 without a ``repeat`` column)."""
    return int(table["repeat"].nunique()) if "repeat" in table.columns else 1


def pool_repeats(table: pd.DataFrame, task: str, name: str = "predictions") -> pd.DataFrame:
    """One row per subject: its out-of-fold predictions averaged over the repeats.

    Regression predictions are averaged; class probabilities are averaged and the predicted class is
    the most probable one after averaging (class 1 when its probability is at least 0.5). A table
    without repeats comes back as ``subject_id``, ``target``, ``prediction`` and its probabilities.

    Raises:
        ValueError: The table breaks the contract, or a subject's target differs between repeats.
    """
    check_predictions(table, task, name)
    probabilities = probability_columns(table)
    columns = ["subject_id", "target", "prediction", *probabilities]
    frame = table[columns].assign(subject_id=table["subject_id"].astype(str))
    if repeat_count(table) == 1:
        return frame.sort_values("subject_id", ignore_index=True)
    grouped = frame.groupby("subject_id", sort=True)
    conflicting = grouped["target"].nunique()
    if (conflicting > 1).any():
        raise ValueError(
            f"{name}: the target of subjects {conflicting[conflicting > 1].index[:5].tolist()} "
            "differs between repeats"
        )
    pooled = grouped[["target", "prediction", *probabilities]].mean()
    if task == "classification":
        pooled["target"] = pooled["target"].astype(int)
        # Ties go to the lower class, as argmax does.
        pooled["prediction"] = class_probabilities(pooled).argmax(axis=1)
    return pooled.reset_index()


def paired_tables(
    table_a: pd.DataFrame, table_b: pd.DataFrame, task: str, names: tuple[str, str] = ("a", "b")
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two models' pooled predictions on the subjects both have, in the same (sorted) subject order.

    Subjects only one table has are left out of the comparison, with a warning saying how many.

    Raises:
        ValueError: The tables share no subject, or give a shared subject different targets.
    """
    a, b = pool_repeats(table_a, task, names[0]), pool_repeats(table_b, task, names[1])
    common = np.intersect1d(a["subject_id"], b["subject_id"])
    if len(common) == 0:
        raise ValueError(
            f"{names[0]} and {names[1]} share no subject: a paired comparison needs predictions for the "
            "same subjects (the same test split or folds)"
        )
    if len(common) < max(len(a), len(b)):
        logger.warning(
            "%s (%d subjects) and %s (%d subjects) are compared on the %d subjects they share",
            *(names[0], len(a), names[1], len(b), len(common)),
        )
    a = a.set_index("subject_id").loc[common].reset_index()
    b = b.set_index("subject_id").loc[common].reset_index()
    differ = a["target"].to_numpy() != b["target"].to_numpy()
    if differ.any():
        raise ValueError(
            f"{names[0]} and {names[1]} give {int(differ.sum())} shared subjects different targets "
            f"(e.g. {', '.join(a.loc[differ, 'subject_id'][:5])}): they were not evaluated on the same "
            "labels"
        )
    return a, b


def split_models(table: pd.DataFrame, column: str = "model") -> dict[str, pd.DataFrame]:
    """A long table of several models' predictions as ``{model: its predictions}`` (``column`` dropped).

    Raises:
        ValueError: ``column`` is missing.
    """
    if column not in table.columns:
        raise ValueError(
            f"the long predictions table has no {column!r} column: {list(table.columns)}"
        )
    return {
        str(name): rows.drop(columns=column).reset_index(drop=True)
        for name, rows in table.groupby(column, sort=False)
    }
