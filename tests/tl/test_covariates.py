"""Covariates (``covariates: [head_scale]``): they reach the head, standardised with the training rows only.

Tiny resnet18s on 1x32x32 noise images of 24 subjects (2 slices each) whose sex is carried by
``head_scale`` alone, trained for one epoch: what is tested is where the covariate goes and which rows its
statistics come from, not accuracy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.data import COVARIATES, MRIDataModule, subject_split
from tlkedro.tl.labels import covariate_values
from tlkedro.tl.module import build_module
from tlkedro.tl.objectives import TaskInfo
from tlkedro.tl.training import evaluate, fit

pytestmark = pytest.mark.usefixtures("single_thread")

SUBJECTS = 24


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sex = np.arange(SUBJECTS) % 2
    head_scale = rng.normal(0.62, 0.02, SUBJECTS) + 0.08 * sex
    return pd.DataFrame(
        {
            "subject_id": np.repeat([f"sub-{i:02d}" for i in range(SUBJECTS)], 2),
            "sex": np.repeat(sex, 2),
            "head_scale": np.repeat(head_scale, 2),
        }
    )


@pytest.fixture(scope="module")
def images(labels: pd.DataFrame) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(len(labels), 1, 32, 32)).astype(np.float16)


def config(**changes: object) -> TrainConfig:
    parameters: dict = {
        "seed": 5,
        "target": "sex",
        "task": "classification",
        "architecture": {"name": "resnet18"},
        "objective": {"name": "cross_entropy"},
        "covariates": ["head_scale"],
        "trainer": {
            "max_epochs": 1,
            "batch_size": 8,
            "accelerator": "cpu",
            "enable_progress_bar": False,
        },
    }
    return TrainConfig.model_validate({**parameters, **changes})


def test_the_covariate_reaches_the_head_and_survives_the_checkpoint() -> None:
    model = create_architecture("resnet18", img_size=[32, 32], num_outputs=2, num_covariates=1)
    assert model.head.in_features == model.num_features + 1
    model.set_covariate_statistics(torch.tensor([0.6]), torch.tensor([0.05]))
    model.eval()
    x = torch.randn(3, 1, 32, 32)
    small, large = torch.full((3, 1), 0.5), torch.full((3, 1), 0.8)
    with torch.no_grad():
        assert not torch.allclose(model(x, small), model(x, large))
        # No covariates given: the training mean, i.e. a subject of average head size.
        assert torch.allclose(model(x), model(x, torch.full((3, 1), 0.6)))
    rebuilt = create_architecture(**model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(rebuilt.covariate_std, torch.tensor([0.05]))
    plain = create_architecture("resnet18", img_size=[32, 32], num_outputs=2)
    with pytest.raises(ValueError, match="takes no covariates"):
        plain(x, small)


def test_batches_carry_the_rows_covariates(images: np.ndarray, labels: pd.DataFrame) -> None:
    datamodule = MRIDataModule(
        images, labels, "sex", "classification", 0.25, 8, seed=0, covariate_columns=["head_scale"]
    )
    _, _, extras = next(iter(datamodule.train_dataloader()))
    rows = datamodule.train_sampler.dataset.indices
    order = np.random.default_rng([0, 0]).permutation(len(rows))[:8]
    expected = labels["head_scale"].to_numpy(np.float32)[rows[order]]
    np.testing.assert_allclose(extras[COVARIATES][:, 0].numpy(), expected)
    _, _, val_extras = next(iter(datamodule.val_dataloader()))
    assert val_extras[COVARIATES].shape == (8, 1)


def test_a_missing_covariate_is_an_error_naming_it(labels: pd.DataFrame) -> None:
    unregistered = labels.assign(
        head_scale=np.where(labels.index < 4, np.nan, labels["head_scale"])
    )
    with pytest.raises(ValueError, match=r"covariate 'head_scale' is missing in 4 rows"):
        covariate_values(unregistered, ["head_scale"])
    with pytest.raises(ValueError, match="'tiv' is not in the labels"):
        covariate_values(labels, ["tiv"])


def test_statistics_come_from_the_training_rows_only(
    images: np.ndarray, labels: pd.DataFrame
) -> None:
    # The validation subjects get extreme head sizes: any leak into the statistics would show.
    train, val = subject_split(labels["subject_id"], 0.2, seed=5, targets=labels["sex"].to_numpy())
    skewed = labels.copy()
    skewed.loc[val, "head_scale"] = 5.0
    result = fit(config(), images, skewed)
    state = result.checkpoint["state_dict"]
    training_values = skewed["head_scale"].to_numpy(np.float32)[train]
    assert state["covariate_mean"].item() == pytest.approx(training_values.mean(), rel=1e-5)
    assert state["covariate_std"].item() == pytest.approx(training_values.std(), rel=1e-4)
    assert result.checkpoint["meta"]["covariates"] == ["head_scale"]


def test_the_head_starts_at_the_training_rows_logistic_model(
    images: np.ndarray, labels: pd.DataFrame
) -> None:
    targets = labels["sex"].to_numpy()
    covariates = covariate_values(labels, ["head_scale"])
    info = TaskInfo.from_targets("classification", targets, targets)
    module = build_module(config(), info, images.shape, None, {}, covariates, targets)
    low, high = module.model.head.weight[:, -1].detach().tolist()
    # Larger heads are male (1) here: the covariate raises logit 1 and lowers logit 0, symmetrically.
    assert high > 0.5 and low == pytest.approx(-high)
    with pytest.raises(ValueError, match="constant over the training rows"):
        build_module(config(), info, images.shape, None, {}, np.ones_like(covariates), targets)


def test_evaluate_feeds_each_subjects_covariate(images: np.ndarray, labels: pd.DataFrame) -> None:
    result = fit(config(), images, labels)
    model = build_model(result.checkpoint)
    assert model.num_covariates == 1
    _, as_given = evaluate(result.checkpoint, images, labels, "sex", "test")
    _, all_small = evaluate(result.checkpoint, images, labels.assign(head_scale=0.5), "sex", "test")
    assert as_given["probability"].std() > 0
    assert not np.allclose(as_given["probability"], all_small["probability"])
    with pytest.raises(ValueError, match="covariate 'head_scale' is missing"):
        evaluate(result.checkpoint, images, labels.assign(head_scale=np.nan), "sex", "test")


def test_keep_epoch_last_returns_the_last_epoch(images: np.ndarray, labels: pd.DataFrame) -> None:
    # One slice per subject, so the history's per-image validation metric is evaluate's per-subject one.
    images, labels = images[::2], labels.iloc[::2].reset_index(drop=True)
    trainer = {"max_epochs": 2, "batch_size": 4, "accelerator": "cpu", "enable_progress_bar": False}
    result = fit(config(covariates=[], trainer={**trainer, "keep_epoch": "last"}), images, labels)
    last = result.history.iloc[-1]
    assert result.summary["best_epoch"] == result.checkpoint["meta"]["best_epoch"] == 1
    assert result.summary["best_val_loss"] == pytest.approx(last["val/loss"])
    # The kept weights are the last epoch's: on the validation subjects they give its loss.
    _, val = subject_split(labels["subject_id"], 0.2, seed=5, targets=labels["sex"].to_numpy())
    metrics, _ = evaluate(
        result.checkpoint, images[val], labels.iloc[val].reset_index(drop=True), "sex", "val"
    )
    assert metrics["val/cross_entropy"] == pytest.approx(last["val/cross_entropy"], rel=1e-4)
