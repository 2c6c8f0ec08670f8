"""A synthetic, UK-Biobank-like T1 cohort with known ground truth, built from the MNI152 anatomy.

Each subject is the MNI152 2009 template (:mod:`tlkedro.imaging.anatomy`) changed by effects of known,
parameterised size (docs/synthetic_cohort.md lists them with their defaults):

* age: cortical thinning, ventricular enlargement, a falling grey/white-matter contrast and a regional
  shape change along a fixed pattern, driven by a *brain age* that deviates from the chronological age
  by an individual gap;
* sex: a larger head for males (native space only, as image registration removes it), and differences
  that survive registration: a thicker cortex in females, larger ventricles in males, a fixed regional
  shape pattern and a slightly different grey/white-matter contrast;
* the individual: a smooth random deformation, cortical thickness, ventricle size, tissue contrast and
  intensity gain;
* registration: a small residual affine misalignment to MNI space;
* the scanner (one set of effects per assessment centre): intensity scale, contrast, blur, bias field
  and Rician noise; one site (11028 by default) differs most and serves as the external domain.

The output images are like UK Biobank's ``T1_brain_to_MNI.nii.gz``: brain-extracted and linearly
registered to the MNI grid. Every subject is drawn from its own seed (the cohort seed and its index), so
a subject does not depend on the cohort size or on how many processes generate the cohort.

With ``data_type: timeseries`` the same subjects get ROI time series instead of images
(:mod:`tlkedro.imaging.synthetic_timeseries`), ``sub-<eid>_timeseries.tsv`` beside a BIDS-style
``participants.tsv``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Annotated, Literal

import nibabel as nib
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage, stats

from tlkedro.imaging.anatomy import Template, control_points, interpolate_field, load_template
from tlkedro.imaging.labels import TISSUE_LABELS
from tlkedro.imaging.synthetic_timeseries import SERIES_PATH, SyntheticSeriesParams, generate_series

UKB_COLUMNS = {"eid": "eid", "sex": "31-0.0", "age": "21003-2.0", "site": "54-2.0"}
UKB_IMAGE = "{eid}/T1/T1_brain_to_MNI.nii.gz"
BIDS_IMAGE = "sub-{eid}/anat/sub-{eid}_T1w.nii.gz"
# Label maps (`label_maps: true`): beside the T1 in ukb; in bids, inside the BIDS derivative dataset
# `derivatives/tissue_labels/` (the catalog entry `synthetic_label_maps` is rooted there).
UKB_LABEL_MAP = "{eid}/T1/T1_brain_to_MNI_dseg.nii.gz"
BIDS_LABEL_MAP = "sub-{eid}/anat/sub-{eid}_dseg.nii.gz"
_LABEL = {name: value for value, name in TISSUE_LABELS.items()}
# Ground truth the generator knows but a scanner would not: kept beside the labels for calibration.
TRUTH_COLUMNS = ("brain_age", "head_scale", "ventricle_scale", "cortex_offset_mm", "subject_index")
# White matter of a typical subject lands here, like the arbitrary units of a scanner.
_WHITE_MATTER_LEVEL = 700.0
_REFERENCE_AGE = 45.0
_BIAS_SPACING_MM = 60.0

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Demographics(_Params):
    """Who is scanned: UK Biobank's imaging visit covers ages about 45 to 82, mean 64, SD 7.5.

    Attributes:
        age_mean: Mean of the normal distribution of ages, before truncation.
        age_sd: Its standard deviation.
        age_min: Youngest age (truncation).
        age_max: Oldest age (truncation).
        male_fraction: Share of men; sex, age and site are drawn independently, so none predicts another.
    """

    age_mean: float = 64.0
    age_sd: PositiveFloat = 7.5
    age_min: float = 45.0
    age_max: float = 82.0
    male_fraction: Annotated[float, Field(ge=0, le=1)] = 0.47

    @model_validator(mode="after")
    def _ordered_ages(self) -> Demographics:
        if not self.age_min < self.age_max:
            raise ValueError(
                f"demographics.age_min ({self.age_min}) must be below demographics.age_max ({self.age_max})"
            )
        return self


class HeadSize(_Params):
    """Head size in native space (linear scale factors); registration to MNI removes it.

    Attributes:
        male_ratio: Men's linear head size relative to women's (1.045: about 14% more brain volume).
        sd: Standard deviation of the individual log scale.
    """

    male_ratio: PositiveFloat = 1.045
    sd: NonNegativeFloat = 0.035


class Ageing(_Params):
    """Atrophy per decade of brain age above 45 years.

    Attributes:
        brain_age_gap_sd: Standard deviation of brain age minus chronological age (years); atrophy
            follows the brain age, so this sets a floor on any age predictor's error.
        cortical_thinning_mm_per_decade: Grey matter removed at the pial surface, mm per decade.
        ventricle_dilation_mm_at_45: Dilation of the template's (young adult) ventricles at 45, in mm.
        ventricle_dilation_mm_per_decade: Further dilation per decade, in mm.
        contrast_change_per_decade: Relative change of the grey/white-matter contrast per decade.
        shape_mm_per_decade: Root-mean-square displacement per decade along a fixed smooth regional
            pattern (regional atrophy and expansion that leave the tissue fractions nearly unchanged).
    """

    brain_age_gap_sd: NonNegativeFloat = 3.5
    cortical_thinning_mm_per_decade: float = 0.25
    ventricle_dilation_mm_at_45: NonNegativeFloat = 0.8
    # Ventricles are what a central axial slice shows of ageing, while global intensity statistics barely
    # see them (about a tenth of the CSF), so a slice model can beat those (docs/calibration.md).
    ventricle_dilation_mm_per_decade: float = 1.2
    contrast_change_per_decade: float = -0.04
    # Global intensity statistics read cortical thinning and ventricles through the CSF fraction about as
    # well as a network reads a slice; regional shape is an age cue only the slice shows
    # (docs/calibration.md).
    shape_mm_per_decade: float = 0.4


class SexEffects(_Params):
    """Sex differences that survive linear registration.

    Attributes:
        cortex_mm: Female minus male cortical thickness after head-size normalisation, in mm.
        ventricle_ratio: Male relative to female factor on ventricular enlargement.
        contrast: Male minus female relative grey/white-matter contrast.
        shape_mm: Root-mean-square displacement between the sexes along a fixed smooth regional pattern
            (regional volume ratios), in mm.
    """

    cortex_mm: float = 0.12
    ventricle_ratio: PositiveFloat = 1.12
    contrast: float = 0.02
    # Regional shape is what a slice model can learn and global statistics cannot see; sized so that a
    # resnet18 from scratch on 500 central slices lands in the intended range (docs/calibration.md).
    shape_mm: NonNegativeFloat = 0.8


class Variability(_Params):
    """Individual anatomy and appearance at a given age and sex.

    Attributes:
        deformation_mm: Root-mean-square of the smooth random displacement field, in mm.
        deformation_spacing_mm: Control-point spacing of that field (its smoothness), in mm.
        cortex_sd_mm: Standard deviation of the individual cortical thickness offset, in mm.
        ventricle_sd: Standard deviation of the individual log factor on ventricular enlargement.
        contrast_sd: Standard deviation of the individual log grey/white-matter contrast.
        intensity_sd: Standard deviation of the individual log intensity gain.
    """

    deformation_mm: NonNegativeFloat = 2.0
    deformation_spacing_mm: PositiveFloat = 30.0
    cortex_sd_mm: NonNegativeFloat = 0.3
    # Wide enough that ventricle size alone does not give the age away, narrow enough that it is a cue.
    ventricle_sd: NonNegativeFloat = 0.25
    contrast_sd: NonNegativeFloat = 0.08
    intensity_sd: NonNegativeFloat = 0.08


class Registration(_Params):
    """Residual misalignment after affine registration to MNI (standard deviations).

    Attributes:
        rotation_deg: Per axis, in degrees.
        translation_mm: Per axis, in mm.
        scale: Relative scale per axis.
    """

    rotation_deg: NonNegativeFloat = 1.5
    translation_mm: NonNegativeFloat = 1.5
    scale: NonNegativeFloat = 0.015


class SiteEffects(_Params):
    """One assessment centre's scanner: how often it appears and how its images look.

    Attributes:
        weight: Relative share of subjects scanned there.
        intensity_scale: Factor on all intensities.
        contrast: Factor on the grey/white-matter contrast.
        noise: Rician noise standard deviation relative to white matter.
        blur_fwhm_mm: Gaussian blur (lower effective resolution), full width at half maximum in mm.
        bias_field: Root-mean-square of the log of the smooth multiplicative bias field.
    """

    weight: PositiveFloat
    intensity_scale: PositiveFloat = 1.0
    contrast: PositiveFloat = 1.0
    noise: NonNegativeFloat = 0.03
    blur_fwhm_mm: NonNegativeFloat = 0.0
    bias_field: NonNegativeFloat = 0.05


def _default_sites() -> dict[int, SiteEffects]:
    return {
        # Cheadle
        11025: SiteEffects(weight=0.40),
        # Reading
        11026: SiteEffects(weight=0.15, intensity_scale=0.92, contrast=0.97, noise=0.035),
        # Newcastle
        11027: SiteEffects(weight=0.30, intensity_scale=1.06, contrast=1.03, blur_fwhm_mm=1.0),
        # Bristol: the external, different-domain site. Its noise, blur and bias field are sized to survive
        # the 64 x 64 slice's downsampling and z-scoring, so models see the domain shift
        # (docs/calibration.md).
        11028: SiteEffects(
            weight=0.15,
            intensity_scale=0.8,
            contrast=0.85,
            noise=0.08,
            blur_fwhm_mm=4.0,
            bias_field=0.2,
        ),
    }


class SyntheticCohortParams(_Params):
    """Everything that defines a synthetic cohort (the ``synthetic`` parameters).

    Attributes:
        seed: Cohort seed; subject ``i`` draws from ``SeedSequence(seed, spawn_key=(i, ...))``.
        n_subjects: Cohort size.
        layout: ``ukb`` (``<eid>/T1/T1_brain_to_MNI.nii.gz`` + showcase CSV) or ``bids``
            (``sub-<eid>/anat/sub-<eid>_T1w.nii.gz`` + ``participants.tsv``).
        voxel_size_mm: Isotropic voxel size of the MNI output grid (2 mm: 91 x 109 x 91).
        sites: Assessment centre code -> its scanner effects.
        data_type: ``t1`` (the images) or ``timeseries`` (one ROI time series per subject, see
            ``timeseries``; the metadata is then a BIDS-style participants table whatever ``layout``).
        timeseries: The time series' parameters.
        label_maps: Also write each subject's tissue label map (``TISSUE_LABELS``) on its T1's grid.
    """

    seed: int = 2024
    n_subjects: Annotated[int, Field(ge=1)] = 1000
    layout: Literal["ukb", "bids"] = "ukb"
    voxel_size_mm: Annotated[float, Field(ge=1.0, le=8.0)] = 2.0
    demographics: Demographics = Demographics()
    head_size: HeadSize = HeadSize()
    ageing: Ageing = Ageing()
    sex: SexEffects = SexEffects()
    variability: Variability = Variability()
    registration: Registration = Registration()
    sites: dict[int, SiteEffects] = Field(default_factory=_default_sites, min_length=1)
    data_type: Literal["t1", "timeseries"] = "t1"
    timeseries: SyntheticSeriesParams = SyntheticSeriesParams()
    label_maps: bool = False

    @model_validator(mode="after")
    def _label_maps_need_images(self) -> SyntheticCohortParams:
        if self.label_maps and self.data_type != "t1":
            raise ValueError(
                f"synthetic.label_maps: true needs data_type: t1 (tissue labels of the images), "
                f"got data_type: {self.data_type}"
            )
        return self

    @property
    def metadata_layout(self) -> Literal["ukb", "bids"]:
        """The layout of the metadata table: ``layout``, or ``bids`` for time series."""
        return "bids" if self.data_type == "timeseries" else self.layout


@dataclasses.dataclass(frozen=True)
class Subject:
    """One subject's labels and latent ground truth.

    Attributes:
        index: Position in the cohort; with the cohort seed it seeds everything about the subject.
        eid: 7-digit participant id.
        age: Chronological age in years.
        sex: 0 female, 1 male.
        site: Assessment centre code.
        brain_age: Age of the brain, which drives atrophy (``age`` plus the brain-age gap).
        head_scale: Linear head size relative to the template, before registration.
        ventricle_scale: Individual factor on ventricular enlargement (including the sex effect).
        cortex_offset_mm: Individual cortical thinning in mm (negative: thicker; includes the sex effect).
    """

    index: int
    eid: int
    age: float
    sex: int
    site: int
    brain_age: float
    head_scale: float
    ventricle_scale: float
    cortex_offset_mm: float


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    # Separate streams for the labels and latents (0), the geometry (1) and the appearance (2): changing
    # a label, or asking only for the tissue maps, leaves the rest of the subject identical.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, stream)))


def draw_subject(
    params: SyntheticCohortParams,
    index: int,
    eid: int,
    *,
    age: float | None = None,
    sex: int | None = None,
    site: int | None = None,
) -> Subject:
    """Draw subject ``index`` of the cohort from its own seed.

    The same random numbers are drawn whatever is overridden, so ``draw_subject(p, i, e, sex=0)`` and
    ``draw_subject(p, i, e, sex=1)`` are the same individual as a woman and as a man.

    Args:
        params: Cohort parameters.
        index: Position in the cohort.
        eid: Participant id to give the subject.
        age: Chronological age to use instead of the drawn one.
        sex: Sex (0 female, 1 male) to use instead of the drawn one.
        site: Assessment centre to use instead of the drawn one.

    Returns:
        The subject's labels and latent ground truth.
    """
    rng = _rng(params.seed, index, 0)
    demo = params.demographics
    codes = sorted(params.sites)
    weights = np.array([params.sites[c].weight for c in codes])
    drawn_site = int(codes[rng.choice(len(codes), p=weights / weights.sum())])
    drawn_sex = int(rng.random() < demo.male_fraction)
    bounds = (
        (demo.age_min - demo.age_mean) / demo.age_sd,
        (demo.age_max - demo.age_mean) / demo.age_sd,
    )
    drawn_age = float(
        stats.truncnorm.rvs(*bounds, loc=demo.age_mean, scale=demo.age_sd, random_state=rng)
    )
    head_z, ventricle_z, cortex_z, gap_z = rng.standard_normal(4)

    site = drawn_site if site is None else site
    if site not in params.sites:
        raise ValueError(f"site {site} is not one of the cohort's sites {codes}")
    sex = drawn_sex if sex is None else sex
    age = round(drawn_age if age is None else age, 1)
    signed_sex = sex - 0.5  # +1/2 male, -1/2 female: sex effects are male-minus-female differences
    return Subject(
        index=index,
        eid=eid,
        age=age,
        sex=sex,
        site=site,
        brain_age=float(age + params.ageing.brain_age_gap_sd * gap_z),
        head_scale=float(
            params.head_size.male_ratio**signed_sex * np.exp(params.head_size.sd * head_z)
        ),
        ventricle_scale=float(
            params.sex.ventricle_ratio**signed_sex
            * np.exp(params.variability.ventricle_sd * ventricle_z)
        ),
        cortex_offset_mm=float(
            signed_sex * params.sex.cortex_mm + params.variability.cortex_sd_mm * cortex_z
        ),
    )


def draw_cohort(params: SyntheticCohortParams) -> list[Subject]:
    """Draw every subject; eids are distinct random 7-digit numbers, so their order carries no label.

    Args:
        params: Cohort parameters.

    Returns:
        ``params.n_subjects`` subjects in index order.
    """
    eids = np.random.default_rng(np.random.SeedSequence(params.seed)).choice(
        9_000_000, size=params.n_subjects, replace=False
    )
    return [draw_subject(params, i, 1_000_000 + int(e)) for i, e in enumerate(eids)]


def _tissues(
    subject: Subject, params: SyntheticCohortParams, template: Template
) -> tuple[np.ndarray, np.ndarray]:
    """Grey and white matter of the subject in template space (before any warp); CSF fills the rest."""
    decades = (subject.brain_age - _REFERENCE_AGE) / 10.0
    thinning = params.ageing.cortical_thinning_mm_per_decade * decades + subject.cortex_offset_mm
    # Thinning removes grey matter at the pial surface (negative thinning adds it, up to the mask).
    gm = np.clip(template.gm - thinning * template.pial_density, 0.0, template.mask - template.wm)
    wm = template.wm.copy()

    # A soft dilation of the ventricles, zero at zero dilation; the tissue it takes over becomes CSF.
    softness = template.voxel_size_mm / 2.0
    taken = _ventricles(subject, params, template) - _sigmoid(
        -template.ventricle_distance / softness
    )
    keep = 1.0 - np.clip(taken, 0.0, 1.0)
    gm[template.ventricle_zone] *= keep
    wm[template.ventricle_zone] *= keep
    return gm, wm


def _ventricles(subject: Subject, params: SyntheticCohortParams, template: Template) -> np.ndarray:
    """The subject's (soft) ventricles over ``template.ventricle_zone``: the template's dilated by
    ``ventricle_scale`` times the age-dependent dilation in mm."""
    decades = (subject.brain_age - _REFERENCE_AGE) / 10.0
    dilation = subject.ventricle_scale * (
        params.ageing.ventricle_dilation_mm_at_45
        + params.ageing.ventricle_dilation_mm_per_decade * max(decades, 0.0)
    )
    softness = template.voxel_size_mm / 2.0
    return _sigmoid((dilation - template.ventricle_distance) / softness)


def _unwarped_t1(
    subject: Subject,
    params: SyntheticCohortParams,
    template: Template,
    tissues: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """The T1 image in template space, before warp and scanner effects (draws the contrast from
    ``rng``, the subject's appearance stream, first)."""
    gm_mean, wm_mean, csf_mean = template.tissue_means
    gm_mean = wm_mean - (wm_mean - gm_mean) * _contrast(subject, params, rng)
    gm, wm = tissues
    # gm*gm_mean + wm*wm_mean + csf*csf_mean + residual, with csf = mask - gm - wm folded into t1_base.
    return template.t1_base + gm * (gm_mean - csf_mean) + wm * (wm_mean - csf_mean)


def _brain(t1: np.ndarray, template: Template) -> np.ndarray:
    """Brain extraction of a warped T1: brighter than half-way from background to CSF."""
    return t1 > 0.5 * template.tissue_means[2]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _contrast(subject: Subject, params: SyntheticCohortParams, rng: np.random.Generator) -> float:
    decades = (subject.brain_age - _REFERENCE_AGE) / 10.0
    return float(
        params.sites[subject.site].contrast
        * (1.0 + params.ageing.contrast_change_per_decade * decades)
        * (1.0 + params.sex.contrast * (subject.sex - 0.5))
        * np.exp(params.variability.contrast_sd * rng.standard_normal())
    )


def _geometry(
    subject: Subject, params: SyntheticCohortParams, template: Template, space: str
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Where each output voxel samples the template maps.

    Output voxel ``x`` (MNI mm) shows the template at ``L x + t + u(x)``: ``L``, ``t`` the residual
    misregistration (and, in native space, the head size), ``u`` the individual deformation plus the
    sex pattern.

    Returns:
        The output box that can contain brain, and the sampling grid over it in ``grid_sample``'s
        layout ``(1, *box_shape, 3)``, normalised to the cropped template maps.
    """
    rng = _rng(params.seed, subject.index, 1)
    reg, var = params.registration, params.variability
    voxel = template.voxel_size_mm
    linear = _rotation(np.deg2rad(reg.rotation_deg) * rng.standard_normal(3)) @ np.diag(
        1.0 + reg.scale * rng.standard_normal(3)
    )
    if space == "native":
        # Before registration the brain keeps its own size: output mm -> template mm shrinks by head_scale.
        linear = linear / subject.head_scale
    translation = reg.translation_mm * rng.standard_normal(3)
    control = var.deformation_mm * control_points(
        rng, template.shape, var.deformation_spacing_mm / voxel
    )
    sex_amplitude = params.sex.shape_mm * (subject.sex - 0.5)
    age_amplitude = params.ageing.shape_mm_per_decade * (subject.brain_age - _REFERENCE_AGE) / 10.0
    # Interpolation never exceeds its control values, so this bounds |u| without evaluating it.
    reach = np.linalg.norm(
        np.abs(control).max(axis=(1, 2, 3))
        + abs(sex_amplitude) * template.sex_pattern_max
        + abs(age_amplitude) * template.age_pattern_max
    )
    box = _output_box(template, linear, translation, reach)
    displacement = interpolate_field(control, template.shape, box)
    displacement += sex_amplitude * template.sex_pattern[(slice(None), *box)]
    displacement += age_amplitude * template.age_pattern[(slice(None), *box)]

    world = [
        (template.affine[a, 3] + voxel * np.arange(s.start, s.stop, dtype=np.float32)).reshape(
            [-1 if b == a else 1 for b in range(3)]
        )
        for a, s in enumerate(box)
    ]
    crop_origin = template.crop_affine[:3, 3]
    crop_shape = template.gm.shape
    grid = np.empty((*displacement.shape[1:], 3), dtype=np.float32)
    for c in range(3):
        # grid_sample's (x, y, z) index the last, middle and first axis, normalised to [-1, 1]; the
        # affine part is summed over broadcast 1D axes before it meets the full-size displacement.
        to_unit = 2.0 / (voxel * (crop_shape[c] - 1))
        affine_part = sum(linear[c, a] * world[a] for a in range(3)) + (
            translation[c] - crop_origin[c]
        )
        grid[..., 2 - c] = (affine_part + displacement[c]) * to_unit - 1.0
    return box, grid[None]


def _output_box(
    template: Template, linear: np.ndarray, translation: np.ndarray, reach: float
) -> tuple[slice, slice, slice]:
    """Output voxels whose sample can fall inside the cropped template (the rest stays zero)."""
    crop_size = (np.array(template.gm.shape) - 1) * template.voxel_size_mm
    corners = (
        template.crop_affine[:3, 3]
        + crop_size * np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T
    )
    inverse = np.linalg.inv(linear)
    mapped = (corners - translation) @ inverse.T
    margin = reach * np.linalg.norm(inverse, 2) + template.voxel_size_mm
    low = np.floor((mapped.min(axis=0) - margin - template.affine[:3, 3]) / template.voxel_size_mm)
    high = (
        np.ceil((mapped.max(axis=0) + margin - template.affine[:3, 3]) / template.voxel_size_mm) + 1
    )
    return tuple(
        slice(int(max(lo, 0)), int(min(hi, n)))
        for lo, hi, n in zip(low, high, template.shape, strict=True)
    )  # type: ignore[return-value]


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _warp(volumes: list[np.ndarray], grid: np.ndarray) -> list[np.ndarray]:
    """Trilinear sampling of template-space ``volumes`` at ``grid`` (zero outside them)."""
    import torch

    warped = torch.nn.functional.grid_sample(
        torch.from_numpy(np.stack(volumes))[None],
        torch.from_numpy(grid),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return list(warped[0].numpy())


def _on_grid(
    box_values: np.ndarray, box: tuple[slice, slice, slice], template: Template
) -> np.ndarray:
    full = np.zeros(template.shape, dtype=box_values.dtype)
    full[box] = box_values
    return full


def tissue_maps(
    subject: Subject, params: SyntheticCohortParams, space: Literal["mni", "native"] = "mni"
) -> dict[str, np.ndarray]:
    """The subject's ground-truth tissue probabilities on the output grid.

    Args:
        subject: The subject.
        params: Cohort parameters.
        space: ``mni`` (registered, as written) or ``native`` (before registration: own head size).

    Returns:
        ``gm``, ``wm``, ``csf`` and ``mask`` arrays of the output grid, aligned with
        :func:`generate_subject`'s image.
    """
    template = load_template(params.voxel_size_mm)
    box, grid = _geometry(subject, params, template, space)
    gm, wm = _tissues(subject, params, template)
    warped = _warp([gm, wm, template.mask - gm - wm, template.mask], grid)
    return {
        name: _on_grid(v, box, template)
        for name, v in zip(("gm", "wm", "csf", "mask"), warped, strict=True)
    }


def generate_subject(
    subject: Subject, params: SyntheticCohortParams, space: Literal["mni", "native"] = "mni"
) -> nib.Nifti1Image:
    """Render the subject's brain-extracted T1 image.

    Args:
        subject: The subject (from :func:`draw_subject`, or changed with ``dataclasses.replace``).
        params: Cohort parameters.
        space: ``mni``: linearly registered to the MNI grid, as UK Biobank's ``T1_brain_to_MNI``;
            ``native``: before registration, so the brain keeps its own size.

    Returns:
        An int16 image on the MNI grid of ``params.voxel_size_mm`` with a RAS affine.
    """
    template = load_template(params.voxel_size_mm)
    site = params.sites[subject.site]
    rng = _rng(params.seed, subject.index, 2)
    t1 = _unwarped_t1(subject, params, template, _tissues(subject, params, template), rng)
    box, grid = _geometry(subject, params, template, space)
    (t1,) = _warp([t1], grid)
    brain = _brain(t1, template)

    if site.blur_fwhm_mm > 0:
        t1 = ndimage.gaussian_filter(
            t1, site.blur_fwhm_mm / (np.sqrt(8 * np.log(2)) * template.voxel_size_mm)
        )
    # A smooth multiplicative bias field, exp of a coarse random field as in SynthSeg (Billot et al.
    # 2023); the field helper is already at hand, and MONAI's polynomial one cost two seconds of import
    # in every worker process.
    log_bias = control_points(
        rng, template.shape, _BIAS_SPACING_MM / template.voxel_size_mm, channels=1
    )
    bias = np.exp(site.bias_field * interpolate_field(log_bias, template.shape, box)[0])
    values = (t1 * bias)[brain]
    # Magnitude images have Rician noise. Drawn here rather than by MONAI's RandRicianNoise, whose
    # float64 legacy generator over the whole box took half of the per-subject time budget.
    real, imaginary = site.noise * rng.standard_normal((2, values.size), dtype=np.float32)
    values = np.hypot(values + real, imaginary)

    gain = (
        _WHITE_MATTER_LEVEL
        * site.intensity_scale
        * np.exp(params.variability.intensity_sd * rng.standard_normal())
    )
    data = np.zeros(t1.shape, dtype=np.int16)
    data[brain] = np.rint(values * gain)
    img = nib.Nifti1Image(_on_grid(data, box, template), template.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(template.affine, code=4)  # 4: MNI152
    img.set_sform(template.affine, code=4)
    return img


def generate_label_map(
    subject: Subject, params: SyntheticCohortParams, space: Literal["mni", "native"] = "mni"
) -> nib.Nifti1Image:
    """The subject's tissue label map (``tlkedro.imaging.labels.TISSUE_LABELS``) on its T1's grid.

    Inside the T1's brain (exactly its nonzero voxels) each voxel takes the most probable of CSF, grey
    and white matter after the same warp as the image; CSF within the subject's (dilated) ventricles
    is ``ventricles``; everything else is ``background``.

    Args:
        subject: The subject.
        params: Cohort parameters.
        space: As for :func:`generate_subject`, whose image this map labels.

    Returns:
        A uint8 image with the affine, qform and sform of :func:`generate_subject`'s image.
    """
    template = load_template(params.voxel_size_mm)
    rng = _rng(params.seed, subject.index, 2)
    gm, wm = _tissues(subject, params, template)
    t1 = _unwarped_t1(subject, params, template, (gm, wm), rng)
    ventricles = np.zeros_like(gm)
    ventricles[template.ventricle_zone] = _ventricles(subject, params, template)
    box, grid = _geometry(subject, params, template, space)
    t1, gm, wm, csf, ventricles = _warp([t1, gm, wm, template.mask - gm - wm, ventricles], grid)
    tissue = np.array([_LABEL["csf"], _LABEL["grey_matter"], _LABEL["white_matter"]], np.uint8)
    labels = tissue[np.argmax(np.stack([csf, gm, wm]), axis=0)]
    labels[(labels == _LABEL["csf"]) & (ventricles > 0.5)] = _LABEL["ventricles"]
    labels[~_brain(t1, template)] = _LABEL["background"]
    img = nib.Nifti1Image(_on_grid(labels, box, template), template.affine)
    img.set_data_dtype(np.uint8)
    img.header.set_intent("label")
    img.header.set_xyzt_units("mm")
    img.set_qform(template.affine, code=4)
    img.set_sform(template.affine, code=4)
    return img


def image_path(layout: str, eid: int) -> str:
    """Relative path of a subject's image in ``layout`` (``ukb`` or ``bids``)."""
    return (UKB_IMAGE if layout == "ukb" else BIDS_IMAGE).format(eid=eid)


def label_map_path(layout: str, eid: int) -> str:
    """Relative path of a subject's label map in ``layout``: beside the T1 (``ukb``), or in the
    ``derivatives/tissue_labels`` dataset (``bids``, relative to it)."""
    return (UKB_LABEL_MAP if layout == "ukb" else BIDS_LABEL_MAP).format(eid=eid)


def cohort_metadata(subjects: list[Subject], layout: str) -> pd.DataFrame:
    """The label table a data owner would ship, plus the generator's ground truth.

    Args:
        subjects: The cohort.
        layout: ``ukb``: showcase columns ``eid``, ``31-0.0`` (sex, 1 male), ``21003-2.0`` (age),
            ``54-2.0`` (centre); ``bids``: ``participant_id``, ``age``, ``sex`` (M/F), ``site``.

    Returns:
        One row per subject in cohort order, followed by the ``TRUTH_COLUMNS``.
    """
    table = pd.DataFrame([dataclasses.asdict(s) for s in subjects])
    truth = table[
        ["brain_age", "head_scale", "ventricle_scale", "cortex_offset_mm", "index"]
    ].set_axis(TRUTH_COLUMNS, axis=1)
    if layout == "ukb":
        labels = table[list(UKB_COLUMNS)].rename(columns=UKB_COLUMNS)
    else:
        labels = pd.DataFrame(
            {
                "participant_id": "sub-" + table["eid"].astype(str),
                "age": table["age"],
                "sex": table["sex"].map({0: "F", 1: "M"}),
                "site": table["site"].astype(str),
            }
        )
    return pd.concat([labels, truth.round(4)], axis=1)


def cohort_recipes(
    subjects: list[Subject], params: SyntheticCohortParams
) -> dict[str, Callable[[], nib.Nifti1Image | pd.DataFrame]]:
    """One lazy, picklable recipe per subject, keyed by its relative image path in ``params.layout``
    (its image), or by ``sub-<eid>_timeseries.tsv`` with ``data_type: timeseries`` (its series)."""
    if params.data_type == "timeseries":
        return {
            SERIES_PATH.format(eid=s.eid): functools.partial(
                generate_series, params.timeseries, params.seed, s.index, s.brain_age, s.sex
            )
            for s in subjects
        }
    return {
        image_path(params.layout, s.eid): functools.partial(generate_subject, s, params)
        for s in subjects
    }


def label_map_recipes(
    subjects: list[Subject], params: SyntheticCohortParams
) -> dict[str, Callable[[], nib.Nifti1Image]]:
    """One lazy, picklable recipe per subject rendering its label map, keyed by
    :func:`label_map_path`."""
    return {
        label_map_path(params.layout, s.eid): functools.partial(generate_label_map, s, params)
        for s in subjects
    }
