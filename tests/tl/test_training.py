"""fit: reproducible, resumable, wired to strategies and sources; evaluate: metrics per subject.

Models are resnet18s on 48 random 1x32x32 slices (24 subjects, 2 slices each) with a little signal,
trained for 1-2 epochs: what is tested is the bookkeeping, not the accuracy.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model, make_checkpoint
from tlkedro.tl.config import TrainConfig, TrainerConfig
from tlkedro.tl.data import subject_split
from tlkedro.tl.metrics import metric_collection
from tlkedro.tl.module import TransferModule
from tlkedro.tl.objectives import TaskInfo
from tlkedro.tl.resume import fingerprint
from tlkedro.tl.training import FitResult, evaluate, fit

SUBJECTS = 24
SLICES = 2


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "subject_id": np.repeat([f"sub-{i:02d}" for i in range(SUBJECTS)], SLICES),
            "age": np.repeat(rng.uniform(45, 80, SUBJECTS), SLICES),
            "sex": np.repeat(np.arange(SUBJECTS) % 2, SLICES),
            "slice": np.tile(np.arange(SLICES), SUBJECTS),
        }
    )


@pytest.fixture(scope="module")
def images(labels: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(1)
    signal = (labels["sex"] + (labels["age"] - 60) / 20).to_numpy()[:, None, None, None]
    return (rng.normal(size=(len(labels), 1, 32, 32)) + signal).astype(np.float16)


def config(**changes: object) -> TrainConfig:
    """Age regression with dropout and random augmentation, so every source of randomness is in play."""
    parameters: dict = {
        "seed": 3,
        "target": "age",
        "task": "regression",
        "architecture": {"name": "resnet18", "kwargs": {"dropout": 0.3}},
        "objective": {"name": "mse"},
        "trainer": {
            "max_epochs": 2,
            "batch_size": 8,
            "accelerator": "cpu",
            "enable_progress_bar": False,
        },
        "data": {
            "augmentation": [{"name": "RandGaussianNoise", "kwargs": {"prob": 0.5, "std": 0.3}}]
        },
    }
    return TrainConfig.model_validate({**parameters, **changes})


@pytest.fixture(scope="module")
def reference(images: np.ndarray, labels: pd.DataFrame) -> FitResult:
    return fit(config(), images, labels)


def assert_same_result(result: FitResult, expected: FitResult) -> None:
    pd.testing.assert_frame_equal(result.history, expected.history)
    assert result.checkpoint["meta"] == expected.checkpoint["meta"]
    for name, tensor in expected.checkpoint["state_dict"].items():
        assert torch.equal(result.checkpoint["state_dict"][name], tensor), name


def test_result_holds_history_summary_and_a_loadable_checkpoint(
    reference: FitResult, labels: pd.DataFrame
) -> None:
    history, summary, meta = reference.history, reference.summary, reference.checkpoint["meta"]
    assert history["epoch"].tolist() == [0, 1]
    assert {
        "train/loss",
        "val/loss",
        "val/mae",
        "val/r2",
        "train/mae",
        "lr/encoder",
        "lr/head",
    } <= set(history)
    assert summary["epochs_run"] == 2 and summary["resumed"] is False
    assert (
        summary["best_epoch"]
        == history["epoch"][history["val/loss"].idxmin()]
        == meta["best_epoch"]
    )
    assert summary["best_val_loss"] == pytest.approx(history["val/loss"].min())
    assert summary["total_params"] == summary["trainable_params"] > 0
    assert summary["fit_seconds"] > 0 and summary["train_images_per_second"] > 0
    train, _ = subject_split(labels["subject_id"], 0.2, seed=3)
    assert meta["target_mean"] == pytest.approx(labels["age"].iloc[train].mean(), rel=1e-5)
    assert (meta["task"], meta["target"], meta["seed"], meta["objective"]["name"]) == (
        "regression",
        "age",
        3,
        "mse",
    )
    buffer = io.BytesIO()
    torch.save(reference.checkpoint, buffer)
    buffer.seek(0)
    assert build_model(torch.load(buffer, weights_only=True)).num_outputs == 1


def test_same_config_and_seed_give_identical_results_and_stale_checkpoints_are_ignored(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"from another configuration")
    (tmp_path / "fingerprint.txt").write_text("another configuration")
    result = fit(config(), images, labels, workdir=tmp_path)
    assert result.summary["resumed"] is False
    assert_same_result(result, reference)
    assert list((tmp_path / "checkpoints").iterdir()) == []  # removed after a complete run


def test_interrupted_run_resumes_from_last_checkpoint_to_the_same_result(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame, tmp_path: Path, monkeypatch
) -> None:
    def killed_in_second_epoch(module: TransferModule) -> None:
        if module.current_epoch == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(
        TransferModule, "on_train_epoch_start", killed_in_second_epoch, raising=False
    )
    with pytest.raises(RuntimeError, match="killed"):
        fit(config(), images, labels, workdir=tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.undo()

    resumed = fit(config(), images, labels, workdir=tmp_path)
    assert resumed.summary["resumed"] is True
    assert_same_result(resumed, reference)


def test_a_different_seed_gives_a_different_model_and_never_resumes_another_seed(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame
) -> None:
    other = config(seed=4)
    assert fingerprint(other, images, labels, None) != fingerprint(config(), images, labels, None)
    result = fit(
        other.model_copy(update={"trainer": other.trainer.model_copy(update={"max_epochs": 1})}),
        images,
        labels,
    )
    assert result.history["train/loss"][0] != reference.history["train/loss"][0]


def test_finetuning_a_source_with_a_linear_probe_trains_only_the_head(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame
) -> None:
    probe = config(
        target="sex",
        task="classification",
        objective={"name": "cross_entropy"},
        strategy={"name": "linear_probe"},
        trainer={"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False},
    )
    result = fit(probe, images, labels, source=reference.checkpoint)
    assert result.summary["trainable_params"] == 512 * 2 + 2
    assert result.checkpoint["meta"]["num_classes"] == 2
    source = reference.checkpoint["state_dict"]
    for name, tensor in result.checkpoint["state_dict"].items():
        if name.startswith("encoder."):
            assert torch.equal(tensor, source[name]), name
    assert result.checkpoint["state_dict"]["head.weight"].shape == (2, 512)


def row_outputs(checkpoint: dict, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return build_model(checkpoint)(torch.from_numpy(images.astype(np.float32)))


def test_evaluate_averages_class_probabilities_per_subject(
    images: np.ndarray, labels: pd.DataFrame
) -> None:
    torch.manual_seed(0)
    model = create_architecture("resnet18", num_outputs=2, img_size=32)
    info = TaskInfo(task="classification", num_classes=2)
    checkpoint = make_checkpoint(
        model,
        {**info.as_dict(), "target": "sex", "objective": {"name": "cross_entropy", "kwargs": {}}},
    )
    metrics, predictions = evaluate(
        checkpoint, images, labels, target="sex", split="test", batch_size=5
    )

    rows = row_outputs(checkpoint, images).softmax(dim=1).numpy()
    expected = pd.DataFrame(rows, index=labels["subject_id"]).groupby(level=0).mean()
    assert list(predictions.columns) == [
        "subject_id",
        "split",
        "target",
        "prediction",
        "probability",
    ]
    assert predictions["subject_id"].tolist() == expected.index.tolist()
    assert (predictions["split"] == "test").all()
    assert predictions["probability"].to_numpy() == pytest.approx(expected[1].to_numpy(), abs=1e-6)
    assert predictions["prediction"].tolist() == expected.to_numpy().argmax(axis=1).tolist()
    assert predictions["target"].tolist() == [i % 2 for i in range(SUBJECTS)]

    collection = metric_collection(info, "test")
    collection.update(
        torch.tensor(expected.to_numpy()), torch.tensor(predictions["target"].to_numpy())
    )
    assert metrics == pytest.approx(
        {name: float(value) for name, value in collection.compute().items()}, abs=1e-6
    )


def test_evaluate_averages_regression_predictions_per_subject(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame
) -> None:
    metrics, predictions = evaluate(
        reference.checkpoint, images, labels, target="age", split="external"
    )
    meta = reference.checkpoint["meta"]
    years = (
        row_outputs(reference.checkpoint, images)[:, 0].numpy() * meta["target_std"]
        + meta["target_mean"]
    )
    expected = pd.Series(years, index=labels["subject_id"]).groupby(level=0).mean()
    assert len(predictions) == SUBJECTS
    assert predictions["prediction"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-5)
    ages = labels.groupby("subject_id")["age"].first().to_numpy()
    assert predictions["target"].to_numpy() == pytest.approx(ages)
    assert metrics["external/mae"] == pytest.approx(
        np.abs(expected.to_numpy() - ages).mean(), rel=1e-4
    )
    assert set(metrics) == {
        f"external/{name}" for name in ("mae", "mse", "rmse", "pearson_r", "r2")
    }


def test_evaluate_refuses_another_target(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame
) -> None:
    with pytest.raises(ValueError, match="predicts 'age', not 'sex'"):
        evaluate(reference.checkpoint, images, labels, target="sex", split="test")


def test_evaluate_runs_with_the_trainers_precision(
    reference: FitResult, images: np.ndarray, labels: pd.DataFrame
) -> None:
    _, float32 = evaluate(reference.checkpoint, images, labels, target="age", split="test")
    settings = TrainerConfig(accelerator="cpu", precision="bf16-mixed", enable_progress_bar=False)
    _, bfloat16 = evaluate(
        reference.checkpoint, images, labels, target="age", split="test", trainer=settings
    )
    # bfloat16 keeps 8 bits of mantissa: close to the float32 predictions, but not the same.
    assert bfloat16["prediction"].to_numpy() == pytest.approx(float32["prediction"], rel=0.05)
    assert not np.array_equal(bfloat16["prediction"], float32["prediction"])
