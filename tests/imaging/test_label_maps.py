"""Label maps through ingestion (checks, quarantine) and extraction (masks aligned with the images)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.shared_ixi import IXI, needs_ixi
from tlkedro.imaging.extraction import ExtractionConfig, build_mask_input, build_model_input
from tlkedro.imaging.ingest import IngestionConfig, ingest
from tlkedro.imaging.labels import TISSUE_LABELS, LabelMapParams
from tlkedro.imaging.synthetic import (
    SyntheticCohortParams,
    cohort_metadata,
    draw_cohort,
    generate_label_map,
    generate_subject,
    image_path,
    label_map_path,
)

COHORT = SyntheticCohortParams(seed=5, n_subjects=6, voxel_size_mm=4.0, label_maps=True)
LABEL = {name: value for value, name in TISSUE_LABELS.items()}
SPACING = (2.0, 2.0, 2.0)


def _write_cohort(root: Path, layout: str = "ukb") -> tuple[dict, dict, object]:
    params = COHORT.model_copy(update={"layout": layout})
    subjects = draw_cohort(params)
    images, label_maps = {}, {}
    for subject in subjects:
        for folder, key, img, into in (
            ("images", image_path(layout, subject.eid), generate_subject(subject, params), images),
            (
                "labels",
                label_map_path(layout, subject.eid),
                generate_label_map(subject, params),
                label_maps,
            ),
        ):
            path = root / folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(img, path)
            into[key] = path
    return images, label_maps, cohort_metadata(subjects, layout)


@pytest.mark.parametrize("layout", ["ukb", "bids"])
def test_each_scan_gets_its_label_map_key(tmp_path, layout):
    images, label_maps, metadata = _write_cohort(tmp_path, layout)
    manifest, quarantine = ingest(
        images, metadata, IngestionConfig(layout=layout, age_range=(40, 90)), label_maps=label_maps
    )
    assert quarantine.empty and len(manifest) == 6
    by_subject = dict(zip(manifest["subject_id"], manifest["label_key"], strict=True))
    for key in label_maps:
        subject = key.split("/")[0]
        assert by_subject[subject] == key


def test_bad_label_maps_quarantine_their_scans_with_the_file_and_the_reason(tmp_path):
    images, label_maps, metadata = _write_cohort(tmp_path)
    keys = sorted(label_maps)
    reference = nib.load(label_maps[keys[0]])
    data = np.asarray(reference.dataobj)
    # 0: missing; 1: zero bytes; 2: shifted grid; 3: fractions; 4: a label outside the lookup.
    label_maps.pop(keys[0])
    label_maps[keys[1]].write_bytes(b"")
    shifted = reference.affine.copy()
    shifted[0, 3] += 4.0
    nib.save(
        nib.Nifti1Image(np.asarray(nib.load(label_maps[keys[2]]).dataobj), shifted),
        label_maps[keys[2]],
    )
    nib.save(nib.Nifti1Image(data.astype(np.float32) * 0.5, reference.affine), label_maps[keys[3]])
    nib.save(
        nib.Nifti1Image(np.where(data == 4, 9, data).astype(np.uint8), reference.affine),
        label_maps[keys[4]],
    )
    # A label map of nobody's scan.
    orphan = tmp_path / "labels/1999999/T1/T1_brain_to_MNI_dseg.nii.gz"
    orphan.parent.mkdir(parents=True)
    nib.save(reference, orphan)
    label_maps["1999999/T1/T1_brain_to_MNI_dseg.nii.gz"] = orphan

    manifest, quarantine = ingest(
        images, metadata, IngestionConfig(age_range=(40, 90)), label_maps=label_maps
    )

    assert manifest["label_key"].tolist() == [keys[5]]
    codes = dict(zip(quarantine["source"], quarantine["reason_code"], strict=True))
    scan = {k.split("/")[0]: str(images[k.replace("_dseg", "")].absolute()) for k in keys}
    subject = [k.split("/")[0] for k in keys]
    assert codes[scan[subject[0]]] == "label_map_missing"
    assert codes[scan[subject[1]]] == "label_map_unreadable"
    assert codes[scan[subject[2]]] == "label_map_grid"
    assert codes[scan[subject[3]]] == "label_map_not_integer"
    assert codes[scan[subject[4]]] == "label_map_values"
    assert codes[str(orphan)] == "label_map_unused"
    reasons = dict(zip(quarantine["reason_code"], quarantine["reason"], strict=True))
    assert str(label_maps[keys[1]].absolute()) in reasons["label_map_unreadable"]
    assert "zero_byte" in reasons["label_map_unreadable"] and "[9]" in reasons["label_map_values"]


def test_a_label_scheme_without_background_is_refused():
    with pytest.raises(ValueError, match="label 0"):
        LabelMapParams(labels={1: "csf", 2: "grey_matter"})


@pytest.mark.parametrize(
    "extraction",
    [
        {"mode": "slices", "slices": {"selection": "k_central", "k": 3, "size": [32, 32]}},
        {
            "mode": "slices",
            "slices": {"selection": "mni", "positions_mm": [-8.0, 0.0, 12.0], "axis": "coronal"},
        },
        {"mode": "volume"},
    ],
    ids=["k_central", "mni", "volume"],
)
def test_masks_line_up_with_the_images_row_for_row(tmp_path, extraction):
    images, label_maps, metadata = _write_cohort(tmp_path)
    manifest, _ = ingest(
        images, metadata, IngestionConfig(age_range=(40, 90)), label_maps=label_maps
    )
    config = ExtractionConfig.model_validate(
        {
            "spacing_mm": [4.0, 4.0, 4.0],
            "volume": {"shape": [40, 48, 40]},
            "dtype": "float32",
            **extraction,
        }
    )
    stack, labels = build_model_input(
        manifest, config, files=[images[k] for k in manifest["scan_id"]], workers=1
    )
    masks = build_mask_input(
        manifest, config, files=[label_maps[k] for k in manifest["label_key"]], workers=1
    )

    image, mask = np.concatenate(list(stack)), np.concatenate(list(masks))
    assert (
        mask.shape == image.shape == (len(labels), *config.item_shape()) and mask.dtype == np.uint8
    )
    assert set(np.unique(mask)) <= set(TISSUE_LABELS)
    brain, labelled = image != 0, mask > 0
    dice = 2 * (brain & labelled).sum() / (brain.sum() + labelled.sum())
    if config.mode == "volume":
        assert np.array_equal(brain, labelled)  # same grid: no resampling
    else:
        assert dice > 0.9
    for row_image, row_mask in zip(image, mask, strict=True):
        means = {
            name: row_image[row_mask == value].mean()
            for name, value in LABEL.items()
            if (row_mask == value).sum() > 5
        }
        assert means["white_matter"] > means["grey_matter"] > means.get("csf", -np.inf)
    # Rows of a scan and of the next differ: the masks are not one repeated map.
    assert not np.array_equal(mask[0], mask[len(mask) // len(manifest)])


@pytest.mark.slow
@needs_ixi
def test_an_affine_normalisation_carries_a_label_map_onto_the_normalised_brain():
    from tlkedro.imaging.normalisation import (
        SpatialNormalisationConfig,
        _crude_brain_mask,
        _to_ants,
        normalise_label_map,
        normalise_scan,
    )
    from tlkedro.imaging.transforms import read_nifti

    scan = read_nifti(sorted(IXI.glob("sub-*/anat/*_T1w.nii.gz"))[0])
    # A label map made from the scan itself: its crude brain mask (the strip that stage 1 starts from).
    brain = _crude_brain_mask(_to_ants(scan), 6.0).numpy() > 0
    label_map = nib.Nifti1Image(
        np.where(brain, LABEL["white_matter"], 0).astype(np.uint8), scan.affine
    )

    image, qc = normalise_scan(scan, SpatialNormalisationConfig(method="affine"), SPACING)
    warped = normalise_label_map(label_map, qc.transform, SPACING)

    assert warped.shape == image.shape and np.allclose(warped.affine, image.affine)
    labels = np.asarray(warped.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, LABEL["white_matter"]}
    normalised_brain = np.asarray(image.dataobj) != 0
    dice = (
        2 * (normalised_brain & (labels > 0)).sum() / (normalised_brain.sum() + (labels > 0).sum())
    )
    assert dice > 0.8
