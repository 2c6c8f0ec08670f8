"""The preprocessing pipeline on a tiny manifest, with an in-memory catalog and the SequentialRunner."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.type_extractor import TypeExtractor
from kedro_datasets.pandas import ParquetDataset

from tlkedro.datasets import NumpyArrayDataset
from tlkedro.imaging.splits import SPLITS
from tlkedro.pipelines.preprocessing import create_pipeline
from tlkedro.pipelines.preprocessing.nodes import PreprocessingParams

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    """Twelve subjects (three at the external site "C"), one small brain-like RAS volume each."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        data = np.zeros((20, 24, 20), dtype=np.float32)
        data[4:16, 5:19, 4:16] = rng.uniform(50, 150, size=(12, 14, 12))
        path = tmp_path / f"sub-{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
        rows.append(
            {
                "scan_id": path.name,
                "subject_id": f"sub-{i:02d}",
                "session": "",
                "path": str(path),
                "age": 50.0 + i,
                "sex": i % 2,
                "site": "ABC"[i % 3] if i < 9 else "C" if i == 9 else "AB"[i % 2],
            }
        )
    return pd.DataFrame(rows)


def _params(**overrides: object) -> PreprocessingParams:
    base = {
        "volume": {"shape": (16, 16, 16)},
        "slices": {"selection": "k_central", "k": 2, "size": (32, 32)},
        "workers": 1,
        "splits": {"pretrain": 4, "finetune": 2, "test": 2, "external_site": "C"},
    }
    return PreprocessingParams.model_validate(base | overrides)


def _run(manifest: pd.DataFrame, params: PreprocessingParams, tmp_path: Path) -> DataCatalog:
    # Outputs on disk: the runner releases memory datasets once no node needs them.
    catalog = DataCatalog(
        {
            "manifest": MemoryDataset(manifest),
            "params:preprocessing": MemoryDataset(params, copy_mode="assign"),
            "splits": ParquetDataset(filepath=str(tmp_path / "splits.parquet")),
            **{
                f"{s}_images": NumpyArrayDataset(filepath=str(tmp_path / s / "images.npy"))
                for s in SPLITS
            },
            **{
                f"{s}_labels": ParquetDataset(filepath=str(tmp_path / s / "labels.parquet"))
                for s in SPLITS
            },
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_writes_images_and_matching_labels_per_split(manifest, tmp_path):
    catalog = _run(manifest, _params(), tmp_path)
    splits = catalog.load("splits")
    assert splits["split"].value_counts().to_dict() == {
        "pretrain": 4,
        "external": 4,
        "finetune": 2,
        "test": 2,
    }
    seen: set[str] = set()
    for split in SPLITS:
        images, labels = catalog.load(f"{split}_images"), catalog.load(f"{split}_labels")
        members = set(splits.loc[splits["split"] == split, "subject_id"])
        assert images.shape == (2 * len(members), 1, 32, 32) and images.dtype == np.float16
        assert list(labels.columns) == ["subject_id", "age", "sex", "site", "slice"]
        assert len(labels) == len(images) and set(labels["subject_id"]) == members
        assert labels["slice"].tolist() == [7, 8] * len(members)
        assert seen.isdisjoint(members)
        seen |= members
        assert np.isfinite(images).all() and np.abs(images).max() > 0
    assert set(catalog.load("external_labels")["site"]) == {"C"}


def test_volume_mode_writes_one_3d_row_per_scan(manifest, tmp_path):
    catalog = _run(manifest, _params(mode="volume", dtype="float32"), tmp_path)
    images, labels = catalog.load("test_images"), catalog.load("test_labels")
    assert images.shape == (2, 1, 16, 16, 16) and images.dtype == np.float32
    assert labels["slice"].tolist() == [-1, -1]


def test_kedro_validates_the_params_into_the_typed_model():
    # Kedro reads the node functions' type hints to validate `params:` inputs before running.
    types = TypeExtractor({"preprocessing": create_pipeline()}).extract_types_from_pipelines()
    assert types == {"preprocessing": PreprocessingParams}


def test_base_parameters_are_valid():
    conf = yaml.safe_load((PROJECT / "conf" / "base" / "parameters_preprocessing.yml").read_text())
    params = PreprocessingParams.model_validate(conf["preprocessing"])
    assert params.splits.external_site == "11028"
    assert params.item_shape() == (1, 64, 64)
