"""Per-class metrics and confusion matrices of classification predictions tables, for the reports.

A headline metric over classes (macro AUROC, balanced accuracy) can hide one class that the model never
gets right. Per class ``k`` the report gives, each with its bootstrap interval over subjects from
``tlkedro.tl.evaluation.metric_interval`` (the same resampling as the headline metrics):

- ``recall`` (sensitivity): the share of class-``k`` subjects predicted ``k``, resampled over them;
- ``precision``: the share of subjects predicted ``k`` that are ``k``, resampled over those;
- ``auroc``: one-vs-rest AUROC of the probability of ``k`` (classes ``k`` and "not ``k``" resampled
  separately);
- ``f1``, the harmonic mean of the two point estimates (no interval).

A cross-validated table's repeats are pooled first (``pool_repeats``), so each subject counts once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from tlkedro.tl import evaluation
from tlkedro.tl.evaluation.predictions import class_probabilities
from tlkedro.tl.reports.tables import markdown_table

CLASS_METRICS = ("recall", "precision", "auroc")
"""The per-class metrics given with an interval (``f1`` is given without)."""

CODED_TARGETS = {"sex": ("female", "male")}
"""Targets whose class indices the manifest fixes (docs/architecture.md: ``sex`` is 0 female, 1 male)."""


def class_names(labels: pd.DataFrame | None, target: str, num_classes: int) -> list[str]:
    """The name of each class index: from the labels' ``<target>_name`` column where they have one
    (2D images: ``label_name``), else the manifest's coding (``CODED_TARGETS``), else ``class <k>``."""
    coded = CODED_TARGETS.get(target, ())
    names = [coded[k] if k < len(coded) else f"class {k}" for k in range(num_classes)]
    column = f"{target}_name"
    if labels is not None and column in labels and target in labels:
        pairs = labels[[target, column]].drop_duplicates()
        for index, name in zip(pairs[target], pairs[column], strict=True):
            if 0 <= int(index) < num_classes:
                names[int(index)] = str(name)
    return names


def _binary(
    subject_id: pd.Series, target: np.ndarray, prediction: np.ndarray, probability: np.ndarray
):
    return pd.DataFrame(
        {
            "subject_id": subject_id.to_numpy(),
            "target": target.astype(int),
            "prediction": prediction.astype(int),
            "probability": probability,
        }
    )


def _interval(table: pd.DataFrame, metric: str, settings: dict) -> evaluation.Interval | None:
    return (
        evaluation.metric_interval(table, metric, "classification", **settings)
        if len(table)
        else None
    )


def per_class_table(
    tables: Mapping[str, pd.DataFrame],
    names: Sequence[str],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> pd.DataFrame:
    """Per model and class: the class's subjects, recall, precision and one-vs-rest AUROC with their
    bootstrap intervals, and F1.

    Args:
        tables: Classification predictions tables by model name.
        names: The class names, by class index (``class_names``).
        confidence, n_resamples, seed, method: As for ``tlkedro.tl.evaluation.metric_interval``.

    Returns:
        One row per model and class: ``model``, ``class``, ``class_name``, ``n_subjects`` (of that
        class), ``n_predicted``, then ``<metric>``, ``<metric>_low``, ``<metric>_high`` for each of
        ``CLASS_METRICS``, and ``f1``.
    """
    settings = dict(confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
    rows = []
    for model, table in tables.items():
        pooled = evaluation.pool_repeats(table, "classification", model)
        target, prediction = pooled["target"].to_numpy(int), pooled["prediction"].to_numpy(int)
        probabilities = class_probabilities(pooled)
        for k, name in enumerate(names):
            actual, predicted = target == k, prediction == k
            one_vs_rest = _binary(pooled["subject_id"], actual, predicted, probabilities[:, k])
            intervals = {
                # Accuracy on the class-k subjects is the recall. The precision is written as the share of
                # hits (target 1, prediction: is it k?) among the subjects predicted k: one group, since
                # a bootstrap stratified by their true class would keep hits and misses fixed.
                "recall": _interval(one_vs_rest[actual], "accuracy", settings),
                "precision": _interval(
                    one_vs_rest[predicted].assign(
                        target=1, prediction=actual[predicted].astype(int)
                    ),
                    "accuracy",
                    settings,
                ),
                "auroc": _interval(one_vs_rest, "auroc", settings)
                if 0 < actual.sum() < len(actual)
                else None,
            }
            row = {
                "model": model,
                "class": k,
                "class_name": name,
                "n_subjects": int(actual.sum()),
                "n_predicted": int(predicted.sum()),
            }
            for metric, interval in intervals.items():
                values = (
                    (np.nan,) * 3
                    if interval is None
                    else (interval.estimate, interval.low, interval.high)
                )
                row |= dict(zip((metric, f"{metric}_low", f"{metric}_high"), values, strict=True))
            recall, precision = row["recall"], row["precision"]
            row["f1"] = (
                2 * recall * precision / (recall + precision) if recall + precision > 0 else np.nan
            )
            rows.append(row)
    return pd.DataFrame(rows)


def confusion_table(tables: Mapping[str, pd.DataFrame], names: Sequence[str]) -> pd.DataFrame:
    """Per model, the confusion matrix in long form: ``model``, ``true``, ``predicted`` (class names),
    ``count`` (subjects), one row per model and pair of classes, true class first."""
    rows = []
    for model, table in tables.items():
        pooled = evaluation.pool_repeats(table, "classification", model)
        matrix = confusion_matrix(pooled["target"], pooled["prediction"], labels=range(len(names)))
        for i, true in enumerate(names):
            rows += [
                {"model": model, "true": true, "predicted": names[j], "count": int(matrix[i, j])}
                for j in range(len(names))
            ]
    return pd.DataFrame(rows, columns=["model", "true", "predicted", "count"])


def confusion_matrices(confusion: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``confusion_table``'s long form as one square table per model (rows true, columns predicted)."""
    matrices = {}
    for model, part in confusion.groupby("model", sort=False):
        order = list(dict.fromkeys(part["true"]))
        matrix = part.pivot(index="true", columns="predicted", values="count")
        matrices[model] = matrix.loc[order, order]
    return matrices


def _with_interval(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "undefined"
    return f"{value:.3g}" if pd.isna(low) else f"{value:.3g} ({low:.3g} to {high:.3g})"


def class_markdown(
    per_class: pd.DataFrame,
    confusion: pd.DataFrame,
    title: str,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: str = "BCa",
) -> str:
    """The per-class table and each model's confusion matrix as a markdown section."""
    level = f"{confidence:.0%}"
    shown = pd.DataFrame(
        {
            "model": per_class["model"],
            "class": per_class["class_name"],
            "subjects": per_class["n_subjects"],
            "predicted": per_class["n_predicted"],
            **{
                f"{metric} ({level} interval)": [
                    _with_interval(*values)
                    for values in per_class[[metric, f"{metric}_low", f"{metric}_high"]].itertuples(
                        index=False
                    )
                ]
                for metric in CLASS_METRICS
            },
            "f1": [_with_interval(value, np.nan, np.nan) for value in per_class["f1"]],
        }
    )
    parts = [f"## {title}", "", markdown_table(shown), ""]
    parts.append(
        f"Recall is resampled over the class's subjects, precision over the subjects predicted in it, "
        f"AUROC (one class against the others) over both ({method} bootstrap, {n_resamples} resamples)."
    )
    parts += ["", "Confusion matrices (rows: true class, columns: predicted; subjects):", ""]
    for model, matrix in confusion_matrices(confusion).items():
        parts += [
            f"`{model}`",
            "",
            markdown_table(matrix.rename_axis(None).reset_index(names="true")),
            "",
        ]
    return "\n".join(parts)
