"""Downstream MLPs on an encoder's features: per-subject features, the paper's classifiers, metrics, dip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import make_checkpoint
from tlkedro.tl.downstream import (
    PAPER_CLASSIFIERS,
    auroc_interval,
    classifier_metrics,
    downstream_evaluation,
    extract_features,
    fit_classifier,
)

IMG = 32


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    torch.manual_seed(0)
    return make_checkpoint(create_architecture("cbr_small", num_outputs=1, img_size=IMG), {})


def split(
    subjects: int, shift: float, seed: int, slices: int = 2
) -> tuple[np.ndarray, pd.DataFrame]:
    """Two slices per subject; the sex shows as a brighter image, the site as an offset."""
    rng = np.random.default_rng(seed)
    sex = np.arange(subjects) % 2
    labels = pd.DataFrame(
        {
            "subject_id": np.repeat([f"s{seed}-{i:02d}" for i in range(subjects)], slices),
            "sex": np.repeat(sex, slices),
        }
    )
    signal = 2.0 * labels["sex"].to_numpy()[:, None, None, None] + shift
    return (rng.normal(size=(len(labels), 1, IMG, IMG)) + signal).astype(np.float16), labels


def test_features_are_averaged_per_subject(checkpoint: dict) -> None:
    images, labels = split(6, 0.0, seed=1)
    features, targets = extract_features(checkpoint, images, labels, "sex")
    assert features.shape == (6, 256) and targets.tolist() == [0, 1, 0, 1, 0, 1]
    row_features, _ = extract_features(checkpoint, images[::2], labels.iloc[::2], "sex")
    single, _ = extract_features(checkpoint, images[1::2], labels.iloc[1::2], "sex")
    assert np.allclose(features, (row_features + single) / 2, atol=1e-5)


def test_metrics_match_scikit_learn_and_an_unseen_class_gets_probability_zero() -> None:
    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(20, 3)), np.arange(20) % 2
    features[:, 0] += 2 * targets
    classifier = fit_classifier(features, targets, (8,), seed=0)
    metrics = classifier_metrics(classifier, features, targets, num_classes=2)
    assert metrics["auroc"] == pytest.approx(
        roc_auc_score(targets, classifier.predict_proba(features)[:, 1])
    )
    assert {"auprc", "accuracy", "balanced_accuracy", "cross_entropy"} <= metrics.keys()
    three = classifier_metrics(classifier, features, np.where(targets == 1, 2, 0), num_classes=3)
    assert three["accuracy"] <= 0.5  # class 1 predictions are never class 2


def test_the_auroc_interval_covers_chance_for_uninformative_probabilities() -> None:
    rng = np.random.default_rng(0)
    targets = np.arange(60) % 2
    noise = rng.uniform(size=60)
    low, high = auroc_interval(np.stack([1 - noise, noise], axis=1), targets, 0.95, 500, seed=0)
    assert low < 0.5 < high and high - low > 0.2  # 60 subjects: about +-0.15
    separated = np.eye(3)[np.arange(30) % 3] * 0.7 + 0.1  # three classes, each ranked first
    low, high = auroc_interval(separated, np.arange(30) % 3, 0.95, 500, seed=0)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_downstream_evaluation_trains_both_paper_classifiers_and_reports_the_dip(
    checkpoint: dict,
) -> None:
    table = downstream_evaluation(
        checkpoint,
        train=split(16, 0.0, seed=2),
        evaluations={"test": split(8, 0.0, seed=3), "external": split(8, 1.5, seed=4)},
        target="sex",
        classifiers=PAPER_CLASSIFIERS,
        seed=0,
    )
    assert table[["classifier", "hidden_layers", "split"]].values.tolist() == [
        ["mlp_64_32", "64-32", "test"],
        ["mlp_64_32", "64-32", "external"],
        ["mlp_64_32", "64-32", "dip"],
        ["mlp_512_256_256_128", "512-256-256-128", "test"],
        ["mlp_512_256_256_128", "512-256-256-128", "external"],
        ["mlp_512_256_256_128", "512-256-256-128", "dip"],
    ]
    assert table["subjects"].tolist() == [8, 8, 0, 8, 8, 0]
    rows = table.set_index(["classifier", "split"])
    for name in PAPER_CLASSIFIERS:
        expected = rows.loc[(name, "test"), "auroc"] - rows.loc[(name, "external"), "auroc"]
        assert rows.loc[(name, "dip"), "auroc"] == pytest.approx(expected)
    assert rows.loc[("mlp_64_32", "test"), "auroc"] > 0.8  # the sex signal is easy to see
    evaluated = table[table["split"] != "dip"]
    assert (evaluated["auroc_low"] <= evaluated["auroc"]).all()
    assert (evaluated["auroc"] <= evaluated["auroc_high"]).all()
    assert table.loc[table["split"] == "dip", ["auroc_low", "auroc_high"]].isna().all().all()
    with pytest.raises(ValueError, match="dip splits"):
        downstream_evaluation(
            checkpoint, split(4, 0, 5), {"test": split(4, 0, 6)}, "sex", PAPER_CLASSIFIERS, 0
        )
