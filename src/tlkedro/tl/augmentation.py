"""Random views of brain MRI for the self-supervised objectives, from MONAI array transforms.

Each function returns one MONAI ``Compose`` over a ``(C, *spatial)`` float image; ``ArrayDataset``
reseeds it per item and view, so a view depends only on ``(seed, epoch, row, view)``. The images are
z-scored per scan and, after preprocessing, on one RAS grid: spatial axis 0 runs left to right in
axial and coronal slices and in volumes (``tlkedro.imaging.extraction``), and there is no left-right
axis in sagittal slices.

Why these and not SimCLR's ImageNet recipe (Chen et al., ICML 2020): colour jitter and greyscale have no
meaning for one-channel MRI, whose intensities are arbitrary units; their counterparts are a global gain
and offset (scanners and the z-scoring differ by them), a gamma curve (contrast differs between
sequences and sites) and Gaussian noise (thermal noise). Crops, small rotations and scalings stand for
head position and size in the scanner. Flips are left-right only: the brain is close to mirror-symmetric
across the midline and age and sex are not lateralised, whereas an upside-down or back-to-front brain is
anatomy no scan shows, and would teach the encoder to ignore orientation that the targets depend on.

``RandTimeShift`` is the ROI time series' own (``(ROIs, T)`` inputs, docs/timeseries.md): the data
module's augmentation takes it by name beside MONAI's transforms, which work on 1D channel-first arrays
as they are (``RandGaussianNoise``, ``RandScaleIntensity``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    EnsureType,
    Lambda,
    RandAdjustContrast,
    RandAffine,
    RandCoarseDropout,
    RandFlip,
    RandGaussianNoise,
    RandomizableTransform,
    RandScaleCrop,
    RandScaleIntensity,
    RandShiftIntensity,
    Resize,
    Transform,
)

# Left-right in axial and coronal slices and in volumes on the RAS grid (see the module docstring).
LEFT_RIGHT_AXIS = 0


class RandTimeShift(RandomizableTransform):
    """Start a ``(ROIs, T)`` series a random number of time points later, keeping its length.

    The first ``s`` time points (``s`` uniform in ``0..max_shift``) are dropped and ``s`` zeros appended,
    as preprocessing pads a short series (zero is each ROI's mean after its z-score). A resting-state
    series has no time origin, so its ROI correlations, what the targets depend on, are those of a
    slightly shorter window. Written here because MONAI's crops and pads take absolute sizes, which
    would tie the recipe to one ``preprocessing.timeseries.length``.

    Args:
        max_shift: The largest shift in time points; must leave at least one.
        prob: Probability of shifting an item.
    """

    def __init__(self, max_shift: int = 16, prob: float = 1.0) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0; got {max_shift!r}")
        super().__init__(prob)
        self.max_shift = max_shift
        self._shift = 0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._shift = int(self.R.randint(0, self.max_shift + 1))

    def __call__(self, series: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if series.ndim != 2:
            raise ValueError(
                f"RandTimeShift takes a (ROIs, T) series; got shape {tuple(series.shape)}"
            )
        if series.shape[-1] <= self.max_shift:
            raise ValueError(
                f"RandTimeShift max_shift {self.max_shift} leaves nothing of a series of "
                f"{series.shape[-1]} time points"
            )
        series = torch.as_tensor(series)
        if randomize:
            self.randomize()
        if not self._do_transform or self._shift == 0:
            return series
        return torch.cat([series[:, self._shift :], series.new_zeros(len(series), self._shift)], 1)


def _as_tensor() -> Transform:
    return EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False)


def contrastive_view(
    spatial_shape: Sequence[int],
    crop_scale: float = 0.6,
    rotate_degrees: float = 10.0,
    intensity: float = 0.2,
    noise_std: float = 0.1,
    flip_axis: int | None = LEFT_RIGHT_AXIS,
) -> Compose:
    """One random view for a contrastive objective: crop, affine, flip, intensity, noise.

    Args:
        spatial_shape: The image's spatial size; the cropped view is resized back to it.
        crop_scale: The smallest share of each side a crop keeps (SimCLR's random resized crop).
        rotate_degrees: Largest rotation, each way (about every axis of a volume).
        intensity: Largest relative gain and offset (in standard deviations of the z-scored scan).
        noise_std: Standard deviation of the Gaussian noise, drawn per view up to this value.
        flip_axis: The spatial axis mirrored with probability 0.5 (left-right); ``None``: no flip.

    Raises:
        ValueError: A value out of range, named.
    """
    dims = len(spatial_shape)
    if not 0 < crop_scale <= 1:
        raise ValueError(f"crop_scale must be in (0, 1]; got {crop_scale!r}")
    for name, value in (
        ("rotate_degrees", rotate_degrees),
        ("intensity", intensity),
        ("noise_std", noise_std),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    if flip_axis is not None and not 0 <= flip_axis < dims:
        raise ValueError(
            f"flip_axis must be a spatial axis of the {dims}D images (0..{dims - 1}) or null; "
            f"got {flip_axis!r}"
        )
    angle = math.radians(rotate_degrees)
    transforms: list[Transform] = [
        RandScaleCrop(roi_scale=crop_scale, max_roi_scale=1.0, random_size=True),
        Resize(spatial_size=tuple(spatial_shape), mode="bilinear" if dims == 2 else "trilinear"),
        RandAffine(
            prob=0.8,
            rotate_range=angle if dims == 2 else (angle,) * 3,
            scale_range=0.1,
            padding_mode="zeros",  # the background of a skull-stripped, z-scored scan
        ),
    ]
    if flip_axis is not None:
        transforms.append(RandFlip(prob=0.5, spatial_axis=flip_axis))
    transforms += [
        RandScaleIntensity(factors=intensity, prob=0.8),
        RandShiftIntensity(offsets=intensity, prob=0.8),
        RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5), retain_stats=True),
        RandGaussianNoise(prob=0.5, std=noise_std),
        _as_tensor(),
    ]
    return Compose(transforms)


def masked_view(
    spatial_shape: Sequence[int], holes: int = 16, patch: float = 0.125, noise_std: float = 0.1
) -> Compose:
    """A corrupted view for a reconstruction objective: patches set to 0 (the scan's mean), then noise.

    Args:
        spatial_shape: The image's spatial size.
        holes: Patches masked per image (they may overlap).
        patch: The side of a patch as a share of the image's side.
        noise_std: Standard deviation of the Gaussian noise added everywhere (0: none).

    Raises:
        ValueError: A value out of range, named.
    """
    if holes < 1:
        raise ValueError(f"holes must be >= 1; got {holes!r}")
    if not 0 < patch < 1:
        raise ValueError(f"patch must be in (0, 1); got {patch!r}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a number >= 0; got {noise_std!r}")
    side = tuple(max(1, round(patch * size)) for size in spatial_shape)
    transforms: list[Transform] = [
        # RandCoarseDropout writes into its input: a copy keeps the caller's image (the clean view) intact.
        Lambda(func=torch.clone),
        RandCoarseDropout(holes=holes, spatial_size=side, fill_value=0.0, prob=1.0),
    ]
    if noise_std > 0:
        transforms.append(RandGaussianNoise(prob=1.0, std=noise_std, sample_std=False))
    return Compose([*transforms, _as_tensor()])


def clean_view() -> Compose:
    """The image itself, as a float32 tensor: the target a reconstruction objective compares with."""
    return Compose([_as_tensor()])
