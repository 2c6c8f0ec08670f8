"""Label maps through the ingestion and preprocessing pipelines: `<split>_masks` beside `<split>_images`."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset

from tests.imaging.test_label_maps import _write_cohort
from tlkedro.datasets import NiftiCollectionDataset, NumpyArrayDataset
from tlkedro.imaging.ingest import IngestionConfig, ingest
from tlkedro.imaging.labels import LabelMapParams
from tlkedro.imaging.splits import SPLITS
from tlkedro.pipelines.ingestion import create_pipeline as create_ingestion_pipeline
from tlkedro.pipelines.preprocessing import create_pipeline
from tlkedro.pipelines.preprocessing.nodes import PreprocessingParams


def test_the_pipelines_read_label_maps_only_when_they_are_configured():
    assert "raw_label_maps" not in create_pipeline().inputs()
    assert not any(name.endswith("_masks") for name in create_pipeline().outputs())
    with_maps = create_pipeline(source="synthetic", label_maps=True)
    assert {"synthetic_label_maps", "synthetic_images"} <= with_maps.inputs()
    assert {f"{split}_masks" for split in SPLITS} <= with_maps.outputs()
    ingestion = create_ingestion_pipeline(source="synthetic", label_maps=True)
    assert {"synthetic_label_maps", "params:preprocessing.label_maps"} <= ingestion.inputs()
    assert "synthetic_label_maps" not in create_ingestion_pipeline(source="synthetic").inputs()


@pytest.mark.parametrize("mode", ["slices", "volume"])
def test_each_split_gets_masks_row_for_row_with_its_images(tmp_path, mode):
    images, label_maps, metadata = _write_cohort(tmp_path)
    manifest, _ = ingest(
        images, metadata, IngestionConfig(age_range=(40, 90)), label_maps=label_maps
    )
    params = PreprocessingParams.model_validate(
        {
            "spacing_mm": [4.0, 4.0, 4.0],
            "volume": {"shape": [40, 48, 40]},
            "mode": mode,
            "slices": {"selection": "k_central", "k": 2, "size": [32, 32]},
            "dtype": "float32",
            "workers": 1,
            "splits": {"pretrain": 2, "finetune": 1, "test": 1, "external_sites": []},
            "label_maps": LabelMapParams(),
        }
    )
    catalog = DataCatalog(
        {
            "manifest": MemoryDataset(manifest),
            "params:preprocessing": MemoryDataset(params, copy_mode="assign"),
            "raw_images": NiftiCollectionDataset(
                path=str(tmp_path / "images"), glob="*/T1/*.nii.gz"
            ),
            "raw_label_maps": NiftiCollectionDataset(
                path=str(tmp_path / "labels"), glob="*/T1/*_dseg.nii.gz"
            ),
            "normalised_scans": NiftiCollectionDataset(
                path=str(tmp_path / "normalised"), glob="**/*.nii.gz", workers=1
            ),
            "normalised_label_maps": NiftiCollectionDataset(
                path=str(tmp_path / "normalised_labels"), glob="**/*.nii.gz", workers=1
            ),
            "normalised_manifest": ParquetDataset(filepath=str(tmp_path / "normalised.parquet")),
            "registration_qc": ParquetDataset(filepath=str(tmp_path / "qc.parquet")),
            "registration_quarantine": ParquetDataset(filepath=str(tmp_path / "rq.parquet")),
            "registration_qc_mosaic": MemoryDataset(copy_mode="assign"),
            "splits": ParquetDataset(filepath=str(tmp_path / "splits.parquet")),
            **{
                f"{s}_{kind}": NumpyArrayDataset(filepath=str(tmp_path / s / f"{kind}.npy"))
                for s in SPLITS
                for kind in ("images", "masks")
            },
            **{
                f"{s}_labels": ParquetDataset(filepath=str(tmp_path / s / "labels.parquet"))
                for s in ("pretrain", "finetune", "test", "external")
            },
        }
    )
    SequentialRunner().run(create_pipeline(label_maps=True), catalog)

    for split in ("pretrain", "finetune", "test"):
        image, mask = catalog.load(f"{split}_images"), catalog.load(f"{split}_masks")
        assert mask.shape == image.shape and mask.dtype == np.uint8
        assert len(catalog.load(f"{split}_labels")) == len(mask)
        brain, labelled = image != 0, mask > 0
        if mode == "volume":
            assert np.array_equal(brain, labelled)
        else:
            # The image's brain edge is blurred outwards by the bilinear, anti-aliased downscaling.
            assert 2 * (brain & labelled).sum() / (brain.sum() + labelled.sum()) > 0.85
            assert (labelled & ~brain).sum() < 0.02 * labelled.sum()
