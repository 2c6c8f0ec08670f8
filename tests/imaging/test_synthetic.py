"""The synthetic cohort: its effects, measured on generated volumes, its determinism and its labels."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pydantic
import pytest
from scipy import ndimage, stats

from tlkedro.imaging.anatomy import mni_grid
from tlkedro.imaging.synthetic import (
    SyntheticCohortParams,
    cohort_metadata,
    draw_cohort,
    draw_subject,
    generate_subject,
    tissue_maps,
)

# 4 mm keeps every volume at 46 x 55 x 46 voxels: a few milliseconds each.
PARAMS = SyntheticCohortParams(seed=7, n_subjects=40, voxel_size_mm=4.0)
ML = 4.0**3 / 1000


def _brain(img: nib.Nifti1Image) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data[data > 0]


def _dark_fraction(img: nib.Nifti1Image) -> float:
    """Share of brain voxels darker than half-way between CSF and grey matter (white matter = 95th pct)."""
    brain = _brain(img)
    return float((brain < 0.55 * np.percentile(brain, 95)).mean())


def _ventricle_csf_ml(maps: dict[str, np.ndarray]) -> float:
    """CSF in a box around the lateral ventricles (MNI x within 24 mm, y -44..20, z 0..32)."""
    affine, _ = mni_grid(PARAMS.voxel_size_mm)
    box = tuple(
        slice(int((low - affine[a, 3]) / 4), int((high - affine[a, 3]) / 4))
        for a, (low, high) in enumerate(((-24, 24), (-44, 20), (0, 32)))
    )
    return float(maps["csf"][box].sum() * ML)


def test_image_is_a_brain_extracted_int16_volume_on_the_ras_mni_grid():
    img = generate_subject(draw_cohort(PARAMS)[0], PARAMS)

    affine, shape = mni_grid(4.0)
    assert img.shape == shape == (46, 55, 46)
    assert np.allclose(img.affine, affine) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_data_dtype() == np.int16
    assert int(img.header["sform_code"]) == 4  # MNI152
    data = np.asarray(img.dataobj)
    assert data[0, 0, 0] == 0 and data.min() == 0  # background removed, no negative intensities
    assert 1000 < (data > 0).sum() * ML < 2200  # a brain of 1 to 2.2 litres


def test_two_millimetre_grid_is_the_standard_91_109_91():
    assert mni_grid(2.0)[1] == (91, 109, 91)


def test_subject_is_reproducible_and_does_not_depend_on_cohort_size():
    small = draw_cohort(PARAMS.model_copy(update={"n_subjects": 3}))
    large = draw_cohort(PARAMS)
    for a, b in zip(small, large[:3], strict=False):
        assert dataclasses.replace(a, eid=b.eid) == b
    first = np.asarray(generate_subject(small[1], PARAMS).dataobj)
    again = np.asarray(
        generate_subject(dataclasses.replace(large[1], eid=small[1].eid), PARAMS).dataobj
    )
    assert np.array_equal(first, again)


def test_a_different_seed_gives_a_different_cohort():
    other = PARAMS.model_copy(update={"seed": 8})
    assert [s.age for s in draw_cohort(other)] != [s.age for s in draw_cohort(PARAMS)]


def test_ageing_thins_grey_matter_and_enlarges_ventricles_in_the_same_individual():
    for index in range(4):
        young, old = (
            draw_subject(PARAMS, index, 1000000 + index, age=age, site=11025) for age in (50, 80)
        )
        young_maps, old_maps = tissue_maps(young, PARAMS), tissue_maps(old, PARAMS)

        assert old_maps["gm"].sum() < 0.93 * young_maps["gm"].sum()
        assert _ventricle_csf_ml(old_maps) > 1.25 * _ventricle_csf_ml(young_maps)
        assert _dark_fraction(generate_subject(old, PARAMS)) > _dark_fraction(
            generate_subject(young, PARAMS)
        )


def test_across_the_cohort_grey_matter_falls_and_ventricles_grow_with_age():
    subjects = draw_cohort(PARAMS)
    maps = [tissue_maps(s, PARAMS) for s in subjects]
    ages = [s.age for s in subjects]
    grey_fraction = [m["gm"].sum() / m["mask"].sum() for m in maps]

    # Individual cortex and ventricle size vary a lot at any age (so that no volume alone gives the age
    # away): the trends are clear but far from perfect, as in UK Biobank.
    assert stats.spearmanr(ages, grey_fraction).statistic < -0.3
    assert stats.spearmanr(ages, [_ventricle_csf_ml(m) for m in maps]).statistic > 0.3


def test_regional_ageing_moves_tissue_but_keeps_the_tissue_fractions():
    ageing = PARAMS.ageing.model_copy(
        update={
            "cortical_thinning_mm_per_decade": 0,
            "ventricle_dilation_mm_per_decade": 0,
            "contrast_change_per_decade": 0,
            "shape_mm_per_decade": 1.0,
        }
    )
    params = PARAMS.model_copy(update={"ageing": ageing})
    young, old = (draw_subject(params, 0, 1000000, age=age, site=11025, sex=0) for age in (50, 80))
    young_maps, old_maps = tissue_maps(young, params), tissue_maps(old, params)
    moved = np.abs(old_maps["wm"] - young_maps["wm"]).sum() / young_maps["wm"].sum()
    assert moved > 0.05
    # A displacement redistributes tissue: the whole brain's grey-matter share barely changes.
    shares = [m["gm"].sum() / m["mask"].sum() for m in (young_maps, old_maps)]
    assert shares[1] == pytest.approx(shares[0], rel=0.02)

    without = params.model_copy(
        update={"ageing": ageing.model_copy(update={"shape_mm_per_decade": 0})}
    )
    assert np.array_equal(
        tissue_maps(draw_subject(without, 0, 1000000, age=50, site=11025, sex=0), without)["wm"],
        tissue_maps(draw_subject(without, 0, 1000000, age=80, site=11025, sex=0), without)["wm"],
    )


def test_men_have_larger_heads_before_registration_and_registration_removes_most_of_it():
    native_ratio, registered_ratio = [], []
    for index in range(6):
        woman, man = (draw_subject(PARAMS, index, 1000000 + index, sex=sex) for sex in (0, 1))
        native = [_brain(generate_subject(s, PARAMS, space="native")).size for s in (woman, man)]
        registered = [_brain(generate_subject(s, PARAMS)).size for s in (woman, man)]
        native_ratio.append(native[1] / native[0])
        registered_ratio.append(registered[1] / registered[0])

    assert np.mean(native_ratio) == pytest.approx(PARAMS.head_size.male_ratio**3, rel=0.04)
    assert np.all(np.abs(np.array(registered_ratio) - 1) < 0.04)


def test_cohort_men_have_larger_native_brains_on_average():
    subjects = draw_cohort(PARAMS.model_copy(update={"n_subjects": 24}))
    volumes = {0: [], 1: []}
    for s in subjects:
        volumes[s.sex].append(_brain(generate_subject(s, PARAMS, space="native")).size * ML)
    assert np.mean(volumes[1]) > 1.06 * np.mean(volumes[0])


def test_sex_differences_survive_registration_as_tissue_and_shape():
    for index in range(4):
        woman, man = (draw_subject(PARAMS, index, 1000000 + index, sex=sex) for sex in (0, 1))
        woman_maps, man_maps = tissue_maps(woman, PARAMS), tissue_maps(man, PARAMS)
        grey_share = [m["gm"].sum() / (m["gm"] + m["wm"]).sum() for m in (woman_maps, man_maps)]
        assert grey_share[0] > grey_share[1]  # a thicker cortex relative to head size in women
        # The regional shape pattern moves tissue by about shape_mm between the sexes.
        moved = np.abs(woman_maps["wm"] - man_maps["wm"]).sum() / woman_maps["wm"].sum()
        assert moved > 0.02


def test_without_sex_effects_registered_women_and_men_are_identical():
    params = PARAMS.model_copy(
        update={
            "sex": PARAMS.sex.model_copy(
                update={"cortex_mm": 0, "ventricle_ratio": 1, "contrast": 0, "shape_mm": 0}
            )
        }
    )
    woman, man = (draw_subject(params, 0, 1000000, sex=sex) for sex in (0, 1))
    assert np.array_equal(
        np.asarray(generate_subject(woman, params).dataobj),
        np.asarray(generate_subject(man, params).dataobj),
    )


def _with_sites(params: SyntheticCohortParams, **update: float) -> SyntheticCohortParams:
    sites = {code: site.model_copy(update=update) for code, site in params.sites.items()}
    return params.model_copy(update={"sites": sites})


@pytest.mark.parametrize("site", [11025, 11028])
def test_site_noise_matches_its_parameter(site):
    subject = draw_subject(PARAMS, 0, 1000000, site=site)
    # Without blur and bias field, the 95th percentile of the brain is the white-matter level.
    noisy = np.asarray(
        generate_subject(subject, _with_sites(PARAMS, blur_fwhm_mm=0, bias_field=0)).dataobj, float
    )
    clean = np.asarray(
        generate_subject(
            subject, _with_sites(PARAMS, blur_fwhm_mm=0, bias_field=0, noise=0)
        ).dataobj,
        float,
    )
    inside = ndimage.binary_erosion((noisy > 0) & (clean > 0), iterations=2)
    white_matter = np.percentile(clean[inside], 95)

    assert np.std(noisy[inside] - clean[inside]) / white_matter == pytest.approx(
        PARAMS.sites[site].noise, rel=0.2
    )


def test_site_blur_and_intensity_scale_change_the_image():
    base = _with_sites(PARAMS, noise=0, bias_field=0)
    subject = draw_subject(base, 0, 1000000, site=11025)
    sharp = np.asarray(generate_subject(subject, base).dataobj, float)
    blurred = np.asarray(
        generate_subject(subject, _with_sites(base, blur_fwhm_mm=8.0)).dataobj, float
    )
    dimmed = np.asarray(
        generate_subject(subject, _with_sites(base, intensity_scale=0.5)).dataobj, float
    )

    def sharpness(v: np.ndarray) -> float:
        return float(np.mean(np.abs(np.diff(v, axis=0))[(v[1:] > 0) & (v[:-1] > 0)]))

    assert sharpness(blurred) < 0.8 * sharpness(sharp)
    assert np.median(dimmed[dimmed > 0]) == pytest.approx(
        0.5 * np.median(sharp[sharp > 0]), rel=0.02
    )


def test_the_external_site_differs_most_from_the_others():
    external = PARAMS.sites[11028]
    others = [site for code, site in PARAMS.sites.items() if code != 11028]
    assert all(external.noise > s.noise and external.blur_fwhm_mm > s.blur_fwhm_mm for s in others)
    assert all(abs(external.contrast - 1) > abs(s.contrast - 1) for s in others)
    assert all(abs(external.intensity_scale - 1) > abs(s.intensity_scale - 1) for s in others)


def test_ukb_metadata_has_showcase_columns_and_shuffled_seven_digit_eids():
    subjects = draw_cohort(PARAMS)
    table = cohort_metadata(subjects, "ukb")

    assert list(table.columns[:4]) == ["eid", "31-0.0", "21003-2.0", "54-2.0"]
    assert table["eid"].between(1_000_000, 9_999_999).all() and table["eid"].is_unique
    assert set(table["31-0.0"]) == {0, 1} and set(table["54-2.0"]) <= set(PARAMS.sites)
    assert table["21003-2.0"].between(45, 82).all()
    # Neither the row order nor the eid order follows age or sex.
    assert not table["eid"].is_monotonic_increasing
    assert abs(stats.spearmanr(table["eid"], table["21003-2.0"]).statistic) < 0.4
    # The ground truth is kept beside the labels.
    assert table["brain_age"].sub(table["21003-2.0"]).abs().mean() > 1


def test_bids_metadata_is_a_participants_table():
    table = cohort_metadata(draw_cohort(PARAMS.model_copy(update={"n_subjects": 5})), "bids")

    assert list(table.columns[:4]) == ["participant_id", "age", "sex", "site"]
    assert table["participant_id"].str.fullmatch(r"sub-\d{7}").all()
    assert set(table["sex"]) <= {"M", "F"}


def test_the_cohort_covers_the_ukb_age_range_and_every_site():
    table = cohort_metadata(draw_cohort(PARAMS.model_copy(update={"n_subjects": 400})), "ukb")
    assert table["21003-2.0"].mean() == pytest.approx(64, abs=1.5)
    shares = table["54-2.0"].value_counts(normalize=True)
    assert shares[11028] == pytest.approx(0.15, abs=0.05)


@pytest.mark.parametrize(
    ("update", "names"),
    [
        ({"layout": "nifti"}, ["layout", "nifti", "ukb", "bids"]),
        ({"voxel_size_mm": 0.5}, ["voxel_size_mm", "0.5", "greater than or equal to 1"]),
        ({"demographics": {"age_min": 80, "age_max": 50}}, ["age_min", "80", "age_max"]),
        ({"sites": {11025: {"weight": 1, "noize": 0.1}}}, ["noize", "Extra inputs"]),
    ],
)
def test_bad_parameters_name_the_key_the_value_and_what_is_allowed(update, names):
    with pytest.raises(pydantic.ValidationError) as error:
        SyntheticCohortParams.model_validate({**PARAMS.model_dump(), **update})
    for name in names:
        assert name in str(error.value)
