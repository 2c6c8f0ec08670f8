"""``kedro run --pipelines predict`` through the real CLI: train on a few shared IXI scans (conf/ixi, cut
down), then score other IXI scans given without sex and with only some ages.

The new scans are whole-head and native-space, so predict must register them as the model's training
scans were (conf/ixi: affine to MNI), and with the model's recorded parameters even when the session's
differ. The finetune model is multitask (sex, plus an age head), so predict writes both heads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.shared_ixi import ixi_participants, link_scans, needs_ixi, read_scans_from
from tests.test_end_to_end import PROJECT, copy_project, kedro

N_TRAIN, N_NEW = 10, 3

pytestmark = [
    pytest.mark.slow,
    needs_ixi,
]


def _small_ixi(conf: Path, bids: Path) -> None:
    """conf/ixi on the linked scans: fixed splits (no folds), 1 epoch, finetune.full only, multitask."""
    read_scans_from(conf, bids)
    parameters = yaml.safe_load((conf / "ixi" / "parameters.yml").read_text())
    parameters["preprocessing"]["spatial_normalisation"]["fast"] = True
    parameters["preprocessing"]["splits"].update(pretrain=0.5, finetune=0.5)
    parameters["cross_validation"] = None
    small = {"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False}
    for pipeline in ("pretrain", "finetune"):
        parameters[pipeline]["trainer"] = small
        parameters[pipeline]["data"] = {"val_fraction": 0.4}  # 2 of 5 subjects
        parameters[pipeline]["train_on"] = pipeline
    parameters["finetune"]["sweeps"] = {}
    parameters["finetune"][
        "variants"
    ] = {  # full only: null removes a base variant in an environment
        "scratch": None,
        "linear_probe": None,
        "freeze_layer3_1": None,
    }
    parameters["finetune"]["objective"] = {
        "name": "cross_entropy",
        "auxiliary": [
            {"name": "task", "weight": 0.5, "kwargs": {"target": "age", "task": "regression"}}
        ],
    }
    (conf / "ixi" / "parameters.yml").write_text(yaml.safe_dump(parameters))


def test_predict_scores_new_scans_with_every_head_of_a_trained_variant(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project")
    participants = ixi_participants()
    link_scans(tmp_path / "train", participants.iloc[:N_TRAIN])
    new = participants.iloc[N_TRAIN : N_TRAIN + N_NEW][["participant_id", "age"]].copy()
    new.loc[new.index[1], "age"] = np.nan  # no sex at all, and one age unknown
    link_scans(tmp_path / "new", new)
    _small_ixi(root / "conf", tmp_path / "train")

    kedro(root, "run", "--env", "ixi", "--pipelines", "data,pretrain,finetune")
    # A session whose preprocessing differs from the model's: predict uses the model's (float16).
    params = (
        f"predict.model=finetune.full,predict.scans={tmp_path / 'new'},preprocessing.dtype=float32"
    )
    result = kedro(root, "run", "--env", "ixi", "--pipelines", "predict", "--params", params)

    data = root / "data"
    record = json.loads((data / "07_model_output/finetune/full/config.json").read_text())
    assert record["preprocessing"]["spatial_normalisation"]["method"] == "affine"
    assert "preprocessing.dtype is 'float16' for it, 'float32'" in result.stdout + result.stderr
    qc = pd.read_parquet(data / "02_intermediate/predict/registration_qc.parquet")
    assert len(qc) == N_NEW and (qc["similarity"] > 0.4).all()  # registered to MNI like training
    images = np.load(data / "05_model_input/predict/images.npy", mmap_mode="r")
    slices = len(
        yaml.safe_load((PROJECT / "conf" / "ixi" / "parameters.yml").read_text())["preprocessing"][
            "slices"
        ]["positions_mm"]
    )
    # The model's preprocessing: conf/ixi's MNI slices per scan.
    assert images.dtype == np.float16 and images.shape == (N_NEW * slices, 1, 64, 64)

    table = pd.read_parquet(data / "07_model_output/predict/predictions.parquet")
    assert sorted(table["subject_id"].unique()) == sorted(new["participant_id"])
    assert (table["model"] == "finetune.full").all()
    assert sorted(table["head"].value_counts().items()) == [("age", N_NEW), ("sex", N_NEW)]
    age = table[table["head"] == "age"].set_index("subject_id").loc[new["participant_id"]]
    assert age["target"].to_numpy() == pytest.approx(new["age"].to_numpy(), nan_ok=True)
    assert age["gap"].notna().tolist() == [True, False, True]
    # A 1-epoch model with 2 validation subjects is too few for the correction: the table says so.
    assert age["bias_correction"].str.startswith("none: ").all()
    sex = table[table["head"] == "sex"]
    assert sex["target"].isna().all() and sex["probability"].between(0, 1).all()
    [report] = (data / "08_reporting/predict_report.md").glob("*/predict_report.md")
    assert f"{N_NEW} subjects scored" in report.read_text()
