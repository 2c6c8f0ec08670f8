"""Tissue label maps of the synthetic cohort: aligned with their T1, in the scheme, deterministic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydantic
import pytest
from scipy import ndimage

from tlkedro.imaging.labels import TISSUE_LABELS
from tlkedro.imaging.synthetic import (
    SyntheticCohortParams,
    draw_cohort,
    generate_label_map,
    generate_subject,
    label_map_recipes,
)

PARAMS = SyntheticCohortParams(seed=7, n_subjects=6, voxel_size_mm=4.0, label_maps=True)
LABEL = {name: value for value, name in TISSUE_LABELS.items()}


def _pair(subject, params=PARAMS, space="mni"):
    img = generate_subject(subject, params, space=space)
    labels = generate_label_map(subject, params, space=space)
    return img, labels, np.asarray(img.dataobj), np.asarray(labels.dataobj)


@pytest.mark.parametrize("space", ["mni", "native"])
def test_label_map_is_on_the_t1_grid_with_integer_labels_of_the_scheme(space):
    img, labels, t1, label = _pair(draw_cohort(PARAMS)[0], space=space)

    assert labels.shape == img.shape and np.array_equal(labels.affine, img.affine)
    assert labels.get_sform(coded=True)[1] == img.get_sform(coded=True)[1] == 4
    assert label.dtype == np.uint8 and labels.get_data_dtype() == np.uint8
    assert set(np.unique(label)) == set(TISSUE_LABELS)
    # Labelled exactly where the brain-extracted image has brain.
    assert np.array_equal(label > 0, t1 > 0)


def test_mean_intensity_within_the_labels_orders_white_over_grey_over_csf():
    for subject in draw_cohort(PARAMS):
        _, _, t1, label = _pair(subject)
        mean = {name: t1[label == value].mean() for name, value in LABEL.items()}
        assert mean["white_matter"] > mean["grey_matter"] > mean["csf"] > mean["background"] == 0
        assert mean["grey_matter"] > mean["ventricles"]


def test_ventricles_lie_deep_inside_the_brain_and_grow_with_age():
    subject = draw_cohort(PARAMS)[0]
    young = generate_label_map(dataclasses.replace(subject, brain_age=50.0), PARAMS)
    old = generate_label_map(dataclasses.replace(subject, brain_age=80.0), PARAMS)
    label = np.asarray(young.dataobj)
    depth = ndimage.distance_transform_edt(label > 0, sampling=PARAMS.voxel_size_mm)

    ventricles = label == LABEL["ventricles"]
    assert np.median(depth[ventricles]) > 15.0
    assert np.median(depth[label == LABEL["csf"]]) < 10.0  # sulcal CSF, near the surface
    assert (np.asarray(old.dataobj) == LABEL["ventricles"]).sum() > 1.3 * ventricles.sum()


def test_label_maps_are_deterministic_with_the_seed():
    subject = draw_cohort(PARAMS)[1]
    first = np.asarray(generate_label_map(subject, PARAMS).dataobj)
    assert np.array_equal(first, np.asarray(generate_label_map(subject, PARAMS).dataobj))

    other = PARAMS.model_copy(update={"seed": 8})
    assert not np.array_equal(first, np.asarray(generate_label_map(subject, other).dataobj))


def test_recipes_are_keyed_beside_the_t1_in_ukb_and_in_the_derivative_in_bids():
    subjects = draw_cohort(PARAMS)[:2]
    assert list(label_map_recipes(subjects, PARAMS)) == [
        f"{s.eid}/T1/T1_brain_to_MNI_dseg.nii.gz" for s in subjects
    ]
    bids = PARAMS.model_copy(update={"layout": "bids"})
    assert list(label_map_recipes(subjects, bids)) == [
        f"sub-{s.eid}/anat/sub-{s.eid}_dseg.nii.gz" for s in subjects
    ]


def test_label_maps_of_time_series_are_refused():
    with pytest.raises(pydantic.ValidationError, match="label_maps.*data_type: t1"):
        SyntheticCohortParams(data_type="timeseries", label_maps=True)
