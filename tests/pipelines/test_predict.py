"""The predict pipeline on an in-memory catalog: new BIDS scans without labels, preprocessed with the model's
recorded parameters, scored by every head of a multitask model."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import ParquetDataset

from tlkedro.datasets import NiftiCollectionDataset, NumpyArrayDataset
from tlkedro.pipelines.predict import PredictParams, create_pipeline
from tlkedro.pipelines.predict.nodes import ingest_new_scans, model_preprocessing
from tlkedro.pipelines.preprocessing.nodes import PreprocessingParams
from tlkedro.pipelines.training.nodes import record_run
from tlkedro.plan import PlanError, build_plan
from tlkedro.tl.training import fit

N_SCANS = 6
TRAINED = {  # the model's preprocessing: 32x32 central slices of raw scans
    "spatial_normalisation": {"method": "none"},
    "volume": {"shape": [16, 16, 16]},
    "slices": {"size": [32, 32]},
    "dtype": "float32",
}
FINETUNE = {
    "seed": 3,
    "init_from": None,
    "target": "sex",
    "task": "classification",
    "architecture": {"name": "cbr_tiny"},
    "objective": {
        "name": "cross_entropy",
        "auxiliary": [
            {"name": "task", "weight": 0.5, "kwargs": {"target": "age", "task": "regression"}}
        ],
    },
    "strategy": {"name": "scratch"},
    "trainer": {"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False},
    "data": {"val_fraction": 0.25, "augmentation": []},
    "variants": {"full": {}, "scratch": {}},
}

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    # Models are read as `<variant>.model`, as the registry builds it (which silences the same warning).
    pytest.mark.filterwarnings("ignore:One or more dataset names contain"),
]


def _bids(folder: Path) -> None:
    """Small brain-like scans; participants.tsv with an age for half of them and no sex column."""
    rng = np.random.default_rng(0)
    for i in range(N_SCANS):
        data = np.zeros((20, 24, 20), dtype=np.float32)
        data[4:16, 5:19, 4:16] = rng.uniform(50, 150, size=(12, 14, 12))
        path = folder / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)


def _checkpoint(plan) -> dict:
    rng = np.random.default_rng(1)
    labels = pd.DataFrame(
        {
            "subject_id": [f"t-{i}" for i in range(24)],
            "age": rng.uniform(40, 80, 24),
            "sex": np.arange(24) % 2,
        }
    )
    images = rng.normal(size=(24, 1, 32, 32)).astype(np.float32)
    return fit(plan.variants["finetune.full"].config, images, labels).checkpoint


@pytest.fixture(scope="module")
def plan():
    return build_plan({"finetune": FINETUNE})


@pytest.fixture(scope="module")
def checkpoint(plan) -> dict:
    return _checkpoint(plan)


def _record(plan, namespace: str, preprocessing: dict) -> dict:
    config = plan.variants[namespace].config
    return record_run(namespace=namespace, config=config, workdir="", preprocessing=preprocessing)


def test_new_scans_without_labels_are_scored_by_every_head(plan, checkpoint, tmp_path, caplog):
    _bids(tmp_path / "new")
    metadata = pd.DataFrame(
        {"participant_id": [f"sub-{i:02d}" for i in range(N_SCANS)], "age": [61.0, None] * 3}
    )
    current = {**TRAINED, "slices": {"size": [48, 48]}, "workers": 1}  # the session's: not used
    catalog = DataCatalog(
        {
            "params:preprocessing": MemoryDataset(current),
            "params:ingestion": MemoryDataset({"layout": "bids", "workers": 1}),
            "finetune.full.config": MemoryDataset(_record(plan, "finetune.full", TRAINED)),
            "finetune.full.model": MemoryDataset(checkpoint, copy_mode="assign"),
            "predict_scans": NiftiCollectionDataset(
                path=str(tmp_path / "new"), glob="sub-*/**/anat/*_T1w.nii.gz"
            ),
            "predict_metadata": MemoryDataset(metadata),
            "predict_normalised_scans": NiftiCollectionDataset(
                path=str(tmp_path / "normalised"), glob="**/*.nii.gz", workers=1
            ),
            "predict_registration_qc_mosaic": MemoryDataset(copy_mode="assign"),
            "predict_images": NumpyArrayDataset(filepath=str(tmp_path / "images.npy")),
            "predict_labels": ParquetDataset(filepath=str(tmp_path / "labels.parquet")),
            "predictions": ParquetDataset(filepath=str(tmp_path / "predictions.parquet")),
            "predict_report": MemoryDataset(),
        }
    )
    pipeline = create_pipeline(plan, {"model": "finetune.full", "scans": str(tmp_path / "new")})
    with caplog.at_level(logging.WARNING):
        SequentialRunner().run(pipeline, catalog)

    assert catalog.load("predict_images").shape == (N_SCANS, 1, 32, 32)  # the model's 32, not 48
    assert "preprocessing.slices.size is [32, 32] for it, [48, 48]" in caplog.text
    table = catalog.load("predictions")
    assert len(table) == 2 * N_SCANS
    assert list(table.columns[:8]) == [
        "subject_id",
        "model",
        "head",
        "task",
        "target",
        "prediction",
        "corrected_prediction",
        "gap",
    ]
    assert (table["model"] == "finetune.full").all()
    age = table[table["head"] == "age"].set_index("subject_id")
    assert age["target"].tolist() == pytest.approx([61.0, np.nan] * 3, nan_ok=True)
    assert age["gap"].notna().sum() == 3
    sex = table[table["head"] == "sex"]
    assert sex["target"].isna().all() and sex["probability"].between(0, 1).all()
    report = catalog.load("predict_report")
    assert f"{N_SCANS} subjects scored" in report and "| finetune.full | age |" in report


def test_models_trained_on_differently_preprocessed_images_are_refused(plan) -> None:
    other = {**TRAINED, "spatial_normalisation": {"method": "affine"}}
    records = [_record(plan, "finetune.full", TRAINED), _record(plan, "finetune.scratch", other)]
    with pytest.raises(ValueError, match=r"finetune.full and finetune.scratch.*method: 'none'"):
        model_preprocessing(TRAINED, *records, models=["finetune.full", "finetune.scratch"])
    # Keys that do not change the model input may differ; the machine's worker count is this one's.
    seeded = _record(plan, "finetune.scratch", {**TRAINED, "seed": 1, "workers": 8})
    params = model_preprocessing(
        {"workers": 2}, records[0], seeded, models=["finetune.full", "finetune.scratch"]
    )
    assert params == PreprocessingParams.model_validate({**TRAINED, "workers": 2})


def test_a_run_record_without_preprocessing_says_how_to_record_it(plan) -> None:
    record = _record(plan, "finetune.full", TRAINED)
    del record["preprocessing"]
    with pytest.raises(ValueError, match=r"kedro run --nodes finetune.full.record_run"):
        model_preprocessing(TRAINED, record, models=["finetune.full"])


def test_the_models_and_their_fold_runs_are_read_from_the_plan(plan) -> None:
    with pytest.raises(PlanError, match=r"\['finetune.ful'\].*finetune.full, finetune.scratch"):
        create_pipeline(plan, {"model": "finetune.ful"})
    with pytest.raises(PlanError, match=r"predict.modle: Extra inputs"):
        create_pipeline(plan, {"modle": "finetune.full"})
    every = create_pipeline(plan, PredictParams().model_dump())
    assert {"finetune.full.model", "finetune.scratch.model"} <= every.inputs()
    folds = build_plan(
        {"finetune": FINETUNE, "cross_validation": {"split": "finetune", "folds": 3}}
    )
    [score] = [
        n for n in create_pipeline(folds, {"model": ["finetune.full"]}).nodes if "score" in n.name
    ]
    assert score.inputs[2:] == [f"finetune.full.fold_{i}.model" for i in range(3)]


def test_scans_outside_predict_scans_are_refused_and_linked_ones_accepted(tmp_path) -> None:
    _bids(tmp_path / "store")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "sub-00").symlink_to(tmp_path / "store" / "sub-00")  # a linked subject
    images = NiftiCollectionDataset(path=str(tmp_path / "new"), glob="sub-*/**/anat/*_T1w.nii.gz")
    metadata = pd.DataFrame({"participant_id": ["sub-00"]})
    ingestion = {"layout": "bids", "workers": 1}
    linked = PredictParams(scans=str(tmp_path / "new"))
    manifest, _ = ingest_new_scans(images.load(), metadata, ingestion, predict=linked)
    assert list(manifest["subject_id"]) == ["sub-00"]
    elsewhere = PredictParams(scans=str(tmp_path / "other"))
    with pytest.raises(ValueError, match=r"predict.scans is .*other, but predict_scans read"):
        ingest_new_scans(images.load(), metadata, ingestion, predict=elsewhere)
    with pytest.raises(ValueError, match=r"predict_scans holds no scan"):
        ingest_new_scans({}, metadata, ingestion, predict=linked)


SERIES_TRAINED = {"timeseries": {"length": 48}, "dtype": "float32"}  # the model's series length
SERIES_FINETUNE = {
    **FINETUNE,
    "architecture": {
        "name": "resnet10_1d",
        "kwargs": {"width_factors": {f"layer{i}": 0.125 for i in range(1, 5)}},
    },
    "objective": {"name": "cross_entropy"},
    "variants": {"full": {}},
}


def _write_series(folder: Path) -> dict[str, Path]:
    """New subjects' series: three of 6 ROIs (64, 48 and 40 time points), one of 5 ROIs, one with text."""
    rng = np.random.default_rng(2)
    folder.mkdir()
    files = {}
    for subject, (timepoints, rois) in {
        "sub-a": (64, 6),
        "sub-b": (48, 6),
        "sub-c": (40, 6),
        "sub-narrow": (64, 5),
        "sub-text": (64, 6),
    }.items():
        table = pd.DataFrame(
            1000 + 10 * rng.standard_normal((timepoints, rois)),
            columns=[f"roi_{i}" for i in range(rois)],
        )
        if subject == "sub-text":
            table = table.astype(object)
            table.iloc[3, 1] = "n.a."
        files[subject] = folder / f"{subject}_timeseries.tsv"
        table.to_csv(files[subject], sep="\t", index=False)
    return files


def test_new_series_are_checked_and_scored_as_the_models_training_series(tmp_path) -> None:
    from tlkedro.imaging.timeseries import series_input

    plan = build_plan({"finetune": SERIES_FINETUNE})
    rng = np.random.default_rng(1)
    labels = pd.DataFrame(
        {"subject_id": [f"t-{i}" for i in range(24)], "age": 60.0, "sex": np.arange(24) % 2}
    )
    trained = fit(
        plan.variants["finetune.full"].config,
        rng.normal(size=(24, 6, 48)).astype(np.float32),
        labels,
    ).checkpoint
    files = _write_series(tmp_path / "new")
    metadata = pd.DataFrame({"participant_id": list(files), "sex": ["F", None, "M", "F", "M"]})
    catalog = DataCatalog(
        {
            "params:preprocessing": MemoryDataset({"workers": 1}),
            "params:ingestion": MemoryDataset(
                {"layout": "timeseries", "workers": 1, "timeseries": {"min_timepoints": 32}}
            ),
            "finetune.full.config": MemoryDataset(_record(plan, "finetune.full", SERIES_TRAINED)),
            "finetune.full.model": MemoryDataset(trained, copy_mode="assign"),
            "predict_scans": NiftiCollectionDataset(
                path=str(tmp_path / "new"), glob="*_timeseries.tsv"
            ),
            "predict_metadata": MemoryDataset(metadata),
            "predict_quarantine": ParquetDataset(filepath=str(tmp_path / "quarantine.parquet")),
            "predict_images": NumpyArrayDataset(filepath=str(tmp_path / "images.npy")),
            "predict_labels": ParquetDataset(filepath=str(tmp_path / "labels.parquet")),
            "predictions": ParquetDataset(filepath=str(tmp_path / "predictions.parquet")),
            "predict_report": MemoryDataset(),
        }
    )
    pipeline = create_pipeline(plan, {"model": "finetune.full"}, layout="timeseries")
    assert not any("registration" in name or "normalise" in name for name in pipeline.outputs())
    SequentialRunner().run(pipeline, catalog)

    quarantine = catalog.load("predict_quarantine")
    assert dict(zip(quarantine["subject_id"], quarantine["reason_code"])) == {
        "sub-narrow": "wrong_rois",  # the model takes 6 ROIs, its input channels
        "sub-text": "non_numeric",
    }
    images = catalog.load("predict_images")
    assert images.shape == (3, 6, 48)  # cropped (64), kept (48) and padded (40) to the model's 48
    for row, subject in enumerate(["sub-a", "sub-b", "sub-c"]):
        raw = pd.read_csv(files[subject], sep="\t").to_numpy()
        np.testing.assert_allclose(images[row], series_input(raw, 48), rtol=1e-5, atol=1e-6)
    table = catalog.load("predictions")
    assert table["subject_id"].tolist() == ["sub-a", "sub-b", "sub-c"]
    assert table["target"].tolist() == pytest.approx([0.0, np.nan, 1.0], nan_ok=True)
    assert table["probability"].between(0, 1).all()
    report = catalog.load("predict_report")
    assert "3 subjects scored; 2 files or records quarantined at ingestion (" in report
    assert "cropped or zero padded to 48 time points" in report and "registration" not in report


def test_series_of_another_roi_count_than_the_models_are_refused_before_ingestion(tmp_path) -> None:
    from tlkedro.pipelines.predict.nodes import ingest_new_series

    files = _write_series(tmp_path / "new")
    series = NiftiCollectionDataset(path=str(tmp_path / "new"), glob="*_timeseries.tsv").load()
    metadata = pd.DataFrame({"participant_id": list(files)})
    ingestion = {"layout": "timeseries", "workers": 1}
    six, five = {"config": {"in_channels": 6}}, {"config": {"in_channels": 5}}
    with pytest.raises(ValueError, match=r"series of \[5, 6\] ROIs"):
        ingest_new_series(series, metadata, ingestion, six, five, predict=PredictParams())
    asked = {**ingestion, "timeseries": {"rois": 5}}
    with pytest.raises(ValueError, match=r"rois is 5, but the models were trained on series of 6"):
        ingest_new_series(series, metadata, asked, six, predict=PredictParams())
