"""ROI time series (conf/timeseries) end to end through the real ``kedro`` CLI.

The synthetic cohort writes one series per subject; two are then damaged (one gets text in a cell, one
loses an ROI column) and must be quarantined with their reasons; a 1D ResNet is pretrained on age and
fine-tuned on sex from it (with the series augmentation of conf/timeseries), and the reports hold the
series' sections (SVCCA per 1D stage, saliency per ROI, no head-size rows); the predict pipeline then
scores new series with the fine-tuned model. Only the sizes are cut down (subjects, epochs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.test_end_to_end import copy_project, kedro
from tlkedro.imaging.timeseries import series_input

N_SUBJECTS = 40
LENGTH = 96

pytestmark = pytest.mark.slow


def _small(conf: Path) -> None:
    path = conf / "timeseries" / "parameters.yml"
    parameters = yaml.safe_load(path.read_text())
    parameters["synthetic"]["n_subjects"] = N_SUBJECTS
    parameters["preprocessing"]["timeseries"]["length"] = LENGTH
    for pipeline in ("pretrain", "finetune"):
        parameters[pipeline]["trainer"] = {
            "max_epochs": 1,
            "batch_size": 8,
            "enable_progress_bar": False,
        }
    parameters["reporting"]["evaluation"]["n_resamples"] = 200
    path.write_text(yaml.safe_dump(parameters))


def test_series_are_checked_then_pretrained_on_age_and_finetuned_on_sex(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project")
    _small(root / "conf")
    kedro(root, "run", "--env", "timeseries", "--pipelines", "synthetic")
    data = root / "data" / "timeseries"
    files = sorted((data / "01_raw" / "synthetic" / "timeseries").glob("*_timeseries.tsv"))
    assert len(files) == N_SUBJECTS
    text, narrow = files[0], files[1]
    table = pd.read_csv(text, sep="\t").astype(object)
    table.iloc[5, 2] = "high"
    table.to_csv(text, sep="\t", index=False)
    pd.read_csv(narrow, sep="\t").iloc[:, :-1].to_csv(narrow, sep="\t", index=False)

    kedro(
        root,
        "run",
        "--env",
        "timeseries",
        "--pipelines",
        "ingestion,preprocessing,pretrain,finetune,reporting",
    )

    quarantine = pd.read_parquet(data / "02_intermediate" / "quarantine.parquet")
    assert dict(
        zip(quarantine["source"].map(lambda s: Path(s).name), quarantine["reason_code"])
    ) == {
        text.name: "non_numeric",
        narrow.name: "wrong_rois",
    }
    manifest = pd.read_parquet(data / "02_intermediate" / "manifest.parquet")
    assert len(manifest) == N_SUBJECTS - 2
    total = 0
    for split in ("pretrain", "finetune", "test"):
        series = np.load(data / "05_model_input" / split / "images.npy")
        labels = pd.read_parquet(data / "05_model_input" / split / "labels.parquet")
        assert series.shape[1:] == (8, LENGTH) and len(series) == len(labels)
        raw = manifest.set_index("subject_id").loc[labels["subject_id"].iloc[0], "path"]
        expected = series_input(pd.read_csv(raw, sep="\t").to_numpy(), LENGTH)  # z-scored, cropped
        np.testing.assert_allclose(series[0], expected, rtol=1e-5, atol=1e-6)
        total += len(series)
    assert total == N_SUBJECTS - 2
    for pipeline, variants in (
        ("pretrain", ["default"]),
        ("finetune", ["scratch", "full", "linear_probe", "freeze_layer3_0"]),
    ):
        for variant in variants:
            assert list((data / "06_models" / pipeline / variant / "model.pt").glob("*/model.pt"))
            predictions = pd.read_parquet(
                data / "07_model_output" / pipeline / variant / "predictions_test.parquet"
            )
            assert len(predictions) == len(
                pd.read_parquet(data / "05_model_input" / "test" / "labels.parquet")
            )
        [report] = (data / "08_reporting" / f"{pipeline}_report.md").glob(f"*/{pipeline}_report.md")
        text = report.read_text()
        assert "baseline.linear" in text
        assert "### Head size\n\nNot applicable: the inputs are ROI time series" in text
        assert "`integrated_gradients` maps" in text and "| ROI 7 |" in text  # 8 ROIs ranked
    assert "## SVCCA similarity to the source model per stage" in text  # the finetune report
    assert not list(data.glob("*/*registration*"))  # nothing registered, no QC mosaic

    # New subjects' series, labels unknown: two of the cohort's, one with a missing value.
    new = root / "new"
    new.mkdir()
    accepted = [Path(p).name for p in manifest["path"].iloc[:2]]
    for name in accepted:
        (new / name).write_bytes((data / "01_raw" / "synthetic" / "timeseries" / name).read_bytes())
    broken = pd.read_csv(new / accepted[0], sep="\t")
    broken.iloc[7, 0] = np.nan
    broken.to_csv(new / "sub-new_timeseries.tsv", sep="\t", index=False)
    subjects = [
        name.removesuffix("_timeseries.tsv") for name in (*accepted, "sub-new_timeseries.tsv")
    ]
    # The minimal BIDS table: the subject id column alone.
    participants = pd.DataFrame({"participant_id": subjects})
    participants.to_csv(new / "participants.tsv", sep="\t", index=False)
    kedro(
        root,
        "run",
        "--env",
        "timeseries",
        "--pipelines",
        "predict",
        "--params",
        f"predict.model=finetune.full,predict.scans={new}",  # the glob: conf/timeseries's
    )
    predictions = pd.read_parquet(data / "07_model_output" / "predict" / "predictions.parquet")
    assert sorted(predictions["subject_id"]) == sorted(subjects[:2])
    assert predictions["probability"].between(0, 1).all() and predictions["target"].isna().all()
    quarantine = pd.read_parquet(data / "02_intermediate" / "predict" / "quarantine.parquet")
    assert quarantine["reason_code"].tolist() == ["missing_values"]
