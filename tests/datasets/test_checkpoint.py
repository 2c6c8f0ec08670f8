"""TorchCheckpointDataset: atomic torch.save, weights_only loading, Kedro versioning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.io import DataCatalog, DatasetError

from tlkedro.datasets import TorchCheckpointDataset
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    torch.manual_seed(0)
    model = create_architecture("resnet18", num_outputs=2, img_size=32)
    return make_checkpoint(model, {"task": "classification", "num_classes": 2, "target": "sex"})


def test_round_trip_rebuilds_a_model_with_identical_outputs(
    tmp_path: Path, checkpoint: dict
) -> None:
    dataset = TorchCheckpointDataset(filepath=str(tmp_path / "model" / "model.pt"))
    assert not dataset.exists()
    dataset.save(checkpoint)
    assert dataset.exists()
    assert [p.name for p in (tmp_path / "model").iterdir()] == [
        "model.pt"
    ]  # no temporary file left
    loaded = dataset.load()
    assert loaded["meta"] == checkpoint["meta"]
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(build_model(loaded)(images), build_model(checkpoint)(images))


class Payload:
    """Not a type torch.load(weights_only=True) allows."""


def test_load_refuses_files_that_would_run_code(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"meta": Payload()}, path)
    with pytest.raises(DatasetError, match="[Ww]eights only load failed"):
        TorchCheckpointDataset(filepath=str(path)).load()


def test_failed_save_keeps_the_previous_file(tmp_path: Path, checkpoint: dict) -> None:
    dataset = TorchCheckpointDataset(filepath=str(tmp_path / "model.pt"))
    dataset.save(checkpoint)
    with pytest.raises(DatasetError):
        dataset.save({"meta": lambda: None})  # lambdas cannot be pickled
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert dataset.load()["meta"] == checkpoint["meta"]


def test_versioned_catalog_entry_loads_the_latest_save(tmp_path: Path, checkpoint: dict) -> None:
    entry = {
        "type": "tlkedro.datasets.TorchCheckpointDataset",
        "filepath": str(tmp_path / "model.pt"),
        "versioned": True,
    }
    DataCatalog.from_config({"model": entry}).save("model", checkpoint)
    second = {**checkpoint, "meta": {**checkpoint["meta"], "seed": 2}}
    DataCatalog.from_config({"model": entry}).save("model", second)
    versions = sorted(p.name for p in (tmp_path / "model.pt").iterdir())
    assert len(versions) == 2
    assert DataCatalog.from_config({"model": entry}).load("model")["meta"]["seed"] == 2


def test_describe_names_the_file(tmp_path: Path) -> None:
    assert str(tmp_path / "model.pt") in str(
        TorchCheckpointDataset(filepath=str(tmp_path / "model.pt"))
    )
