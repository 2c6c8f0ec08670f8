"""A self-supervised pretrain variant through the real ``kedro`` CLI: tiny cohort -> SimCLR -> fine-tuned
on sex -> report."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.test_end_to_end import copy_project, kedro, output

pytestmark = pytest.mark.slow

RUN = {
    "run": {
        "env": "tiny",
        "pipelines": "data,pretrain,finetune,reporting",
        "params": {
            "pretrain": {
                "variants": {
                    "simclr": {
                        "objective": {"name": "simclr", "kwargs": {"projection_dim": 16}},
                        "evaluate_on": [],
                        "unlabelled_from": "external",
                    }
                }
            },
            "finetune": {"variants": {"from_simclr": {"init_from": "pretrain.simclr"}}},
        },
    }
}


def test_a_simclr_source_pretrains_without_labels_and_is_fine_tuned_through_the_cli(tmp_path):
    copy_project(tmp_path)
    (tmp_path / "ssl.yml").write_text(yaml.safe_dump(RUN))

    kedro(tmp_path, "run", "--config", "ssl.yml")

    config = json.loads(output(tmp_path, "pretrain", "simclr", "config.json").read_text())
    assert config["config"]["objective"]["name"] == "simclr"
    metrics = json.loads(output(tmp_path, "pretrain", "simclr", "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(metrics["best_val_loss"])
    tuned = json.loads(output(tmp_path, "finetune", "from_simclr", "metrics.json").read_text())
    assert tuned["init_from"] == "pretrain.simclr" and 0.0 <= tuned["test/auroc"] <= 1.0
    [report] = (tmp_path / "data/08_reporting/finetune_report.md").glob("*/finetune_report.md")
    assert "| finetune.from_simclr |" in report.read_text()
