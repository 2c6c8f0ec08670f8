"""Spatial normalisation: registration of a real scan to the template, QC, quarantine and fingerprints."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import ndimage

from tlkedro.imaging.normalisation import (
    REGISTRATION_FAILED,
    SpatialNormalisationConfig,
    StaleNormalisationError,
    assess_registration,
    file_digest,
    normalisation_recipe,
    normalise_scan,
    template_mask,
)
from tlkedro.imaging.transforms import read_nifti

IXI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ixi_t1_2mm_bids"
SPACING = (2.0, 2.0, 2.0)
needs_ixi = pytest.mark.skipif(not IXI.is_dir(), reason="shared IXI data absent")


def _ixi_scan() -> Path:
    return sorted(IXI.glob("sub-*/anat/*_T1w.nii.gz"))[0]


def _centroid_mm(image: nib.Nifti1Image) -> np.ndarray:
    """World position of the centre of mass of the image's nonzero voxels."""
    centre = ndimage.center_of_mass(np.asanyarray(image.dataobj) != 0)
    return (image.affine @ [*centre, 1.0])[:3]


def test_fingerprint_follows_what_shapes_the_result_and_nothing_else():
    base = SpatialNormalisationConfig(method="affine")
    assert base.fingerprint(SPACING) == SpatialNormalisationConfig(method="affine").fingerprint(
        SPACING
    )
    changed = [
        base.model_copy(update={"seed": 1}).fingerprint(SPACING),
        base.model_copy(update={"fast": True}).fingerprint(SPACING),
        base.model_copy(update={"method": "rigid"}).fingerprint(SPACING),
        base.fingerprint((1.0, 1.0, 1.0)),
    ]
    assert base.fingerprint(SPACING) not in changed and len(set(changed)) == 4
    qc_only = base.model_copy(update={"min_similarity": 0.9, "mosaic_scans": 3})
    assert qc_only.fingerprint(SPACING) == base.fingerprint(SPACING)


def test_a_recipe_is_tied_to_its_file_content(tmp_path):
    first, second = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    for path, value in ((first, 1.0), (second, 2.0)):
        nib.save(nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.eye(4)), path)
    config = SpatialNormalisationConfig(method="affine")
    assert file_digest(first) != file_digest(second)
    a, b = (normalisation_recipe(p, config, SPACING).fingerprint for p in (first, second))
    assert a.split("-")[0] == b.split("-")[0] and a != b


def test_method_none_registers_nothing():
    with pytest.raises(ValueError, match="nothing to register"):
        normalise_scan(
            nib.Nifti1Image(np.ones((4, 4, 4)), np.eye(4)), SpatialNormalisationConfig(), SPACING
        )
    with pytest.raises(ValidationError):
        SpatialNormalisationConfig(method="syn")


def _manifest(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scan_id": [f"s{i}.nii.gz" for i in range(n)],
            "subject_id": [f"sub-{i}" for i in range(n)],
        }
    )


def test_scans_below_the_threshold_are_quarantined_with_a_sentence():
    config = SpatialNormalisationConfig(method="affine", min_similarity=0.4)
    fingerprint = f"{config.fingerprint(SPACING)}-abc"
    sidecars = {
        f"s{i}.nii.gz": {
            "similarity": similarity,
            "head_scale": 0.7,
            "stage1_similarity": similarity,
            "retried": False,
            "brain_ml": 1500.0,
            "fingerprint": fingerprint,
        }
        for i, similarity in enumerate([0.55, 0.39, 0.40])
    }
    qc, quarantine = assess_registration(_manifest(3), sidecars, config, SPACING)
    assert qc["passed"].tolist() == [True, False, True]
    assert quarantine["source"].tolist() == ["s1.nii.gz"]
    assert quarantine["subject_id"].tolist() == ["sub-1"]
    assert quarantine["reason_code"].tolist() == [REGISTRATION_FAILED]
    assert "correlation of 0.390 inside the template mask, below" in quarantine["reason"].iloc[0]


def test_a_missing_or_stale_result_is_an_error_not_a_reuse():
    config = SpatialNormalisationConfig(method="affine")
    with pytest.raises(StaleNormalisationError, match="s0.nii.gz is missing"):
        assess_registration(_manifest(1), {}, config, SPACING)
    old = {"s0.nii.gz": {"fingerprint": "0123456789abcdef-abc", "similarity": 0.9}}
    with pytest.raises(StaleNormalisationError, match="s0.nii.gz is computed with other options"):
        assess_registration(_manifest(1), old, config, SPACING)


def test_method_none_passes_every_scan_without_figures():
    qc, quarantine = assess_registration(_manifest(2), {}, SpatialNormalisationConfig(), SPACING)
    assert qc["passed"].all() and qc["similarity"].isna().all() and quarantine.empty


@pytest.mark.slow
@needs_ixi
def test_a_real_scan_lands_on_the_template():
    config = SpatialNormalisationConfig(method="affine")
    image, qc = normalise_scan(read_nifti(_ixi_scan()), config, SPACING)
    assert qc.similarity >= config.min_similarity
    assert 0.5 < qc.head_scale < 1.2  # an adult brain is smaller than the MNI152 template's
    mask = template_mask(SPACING)
    assert image.shape == mask.shape and np.allclose(image.affine, mask.affine)
    # The brain's centre (hence its mid-slices) lies where the template's does, within 4 mm.
    assert np.linalg.norm(_centroid_mm(image) - _centroid_mm(mask)) < 4.0
    data = np.asanyarray(image.dataobj)
    assert not data[
        np.asanyarray(mask.dataobj) == 0
    ].any()  # skull-stripped: zero outside the brain


@pytest.mark.slow
@needs_ixi
def test_a_scrambled_scan_is_put_right_or_quarantined():
    scan = read_nifti(_ixi_scan())
    # Flip two voxel axes (a rotation by 180 degrees: no registration can reach it from a
    # centre-of-mass start without searching) and shift the scan by 60 mm.
    data = np.asanyarray(scan.dataobj, dtype=np.float32)[::-1, :, ::-1].copy()
    affine = scan.affine.copy()
    affine[:3, 3] += [60.0, -40.0, 30.0]
    config = SpatialNormalisationConfig(method="affine", fast=True)
    image, qc = normalise_scan(nib.Nifti1Image(data, affine), config, SPACING)
    manifest = pd.DataFrame({"scan_id": ["scrambled.nii.gz"], "subject_id": ["sub-x"]})
    sidecar = {**qc.__dict__, "fingerprint": f"{config.fingerprint(SPACING)}-x"}
    table, quarantine = assess_registration(
        manifest, {"scrambled.nii.gz": sidecar}, config, SPACING
    )
    if table["passed"].item():
        # Passing QC must mean it really is in place.
        offset = np.linalg.norm(_centroid_mm(image) - _centroid_mm(template_mask(SPACING)))
        assert offset < 6.0
    else:
        assert quarantine["reason_code"].tolist() == [REGISTRATION_FAILED]
