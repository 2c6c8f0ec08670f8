"""Inference: the linear age-bias correction, every multitask head through a checkpoint file, the
validation predictions ``fit`` saves, and the predictions table of one model or of fold models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tlkedro.tl.checkpoint import load_checkpoint
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.inference import (
    MIN_BIAS_SUBJECTS,
    BiasCorrectionError,
    fit_bias_correction,
    model_heads,
    predict_heads,
    score,
)
from tlkedro.tl.objectives import create_auxiliary_term
from tlkedro.tl.objectives.multitask import load_head
from tlkedro.tl.training import fit

SUBJECTS, SLICES, IMG = 24, 2, 32

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bias_correction_removes_a_known_regression_to_the_mean() -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 300)
    predicted = 0.6 * age + 22 + rng.normal(0, 2, 300)  # young overestimated, old underestimated
    validation, new = slice(0, 100), slice(100, 300)
    correction = fit_bias_correction(age[validation], predicted[validation])
    assert correction.slope == pytest.approx(0.6, abs=0.03)
    assert correction.intercept == pytest.approx(22, abs=2)
    assert correction.n_subjects == 100
    raw_gap = predicted[new] - age[new]
    gap = correction.apply(predicted[new]) - age[new]
    assert stats.pearsonr(raw_gap, age[new]).statistic < -0.9
    assert abs(stats.pearsonr(gap, age[new]).statistic) < 0.15
    assert abs(gap.mean()) < 1.0
    assert "fitted on 100 validation subjects" in correction.describe()


def test_bias_correction_refuses_too_few_subjects_and_a_model_that_learnt_nothing() -> None:
    age = np.linspace(20, 80, MIN_BIAS_SUBJECTS)
    with pytest.raises(BiasCorrectionError, match="fewer than the 10"):
        fit_bias_correction(age[:-1], age[:-1])
    with pytest.raises(BiasCorrectionError, match="slope 0.01 .* below 0.1"):
        fit_bias_correction(age, 0.01 * age + 50)
    with pytest.raises(BiasCorrectionError, match="all equal"):
        fit_bias_correction(np.full(12, 50.0), np.linspace(40, 60, 12))


def test_a_multitask_head_round_trips_through_a_checkpoint_file(tmp_path: Path) -> None:
    from tlkedro.tl.architectures import create_architecture

    torch.manual_seed(0)
    network = create_architecture("cbr_small", num_outputs=2, img_size=IMG).eval()
    term = create_auxiliary_term("task", target="age", task="regression")
    term.attach(network, {"age": np.array([40.0, 60.0, 80.0, np.nan])})
    torch.nn.init.normal_(term.head.weight)
    torch.save(term.saved(), tmp_path / "head.pt")
    target, loss_term, info, head = load_head(torch.load(tmp_path / "head.pt", weights_only=True))
    assert (target, info) == ("age", term.info) and info.target_mean == pytest.approx(60.0)
    features = network.forward_features(torch.randn(3, 1, IMG, IMG))
    expected = term.term.predict(term.head(features), term.info).values
    assert torch.allclose(loss_term.predict(head(features), info).values, expected)


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "subject_id": np.repeat([f"sub-{i:02d}" for i in range(SUBJECTS)], SLICES),
            "age": np.repeat(rng.uniform(30, 80, SUBJECTS), SLICES),
            "sex": np.repeat(np.arange(SUBJECTS) % 2, SLICES),
        }
    )


@pytest.fixture(scope="module")
def images(labels: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(1)
    signal = (labels["sex"] + (labels["age"] - 55) / 25).to_numpy()[:, None, None, None]
    return (rng.normal(size=(len(labels), 1, IMG, IMG)) + signal).astype(np.float32)


def multitask_checkpoint(images: np.ndarray, labels: pd.DataFrame, seed: int) -> dict:
    config = TrainConfig.model_validate(
        {
            "seed": seed,
            "target": "sex",
            "task": "classification",
            "architecture": {"name": "cbr_small"},
            "objective": {
                "name": "cross_entropy",
                "auxiliary": [
                    {
                        "name": "task",
                        "weight": 0.5,
                        "kwargs": {"target": "age", "task": "regression"},
                    }
                ],
            },
            "trainer": {
                "max_epochs": 1,
                "batch_size": 16,
                "accelerator": "cpu",
                "enable_progress_bar": False,
            },
            "data": {"val_fraction": 0.25, "augmentation": []},
        }
    )
    return fit(config, images, labels).checkpoint


@pytest.fixture(scope="module")
def checkpoints(images: np.ndarray, labels: pd.DataFrame) -> list[dict]:
    return [multitask_checkpoint(images, labels, seed) for seed in (0, 1)]


def test_fit_keeps_every_head_and_their_validation_predictions(
    checkpoints: list[dict], images: np.ndarray, labels: pd.DataFrame, tmp_path: Path
) -> None:
    torch.save(checkpoints[0], tmp_path / "model.pt")
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert set(checkpoint["heads"]) == {"task_age"}
    _, heads = model_heads(checkpoint)
    assert [(h.name, h.info.task) for h in heads] == [
        ("sex", "classification"),
        ("age", "regression"),
    ]
    saved = checkpoint["meta"]["validation_predictions"]
    subjects = saved["age"]["subject_id"]
    assert len(subjects) == SUBJECTS // 4 and saved["sex"]["subject_id"] == subjects
    rows = labels["subject_id"].isin(subjects).to_numpy()
    again = predict_heads(checkpoint, images[rows], labels.loc[rows, "subject_id"])
    age = again[again["head"] == "age"]
    assert list(age["subject_id"]) == subjects
    assert np.allclose(age["prediction"], saved["age"]["prediction"], atol=1e-5)
    known = labels.groupby("subject_id")["age"].first()
    assert saved["age"]["target"] == pytest.approx(known.loc[subjects].tolist())


def test_predictions_table_has_every_head_per_subject_without_labels(
    checkpoints: list[dict], images: np.ndarray, labels: pd.DataFrame
) -> None:
    unlabelled = labels[["subject_id"]].assign(age=labels["age"].where(labels.index < 8))
    table = score(checkpoints[:1], images, unlabelled)
    assert list(table.columns) == [
        "subject_id",
        "head",
        "task",
        "target",
        "prediction",
        "corrected_prediction",
        "gap",
        "probability",
        "bias_correction",
        "models",
    ]
    assert len(table) == 2 * SUBJECTS and set(table["head"]) == {"sex", "age"}
    age, sex = table[table["head"] == "age"], table[table["head"] == "sex"]
    # 6 validation subjects are too few to fit a correction: said so, and the predictions stay raw.
    assert age["bias_correction"].str.startswith("none: 6 validation subjects").all()
    assert np.allclose(age["corrected_prediction"], age["prediction"])
    assert age["target"].notna().sum() == 4  # subjects 0-3 (rows 0-7) have a known age
    assert np.allclose(age["gap"].dropna(), (age["prediction"] - age["target"]).dropna())
    assert sex["target"].isna().all() and sex["gap"].isna().all()
    assert sex["probability"].between(0, 1).all()
    assert (sex["prediction"] == (sex["probability"] > 0.5)).all()


def test_fold_models_are_averaged_and_each_corrected_by_its_own_fit(
    checkpoints: list[dict], images: np.ndarray, labels: pd.DataFrame
) -> None:
    # Give each model a validation fit it can use: predicted = a * age + b with its own a and b.
    corrected = []
    for checkpoint, (slope, intercept) in zip(checkpoints, [(0.5, 30.0), (0.8, 10.0)], strict=True):
        checkpoint = {**checkpoint, "meta": {**checkpoint["meta"]}}
        ages = np.linspace(30, 80, 12)
        checkpoint["meta"]["validation_predictions"] = {
            "age": {"target": ages.tolist(), "prediction": (slope * ages + intercept).tolist()}
        }
        corrected.append(checkpoint)
    both = score(corrected, images, labels)
    singles = [score([c], images, labels) for c in corrected]
    age = both["head"] == "age"
    for column in ("prediction", "corrected_prediction"):
        mean = (singles[0].loc[age, column] + singles[1].loc[age, column]) / 2
        assert np.allclose(both.loc[age, column], mean)
    assert np.allclose(
        singles[0].loc[age, "corrected_prediction"], (singles[0].loc[age, "prediction"] - 30) / 0.5
    )
    assert both.loc[age, "bias_correction"].str.contains("2 models, slopes 0.5 to 0.8").all()
    assert np.allclose(
        both.loc[age, "gap"], both.loc[age, "corrected_prediction"] - both.loc[age, "target"]
    )
    sex = both["head"] == "sex"
    mean = (singles[0].loc[sex, "probability"] + singles[1].loc[sex, "probability"]) / 2
    assert np.allclose(both.loc[sex, "probability"], mean)
    assert (both.loc[sex, "prediction"] == (mean > 0.5)).all()
    assert (both["models"] == 2).all()
