"""Stale BatchNorm statistics after a short 3D run: the failure, its repair, and the guard that flags it.

The failure of a ``resnet18_3d`` run (2 epochs, batch 8: ages of -132 years in evaluation mode while the
training-mode error was 14-17 years) is reproduced on 40 random 16^3 volumes with targets around 50 and a
learning rate high enough for the weights to move fast within the few steps.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tlkedro.tl.batchnorm import RecalibrateBatchNorm, recalibrate, trained_batchnorms
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.data import ArrayDataset
from tlkedro.tl.metrics import trivial_check
from tlkedro.tl.module import TransferModule
from tlkedro.tl.objectives import TaskInfo
from tlkedro.tl.strategies.base import freeze
from tlkedro.tl.training import FitResult, fit

pytestmark = pytest.mark.usefixtures("single_thread")

SUBJECTS = 40


@pytest.fixture(scope="module")
def volumes() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 86, SUBJECTS)
    labels = pd.DataFrame({"subject_id": [f"sub-{i:02d}" for i in range(SUBJECTS)], "age": age})
    signal = ((age - 50) / 20)[:, None, None, None, None]
    return (rng.normal(size=(SUBJECTS, 1, 16, 16, 16)) + signal).astype(np.float16), labels


def short_3d_config(recalibrate_batchnorm: object, max_epochs: int = 2) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "seed": 0,
            "target": "age",
            "task": "regression",
            "architecture": {"name": "resnet18_3d"},
            "objective": {"name": "mse"},
            "optimizer": {"lr": 0.01},
            "trainer": {
                "max_epochs": max_epochs,
                "batch_size": 8,
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "recalibrate_batchnorm": recalibrate_batchnorm,
            },
        }
    )


def short_3d_run(
    volumes: tuple[np.ndarray, pd.DataFrame], recalibrate_batchnorm: object
) -> FitResult:
    return fit(short_3d_config(recalibrate_batchnorm), *volumes)


@pytest.fixture(scope="module")
def stale(volumes: tuple[np.ndarray, pd.DataFrame]) -> FitResult:
    return short_3d_run(volumes, False)


@pytest.mark.slow
def test_running_statistics_of_a_short_3d_run_break_evaluation_mode_and_are_flagged(
    stale: FitResult,
) -> None:
    summary = stale.summary
    # Training mode learnt something; evaluation mode, with the running statistics, is far off.
    assert stale.history["train/mae"].iloc[-1] < 3 * summary["trivial_val_mae"]
    assert summary["best_val_mae"] > 10 * summary["trivial_val_mae"]
    assert summary["worse_than_trivial"] is True


@pytest.mark.slow
def test_recalibration_by_default_for_volumes_repairs_it_without_changing_training(
    stale: FitResult, volumes: tuple[np.ndarray, pd.DataFrame]
) -> None:
    repaired = short_3d_run(volumes, "auto")
    pd.testing.assert_series_equal(repaired.history["train/loss"], stale.history["train/loss"])
    assert repaired.summary["best_val_mae"] < 1.5 * repaired.summary["trivial_val_mae"]
    assert repaired.summary["worse_than_trivial"] is False


@pytest.mark.slow
def test_a_recalibrating_run_resumes_to_the_same_result(
    volumes: tuple[np.ndarray, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = short_3d_config(True, max_epochs=3)
    reference = fit(config, *volumes)

    def killed_in_third_epoch(module: TransferModule) -> None:
        if module.current_epoch == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(
        TransferModule, "on_train_epoch_start", killed_in_third_epoch, raising=False
    )
    with pytest.raises(RuntimeError, match="killed"):
        fit(config, *volumes, workdir=tmp_path)
    monkeypatch.undo()
    resumed = fit(config, *volumes, workdir=tmp_path)
    assert resumed.summary["resumed"] is True
    pd.testing.assert_frame_equal(resumed.history, reference.history)
    for name, tensor in reference.checkpoint["state_dict"].items():
        assert torch.equal(resumed.checkpoint["state_dict"][name], tensor), name


def test_recalibration_recomputes_only_trained_layers_and_runs_no_dropout() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 1),
        nn.BatchNorm2d(4),
        nn.Dropout(0.5),
    )
    freeze([model[0], model[1]])
    frozen_mean = model[1].running_mean.clone()
    batches = [torch.randn(6, 1, 8, 8) * 3 + 2 for _ in range(3)]
    assert trained_batchnorms(model) == [model[3]]

    state = torch.get_rng_state()
    recalibrate(model, batches, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state)  # dropout did not draw
    assert torch.equal(model[1].running_mean, frozen_mean)
    with torch.no_grad():
        features = [model[2](model[1](model[0](batch))) for batch in batches]
    expected = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(dim=0)
    assert torch.allclose(model[3].running_mean, expected, atol=1e-5)
    assert model[3].momentum == 0.1 and not model.training


def test_the_callback_can_be_sent_to_spawned_processes(
    volumes: tuple[np.ndarray, pd.DataFrame],
) -> None:
    images, labels = volumes
    callback = RecalibrateBatchNorm(ArrayDataset(images, labels["age"].to_numpy()), 8, seed=0)
    copy = pickle.loads(pickle.dumps(callback))  # what ddp_spawn does to every callback
    assert len(copy.dataset) == SUBJECTS and copy.batch_size == 8


def test_a_constant_classifier_is_flagged_against_the_class_frequencies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = TaskInfo(task="classification", num_classes=2)
    train, val = np.array([0, 0, 0, 1]), np.array([0, 1, 0, 0])
    trivial = -np.mean(np.log(np.where(val == 0, 4 / 6, 2 / 6)))
    confident_and_wrong = {"val/cross_entropy": 5.0}
    with caplog.at_level(logging.WARNING, logger="tlkedro.tl.metrics"):
        check = trivial_check(info, train, val, confident_and_wrong)
    assert check["trivial_val_cross_entropy"] == pytest.approx(trivial, rel=1e-6)
    assert check["worse_than_trivial"] is True and "cross_entropy" in caplog.text
    fine = trivial_check(info, train, val, {"val/cross_entropy": 0.5})
    assert fine["worse_than_trivial"] is False


def test_the_regression_baseline_is_the_training_mean() -> None:
    info = TaskInfo(task="regression")
    check = trivial_check(info, np.array([40.0, 60.0]), np.array([45.0, 70.0]), {"val/mae": 9.0})
    assert check == {"best_val_mae": 9.0, "trivial_val_mae": 12.5, "worse_than_trivial": False}
