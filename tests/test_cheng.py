"""The 2D tumour-class recipe (conf/cheng) end to end through the real ``kedro`` CLI, on a few shared images.

Cheng CE-MRI JPEG slices in class folders with a labels table are ingested as the ``folders`` layout,
cross-validated per image (2 folds here), and trained from scratch and from a source checkpoint file;
the report holds the baselines, the macro AUROC with its interval, the per-class metrics and the
confusion matrices. A third variant trains a lab's own network, named by class path from the project's
source folder. Only the sizes are cut down (images, folds, epochs, input size), and the source is a
random ResNet-18 of the same input size, since the demo's age model is not built here; the recipe is
conf/cheng's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.test_end_to_end import PROJECT, copy_project, kedro
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import make_checkpoint

CHENG = PROJECT.parent / "shared" / "data" / "cheng_ce_mri_2d"
PER_CLASS = 8
SIZE = [32, 32]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHENG.is_dir(), reason="shared Cheng data absent (../shared/data)"),
]


def _few_images(folder: Path) -> pd.DataFrame:
    """The first images of each class, linked into class folders, with their labels-table rows."""
    labels = pd.read_csv(CHENG / "labels.csv")
    chosen = labels.groupby("label", sort=True).head(PER_CLASS)
    for file in chosen["file"]:
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).symlink_to(CHENG / file)
    chosen.to_csv(folder / "labels.csv", index=False)
    return chosen


# A lab's own network, in the project's source folder (which Kedro puts on the path), named by class path.
LAB_NETS = """
from torch import nn

from tlkedro.tl.architectures import TLModel
from tlkedro.tl.architectures.base import GlobalAvgPool


class LabNet(TLModel):
    def __init__(self, *, in_channels=1, num_outputs=1, img_size=32, dropout=0.0):
        encoder = nn.Sequential()
        encoder.add_module("stem", nn.Conv2d(in_channels, 4, 3, stride=2, padding=1))
        encoder.add_module("act", nn.ReLU())
        encoder.add_module("block", nn.Conv2d(4, 8, 3, stride=2, padding=1))
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        super().__init__(
            encoder,
            stage_names=("stem", "act", "block"),
            spatial_dims=2,
            input_size=size,
            in_channels=in_channels,
            num_outputs=num_outputs,
            dropout=dropout,
            pool=GlobalAvgPool(),
        )
"""


def _small_cheng(conf: Path, images: Path, source: Path) -> None:
    catalog = yaml.safe_load((conf / "cheng" / "catalog.yml").read_text())
    catalog["raw_images"]["path"] = str(images)
    catalog["raw_metadata"]["filepath"] = str(images / "labels.csv")
    (conf / "cheng" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    parameters = yaml.safe_load((conf / "cheng" / "parameters.yml").read_text())
    parameters["preprocessing"]["slices"]["size"] = SIZE
    parameters["cross_validation"]["folds"] = 2
    finetune = parameters["finetune"]
    finetune["init_from"]["file"] = str(source)
    finetune["trainer"] = {"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False}
    finetune["data"] = {"val_fraction": 0.25, "augmentation": []}
    finetune["variants"]["lab_net"] = {
        "architecture": {"name": "lab_nets:LabNet"},
        "strategy": {"name": "scratch"},
        "init_from": None,
    }
    parameters["reporting"]["evaluation"]["n_resamples"] = 200
    (conf / "cheng" / "parameters.yml").write_text(yaml.safe_dump(parameters))


def test_image_folders_are_cross_validated_per_image_and_reported_per_class(
    tmp_path: Path,
) -> None:
    root = copy_project(tmp_path / "project")
    chosen = _few_images(tmp_path / "cheng")
    source = tmp_path / "source.pt"
    model = create_architecture("resnet18", in_channels=1, img_size=SIZE)
    torch.save(make_checkpoint(model, {"task": "regression", "target": "age"}), source)
    _small_cheng(root / "conf", tmp_path / "cheng", source)
    (root / "src" / "lab_nets.py").write_text(LAB_NETS)

    kedro(root, "run", "--env", "cheng")

    data = root / "data" / "cheng"
    manifest = pd.read_parquet(data / "02_intermediate" / "manifest.parquet")
    assert sorted(manifest["scan_id"]) == sorted(chosen["file"])
    assert pd.read_parquet(data / "02_intermediate" / "quarantine.parquet").empty
    images = np.load(data / "05_model_input" / "finetune" / "images.npy")
    assert images.shape == (3 * PER_CLASS, 1, *SIZE)
    folds = pd.read_parquet(data / "03_primary" / "folds.parquet")
    by_class = folds.merge(manifest, on="subject_id").groupby(["fold", "label"]).size()
    assert set(by_class) == {PER_CLASS // 2}  # per image, stratified by class
    for variant in ("scratch", "full", "lab_net"):
        predictions = pd.read_parquet(
            data / "07_model_output" / "finetune" / variant / "predictions_cv.parquet"
        )
        assert sorted(predictions["subject_id"]) == sorted(manifest["subject_id"])
        assert {"probability_0", "probability_1", "probability_2"} <= set(predictions.columns)
    [report] = (data / "08_reporting" / "finetune_report.md").glob("*/finetune_report.md")
    text = report.read_text()
    assert "baseline.trivial" in text and "baseline.linear" in text
    assert "auroc (95% interval)" in text
    assert "| true | glioma | meningioma | pituitary |" in text
    assert "recall (95% interval)" in text
    [per_class] = (data / "08_reporting" / "finetune_class_metrics.csv").glob("*/*.csv")
    assert len(pd.read_csv(per_class)) == 3 * 3  # three variants, three classes
    record = json.loads(
        (data / "07_model_output" / "finetune" / "lab_net.fold_0" / "config.json").read_text()
    )
    assert record["config"]["architecture"]["name"] == "lab_nets:LabNet"
    assert "| finetune.lab_net |" in text
    assert list((data / "08_reporting" / "finetune_confusion.png").glob("*/*.png"))
