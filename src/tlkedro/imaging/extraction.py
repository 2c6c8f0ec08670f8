"""Model-input rows from scans: 2D slices or 3D volumes, produced lazily as recipes.

Every scan is first brought onto one fixed RAS grid (``volume.shape`` voxels at ``spacing_mm``) by
:func:`~tlkedro.imaging.transforms.build_volume_transforms`. In ``volume`` mode that grid is the output, shape
``(1, 1, X, Y, Z)`` per scan; in ``slices`` mode slices are cut from it along one axis and each is resized
to ``slices.size``, keeping the aspect ratio (scaled to fit, then zero padded), shape ``(k, 1, H, W)``
per scan. Because the grid is fixed, slice indices mean the same position in every scan, and the number
of rows per scan is known before any file is read.

Axes of the RAS grid: ``sagittal`` slices are cut along x (left->right), ``coronal`` along y
(posterior->anterior), ``axial`` along z (inferior->superior); a slice keeps the two other axes in RAS
order (axial: x, y; coronal: x, z; sagittal: y, z).

Slices can also be chosen in template coordinates (``selection: mni``, ``positions_mm``): each position
is located through the scan's own affine after the grid is built, so on scans in MNI space (normalised by
:mod:`tlkedro.imaging.normalisation`, or registered already) a slice shows the same anatomy in every
subject, whatever each file's field of view.

Nothing here reads a file when called: :func:`build_model_input` returns a :class:`LazyArrayStack` of
recipes (``functools.partial`` of :func:`extract_scan`) that the ``NumpyArrayDataset`` evaluates in a
process pool while writing, so memory does not grow with the cohort.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, model_validator

from tlkedro.errors import ConfigurationError
from tlkedro.imaging.transforms import (
    VolumeReadError,
    build_label_transforms,
    build_volume_transforms,
    normalisation,
)
from tlkedro.parallel import run_recipes

AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Slicing axis name -> axis of the RAS volume."""

LABEL_COLUMNS = ["subject_id", "age", "sex", "site", "head_scale", "slice"]
"""Columns of the labels table; ``head_scale`` (spatial normalisation's affine scale) is NaN for scans
that were not registered."""
# What extract_scan needs in a worker: MONAI (with torch) dominates a worker's start-up.
_WORKER_MODULES = ("monai.transforms", "tlkedro.imaging.extraction")


class _Frozen(BaseModel):
    # Frozen models are hashable, so each worker builds its transforms once per configuration.
    model_config = ConfigDict(frozen=True, extra="forbid")


class NormalisationConfig(_Frozen):
    """Intensity normalisation: a name in ``NORMALISATIONS`` and its keyword arguments."""

    name: str = "zscore_brain"
    kwargs: tuple[tuple[str, float], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _kwargs_as_items(cls, data: object) -> object:
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and isinstance(data.get("kwargs"), dict):
            data = {**data, "kwargs": tuple(sorted(data["kwargs"].items()))}
        return data

    @model_validator(mode="after")
    def _buildable(self) -> NormalisationConfig:
        # Binding it once here turns an unknown name or argument into an error at the parameter key.
        normalisation(self.name, **dict(self.kwargs))
        return self


class SliceConfig(_Frozen):
    """Which 2D slices to cut and their output size.

    ``central``: the middle slice; ``k_central``: the ``k`` middle slices; ``every_nth``: every
    ``step``-th slice across the whole grid, on a lattice through the middle slice; ``mni``: the slices
    nearest to ``positions_mm``, world (MNI) coordinates along the axis (axial: z, coronal: y,
    sagittal: x), one row each.
    """

    axis: Literal["axial", "coronal", "sagittal"] = "axial"
    selection: Literal["central", "k_central", "every_nth", "mni"] = "central"
    k: PositiveInt = 1
    step: PositiveInt = 4
    positions_mm: tuple[float, ...] = (0.0,)
    size: tuple[PositiveInt, PositiveInt] = (64, 64)

    @model_validator(mode="after")
    def _positions(self) -> SliceConfig:
        if self.selection == "mni" and not self.positions_mm:
            raise ValueError(
                "slices.positions_mm must list at least one position for selection mni"
            )
        return self


class VolumeConfig(_Frozen):
    """The fixed grid, ``(x, y, z)`` voxels at the target spacing, that every scan is cropped/padded to."""

    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (80, 96, 80)


class ExtractionConfig(_Frozen):
    """How a scan becomes model-input rows (the ``preprocessing`` parameters minus the splits)."""

    spacing_mm: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (2.0, 2.0, 2.0)
    normalisation: NormalisationConfig = NormalisationConfig()
    mode: Literal["slices", "volume"] = "slices"
    slices: SliceConfig = SliceConfig()
    volume: VolumeConfig = VolumeConfig()
    dtype: Literal["float16", "float32"] = "float16"

    @model_validator(mode="after")
    def _consistent(self) -> ExtractionConfig:
        length = self.volume.shape[AXES[self.slices.axis]]
        if (
            self.mode == "slices"
            and self.slices.selection == "k_central"
            and self.slices.k > length
        ):
            raise ValueError(
                f"slices.k={self.slices.k} exceeds the {length} {self.slices.axis} slices of "
                f"volume.shape={list(self.volume.shape)}; allowed: 1..{length}"
            )
        return self

    def slice_indices(self) -> list[int]:
        """Indices along the slicing axis of the rows of one scan; ``[-1]`` in volume mode.

        Raises:
            ValueError: For ``selection: mni``, whose indices depend on each scan's affine (see
                :func:`mni_slice_indices`).
        """
        if self.mode == "volume":
            return [-1]
        if self.slices.selection == "mni":
            raise ValueError("selection mni has no fixed indices: they follow each scan's affine")
        length = self.volume.shape[AXES[self.slices.axis]]
        centre = length // 2
        if self.slices.selection == "central":
            return [centre]
        if self.slices.selection == "k_central":
            start = centre - self.slices.k // 2
            return list(range(start, start + self.slices.k))
        return list(range(centre % self.slices.step, length, self.slices.step))

    def rows_per_scan(self) -> int:
        """Model-input rows of one scan."""
        if self.mode == "slices" and self.slices.selection == "mni":
            return len(self.slices.positions_mm)
        return len(self.slice_indices())

    def slice_labels(self) -> np.ndarray:
        """The ``slice`` label of each row of one scan: the grid index (int64), or for ``selection:
        mni`` the position in mm (float64: the same anatomy in every scan, where the index may differ)."""
        if self.mode == "slices" and self.slices.selection == "mni":
            return np.asarray(self.slices.positions_mm, dtype=np.float64)
        return np.asarray(self.slice_indices(), dtype=np.int64)

    def item_shape(self) -> tuple[int, ...]:
        """Shape of one row: ``(1, H, W)`` for slices, ``(1, X, Y, Z)`` for volumes."""
        if self.mode == "volume":
            return (1, *self.volume.shape)
        return (1, *self.slices.size)


class ScanExtractionError(ConfigurationError, RuntimeError):
    """Preprocessing one scan failed; the message names the file and the reason."""


@dataclass(frozen=True)
class LazyArrayStack:
    """An array of shape ``(sum(rows), *item_shape)`` described by recipes, computed only when written.

    Recipe ``i`` is a picklable zero-argument callable returning the ``rows[i]`` rows of one item (one
    scan) as an array of shape ``(rows[i], *item_shape)``. ``NumpyArrayDataset.save`` evaluates the recipes
    in order in a process pool (``workers`` processes, ``None``: one per core) and streams the rows to
    disk, holding only a few items in memory.

    Args:
        recipes: One callable per item.
        rows: Number of rows each recipe returns.
        item_shape: Shape of one row.
        dtype: Data type the rows are stored as.
        workers: Processes evaluating the recipes.
        desc: Progress-bar label.
        preload: Modules the recipes need, imported once in the forkserver that ``tlkedro.parallel``
            starts its workers from, before its first fork: every later pool's workers then start with
            them (MONAI takes seconds to import) and share their memory. No effect once the forkserver
            of this process is running, nor with one worker.
    """

    recipes: Sequence[Callable[[], np.ndarray]]
    rows: Sequence[int]
    item_shape: tuple[int, ...]
    dtype: str
    workers: int | None = None
    desc: str | None = None
    preload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.recipes) != len(self.rows):
            raise ValueError(f"{len(self.recipes)} recipes but {len(self.rows)} row counts")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the whole array."""
        return (int(sum(self.rows)), *self.item_shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Evaluate the recipes in parallel and yield their rows in order, as ``dtype``.

        Raises:
            ValueError: A recipe returned an array of the wrong shape (the message names the recipe).
        """
        if self.preload:
            multiprocessing.get_context("forkserver").set_forkserver_preload(list(self.preload))
        results = run_recipes(
            self.recipes, workers=self.workers, desc=self.desc, total=len(self.recipes)
        )
        for recipe, n_rows, block in zip(self.recipes, self.rows, results, strict=True):
            expected = (n_rows, *self.item_shape)
            if block.shape != expected:
                raise ValueError(f"{recipe!r} returned shape {block.shape}, expected {expected}")
            yield np.asarray(block, dtype=self.dtype)


@functools.lru_cache(maxsize=4)
def _volume_transforms(config: ExtractionConfig) -> Callable[[dict], dict]:
    return build_volume_transforms(
        spacing_mm=config.spacing_mm,
        normalisation_name=config.normalisation.name,
        normalisation_kwargs=dict(config.normalisation.kwargs),
        shape=config.volume.shape,
    )


@functools.lru_cache(maxsize=4)
def _label_transforms(config: ExtractionConfig) -> Callable[[dict], dict]:
    return build_label_transforms(spacing_mm=config.spacing_mm, shape=config.volume.shape)


@functools.lru_cache(maxsize=8)
def _slice_resizer(
    config: ExtractionConfig, labels: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    from monai.transforms import (  # imported by the workers only, see transforms.py
        Resize,
        SpatialPad,
    )

    axis = AXES[config.slices.axis]
    in_plane = [n for i, n in enumerate(config.volume.shape) if i != axis]
    scale = min(out / n for out, n in zip(config.slices.size, in_plane, strict=True))
    fitted = [max(1, round(n * scale)) for n in in_plane]
    # Label maps: nearest neighbour, never a mixture of labels.
    resize = (
        Resize(fitted, mode="nearest", anti_aliasing=False)
        if labels
        else Resize(fitted, mode="bilinear", anti_aliasing=scale < 1)
    )
    pad = SpatialPad(config.slices.size)
    return lambda planes: np.asarray(pad(resize(planes)))


def mni_slice_indices(affine: np.ndarray, shape: Sequence[int], config: SliceConfig) -> list[int]:
    """Indices along ``config.axis`` of the grid slices nearest to ``config.positions_mm``.

    Args:
        affine: Voxel -> world (RAS mm) affine of the grid.
        shape: The grid's shape.
        config: The slice selection.

    Raises:
        ValueError: A position lies outside the grid, or the grid is oblique to the axis.
    """
    axis = AXES[config.axis]
    column = np.asarray(affine, dtype=np.float64)[:3, :3][:, axis]
    if np.count_nonzero(np.abs(column) > 1e-6 * np.abs(column).max()) != 1 or column[axis] == 0:
        raise ValueError(f"the grid's {config.axis} axis is not aligned with world axis {axis}")
    step, origin = column[axis], float(np.asarray(affine)[axis, 3])
    indices = []
    for position in config.positions_mm:
        index = round((position - origin) / step)
        if not 0 <= index < shape[axis]:
            low, high = sorted((origin, origin + step * (shape[axis] - 1)))
            raise ValueError(
                f"slices.positions_mm {position:g} lies outside the grid's {config.axis} extent "
                f"[{low:g}, {high:g}] mm"
            )
        indices.append(index)
    return indices


def extract_scan(path: str, config: ExtractionConfig) -> np.ndarray:
    """Preprocess one scan into its model-input rows.

    Args:
        path: The NIfTI file.
        config: How to preprocess and extract.

    Returns:
        ``(config.rows_per_scan(), *config.item_shape())`` array of ``config.dtype``.

    Raises:
        ScanExtractionError: The file cannot be read or transformed, or (``selection: mni``) a position
            lies outside its grid; the message names it.
    """
    return _extract(path, config, labels=False)


def extract_label_map(path: str, config: ExtractionConfig) -> np.ndarray:
    """A label map's rows, aligned with :func:`extract_scan`'s rows of its scan.

    The same reorientation, crop/pad, slices and resize as the scan's, with nearest-neighbour
    resampling and no intensity normalisation.

    Args:
        path: The label map (on its scan's grid).
        config: The scan's extraction.

    Returns:
        ``(config.rows_per_scan(), *config.item_shape())`` uint8 array.

    Raises:
        ScanExtractionError: As for :func:`extract_scan`.
    """
    return _extract(path, config, labels=True)


def _extract(path: str, config: ExtractionConfig, *, labels: bool) -> np.ndarray:
    dtype = np.uint8 if labels else config.dtype
    try:
        if labels:
            transformed = _label_transforms(config)({"label": path})["label"]
        else:
            transformed = _volume_transforms(config)({"image": path})["image"]
        volume = np.asarray(transformed)
    except Exception as exc:
        cause = exc
        # MONAI wraps a failing transform in "applying transform ..." errors: report the reason inside.
        while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
            cause = cause.__cause__
        reason = (
            str(cause)
            if isinstance(cause, VolumeReadError)
            else f"{path}: {type(cause).__name__}: {cause}"
        )
        raise ScanExtractionError(f"preprocessing failed: {reason}") from exc
    if config.mode == "volume":
        return volume[None].astype(dtype)
    if config.slices.selection == "mni":
        try:
            indices = mni_slice_indices(
                np.asarray(transformed.affine), volume.shape[1:], config.slices
            )
        except ValueError as exc:
            raise ScanExtractionError(f"preprocessing failed: {path}: {exc}") from exc
    else:
        indices = config.slice_indices()
    planes = np.moveaxis(volume[0], AXES[config.slices.axis], 0)[indices]
    # The selected slices go through the 2D resize together, as channels.
    return _slice_resizer(config, labels)(planes)[:, None].astype(dtype)


def build_model_input(
    scans: pd.DataFrame,
    config: ExtractionConfig,
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    workers: int | None = None,
    desc: str | None = None,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """Recipes for the model-input array of some scans, and its labels table.

    Args:
        scans: Manifest rows (``subject_id``, ``age``, ``sex``, ``site``, optionally ``head_scale``), in
            output order.
        files: The file of each scan, in the same order; the pipeline resolves them through the
            catalog's image datasets. ``None``: the ``path`` column of ``scans``.
        config: How to preprocess and extract.
        workers: Processes that evaluate the recipes when the stack is written.
        desc: Progress-bar label.

    Returns:
        The lazy image array and one label row per image row, in the same order: ``subject_id``,
        ``age``, ``sex``, ``site``, ``head_scale`` (NaN where absent), ``slice`` (index along the slicing
        axis, -1 for volumes; the position in mm for ``selection: mni``).

    Raises:
        ValueError: ``files`` and ``scans`` differ in length.
    """
    files = scans["path"].tolist() if files is None else list(files)
    if len(files) != len(scans):
        raise ValueError(f"{len(files)} files for {len(scans)} scans")
    slice_labels = config.slice_labels()
    stack = LazyArrayStack(
        recipes=[functools.partial(extract_scan, str(path), config) for path in files],
        rows=[len(slice_labels)] * len(scans),
        item_shape=config.item_shape(),
        dtype=config.dtype,
        workers=workers,
        desc=desc,
        preload=_WORKER_MODULES,
    )
    rows = np.repeat(np.arange(len(scans)), len(slice_labels))
    scans = scans if "head_scale" in scans else scans.assign(head_scale=np.nan)
    labels = scans.iloc[rows][LABEL_COLUMNS[:-1]].reset_index(drop=True)
    labels["head_scale"] = labels["head_scale"].astype(np.float64)
    labels["slice"] = np.tile(slice_labels, len(scans))
    return stack, labels


def build_mask_input(
    scans: pd.DataFrame,
    config: ExtractionConfig,
    *,
    files: Sequence[str | os.PathLike[str]],
    workers: int | None = None,
    desc: str | None = None,
) -> LazyArrayStack:
    """Recipes for the uint8 mask array of some scans' label maps, row for row with
    :func:`build_model_input`'s image array of the same scans.

    Args:
        scans: The scans, in output order (as given to :func:`build_model_input`).
        config: The scans' extraction.
        files: The label map of each scan, in the same order.
        workers: Processes that evaluate the recipes when the stack is written.
        desc: Progress-bar label.

    Raises:
        ValueError: ``files`` and ``scans`` differ in length.
    """
    files = list(files)
    if len(files) != len(scans):
        raise ValueError(f"{len(files)} label maps for {len(scans)} scans")
    return LazyArrayStack(
        recipes=[functools.partial(extract_label_map, str(path), config) for path in files],
        rows=[config.rows_per_scan()] * len(scans),
        item_shape=config.item_shape(),
        dtype="uint8",
        workers=workers,
        desc=desc,
        preload=_WORKER_MODULES,
    )
