"""End-to-end: `kedro run --env segmentation` from a tiny synthetic cohort with label maps to the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.test_end_to_end import copy_project, kedro
from tlkedro.variants import deep_merge

pytestmark = pytest.mark.slow

# The tiny environment's sizes (conf/tiny) on top of conf/segmentation: 32x32 slices, 40 subjects, 1 epoch.
TINY = """
synthetic: {n_subjects: 40, voxel_size_mm: 4.0}
preprocessing:
  spacing_mm: [4.0, 4.0, 4.0]
  slices: {size: [32, 32], selection: k_central, k: 3}
  volume: {shape: [40, 48, 40]}
  splits: {pretrain: 0.5, finetune: 0.25, test: 0.25}
pretrain:
  trainer: {max_epochs: 1, batch_size: 16}
  data: {augmentation: []}
segment:
  trainer: {max_epochs: 1, batch_size: 16}
"""
VARIANTS = ["scratch", "full", "freeze", "truncated", "decoder_only"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("segment"))
    # One environment may not hold a key in two files: merge TINY into the file that holds it.
    tiny = yaml.safe_load(TINY)
    for path in sorted((root / "conf" / "segmentation").glob("parameters*.yml")):
        content = yaml.safe_load(path.read_text())
        for key in set(tiny) & set(content):
            content[key] = deep_merge(content[key], tiny.pop(key))
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    (root / "conf" / "segmentation" / "parameters_tiny.yml").write_text(
        yaml.safe_dump(tiny, sort_keys=False)
    )
    result = kedro(root, "run", "--env", "segmentation", "--pipelines", "data,pretrain,segment")
    (root / "run.log").write_text(result.stdout + result.stderr)
    return root


def test_segment_run_writes_per_subject_metrics_masks_and_the_report(project: Path) -> None:
    test_masks = np.load(project / "data/05_model_input/test/masks.npy")
    test_labels = pd.read_parquet(project / "data/05_model_input/test/labels.parquet")
    for variant in VARIANTS:
        folder = project / "data/07_model_output/segment" / variant
        table = pd.read_parquet(folder / "subject_metrics_test.parquet")
        assert set(table["subject_id"]) == set(test_labels["subject_id"].astype(str))
        assert table["dice_mean"].between(0, 1).all()
        assert np.load(folder / "masks_test.npy").shape == test_masks.shape
    [comparison] = (project / "data/08_reporting/segment_comparison.csv").glob("*/*.csv")
    rows = pd.read_csv(comparison).set_index("variant")
    assert list(rows.index) == [f"segment.{v}" for v in VARIANTS]
    assert (rows.drop(index="segment.scratch")["baseline"] == "segment.scratch").all()
    [report] = (project / "data/08_reporting/segment_report.md").glob("*/*.md")
    assert "| segment.truncated | truncated | all |" in report.read_text()
    assert list((project / "data/08_reporting/segment_masks.png").glob("*/*.png"))
