"""Checkpoints hold plain data only, and rebuild the same model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model, make_checkpoint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_architecture("resnet18", num_outputs=3, img_size=32).eval()


def test_round_trip_with_weights_only_gives_identical_outputs(model) -> None:
    meta = {
        "task": "classification",
        "num_classes": np.int64(3),
        "target_mean": np.float32(0.5),
        "bins": (1, 2),
    }
    buffer = io.BytesIO()
    torch.save(make_checkpoint(model, meta), buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert checkpoint["meta"] == {
        "task": "classification",
        "num_classes": 3,
        "target_mean": 0.5,
        "bins": [1, 2],
    }
    assert checkpoint["config"]["name"] == "resnet18"
    rebuilt = build_model(checkpoint)
    assert not rebuilt.training
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))


def test_checkpoint_is_a_copy_that_later_training_does_not_change(model) -> None:
    checkpoint = make_checkpoint(model, {})
    before = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    try:
        assert torch.equal(checkpoint["state_dict"]["head.weight"], before)
    finally:
        with torch.no_grad():
            model.head.weight.sub_(1.0)


def test_meta_that_weights_only_cannot_load_is_rejected(model) -> None:
    with pytest.raises(TypeError, match=r"meta\.workdir is a PosixPath"):
        make_checkpoint(model, {"workdir": Path("/tmp")})


def test_weights_must_fit_the_architecture_exactly(model) -> None:
    checkpoint = make_checkpoint(model, {})
    del checkpoint["state_dict"]["head.bias"]
    with pytest.raises(RuntimeError, match="head.bias"):
        build_model(checkpoint)
