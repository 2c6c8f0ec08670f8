"""DAPT strategies: blocks, phases, frozen layers staying bit-identical, phase switches at the right epoch
in a tiny Lightning run, and resuming across a switch. resnet18 on 24 random 1x32x32 slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import make_checkpoint
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.module import TransferModule
from tlkedro.tl.strategies import create_strategy, phase_at
from tlkedro.tl.strategies.dapt import encoder_blocks
from tlkedro.tl.training import fit

IMG = 32
HEAD = 512 * 1 + 1
LAYER4 = 8_393_728  # resnet18's layer4.0 + layer4.1
ENCODER = 11_170_240


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def source() -> dict:
    torch.manual_seed(0)
    model = create_architecture("resnet18", num_outputs=1, img_size=IMG)
    model.train()
    model(torch.randn(8, 1, IMG, IMG))  # BatchNorm statistics off their defaults
    return make_checkpoint(model, {"task": "regression"})


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    labels = pd.DataFrame(
        {"subject_id": [f"sub-{i:02d}" for i in range(24)], "age": rng.uniform(45, 80, 24)}
    )
    signal = ((labels["age"] - 60) / 10).to_numpy()[:, None, None, None]
    return (rng.normal(size=(24, 1, IMG, IMG)) + signal).astype(np.float16), labels


def config(strategy: str, epochs: int, **kwargs: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "seed": 5,
            "target": "age",
            "task": "regression",
            "architecture": {"name": "resnet18"},
            "objective": {"name": "mse"},
            "strategy": {"name": strategy, "kwargs": kwargs},
            "optimizer": {"lr": 1e-2},
            "trainer": {
                "max_epochs": epochs,
                "batch_size": 8,
                "accelerator": "cpu",
                "early_stopping_patience": 10,
                "enable_progress_bar": False,
            },
        }
    )


def test_blocks_are_residual_blocks_or_plain_stages() -> None:
    resnet = create_architecture("resnet18", img_size=IMG)
    assert encoder_blocks(resnet)[:3] == ["conv1", "bn1", "layer1.0"]
    assert encoder_blocks(resnet)[-2:] == ["layer4.0", "layer4.1"]
    assert encoder_blocks(create_architecture("sfcn", img_size=IMG)) == [
        f"conv_{i}" for i in range(6)
    ]


def test_phases_and_their_validation() -> None:
    hybrid = create_strategy(
        "dapt_hybrid", warmup_epochs=2, partial_epochs=3, lr=1e-4, full_lr=1e-5
    )
    assert hybrid.phases() == [("warmup", 0), ("partial", 2), ("full", 5)]
    assert (hybrid.phase_lr("partial"), hybrid.phase_lr("full")) == (1e-4, 1e-5)
    assert [phase_at(hybrid.phases(), epoch) for epoch in range(7)] == [
        "warmup",
        "warmup",
        "partial",
        "partial",
        "partial",
        "full",
        "full",
    ]
    assert create_strategy("full").phases() == [("train", 0)]
    with pytest.raises(ValueError, match="warmup_epochs must be >= 1"):
        create_strategy("dapt_full", warmup_epochs=0)
    with pytest.raises(ValueError, match="full_lr must be > 0"):
        create_strategy("dapt_hybrid", full_lr=-1.0)
    with pytest.raises(ValueError, match=r"between 1 and the 10 blocks of 'resnet18' \(conv1, bn1"):
        create_strategy("dapt_partial", blocks=11).prepare(
            create_architecture("resnet18", img_size=IMG),
            create_architecture("resnet18", img_size=IMG).state_dict(),
        )


def test_simplified_dapt_keeps_the_first_stages_and_warms_up_a_new_head(source: dict) -> None:
    strategy = create_strategy("dapt_simplified", cut_at="layer1")
    model = strategy.prepare(
        create_architecture("resnet18", num_outputs=1, img_size=IMG), source["state_dict"]
    )
    assert model.num_features == 64 and model.config["cut_at"] == "layer1"
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "head.weight",
        "head.bias",
    ]
    assert torch.equal(
        model.encoder.layer1[0].conv1.weight, source["state_dict"]["encoder.layer1.0.conv1.weight"]
    )


def test_partial_dapt_leaves_every_frozen_block_bit_identical(source: dict, data) -> None:
    images, labels = data
    result = fit(config("dapt_partial", epochs=2, blocks=2), images, labels, source=source)
    assert result.history["trainable_params"].tolist() == [HEAD, HEAD + LAYER4]
    assert result.checkpoint["meta"]["best_epoch"] == 1, "the test needs the model after the switch"
    trained = {"encoder.layer4.0.", "encoder.layer4.1."}
    changed = []
    for name, tensor in result.checkpoint["state_dict"].items():
        if not name.startswith("encoder."):
            continue
        if name.startswith(tuple(trained)):
            changed.append(not torch.equal(tensor, source["state_dict"][name]))
        else:  # weights and BatchNorm statistics alike
            assert torch.equal(tensor, source["state_dict"][name]), name
    assert any(changed)


def test_hybrid_dapt_switches_phases_at_their_epochs_and_reports_each(source: dict, data) -> None:
    images, labels = data
    strategy = {"warmup_epochs": 1, "partial_epochs": 1, "blocks": 2, "lr": 2e-3, "full_lr": 1e-3}
    result = fit(config("dapt_hybrid", epochs=3, **strategy), images, labels, source=source)
    history = result.history
    assert history["trainable_params"].tolist() == [HEAD, HEAD + LAYER4, HEAD + ENCODER]
    # The new groups start at their own learning rates, then follow the cosine schedule.
    assert np.isnan(history["lr/encoder.partial"][0]) and np.isnan(history["lr/encoder.full"][1])
    assert history["lr/encoder.partial"][1] == pytest.approx(2e-3)
    assert history["lr/encoder.full"][2] == pytest.approx(1e-3)
    assert history["lr/encoder.partial"][2] < 2e-3
    summary = result.summary
    assert summary["trainable_params"] == HEAD  # when training starts: the warm-up
    assert all(summary[f"train_seconds/{phase}"] > 0 for phase in ("warmup", "partial", "full"))


def test_a_run_killed_after_a_switch_resumes_with_its_phases_to_the_same_result(
    source: dict, data, tmp_path: Path, monkeypatch
) -> None:
    images, labels = data
    settings = config("dapt_hybrid", epochs=3, warmup_epochs=1, partial_epochs=1)
    reference = fit(settings, images, labels, source=source)

    def killed_in_last_epoch(module: TransferModule) -> None:
        if module.current_epoch == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(TransferModule, "on_train_epoch_start", killed_in_last_epoch, raising=False)
    with pytest.raises(RuntimeError, match="killed"):
        fit(settings, images, labels, source=source, workdir=tmp_path)
    monkeypatch.undo()

    resumed = fit(settings, images, labels, source=source, workdir=tmp_path)
    assert resumed.summary["resumed"] is True
    pd.testing.assert_frame_equal(resumed.history, reference.history)
    for name, tensor in reference.checkpoint["state_dict"].items():
        assert torch.equal(resumed.checkpoint["state_dict"][name], tensor), name
