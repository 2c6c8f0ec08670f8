"""Slice and volume extraction: which slices each mode selects, along which axis, and the label rows."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tlkedro.imaging.extraction import (
    AXES,
    ExtractionConfig,
    ScanExtractionError,
    build_model_input,
    extract_scan,
)

GRID = (12, 10, 8)


def _indexed_volume(tmp_path: Path, axis: int) -> str:
    """A RAS volume on the 2 mm grid ``GRID`` whose value is 1 + the voxel's index along ``axis``."""
    index = np.indices(GRID)[axis].astype(np.float32)
    path = tmp_path / f"indexed_{axis}.nii.gz"
    nib.save(nib.Nifti1Image(1.0 + index, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return str(path)


def _config(**slices: object) -> ExtractionConfig:
    # divide_by_mean keeps the ratios between slices, which identify them; no resizing at full size.
    axis = slices.get("axis", "axial")
    in_plane = [n for i, n in enumerate(GRID) if i != AXES[axis]]
    return ExtractionConfig(
        normalisation="divide_by_mean",
        volume={"shape": GRID},
        slices={"size": in_plane, **slices},
        dtype="float32",
    )


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize(
    ("selection", "options", "expected"),
    [
        ("central", {}, lambda n: [n // 2]),
        ("k_central", {"k": 3}, lambda n: [n // 2 - 1, n // 2, n // 2 + 1]),
        ("every_nth", {"step": 3}, lambda n: list(range((n // 2) % 3, n, 3))),
    ],
)
def test_slice_selection_along_each_axis(tmp_path, axis, selection, options, expected):
    config = _config(axis=axis, selection=selection, **options)
    length = GRID[AXES[axis]]
    assert config.slice_indices() == expected(length)
    rows = extract_scan(_indexed_volume(tmp_path, AXES[axis]), config)
    in_plane = tuple(n for i, n in enumerate(GRID) if i != AXES[axis])
    assert rows.shape == (len(expected(length)), 1, *in_plane)
    values = rows.reshape(len(rows), -1)
    assert np.allclose(values, values[:, :1]), "a row must be one plane of the chosen axis"
    # Values are (1 + index) / mean, so ratios between rows identify the slices.
    indices = np.asarray(expected(length))
    np.testing.assert_allclose(
        values[:, 0] / values[0, 0], (1 + indices) / (1 + indices[0]), rtol=1e-5
    )


def test_every_nth_includes_the_central_slice():
    config = ExtractionConfig(
        volume={"shape": (80, 96, 80)}, slices={"selection": "every_nth", "step": 7}
    )
    indices = config.slice_indices()
    assert (
        40 in indices and np.all(np.diff(indices) == 7) and indices[0] < 7 and indices[-1] >= 80 - 7
    )


def test_slices_are_resized_to_fit_keeping_the_aspect_ratio(tmp_path):
    path = tmp_path / "ones.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(GRID, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    config = ExtractionConfig(
        normalisation="divide_by_mean",
        volume={"shape": GRID},
        slices={"axis": "axial", "size": (32, 32)},
    )
    rows = extract_scan(str(path), config)
    assert rows.shape == (1, 1, 32, 32) and rows.dtype == np.float16
    # The 12 x 10 axial plane scales by 32/12 to 32 x 27 and is zero padded to 32 x 32.
    filled = np.argwhere(rows[0, 0] > 0.5)
    assert filled[:, 0].min() == 0 and filled[:, 0].max() == 31
    assert filled[:, 1].max() - filled[:, 1].min() + 1 == round(10 * 32 / 12)


def test_volume_mode_returns_one_row_on_the_fixed_grid(tmp_path):
    config = ExtractionConfig(mode="volume", volume={"shape": (8, 6, 10)}, dtype="float32")
    rows = extract_scan(_indexed_volume(tmp_path, 2), config)
    assert rows.shape == (1, 1, 8, 6, 10) and rows.dtype == np.float32
    assert config.slice_indices() == [-1]


def test_a_bad_file_names_itself_in_the_error(tmp_path):
    bad = tmp_path / "sub-01_T1w.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ScanExtractionError, match=r"sub-01_T1w\.nii\.gz: cannot be read as NIfTI"):
        extract_scan(str(bad), ExtractionConfig())


def test_build_model_input_lists_one_label_row_per_image_row(tmp_path):
    scans = pd.DataFrame(
        {
            "subject_id": ["a", "b"],
            "path": [_indexed_volume(tmp_path, 2)] * 2,
            "age": [61.5, 70.0],
            "sex": [0, 1],
            "site": ["11025", "11026"],
        }
    )
    config = _config(selection="k_central", k=3)
    stack, labels = build_model_input(scans, config, workers=1)
    assert stack.shape == (6, 1, 12, 10)
    assert list(labels.columns) == ["subject_id", "age", "sex", "site", "slice"]
    assert labels["subject_id"].tolist() == ["a"] * 3 + ["b"] * 3
    assert labels["slice"].tolist() == [3, 4, 5] * 2
    assert labels["age"].tolist() == [61.5] * 3 + [70.0] * 3
    blocks = list(stack)
    assert [b.shape for b in blocks] == [(3, 1, 12, 10)] * 2


def test_k_larger_than_the_axis_is_rejected_naming_the_key():
    with pytest.raises(ValidationError, match=r"slices.k=9 exceeds the 8 axial slices"):
        ExtractionConfig(volume={"shape": GRID}, slices={"selection": "k_central", "k": 9})
