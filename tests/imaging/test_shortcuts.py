"""The shortcut check: global features of scans, and a planted cue found where a null one is not."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tlkedro.imaging.shortcuts import FEATURES, global_features, scan_features, shortcut_check


def _write_scan(path, radius: int, level: float, rng: np.random.Generator) -> None:
    """A 'brain' of the given radius (voxels) and intensity level in a 16^3 volume, zero outside."""
    grid = np.indices((16, 16, 16)) - 7.5
    inside = (grid**2).sum(axis=0) < radius**2
    data = np.where(inside, level + rng.normal(0, 1, inside.shape), 0).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def test_global_features_count_brain_voxels_and_summarise_their_intensities(tmp_path):
    data = np.zeros((6, 6, 6), dtype=np.float32)
    data[1:3, 1:3, 1:3] = 100.0  # 8 bright voxels
    data[3:5, 3:5, 3:5] = 20.0  # 8 dark ones: below 0.55 x the 95th percentile
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii.gz")

    features = global_features(tmp_path / "a.nii.gz")

    assert features["brain_voxels"] == 16
    assert features["mean"] == pytest.approx(60.0)
    assert features["sd"] == pytest.approx(40.0)
    assert features["p50"] == pytest.approx(60.0)
    assert features["dark_fraction"] == pytest.approx(0.5)


def test_global_features_refuse_an_empty_scan(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "empty.nii")
    with pytest.raises(ValueError, match="no nonzero voxels"):
        global_features(tmp_path / "empty.nii")


def test_scan_features_add_the_files_sorted_position(tmp_path):
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{name}.nii.gz" for name in ("c", "a", "b")]
    for path in paths:
        _write_scan(path, 5, 50.0, rng)

    table = scan_features(paths, workers=1)

    assert list(table.columns) == list(FEATURES)
    assert table["file_order"].tolist() == [2, 0, 1]


def test_a_planted_intensity_cue_for_sex_is_found(tmp_path):
    rng = np.random.default_rng(1)
    sex = np.tile([0, 1], 30)
    paths = [tmp_path / f"scan_{i:02d}.nii.gz" for i in range(sex.size)]
    for path, s in zip(paths, sex, strict=True):
        # Men's scans are brighter: a scanner cue that no anatomy is needed to read.
        _write_scan(path, 5, 50.0 + 10.0 * s + rng.normal(0, 2), rng)

    report = shortcut_check(scan_features(paths, workers=1), sex, "classification")

    assert report.chance == pytest.approx(0.5)
    assert report.score > 0.95
    name, best = report.best_feature
    assert best > 0.95 and name in {"mean", "p5", "p25", "p50", "p75", "p95"}
    assert report.gain > 0.45


def test_a_planted_volume_cue_for_age_is_found_and_a_null_target_is_not():
    rng = np.random.default_rng(2)
    age = rng.uniform(45, 82, 80)
    features = pd.DataFrame(
        {
            "brain_voxels": 2000 - 10 * age + rng.normal(0, 5, age.size),  # shrinks with age
            "mean": rng.normal(500, 20, age.size),
            "file_order": rng.permutation(age.size).astype(float),
        }
    )

    planted = shortcut_check(features, age, "regression")
    null = shortcut_check(features, rng.uniform(45, 82, 80), "regression")

    assert planted.metric == "mae"
    assert planted.score < 1.0 < 8.0 < planted.chance
    assert planted.best_feature[0] == "brain_voxels"
    # Unrelated features predict no better than the training mean (within cross-validation noise).
    assert null.gain < 0.5
    assert null.score > 0.9 * null.chance


def test_a_null_target_is_not_predicted_by_classification():
    rng = np.random.default_rng(3)
    features = pd.DataFrame(
        rng.normal(size=(100, 4)), columns=["brain_voxels", "mean", "sd", "file_order"]
    )
    report = shortcut_check(features, rng.integers(0, 2, 100), "classification")
    assert report.score < report.chance + 0.1


def test_features_and_targets_must_have_the_same_length():
    with pytest.raises(ValueError, match="3 feature rows but 2 targets"):
        shortcut_check(pd.DataFrame({"mean": [1.0, 2.0, 3.0]}), [0, 1], "classification")
