"""Preprocessing transforms: RAS orientation, resampling, crop/pad, and each normalisation's defining property."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tlkedro.imaging.transforms import (
    NORMALISATIONS,
    VolumeReadError,
    build_volume_transforms,
    divide_by_mean,
    load_volume,
    normalisation,
    percentile_clip,
    zscore_brain,
)

IXI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ixi_t1_2mm_bids"
IXI_FILES = sorted(IXI.glob("sub-*/anat/*_T1w.nii.gz"))[:2]

# Stored orientations to test: canonical, IXI's, and a flip of every axis.
ORIENTATIONS = ["RAS", "PSR", "LPI"]


def _write(path: Path, data: np.ndarray, axcodes: str, zoom: float = 2.0) -> Path:
    """A NIfTI whose array axes run along ``axcodes`` (e.g. ``PSR``) with isotropic ``zoom``."""
    # inv_ornt_aff maps indices of the RAS-reoriented array to indices of this one; its inverse then
    # takes this array's indices to RAS indices, which the zoom turns into mm.
    ornt = nib.orientations.axcodes2ornt(axcodes)
    affine = np.diag([zoom, zoom, zoom, 1.0]) @ np.linalg.inv(
        nib.orientations.inv_ornt_aff(ornt, data.shape)
    )
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _brain(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """An asymmetric positive blob in a zero background, so any wrong flip or transpose shows."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, dtype=np.float32)
    x, y, z = (s // 4 for s in shape)
    data[x : 3 * x + 1, y : 3 * y, z + 1 : 3 * z] = rng.uniform(
        50, 150, size=(2 * x + 1, 2 * y, 2 * z - 1)
    )
    return data


@pytest.mark.parametrize("axcodes", ORIENTATIONS)
def test_volume_is_reoriented_to_ras_like_nibabel_canonical(tmp_path, axcodes):
    path = _write(tmp_path / f"{axcodes}.nii.gz", _brain((12, 10, 8)), axcodes)
    assert nib.aff2axcodes(nib.load(path).affine) == tuple(axcodes)
    expected = nib.as_closest_canonical(nib.load(path))
    transforms = build_volume_transforms(
        spacing_mm=(2.0, 2.0, 2.0), normalisation_name="divide_by_mean", shape=expected.shape
    )
    volume = transforms({"image": str(path)})["image"]
    assert volume.shape == (1, *expected.shape)
    np.testing.assert_allclose(
        np.asarray(volume[0]), divide_by_mean(expected.get_fdata()), rtol=1e-5
    )


@pytest.mark.skipif(not IXI_FILES, reason="real IXI data not available in ../shared/data")
@pytest.mark.parametrize("path", IXI_FILES, ids=lambda p: p.name)
def test_real_ixi_scan_goes_from_psr_to_ras_at_the_target_grid(path):
    assert nib.aff2axcodes(nib.load(path).affine) == ("P", "S", "R")
    transforms = build_volume_transforms(
        spacing_mm=(3.0, 3.0, 3.0), normalisation_name="zscore_brain", shape=(48, 56, 40)
    )
    volume = transforms({"image": str(path)})["image"]
    assert volume.shape == (1, 48, 56, 40)
    assert nib.aff2axcodes(np.asarray(volume.affine)) == ("R", "A", "S")
    np.testing.assert_allclose(nib.affines.voxel_sizes(np.asarray(volume.affine)), [3.0, 3.0, 3.0])
    assert np.isfinite(np.asarray(volume)).all()


@pytest.mark.skipif(not IXI_FILES, reason="real IXI data not available in ../shared/data")
def test_real_ixi_scan_matches_nibabel_canonical_before_cropping():
    image = nib.load(IXI_FILES[0])
    canonical = nib.as_closest_canonical(image)
    transforms = build_volume_transforms(
        spacing_mm=(2.0, 2.0, 2.0), normalisation_name="zscore_brain", shape=canonical.shape
    )
    volume = np.asarray(transforms({"image": str(IXI_FILES[0])})["image"])[0]
    np.testing.assert_allclose(volume, zscore_brain(canonical.get_fdata()), atol=1e-4)


def test_crop_and_pad_are_centred(tmp_path):
    data = np.zeros((10, 6, 8), dtype=np.float32)
    data[5, 3, 4] = 1.0  # the centre voxel
    path = _write(tmp_path / "centre.nii", data, "RAS")
    transforms = build_volume_transforms(
        spacing_mm=(2.0, 2.0, 2.0), normalisation_name="divide_by_mean", shape=(6, 10, 8)
    )
    volume = np.asarray(transforms({"image": str(path)})["image"])[0]
    assert np.argwhere(volume).tolist() == [[3, 5, 4]]


def test_resampling_halves_the_grid_at_double_spacing(tmp_path):
    path = _write(tmp_path / "fine.nii.gz", _brain((16, 12, 8)), "RAS", zoom=1.0)
    volume = load_volume(path)
    transforms = build_volume_transforms(
        spacing_mm=(2.0, 2.0, 2.0), normalisation_name="divide_by_mean", shape=(8, 6, 4)
    )
    resampled = transforms({"image": str(path)})["image"]
    np.testing.assert_allclose(
        nib.affines.voxel_sizes(np.asarray(resampled.affine)), [2.0, 2.0, 2.0]
    )
    # The brain's extent in mm is unchanged: half as many voxels, each twice as large.
    assert np.count_nonzero(np.asarray(resampled)) == pytest.approx(
        np.count_nonzero(np.asarray(volume)) / 8, rel=0.35
    )


def _masked(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return image[reference != 0]


def test_zscore_brain_has_mean_zero_and_std_one_within_the_mask():
    image = _brain((20, 16, 12), seed=1)
    result = zscore_brain(image)
    assert _masked(result, image).mean() == pytest.approx(0.0, abs=1e-5)
    assert _masked(result, image).std() == pytest.approx(1.0, abs=1e-4)
    assert (result[image == 0] == 0).all()


def test_zscore_brain_matches_monai_normalize_intensity_nonzero():
    from monai.transforms import NormalizeIntensity

    image = _brain((20, 16, 12), seed=2)
    expected = np.asarray(NormalizeIntensity(nonzero=True)(image.copy()))
    np.testing.assert_allclose(zscore_brain(image), expected, atol=1e-5)


def test_divide_by_mean_has_mean_one_within_the_mask():
    image = _brain((20, 16, 12), seed=3)
    result = divide_by_mean(image)
    assert _masked(result, image).mean() == pytest.approx(1.0, rel=1e-5)
    assert (result[image == 0] == 0).all()


def test_percentile_clip_maps_the_percentiles_to_zero_and_one():
    image = _brain((20, 16, 12), seed=4)
    low, high = np.percentile(image[image != 0], [5, 95])
    result = percentile_clip(image, lower=5, upper=95)
    inside = _masked(result, image)
    assert inside.min() == 0.0 and inside.max() == pytest.approx(1.0)
    assert np.mean(inside == 0.0) == pytest.approx(0.05, abs=0.01)
    between = (image > low) & (image < high)
    np.testing.assert_allclose(result[between], ((image - low) / (high - low))[between], atol=1e-5)


def test_normalisations_leave_an_empty_image_empty():
    empty = np.zeros((4, 4, 4), dtype=np.float32)
    for fn in NORMALISATIONS.values():
        assert (fn(empty) == 0).all()


def test_normalisation_errors_name_the_valid_choices():
    with pytest.raises(
        ValueError, match="'zscore'.*valid: zscore_brain, divide_by_mean, percentile_clip"
    ):
        normalisation("zscore")
    with pytest.raises(ValueError, match="'zscore_brain' got kwargs .*lower.*allowed: none"):
        normalisation("zscore_brain", lower=1.0)
    with pytest.raises(ValueError, match="lower=90, upper=10"):
        normalisation("percentile_clip", lower=90, upper=10)


def test_unreadable_files_raise_an_error_naming_the_file(tmp_path):
    good = _write(tmp_path / "good.nii.gz", _brain((8, 8, 8)), "RAS")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(VolumeReadError, match=r"truncated\.nii\.gz: cannot be read as NIfTI"):
        load_volume(truncated)
    not_nifti = tmp_path / "text.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"hello" * 100))
    with pytest.raises(VolumeReadError, match=r"text\.nii\.gz"):
        load_volume(not_nifti)


def test_a_4d_series_is_rejected(tmp_path):
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), dtype=np.float32), np.eye(4)), path)
    with pytest.raises(
        VolumeReadError,
        match=r"series\.nii\.gz: expected one 3D volume, found shape \(4, 4, 4, 3\)",
    ):
        load_volume(path)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_load_volume_applies_the_header_scaling_like_nibabel(tmp_path, dtype):
    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.set_data_dtype(dtype)
    if dtype != np.float32:
        image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    volume = load_volume(path)
    assert volume.shape == (1, 6, 5, 4) and volume.dtype == torch.float32
    np.testing.assert_allclose(np.asarray(volume[0]), nib.load(path).get_fdata(), rtol=1e-6)
