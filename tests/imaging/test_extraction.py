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
    assert list(labels.columns) == ["subject_id", "age", "sex", "site", "head_scale", "slice"]
    assert labels["head_scale"].isna().all()  # not registered
    assert labels["subject_id"].tolist() == ["a"] * 3 + ["b"] * 3
    assert labels["slice"].tolist() == [3, 4, 5] * 2
    assert labels["age"].tolist() == [61.5] * 3 + [70.0] * 3
    blocks = list(stack)
    assert [b.shape for b in blocks] == [(3, 1, 12, 10)] * 2


def test_k_larger_than_the_axis_is_rejected_naming_the_key():
    with pytest.raises(ValidationError, match=r"slices.k=9 exceeds the 8 axial slices"):
        ExtractionConfig(volume={"shape": GRID}, slices={"selection": "k_central", "k": 9})


def test_build_model_input_reads_the_given_files_and_carries_head_scale(tmp_path):
    scans = pd.DataFrame(
        {
            "subject_id": ["a", "b"],
            "age": [61.5, 70.0],
            "sex": [0, 1],
            "site": ["s", "s"],
            "head_scale": [0.7, 0.8],
        }
    )
    files = [_indexed_volume(tmp_path, 2), _indexed_volume(tmp_path, 0)]
    stack, labels = build_model_input(scans, _config(), files=files, workers=1)
    assert labels["head_scale"].tolist() == [0.7, 0.8]
    axial, sagittal = list(stack)
    # The first scan varies along z only (constant in the axial plane), the second along x.
    assert np.ptp(axial) == 0
    assert np.ptp(sagittal[0, 0], axis=1).max() == 0 and np.ptp(sagittal[0, 0], axis=0).max() > 0


def _marked_volume(tmp_path: Path, name: str, origin_z: float, n_z: int) -> str:
    """A RAS 2 mm volume whose value is its world z in mm plus 1000 (an anatomy-free 'atlas')."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-11.0, -9.0, origin_z]
    z = origin_z + 2.0 * np.arange(n_z, dtype=np.float32)
    data = np.broadcast_to(1000.0 + z, (12, 10, n_z)).astype(np.float32)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def test_mni_selection_cuts_the_same_world_position_from_differently_placed_grids(tmp_path):
    # Two scans whose fields of view differ (origin and extent along z): the middle slices differ in
    # world z, the mni selection does not.
    first = _marked_volume(tmp_path, "a.nii.gz", origin_z=-20.0, n_z=24)
    second = _marked_volume(tmp_path, "b.nii.gz", origin_z=-34.0, n_z=30)
    config = ExtractionConfig(
        normalisation="divide_by_mean",  # keeps the ratios between slices, which identify them
        volume={"shape": (12, 10, 20)},  # crops both scans, by different amounts
        slices={"selection": "mni", "positions_mm": [-10.0, 0.0, 6.0], "size": [12, 10]},
        dtype="float32",
    )
    assert config.rows_per_scan() == 3
    assert config.slice_labels().tolist() == [-10.0, 0.0, 6.0]
    for path in (first, second):
        rows = extract_scan(path, config)[:, 0]
        assert rows.shape == (3, 12, 10)
        np.testing.assert_allclose(rows[1] / rows[0], 1000.0 / 990.0, rtol=1e-5)
        np.testing.assert_allclose(rows[2] / rows[1], 1006.0 / 1000.0, rtol=1e-5)
    # The grids' middle slices lie at different world z (10 and 0 mm).
    central = config.model_copy(
        update={"slices": config.slices.model_copy(update={"selection": "central"})}
    )
    first_ratio = extract_scan(first, central).mean() / extract_scan(first, config)[1].mean()
    second_ratio = extract_scan(second, central).mean() / extract_scan(second, config)[1].mean()
    assert first_ratio != pytest.approx(second_ratio, rel=1e-4)


def test_an_mni_position_outside_the_grid_names_the_scan_and_the_extent(tmp_path):
    path = _marked_volume(tmp_path, "short.nii.gz", origin_z=-20.0, n_z=8)
    config = ExtractionConfig(
        volume={"shape": (12, 10, 8)},
        slices={"selection": "mni", "positions_mm": [40.0], "size": [12, 10]},
    )
    with pytest.raises(
        ScanExtractionError, match=r"short\.nii\.gz: .*40 lies outside .*\[-20, -6\]"
    ):
        extract_scan(path, config)
