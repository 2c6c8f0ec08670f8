"""The real-data recipe (conf/ixi) end to end through the real ``kedro`` CLI, on a few shared IXI scans.

Raw, unregistered scans are spatially normalised, every subject is cross-validated (2 folds here), the
sex models start from the age model of the same fold, and the reports hold the baselines, intervals and
flags. Only the sizes are cut down (scans, folds, epochs); the recipe is conf/ixi's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.shared_ixi import ixi_participants, link_scans, needs_ixi, read_scans_from
from tests.test_end_to_end import PROJECT, copy_project, kedro

N_SCANS = 16

pytestmark = [
    pytest.mark.slow,
    needs_ixi,
]


def _small_ixi(conf: Path, bids: Path) -> None:
    """conf/ixi with the shared scans' copy and smaller sizes: 2 folds, 1 epoch, no ablation."""
    read_scans_from(conf, bids)
    parameters = yaml.safe_load((conf / "ixi" / "parameters.yml").read_text())
    parameters["preprocessing"]["spatial_normalisation"]["fast"] = True
    parameters["cross_validation"]["folds"] = 2
    small = {"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False}
    for pipeline in ("pretrain", "finetune"):
        parameters[pipeline]["trainer"] = small
        parameters[pipeline]["data"] = {"val_fraction": 0.25}  # 2 of a fold's 8 training subjects
    parameters["finetune"]["sweeps"] = {}
    parameters["reporting"]["analysis"] = {
        "svcca": {"enabled": False},
        "saliency": {"enabled": False},
    }
    parameters["reporting"]["evaluation"] = {"n_resamples": 200}
    (conf / "ixi" / "parameters.yml").write_text(yaml.safe_dump(parameters))


def test_raw_scans_are_normalised_cross_validated_and_reported(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project")
    link_scans(tmp_path / "bids", ixi_participants().iloc[:N_SCANS])
    _small_ixi(root / "conf", tmp_path / "bids")

    kedro(root, "run", "--env", "ixi")

    data = root / "data"
    qc = pd.read_parquet(data / "02_intermediate" / "registration_qc.parquet")
    assert len(qc) == N_SCANS and (qc["similarity"] > 0.4).all()
    labels = pd.read_parquet(data / "05_model_input" / "finetune" / "labels.parquet")
    assert labels["head_scale"].notna().all()
    positions = yaml.safe_load((PROJECT / "conf" / "ixi" / "parameters.yml").read_text())[
        "preprocessing"
    ]["slices"]["positions_mm"]
    assert sorted(labels["slice"].unique()) == sorted(positions)  # MNI z in mm, as conf/ixi asks
    folds = pd.read_parquet(data / "03_primary" / "folds.parquet")
    assert sorted(folds["fold"].value_counts()) == [8, 8]
    # Every subject is predicted once, out of fold, for age and for sex.
    for pipeline, variant in (("pretrain", "default"), ("finetune", "full")):
        pooled = pd.read_parquet(
            data / "07_model_output" / pipeline / variant / "predictions_cv.parquet"
        )
        assert sorted(pooled["subject_id"]) == sorted(folds["subject_id"])
    [report] = (data / "08_reporting" / "finetune_report.md").glob("*/finetune_report.md")
    text = report.read_text()
    assert (
        "baseline.trivial" in text and "baseline.covariate" in text
    )  # head size, from the registration
    assert "95% interval" in text and "finetune.scratch" in text
    assert "rests on 16 subjects" in text  # the flag of metrics on small samples
