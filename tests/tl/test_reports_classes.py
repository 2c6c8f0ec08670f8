"""Per-class metrics and confusion matrices of classification predictions, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from tlkedro.tl import reports

NAMES = ["glioma", "meningioma", "pituitary"]


def _table(seed: int = 0, n_per_class: int = 30, signal: float = 0.6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = np.repeat(np.arange(3), n_per_class)
    probabilities = rng.dirichlet([1, 1, 1], len(target))
    probabilities[np.arange(len(target)), target] += signal * rng.random(len(target))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "subject_id": [f"s{i:03d}" for i in range(len(target))],
            "target": target,
            "prediction": probabilities.argmax(axis=1),
            **{f"probability_{k}": probabilities[:, k] for k in range(3)},
        }
    )


def test_per_class_metrics_match_sklearn_with_intervals_around_them() -> None:
    table = _table()
    per_class = reports.per_class_table({"finetune.full": table}, NAMES, n_resamples=300)

    precision, recall, f1, support = precision_recall_fscore_support(
        table["target"], table["prediction"], labels=[0, 1, 2], zero_division=np.nan
    )
    np.testing.assert_allclose(per_class["recall"], recall)
    np.testing.assert_allclose(per_class["precision"], precision)
    np.testing.assert_allclose(per_class["f1"], f1)
    assert per_class["n_subjects"].tolist() == support.tolist()
    assert per_class["class_name"].tolist() == NAMES
    probabilities = table[[f"probability_{k}" for k in range(3)]].to_numpy()
    for k in range(3):
        auroc = roc_auc_score(table["target"] == k, probabilities[:, k])
        assert per_class.loc[k, "auroc"] == pytest.approx(auroc)
    for metric in reports.classes.CLASS_METRICS:
        assert (per_class[f"{metric}_low"] <= per_class[metric]).all()
        assert (per_class[metric] <= per_class[f"{metric}_high"]).all()
        assert (per_class[f"{metric}_high"] > per_class[f"{metric}_low"]).all()


def test_a_class_never_predicted_has_no_precision() -> None:
    table = _table()
    table["prediction"] = table["prediction"].replace(2, 0)

    per_class = reports.per_class_table({"m": table}, NAMES, n_resamples=100).set_index("class")

    assert per_class.loc[2, "n_predicted"] == 0
    assert per_class.loc[2, "recall"] == 0.0
    assert np.isnan(per_class.loc[2, "precision"]) and np.isnan(per_class.loc[2, "f1"])


def test_confusion_table_matches_sklearn_and_pools_repeats() -> None:
    first, second = _table(seed=1), _table(seed=2)
    repeated = pd.concat([first.assign(repeat=0, fold=0), second.assign(repeat=1, fold=0)])

    confusion = reports.confusion_table({"a": first, "cv": repeated}, NAMES)
    matrices = reports.confusion_matrices(confusion)

    expected = confusion_matrix(first["target"], first["prediction"], labels=[0, 1, 2])
    np.testing.assert_array_equal(matrices["a"].to_numpy(), expected)
    assert list(matrices["a"].index) == NAMES and list(matrices["a"].columns) == NAMES
    # Repeats are averaged per subject first: each subject counts once.
    assert matrices["cv"].to_numpy().sum() == len(first)
    pooled = (first.iloc[:, 3:6].to_numpy() + second.iloc[:, 3:6].to_numpy()).argmax(axis=1)
    np.testing.assert_array_equal(
        matrices["cv"].to_numpy(), confusion_matrix(first["target"], pooled, labels=[0, 1, 2])
    )


def test_markdown_and_figure_show_every_class_and_model() -> None:
    tables = {"finetune.full": _table(seed=3), "finetune.scratch": _table(seed=4, signal=0.1)}
    per_class = reports.per_class_table(tables, NAMES, n_resamples=100)
    confusion = reports.confusion_table(tables, NAMES)

    text = reports.class_markdown(
        per_class, confusion, "finetune: label per class", n_resamples=100
    )
    figure = reports.plot_confusion_matrices(reports.confusion_matrices(confusion))

    assert text.startswith("## finetune: label per class")
    assert "recall (95% interval)" in text and "| true | glioma | meningioma | pituitary |" in text
    assert text.count("`finetune.") == 2
    assert len(figure.axes) == 2
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == NAMES


def test_class_names_come_from_the_labels_name_column() -> None:
    labels = pd.DataFrame({"label": [2, 0, 1, 0], "label_name": ["c", "a", "b", "a"]})
    assert reports.class_names(labels, "label", 3) == ["a", "b", "c"]
    assert reports.class_names(labels.drop(columns="label_name"), "label", 2) == [
        "class 0",
        "class 1",
    ]


def test_sex_classes_are_named_by_the_manifest_coding_when_the_labels_carry_no_names() -> None:
    labels = pd.DataFrame({"sex": [1, 0, 1]})
    assert reports.class_names(labels, "sex", 2) == ["female", "male"]
    assert reports.class_names(None, "sex", 2) == ["female", "male"]
