"""The preprocessing pipeline on a tiny manifest, with an in-memory catalog and the SequentialRunner."""

from __future__ import annotations

import functools
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

from tlkedro.datasets import NiftiCollectionDataset, NumpyArrayDataset
from tlkedro.imaging.extraction import extract_scan
from tlkedro.imaging.ingest import IngestionConfig, ingest
from tlkedro.imaging.normalisation import StaleNormalisationError
from tlkedro.imaging.splits import SPLITS, select_split
from tlkedro.pipelines.preprocessing import create_pipeline
from tlkedro.pipelines.preprocessing.nodes import (
    PreprocessingParams,
    build_timeseries_split_arrays,
    check_registration,
    normalised_key,
)

IXI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ixi_t1_2mm_bids"

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
        "splits": {"pretrain": 4, "finetune": 2, "test": 2, "external_sites": ["C"]},
    }
    return PreprocessingParams.model_validate(base | overrides)


def _run(
    manifest: pd.DataFrame,
    params: PreprocessingParams,
    tmp_path: Path,
    images: Path | None = None,
    glob: str = "sub-*.nii.gz",
) -> DataCatalog:
    # Outputs on disk: the runner releases memory datasets once no node needs them.
    catalog = DataCatalog(
        {
            "manifest": MemoryDataset(manifest),
            "params:preprocessing": MemoryDataset(params, copy_mode="assign"),
            "raw_images": NiftiCollectionDataset(path=str(images or tmp_path), glob=glob),
            "normalised_scans": NiftiCollectionDataset(
                path=str(tmp_path / "normalised"), glob="**/*.nii.gz", workers=1
            ),
            "normalised_manifest": ParquetDataset(filepath=str(tmp_path / "normalised.parquet")),
            "registration_qc": ParquetDataset(filepath=str(tmp_path / "qc.parquet")),
            "registration_quarantine": ParquetDataset(filepath=str(tmp_path / "rq.parquet")),
            "registration_qc_mosaic": MemoryDataset(copy_mode="assign"),
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
        assert list(labels.columns) == ["subject_id", "age", "sex", "site", "head_scale", "slice"]
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
    assert params.splits.external_sites == ("11028",)
    assert params.item_shape() == (1, 64, 64)


def test_method_none_reads_the_raw_scans_through_the_catalog_unchanged(manifest, tmp_path):
    # The manifest's `path` column points nowhere: scans are resolved by scan id through raw_images.
    params = _params()
    catalog = _run(manifest.assign(path="/nowhere"), params, tmp_path)
    qc = catalog.load("registration_qc")
    assert qc["passed"].all() and qc["similarity"].isna().all() and qc["head_scale"].isna().all()
    assert catalog.load("registration_quarantine").empty
    assert catalog.load("registration_qc_mosaic").axes
    # The same arrays as extracting each scan from its file, as preprocessing did before normalisation.
    splits = catalog.load("splits")
    for split in SPLITS:
        scans = select_split(manifest, splits, split)
        expected = np.concatenate([extract_scan(p, params) for p in scans["path"]])
        np.testing.assert_array_equal(np.asarray(catalog.load(f"{split}_images")), expected)
    assert catalog.load("test_labels")["head_scale"].isna().all()


def test_a_scan_missing_from_the_image_dataset_is_named(manifest, tmp_path):
    broken = manifest.assign(scan_id=lambda m: m["scan_id"].str.replace("sub-03", "sub-99"))
    with pytest.raises(
        Exception, match=r"not in the catalog dataset 'raw_images': sub-99\.nii\.gz"
    ):
        _run(broken, _params(), tmp_path)


class _Ref:
    def __init__(self, path: str, sidecar: dict) -> None:
        self.path = Path(path)
        self._sidecar = sidecar

    def sidecar(self) -> dict:
        return self._sidecar


def test_normalised_scans_from_other_options_are_refused_not_reused(manifest):
    params = _params(spatial_normalisation={"method": "affine"})
    fingerprint = params.spatial_normalisation.fingerprint(params.spacing_mm)
    qc = {"similarity": 0.6, "head_scale": 0.7, "stage1_similarity": 0.5, "retried": False}
    sidecar = {**qc, "brain_ml": 1.0, "fingerprint": f"{fingerprint}-x"}
    current = {
        normalised_key(scan_id): _Ref(path, sidecar)
        for scan_id, path in zip(manifest["scan_id"], manifest["path"], strict=True)
    }
    stale_params = _params(spatial_normalisation={"method": "affine", "seed": 1})
    with pytest.raises(StaleNormalisationError, match=r"sub-00\.nii\.gz is computed with other"):
        check_registration(manifest.head(1), {}, current, stale_params)
    # A changed QC threshold needs no recomputation: it quarantines instead.
    strict = _params(spatial_normalisation={"method": "affine", "min_similarity": 0.65})
    kept, table, quarantine, _ = check_registration(manifest.head(2), {}, current, strict)
    assert kept.empty and not table["passed"].any()
    assert quarantine["reason_code"].tolist() == ["registration_failed"] * 2
    assert "0.600 inside the template mask, below" in quarantine["reason"].iloc[0]


def _ixi_manifest(n: int) -> pd.DataFrame:
    participants = pd.read_csv(IXI / "participants.tsv", sep="\t")
    keys = sorted(p.relative_to(IXI).as_posix() for p in IXI.glob("sub-*/anat/*_T1w.nii.gz"))[:n]
    subjects = [k.split("/")[0] for k in keys]
    ages = participants.set_index("participant_id").loc[subjects]
    return pd.DataFrame(
        {
            "scan_id": keys,
            "subject_id": subjects,
            "session": "",
            "age": ages["age"].to_numpy(),
            "sex": (ages["sex"] == "M").astype(int).to_numpy(),
            "site": "HH",
        }
    )


@pytest.mark.slow
@pytest.mark.skipif(not IXI.is_dir(), reason="shared IXI data absent")
def test_normalised_scans_are_reused_and_recomputed_when_the_options_change(tmp_path):
    manifest = _ixi_manifest(1)
    params = _params(
        spatial_normalisation={"method": "affine", "fast": True},
        slices={"selection": "mni", "positions_mm": [0.0], "size": (32, 32)},
        volume={"shape": (80, 96, 80)},
        splits={"pretrain": 0, "finetune": 0, "test": 1, "external_sites": []},
    )
    glob = "sub-*/anat/*_T1w.nii.gz"
    catalog = _run(manifest, params, tmp_path, images=IXI, glob=glob)
    output = tmp_path / "normalised" / manifest["scan_id"][0]
    first = output.stat().st_mtime_ns, output.with_name(output.name[:-7] + ".json").read_text()
    assert catalog.load("test_labels")["head_scale"].between(0.4, 1.6).all()
    assert catalog.load("test_labels")["slice"].tolist() == [0.0]
    _run(manifest, params, tmp_path, images=IXI, glob=glob)
    assert output.stat().st_mtime_ns == first[0]  # reused
    reseeded = params.model_copy(
        update={
            "spatial_normalisation": params.spatial_normalisation.model_copy(update={"seed": 3})
        }
    )
    _run(manifest, reseeded, tmp_path, images=IXI, glob=glob)
    assert output.stat().st_mtime_ns != first[0]
    assert output.with_name(output.name[:-7] + ".json").read_text() != first[1]


def test_time_series_are_split_then_built_without_registration(tmp_path) -> None:
    pipeline = create_pipeline(source="synthetic", layout="timeseries")
    assert {node.name for node in pipeline.nodes} == {
        "split_subjects",
        *(f"build_{split}_arrays" for split in SPLITS),
    }
    assert (
        "synthetic_images" in pipeline.inputs() and "normalised_scans" not in pipeline.all_outputs()
    )

    dataset = NiftiCollectionDataset(path=str(tmp_path / "ts"), glob="*_timeseries.tsv", workers=1)
    rng = np.random.default_rng(0)
    ids = [f"sub-{i}" for i in range(6)]
    dataset.save(
        {
            f"{s}_timeseries.tsv": functools.partial(
                pd.DataFrame, rng.normal(size=(40, 3)), columns=["a", "b", "c"]
            )
            for s in ids
        }
    )
    participants = pd.DataFrame(
        {"participant_id": ids, "age": 60.0, "sex": ["F", "M"] * 3, "site": "1"}
    )
    series = dataset.load()
    manifest, _ = ingest(
        {k: ref.path for k, ref in series.items()},
        participants,
        IngestionConfig(layout="timeseries", workers=1),
    )
    splits = pd.DataFrame({"subject_id": ids, "split": ["pretrain"] * 4 + ["test"] * 2})
    params = PreprocessingParams.model_validate({"timeseries": {"length": 16}, "workers": 1})

    stack, labels = build_timeseries_split_arrays(manifest, splits, series, params, split="test")
    assert stack.shape == (2, 3, 16) and labels["subject_id"].tolist() == ["sub-4", "sub-5"]
