"""The MNI152 2009 anatomy that synthetic subjects are built from, on an output grid of any voxel size.

nilearn ships the skull-stripped ICBM152 2009 symmetric T1 template with its grey- and white-matter
probability maps (1 mm, RAS) inside its wheel, so no download is needed. :func:`load_template` resamples
them once per process (cached) to the MNI grid of the requested voxel size and derives what the
generator needs every time: cerebrospinal fluid, the pial surface density used for cortical thinning,
the distance from the ventricles used for ventricular enlargement, and the residual texture of the T1
template that a three-tissue mixture does not explain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nilearn import datasets, image
from scipy import ndimage

# The MNI152 bounding box that FSL's standard grids cover (x, y, z in mm); at 2 mm it is the familiar
# 91 x 109 x 91 grid, here with a RAS affine.
MNI_BOX_MM = ((-90.0, 90.0), (-126.0, 90.0), (-72.0, 108.0))
# CSF deeper than this below the brain surface is ventricular (or cisternal), not sulcal.
_VENTRICLE_DEPTH_MM = 15.0
_VENTRICLE_MIN_ML = 2.0
# Ventricular enlargement is computed this far from the ventricles (far beyond any plausible dilation).
_VENTRICLE_REACH_MM = 25.0


@dataclass(frozen=True)
class Template:
    """The template anatomy for one output grid.

    The tissue maps are stored cropped to the brain's bounding box (``crop_affine`` maps their voxel
    indices to MNI mm): everything outside is zero, and the generator's work scales with the brain, not
    with the field of view.

    Attributes:
        affine: RAS voxel-to-MNI affine of the output grid.
        shape: Output grid shape.
        crop_affine: Voxel-to-MNI affine of the cropped maps below (same voxel size as ``affine``).
        gm: Grey-matter probability.
        wm: White-matter probability.
        mask: Brain mask (soft, 0..1): grey matter, white matter and the CSF inside the brain outline.
        tissue_means: T1 intensity of pure grey matter, white matter and CSF, white matter being 1.
        t1_base: The T1 template where all tissue is CSF (``mask * csf_mean``) plus the residual
            texture that the three-tissue mixture does not explain; adding each tissue's map times its
            mean minus the CSF mean gives the T1 image.
        pial_density: Pial surface area per unit volume (1/mm): grey matter lost per mm of thinning.
        ventricle_zone: Part of the cropped maps within reach of ventricular enlargement.
        ventricle_distance: Signed distance to the ventricle surface in mm (negative inside), over
            ``ventricle_zone``.
        sex_pattern: Fixed smooth displacement field on the output grid, ``(3, *shape)`` in mm, unit
            root-mean-square.
        sex_pattern_max: Largest absolute value of each component of ``sex_pattern``.
        age_pattern: Another such field, independent of ``sex_pattern``: the regional shape change
            of ageing.
        age_pattern_max: Largest absolute value of each component of ``age_pattern``.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    crop_affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    tissue_means: tuple[float, float, float]
    t1_base: np.ndarray
    pial_density: np.ndarray
    ventricle_zone: tuple[slice, slice, slice]
    ventricle_distance: np.ndarray
    sex_pattern: np.ndarray
    sex_pattern_max: np.ndarray
    age_pattern: np.ndarray
    age_pattern_max: np.ndarray

    @property
    def voxel_size_mm(self) -> float:
        """Isotropic voxel size of the grid."""
        return float(self.affine[0, 0])


def mni_grid(voxel_size_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """RAS affine and shape of the MNI152 grid at an isotropic voxel size.

    Args:
        voxel_size_mm: Voxel edge length; 2.0 gives the 91 x 109 x 91 grid.

    Returns:
        The 4x4 affine and the grid shape.
    """
    lows = np.array([low for low, _ in MNI_BOX_MM])
    highs = np.array([high for _, high in MNI_BOX_MM])
    shape = tuple(int(n) for n in np.floor((highs - lows) / voxel_size_mm + 1e-6) + 1)
    affine = np.diag([voxel_size_mm] * 3 + [1.0])
    affine[:3, 3] = lows
    return affine, shape  # type: ignore[return-value]


# Mean square of a trilinear interpolation of independent unit-variance control values, averaged over
# positions between control points: (2/3) per axis.
_TRILINEAR_MEAN_SQUARE = (2.0 / 3.0) ** 3


def control_points(
    rng: np.random.Generator, shape: tuple[int, ...], spacing_vox: float, channels: int = 3
) -> np.ndarray:
    """Random control values of a smooth field, as in free-form deformation.

    Independent normal values, one point per ``spacing_vox`` voxels of ``shape``, scaled so that the
    field that :func:`interpolate_field` makes from them has a root-mean-square of about 1.

    Args:
        rng: Source of randomness.
        shape: Grid shape (3D) that the field covers.
        spacing_vox: Control-point spacing in voxels; larger is smoother.
        channels: Number of components (3 for a displacement field).

    Returns:
        float32 array of shape ``(channels, *coarse_shape)``.
    """
    coarse = tuple(max(2, int(np.ceil(n / spacing_vox)) + 1) for n in shape)
    values = rng.standard_normal((channels, *coarse), dtype=np.float32)
    return values / np.float32(np.sqrt(_TRILINEAR_MEAN_SQUARE))


def interpolate_field(
    control: np.ndarray, shape: tuple[int, int, int], box: tuple[slice, slice, slice] | None = None
) -> np.ndarray:
    """Trilinear interpolation of ``control`` over a grid of ``shape`` (corners aligned), within ``box``.

    Args:
        control: Control values ``(channels, *coarse_shape)`` from :func:`control_points`.
        shape: Grid shape that the control points span.
        box: Part of the grid to evaluate (default: all of it); the values do not depend on it.

    Returns:
        float32 array ``(channels, *box_shape)``.
    """
    box = box or tuple(slice(0, n) for n in shape)
    # Trilinear interpolation is separable: one matrix of hat-function weights per axis.
    weights = []
    for span, size, n_control in zip(box, shape, control.shape[1:], strict=True):
        position = np.arange(span.start, span.stop, dtype=np.float32) * np.float32(
            (n_control - 1) / (size - 1)
        )
        weights.append(
            np.maximum(
                0.0, 1.0 - np.abs(position[:, None] - np.arange(n_control, dtype=np.float32))
            )
        )
    return np.einsum("cijk,xi,yj,zk->cxyz", control, *weights, optimize=True)


def _resample(img: nib.Nifti1Image, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    voxel = float(affine[0, 0])
    if voxel > 1.0:
        # Anti-aliasing: a voxel of the coarse grid averages roughly voxel^3 template voxels.
        img = image.smooth_img(img, fwhm=float(np.sqrt(voxel**2 - 1.0)))
    resampled = image.resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation="linear",
        force_resample=True,
        copy_header=True,
    )
    return np.clip(resampled.get_fdata(dtype=np.float32), 0.0, None)


def _pial_density(gm: np.ndarray, wm: np.ndarray) -> nib.Nifti1Image:
    """Area of the grey-matter side of the brain surface per unit volume, at the template's 1 mm."""
    tissue = gm + wm
    gradient = np.sqrt(sum(g**2 for g in np.gradient(tissue)))
    return gradient * np.divide(gm, tissue, out=np.zeros_like(gm), where=tissue > 1e-3)


def _ventricle_distance(csf: np.ndarray, mask: np.ndarray, voxel_size_mm: float) -> np.ndarray:
    depth = ndimage.distance_transform_edt(mask > 0.5, sampling=voxel_size_mm)
    deep_csf = (csf > 0.5) & (depth > _VENTRICLE_DEPTH_MM)
    labels, count = ndimage.label(deep_csf)
    volumes_ml = ndimage.sum(deep_csf, labels, range(1, count + 1)) * voxel_size_mm**3 / 1000
    keep = np.flatnonzero(volumes_ml >= _VENTRICLE_MIN_ML) + 1
    ventricles = np.isin(labels, keep)
    outside = ndimage.distance_transform_edt(~ventricles, sampling=voxel_size_mm)
    inside = ndimage.distance_transform_edt(ventricles, sampling=voxel_size_mm)
    return (outside - inside).astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_template(voxel_size_mm: float) -> Template:
    """The MNI152 2009 anatomy on the MNI grid of ``voxel_size_mm``, computed once per process.

    Args:
        voxel_size_mm: Isotropic output voxel size in mm (1 to 8).

    Returns:
        The template maps; treat the arrays as read-only (they are shared by every subject).
    """
    affine, shape = mni_grid(voxel_size_mm)
    t1_img = datasets.load_mni152_template()
    gm_img = datasets.load_mni152_gm_template()
    wm_img = datasets.load_mni152_wm_template()
    mask_img = datasets.load_mni152_brain_mask()
    gm_1mm = gm_img.get_fdata(dtype=np.float32)
    wm_1mm = wm_img.get_fdata(dtype=np.float32)
    pial_img = nib.Nifti1Image(_pial_density(gm_1mm, wm_1mm), gm_img.affine)

    t1, gm, wm, mask, pial = (
        _resample(img, affine, shape) for img in (t1_img, gm_img, wm_img, mask_img, pial_img)
    )
    mask = np.clip(mask, 0.0, 1.0)
    gm = np.minimum(gm, mask)
    wm = np.minimum(wm, mask - gm)
    csf = mask - gm - wm

    # Tissue means from nearly pure voxels; white matter is the unit of intensity.
    t1 = t1 / np.median(t1[wm > 0.9])
    means = tuple(
        float(np.median(t1[sel])) for sel in (gm > 0.8, wm > 0.9, (csf > 0.8) & (mask > 0.9))
    )
    residual = (t1 - (gm * means[0] + wm * means[1] + csf * means[2])) * (mask > 0.5)

    t1_base = mask * means[2] + residual
    # Fixed seeds: each pattern is the same anatomical difference in every cohort.
    sex_pattern = _shape_pattern(0x5E7, shape, spacing_vox=40.0 / voxel_size_mm)
    age_pattern = _shape_pattern(0xA6E, shape, spacing_vox=30.0 / voxel_size_mm)
    ventricle_distance = _ventricle_distance(csf, mask, voxel_size_mm)

    crop = _bounding_box(mask > 1e-3, margin=2)
    crop_affine = affine.copy()
    crop_affine[:3, 3] += voxel_size_mm * np.array([c.start for c in crop])
    zone = _bounding_box(ventricle_distance[crop] < _VENTRICLE_REACH_MM, margin=0)
    return Template(
        affine=affine,
        shape=shape,
        crop_affine=crop_affine,
        gm=gm[crop],
        wm=wm[crop],
        mask=mask[crop],
        tissue_means=means,  # type: ignore[arg-type]
        t1_base=t1_base[crop].astype(np.float32),
        pial_density=pial[crop],
        ventricle_zone=zone,
        ventricle_distance=ventricle_distance[crop][zone],
        sex_pattern=sex_pattern,
        sex_pattern_max=np.abs(sex_pattern).max(axis=(1, 2, 3)),
        age_pattern=age_pattern,
        age_pattern_max=np.abs(age_pattern).max(axis=(1, 2, 3)),
    )


def _shape_pattern(seed: int, shape: tuple[int, int, int], spacing_vox: float) -> np.ndarray:
    return interpolate_field(control_points(np.random.default_rng(seed), shape, spacing_vox), shape)


def _bounding_box(selection: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    bounds = []
    for axis, size in enumerate(selection.shape):
        hits = np.flatnonzero(selection.any(axis=tuple(a for a in range(3) if a != axis)))
        bounds.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, size)))
    return tuple(bounds)  # type: ignore[return-value]
