"""Ingestion pipeline run on an in-memory catalog, for both sources."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from kedro.validation import ParameterValidationError, ParameterValidator

from tlkedro.datasets import NiftiCollectionDataset, NiftiRef
from tlkedro.imaging.ingest import QuarantineError
from tlkedro.pipelines.ingestion import IngestionParams, create_pipeline

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cohort(tmp_path) -> tuple[dict[str, NiftiRef], pd.DataFrame]:
    """Two UK Biobank subjects, the second one's file truncated, as the images dataset loads them."""
    for eid in (1000001, 1000002):
        path = tmp_path / str(eid) / "T1" / "T1_brain_to_MNI.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:40])
    images = NiftiCollectionDataset(str(tmp_path), "*/T1/T1_brain_to_MNI.nii.gz").load()
    metadata = pd.DataFrame(
        {"eid": [1000001, 1000002], "31-0.0": [1, 0], "21003-2.0": [61.5, 70.0]}
    )
    return images, metadata


def _catalog(images, metadata, prefix: str, **params) -> DataCatalog:
    catalog = DataCatalog()
    catalog[f"{prefix}_images"] = images
    catalog[f"{prefix}_metadata"] = metadata
    catalog["params:ingestion"] = {"source": prefix, "layout": "ukb", "workers": 1, **params}
    return catalog


@pytest.mark.parametrize("source", ["raw", "synthetic"])
def test_pipeline_writes_manifest_and_quarantine_from_the_chosen_source(cohort, source):
    catalog = _catalog(*cohort, prefix=source)

    SequentialRunner().run(create_pipeline(source=source), catalog)

    manifest, quarantine = catalog.load("manifest"), catalog.load("quarantine")
    assert manifest[["subject_id", "age", "sex", "site"]].values.tolist() == [
        ["1000001", 61.5, 1, ""]
    ]
    assert quarantine[["subject_id", "reason_code"]].values.tolist() == [["1000002", "truncated"]]


def test_metadata_records_are_named_after_the_source_entry(cohort):
    images, metadata = cohort
    metadata.loc[2] = [3000000, 1, 50.0]
    catalog = _catalog(images, metadata, prefix="synthetic")

    SequentialRunner().run(create_pipeline(source="synthetic"), catalog)

    assert "synthetic_metadata row 3" in set(catalog.load("quarantine")["source"])


def test_strict_mode_fails_the_run(cohort):
    with pytest.raises(
        QuarantineError, match=r"1000002/T1/T1_brain_to_MNI.nii.gz: .* \[truncated\]"
    ):
        SequentialRunner().run(create_pipeline(), _catalog(*cohort, prefix="raw", strict=True))


def test_the_default_pipeline_reads_raw_entries_and_its_node_is_named():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"raw_images", "raw_metadata", "params:ingestion"}
    assert pipeline.outputs() == {"manifest", "quarantine"}
    assert [node.name for node in pipeline.nodes] == ["ingest_scans"]


def test_an_unknown_source_is_an_error_listing_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"ingestion.source must be one of \['raw', 'synthetic'\], got 'ukb'"
    ):
        create_pipeline(source="ukb")


@pytest.mark.parametrize(
    ("runtime_params", "layout"), [({}, "ukb"), ({"synthetic": {"layout": "bids"}}, "bids")]
)
def test_base_parameters_are_valid_and_the_demo_layout_follows_the_generator(
    runtime_params, layout
):
    loader = OmegaConfigLoader(
        str(PROJECT / "conf"),
        base_env="base",
        default_run_env="base",
        runtime_params=runtime_params,
    )
    params = IngestionParams.model_validate(loader["parameters"]["ingestion"])
    assert params.source in {"raw", "synthetic"}
    assert params.layout == layout


def test_kedro_validates_the_typed_parameters_before_running():
    validator = ParameterValidator({"ingestion": create_pipeline()})
    validated = validator.validate_raw_params({"ingestion": {"layout": "bids"}})
    assert validated["ingestion"] == IngestionParams(layout="bids")
    with pytest.raises(
        ParameterValidationError, match=r"ingestion(.|\n)*layout(.|\n)*input_value='nifti'"
    ):
        validator.validate_raw_params({"ingestion": {"layout": "nifti"}})
