"""Synthetic pipeline run on an in-memory catalog: both layouts, worker-count independence, configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError
from kedro.runner import SequentialRunner
from kedro.validation import ParameterValidationError, ParameterValidator
from kedro_datasets.pandas import CSVDataset

from tlkedro.datasets import NiftiCollectionDataset
from tlkedro.imaging.synthetic import SyntheticCohortParams
from tlkedro.pipelines.synthetic import create_pipeline

PROJECT = Path(__file__).resolve().parents[2]
GLOBS = {"ukb": "*/T1/T1_brain_to_MNI.nii.gz", "bids": "sub-*/anat/sub-*_T1w.nii.gz"}
TINY = {"seed": 3, "n_subjects": 6, "voxel_size_mm": 4.0}


def _run(root: Path, layout: str, workers: int = 1, glob: str | None = None) -> DataCatalog:
    metadata = root / ("participants.tsv" if layout == "bids" else "../ukb_showcase.csv")
    separator = "\t" if layout == "bids" else ","
    catalog = DataCatalog(
        {
            "synthetic_images": NiftiCollectionDataset(
                str(root), glob or GLOBS[layout], workers=workers
            ),
            "synthetic_metadata": CSVDataset(
                filepath=str(metadata),
                load_args={"sep": separator},
                save_args={"sep": separator, "index": False},
            ),
        }
    )
    catalog["params:synthetic"] = {**TINY, "layout": layout}
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_ukb_layout_writes_one_registered_image_per_showcase_row(tmp_path):
    catalog = _run(tmp_path / "ukb", "ukb")

    images, metadata = catalog.load("synthetic_images"), catalog.load("synthetic_metadata")
    assert len(metadata) == 6
    assert sorted(images) == sorted(f"{eid}/T1/T1_brain_to_MNI.nii.gz" for eid in metadata["eid"])
    img = next(iter(images.values())).load()
    assert img.shape == (46, 55, 46) and np.asarray(img.dataobj).max() > 0
    assert list(metadata.columns[:4]) == ["eid", "31-0.0", "21003-2.0", "54-2.0"]


def test_bids_layout_writes_participants_tsv_into_the_images_folder(tmp_path):
    catalog = _run(tmp_path / "bids", "bids")

    participants = pd.read_csv(tmp_path / "bids" / "participants.tsv", sep="\t")
    expected = {f"{pid}/anat/{pid}_T1w.nii.gz" for pid in participants["participant_id"]}
    assert set(catalog.load("synthetic_images")) == expected
    assert set(participants["sex"]) <= {"M", "F"}


def test_images_do_not_depend_on_the_number_of_workers(tmp_path):
    _run(tmp_path / "one", "ukb", workers=1)
    _run(tmp_path / "two", "ukb", workers=2)

    one = sorted((tmp_path / "one").rglob("*.nii.gz"))
    two = sorted((tmp_path / "two").rglob("*.nii.gz"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [
        p.relative_to(tmp_path / "two") for p in two
    ]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two, strict=True))
    assert (tmp_path / "one/../ukb_showcase.csv").read_text() == (
        tmp_path / "two/../ukb_showcase.csv"
    ).read_text()


def test_a_catalog_glob_that_disagrees_with_the_layout_fails_before_generating(tmp_path):
    with pytest.raises(DatasetError, match="match the dataset's glob"):
        _run(tmp_path / "ukb", "bids", glob=GLOBS["ukb"])
    assert not (tmp_path / "ukb").exists()


@pytest.mark.parametrize("layout", ["ukb", "bids"])
def test_the_catalog_entries_follow_the_layout_chosen_at_run_time(layout):
    runtime = {"synthetic": {"layout": layout}} if layout == "bids" else {}
    loader = OmegaConfigLoader(
        str(PROJECT / "conf"), base_env="base", default_run_env="base", runtime_params=runtime
    )
    catalog = loader["catalog"]

    params = SyntheticCohortParams.model_validate(
        {**loader["parameters"]["synthetic"], **runtime.get("synthetic", {})}
    )
    assert params.layout == layout
    assert catalog["synthetic_images"]["glob"] == GLOBS[layout]
    assert catalog["synthetic_images"]["path"].endswith(f"synthetic/{layout}")
    assert catalog["synthetic_metadata"]["filepath"].endswith(
        "participants.tsv" if layout == "bids" else ".csv"
    )
    # The generator's own entries never point at the user's raw data.
    assert not catalog["synthetic_images"]["path"].startswith(catalog["raw_images"]["path"])


def test_kedro_validates_the_synthetic_parameters_before_running():
    validator = ParameterValidator({"synthetic": create_pipeline()})
    assert validator.validate_raw_params({"synthetic": TINY})["synthetic"] == SyntheticCohortParams(
        **TINY
    )
    with pytest.raises(
        ParameterValidationError, match=r"synthetic(.|\n)*n_subjects(.|\n)*input_value=0"
    ):
        validator.validate_raw_params({"synthetic": {**TINY, "n_subjects": 0}})


@pytest.mark.parametrize("layout", ["ukb", "bids"])
def test_label_maps_are_written_beside_the_t1_or_as_a_bids_derivative(tmp_path, layout):
    loader = OmegaConfigLoader(
        str(PROJECT / "conf"),
        base_env="base",
        default_run_env="base",
        runtime_params={"synthetic": {"layout": layout}},
    )
    entries = {
        name: {
            **entry,
            **{key: str(tmp_path / entry[key]) for key in ("path", "filepath") if key in entry},
        }
        for name, entry in loader["catalog"].items()
        if name.startswith("synthetic_")
    }
    catalog = DataCatalog.from_config(entries)
    catalog["params:synthetic"] = {**TINY, "layout": layout, "label_maps": True}
    SequentialRunner().run(create_pipeline(label_maps=True), catalog)

    images, label_maps = catalog.load("synthetic_images"), catalog.load("synthetic_label_maps")
    assert len(label_maps) == len(images) == 6
    for image_key, label_key in zip(sorted(images), sorted(label_maps), strict=True):
        if layout == "ukb":
            assert label_key == image_key.replace(".nii.gz", "_dseg.nii.gz")
        else:
            assert label_maps[label_key].path == (
                tmp_path / "data/01_raw/synthetic/bids/derivatives/tissue_labels" / label_key
            )
            assert label_key == image_key.replace("_T1w", "_dseg")
        t1 = np.asarray(images[image_key].load().dataobj)
        assert np.array_equal(np.asarray(label_maps[label_key].load().dataobj) > 0, t1 > 0)
    lookup = catalog.load("synthetic_label_lookup")
    assert lookup.to_dict("list") == {
        "index": [0, 1, 2, 3, 4],
        "name": ["background", "csf", "grey_matter", "white_matter", "ventricles"],
    }
    if layout == "bids":
        root = tmp_path / "data/01_raw/synthetic/bids/derivatives/tissue_labels"
        assert (root / "dseg.tsv").is_file()
        assert catalog.load("synthetic_label_description")["DatasetType"] == "derivative"
        assert (root / "dataset_description.json").is_file()
