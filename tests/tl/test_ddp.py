"""Accelerators, devices and DDP: the trainer's ``auto`` settings, and DDP on two CPU processes (gloo).

The DDP tests spawn two processes (``ddp_spawn``), each of which imports torch, Lightning and this
module: a few seconds each. No GPU is needed: the CUDA and MPS cases replace the availability checks.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

from tlkedro.tl.config import TrainConfig, TrainerConfig
from tlkedro.tl.data import MRIDataModule
from tlkedro.tl.launch import (
    ProcessGroupShutdown,
    build_trainer,
    machine_defaults,
    resolve_accelerator,
)
from tlkedro.tl.training import evaluate, fit

SUBJECTS = 20


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "subject_id": [f"sub-{i:02d}" for i in range(SUBJECTS)],
            "age": rng.uniform(45, 80, SUBJECTS),
            "sex": np.arange(SUBJECTS) % 2,
        }
    )


@pytest.fixture(scope="module")
def images(labels: pd.DataFrame) -> np.ndarray:
    """Noise with a little signal of sex; pixel (0, 0) of each image holds its row number."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(SUBJECTS, 1, 16, 16)) + labels["sex"].to_numpy()[:, None, None, None]
    images[:, 0, 0, 0] = np.arange(SUBJECTS)
    return images.astype(np.float16)


class ShardProbe(L.LightningModule):
    """Appends the rows of each training batch to ``<folder>/rank<r>_epoch<e>.txt``, one line a batch.

    Module level, so that the spawned processes can import it.
    """

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images = batch[0]
        rows = images[:, 0, 0, 0].round().long().tolist()
        path = Path(self.folder) / f"rank{self.global_rank}_epoch{self.current_epoch}.txt"
        with path.open("a") as file:
            file.write(" ".join(map(str, rows)) + "\n")
        return (self.weight * images.mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches(folder: Path, rank: int, epoch: int) -> list[list[int]]:
    lines = (folder / f"rank{rank}_epoch{epoch}.txt").read_text().splitlines()
    return [[int(row) for row in line.split()] for line in lines]


def test_two_ddp_processes_train_on_disjoint_shards_that_change_every_epoch(
    images: np.ndarray, labels: pd.DataFrame, tmp_path: Path
) -> None:
    datamodule = MRIDataModule(
        images, labels, target="sex", task="classification", val_fraction=0.2, batch_size=7, seed=0
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ProcessGroupShutdown()],
    )
    trainer.fit(ShardProbe(str(tmp_path)), datamodule=datamodule)

    train_rows = set(datamodule.train_indices.tolist())
    assert len(train_rows) == 16
    shards = {}
    for epoch in (0, 1):
        first, second = batches(tmp_path, 0, epoch), batches(tmp_path, 1, epoch)
        # 8 rows per process: a second batch would hold one image, which BatchNorm cannot train on.
        assert [len(batch) for batch in first] == [len(batch) for batch in second] == [7]
        shards[epoch] = set(first[0]), set(second[0])
        assert not shards[epoch][0] & shards[epoch][1]
        assert shards[epoch][0] | shards[epoch][1] <= train_rows
    assert shards[0] != shards[1]


def test_fit_with_ddp_on_two_cpu_processes_gives_its_history_and_a_usable_checkpoint(
    images: np.ndarray, labels: pd.DataFrame, tmp_path: Path
) -> None:
    config = TrainConfig.model_validate(
        {
            "seed": 5,
            "target": "sex",
            "task": "classification",
            "architecture": {"name": "resnet18"},
            "objective": {"name": "cross_entropy"},
            "trainer": {
                "max_epochs": 2,
                "batch_size": 4,
                "accelerator": "cpu",
                "devices": 2,
                "distributed": "ddp_spawn",
                "enable_progress_bar": False,
            },
        }
    )
    result = fit(config, images, labels, workdir=tmp_path)

    history, summary = result.history, result.summary
    # The callbacks ran in the spawned processes: their history and timings came back through last.ckpt.
    assert history["epoch"].tolist() == [0, 1]
    assert {"train/loss", "val/loss", "val/auroc", "lr/encoder"} <= set(history)
    assert summary["epochs_run"] == 2 and summary["resumed"] is False
    assert summary["best_val_loss"] == pytest.approx(history["val/loss"].min())
    assert summary["train_images_per_second"] > 0 and summary["train_seconds/train"] > 0
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))
    metrics, predictions = evaluate(result.checkpoint, images, labels, target="sex", split="test")
    assert 0 <= metrics["test/auroc"] <= 1
    assert len(predictions) == SUBJECTS


def test_auto_strategy_on_several_devices_spawns_the_processes(tmp_path: Path) -> None:
    trainer = build_trainer(TrainerConfig(accelerator="cpu", devices=2), tmp_path, [])
    launcher = trainer.strategy.launcher
    assert isinstance(launcher, _MultiProcessingLauncher) and launcher._start_method == "spawn"
    assert trainer.num_devices == 2


def test_ddp_that_would_run_the_command_line_again_is_refused(tmp_path: Path) -> None:
    settings = TrainerConfig(accelerator="cpu", devices=2, distributed="ddp")
    with pytest.raises(ValueError, match="would start 1 more process.*use 'ddp_spawn'"):
        build_trainer(settings, tmp_path, [])


def test_one_device_trains_in_this_process_deterministically(tmp_path: Path) -> None:
    trainer = build_trainer(TrainerConfig(accelerator="cpu"), tmp_path, [])
    assert trainer.strategy.launcher is None and trainer.num_devices == 1
    assert torch.are_deterministic_algorithms_enabled()


def test_auto_accelerator_follows_lightnings_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_accelerator("auto") == "cpu"  # no GPU here
    assert resolve_accelerator("cpu") == "cpu"
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert resolve_accelerator("auto") == resolve_accelerator("gpu") == "cuda"
    assert resolve_accelerator("cpu") == "cpu"
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: True))
    assert resolve_accelerator("auto") == "mps"


@pytest.mark.parametrize(
    ("settings", "accelerator", "bf16", "expected"),
    [
        ({}, "cpu", False, (True, "32-true")),
        ({}, "cuda", True, ("warn", "bf16-mixed")),
        ({}, "cuda", False, ("warn", "32-true")),
        ({}, "mps", False, ("warn", "32-true")),
        ({"deterministic": True, "precision": "16-mixed"}, "cuda", True, (True, "16-mixed")),
        ({"deterministic": False}, "cpu", False, (False, "32-true")),
    ],
)
def test_auto_determinism_and_precision_follow_the_accelerator(
    monkeypatch: pytest.MonkeyPatch,
    settings: dict,
    accelerator: str,
    bf16: bool,
    expected: tuple[bool | str, str],
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert machine_defaults(TrainerConfig(**settings), accelerator) == expected


def test_the_process_group_is_destroyed_when_training_ends(tmp_path: Path) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ProcessGroupShutdown().teardown(None, None, "fit")
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
