"""Nodes of the preprocessing pipeline: normalise the scans spatially, check the registrations, split the
subjects, then build each split's model input.

Scans are named by their ``scan_id`` (their key in the raw-image dataset) and resolved through the
catalog's image datasets (``raw_images`` or ``synthetic_images``; ``normalised_scans``), never through
paths stored in the manifest, so a manifest does not tie a run to one machine's mount points.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import pandas as pd
from matplotlib.figure import Figure
from pydantic import PositiveInt

from tlkedro.imaging import splits as splitting
from tlkedro.imaging.extraction import (
    ExtractionConfig,
    LazyArrayStack,
    build_mask_input,
    build_model_input,
)
from tlkedro.imaging.images import build_image_input
from tlkedro.imaging.labels import LabelMapParams
from tlkedro.imaging.normalisation import (
    LabelNormalisationRecipe,
    NormalisationRecipe,
    SpatialNormalisationConfig,
    assess_registration,
    label_normalisation_recipe,
    normalisation_recipe,
    qc_mosaic,
)
from tlkedro.imaging.timeseries import TimeseriesInputConfig, build_timeseries_input


class PreprocessingParams(ExtractionConfig):
    """The ``preprocessing`` parameters (conf/base/parameters_preprocessing.yml).

    The extraction keys (``spacing_mm``, ``normalisation``, ``mode``, ``slices``, ``volume``, ``dtype``)
    are those of :class:`~tlkedro.imaging.extraction.ExtractionConfig`; ``spatial_normalisation`` those
    of :class:`~tlkedro.imaging.normalisation.SpatialNormalisationConfig`; ``splits`` those of
    :class:`~tlkedro.imaging.splits.SplitConfig`; ``label_maps`` (``None``: off) those of
    :class:`~tlkedro.imaging.labels.LabelMapParams`.
    """

    seed: int = 7
    workers: PositiveInt | None = None
    spatial_normalisation: SpatialNormalisationConfig = SpatialNormalisationConfig()
    splits: splitting.SplitConfig = splitting.SplitConfig()
    timeseries: TimeseriesInputConfig = TimeseriesInputConfig()
    label_maps: LabelMapParams | None = None


class _HasPath(Protocol):
    path: Path

    def sidecar(self) -> dict: ...


def normalised_key(scan_id: str) -> str:
    """A scan's key in ``normalised_scans``: its scan id, gzip-compressed (``.nii`` -> ``.nii.gz``)."""
    return scan_id if scan_id.endswith(".gz") else f"{scan_id}.gz"


def resolve_scans(keys: Iterable[str], images: Mapping[str, _HasPath], dataset: str) -> list[Path]:
    """The file of each key in an image dataset (a key -> file reference mapping).

    Raises:
        KeyError: A key is not in the dataset; the message names both and says what to rerun.
    """
    keys = list(keys)
    missing = [key for key in keys if key not in images]
    if missing:
        listed = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise KeyError(
            f"{len(missing)} scan(s) of the manifest are not in the catalog dataset {dataset!r}: "
            f"{listed}. Was the manifest written from another image folder (rerun the ingestion "
            "pipeline), or the normalised scans from another manifest (rerun preprocessing)?"
        )
    return [images[key].path for key in keys]


def normalise_scans(
    manifest: pd.DataFrame, images: Mapping[str, _HasPath], params: PreprocessingParams
) -> dict[str, NormalisationRecipe]:
    """One recipe per manifest scan normalising it to the template (none with ``method: none``).

    The ``normalised_scans`` collection evaluates them in a process pool while it writes, and skips
    those whose file is there already with the same fingerprint (options and source file content).

    Args:
        manifest: One row per usable scan.
        images: The raw-image dataset the manifest was ingested from.
        params: The preprocessing parameters.

    Returns:
        Scan id -> recipe.
    """
    config = params.spatial_normalisation
    if config.method == "none":
        return {}
    files = resolve_scans(manifest["scan_id"], images, "raw_images")
    return {
        normalised_key(scan_id): normalisation_recipe(path, config, params.spacing_mm)
        for scan_id, path in zip(manifest["scan_id"], files, strict=True)
    }


def check_registration(
    manifest: pd.DataFrame,
    images: Mapping[str, _HasPath],
    normalised: Mapping[str, _HasPath],
    params: PreprocessingParams,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Figure]:
    """Quality control of the normalised scans.

    Args:
        manifest: One row per usable scan.
        images: The raw-image dataset (shown in the mosaic with ``method: none``).
        normalised: The ``normalised_scans`` dataset.
        params: The preprocessing parameters.

    Returns:
        The normalised manifest (the manifest less the quarantined scans, plus ``similarity`` and
        ``head_scale``), the QC table (one row per manifest scan), the quarantine rows
        (``registration_failed``) and the QC mosaic (the first ``mosaic_scans`` scans, quarantined
        ones first).
    """
    config = params.spatial_normalisation
    registered = config.method != "none"
    sidecars = {}
    for scan_id in manifest["scan_id"] if registered else ():
        if (key := normalised_key(scan_id)) in normalised:
            sidecars[scan_id] = normalised[key].sidecar()
    qc, quarantine = assess_registration(manifest, sidecars, config, params.spacing_mm)
    passed = qc.set_index("scan_id")
    kept = manifest[manifest["scan_id"].map(passed["passed"])].copy()
    kept["similarity"] = kept["scan_id"].map(passed["similarity"])
    kept["head_scale"] = kept["scan_id"].map(passed["head_scale"])

    # The quarantined scans first: they are the ones to look at.
    shown = qc.sort_values("passed", kind="stable")["scan_id"].head(config.mosaic_scans).tolist()
    if registered:
        files = resolve_scans(map(normalised_key, shown), normalised, "normalised_scans")
    else:
        files = resolve_scans(shown, images, "raw_images")
    figure = qc_mosaic(
        {scan_id: _load(path) for scan_id, path in zip(shown, files, strict=True)},
        params.spacing_mm,
        similarities=dict(zip(qc["scan_id"], qc["similarity"], strict=True))
        if registered
        else None,
    )
    return kept.reset_index(drop=True), qc, quarantine, figure


def _load(path: Path):
    from tlkedro.imaging.transforms import read_nifti

    return read_nifti(path)


def split_subjects(scans: pd.DataFrame, params: PreprocessingParams) -> pd.DataFrame:
    """Assign every subject of the normalised manifest to one split (see :mod:`tlkedro.imaging.splits`).

    Args:
        scans: One row per usable, normalised scan.
        params: The preprocessing parameters.

    Returns:
        The split table: ``subject_id``, ``split``.
    """
    return splitting.split_subjects(scans, params.splits, seed=params.seed)


def build_split_arrays(
    scans: pd.DataFrame,
    splits: pd.DataFrame,
    images: Mapping[str, _HasPath],
    normalised: Mapping[str, _HasPath],
    params: PreprocessingParams,
    *,
    split: str,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """The model-input images (lazy: computed while the catalog writes them) and labels of one split.

    Args:
        scans: The normalised manifest.
        splits: The split table; checked for leakage and staleness.
        images: The raw-image dataset: read with ``method: none``.
        normalised: The ``normalised_scans`` dataset: read otherwise.
        params: The preprocessing parameters.
        split: Which split to build.

    Returns:
        The image stack, and one label row per image row (``subject_id``, ``age``, ``sex``, ``site``,
        ``head_scale``, ``slice``).
    """
    selected = splitting.select_split(scans, splits, split)
    if params.spatial_normalisation.method == "none":
        files = resolve_scans(selected["scan_id"], images, "raw_images")
    else:
        keys = map(normalised_key, selected["scan_id"])
        files = resolve_scans(keys, normalised, "normalised_scans")
    return build_model_input(
        selected, params, files=files, workers=params.workers, desc=f"{split} images"
    )


def build_image_split_arrays(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    images: Mapping[str, _HasPath],
    params: PreprocessingParams,
    *,
    split: str,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """``build_split_arrays`` for 2D images (``ingestion.layout: folders``): no spatial normalisation.

    Returns:
        The ``(N, 1, H, W)`` image stack and one label row per image (the scans' columns plus
        ``label``, ``label_name``), see :func:`tlkedro.imaging.images.build_image_input`.
    """
    selected = splitting.select_split(manifest, splits, split)
    files = resolve_scans(selected["scan_id"], images, "raw_images")
    return build_image_input(
        selected, params, files, workers=params.workers, desc=f"{split} images"
    )


def build_timeseries_split_arrays(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    series: Mapping[str, _HasPath],
    params: PreprocessingParams,
    *,
    split: str,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """``build_split_arrays`` for ROI time series (``ingestion.layout: timeseries``).

    Returns:
        The ``(N, ROIs, timeseries.length)`` stack and one label row per series, see
        :func:`tlkedro.imaging.timeseries.build_timeseries_input`.
    """
    selected = splitting.select_split(manifest, splits, split)
    files = resolve_scans(selected["scan_id"], series, "raw_images")
    return build_timeseries_input(
        selected,
        params.timeseries,
        files,
        dtype=params.dtype,
        workers=params.workers,
        desc=f"{split} series",
    )


def normalise_label_maps(
    manifest: pd.DataFrame,
    label_maps: Mapping[str, _HasPath],
    normalised: Mapping[str, _HasPath],
    params: PreprocessingParams,
) -> dict[str, LabelNormalisationRecipe]:
    """One recipe per manifest scan carrying its label map into template space by the scan's fitted
    transform (none with ``method: none``); ``normalised_label_maps`` evaluates them.

    Args:
        manifest: One row per usable scan, with ``label_key``.
        label_maps: The raw label-map dataset the manifest was ingested from.
        normalised: The ``normalised_scans`` dataset, whose sidecars hold the transforms.
        params: The preprocessing parameters.

    Returns:
        Key (as in ``normalised_scans``) -> recipe.
    """
    if params.spatial_normalisation.method == "none":
        return {}
    files = resolve_scans(manifest["label_key"], label_maps, "raw_label_maps")
    keys = [normalised_key(scan_id) for scan_id in manifest["scan_id"]]
    resolve_scans(keys, normalised, "normalised_scans")
    return {
        key: label_normalisation_recipe(path, scan_id, normalised[key].sidecar(), params.spacing_mm)
        for key, scan_id, path in zip(keys, manifest["scan_id"], files, strict=True)
    }


def build_split_masks(
    scans: pd.DataFrame,
    splits: pd.DataFrame,
    label_maps: Mapping[str, _HasPath],
    normalised_label_maps: Mapping[str, _HasPath],
    params: PreprocessingParams,
    *,
    split: str,
) -> LazyArrayStack:
    """The uint8 label masks of one split, row for row with ``build_split_arrays``'s images.

    Args:
        scans: The normalised manifest (with ``label_key``).
        splits: The split table.
        label_maps: The raw label-map dataset: read with ``method: none``.
        normalised_label_maps: The ``normalised_label_maps`` dataset: read otherwise.
        params: The preprocessing parameters.
        split: Which split to build.
    """
    selected = splitting.select_split(scans, splits, split)
    if params.spatial_normalisation.method == "none":
        files = resolve_scans(selected["label_key"], label_maps, "raw_label_maps")
    else:
        keys = map(normalised_key, selected["scan_id"])
        files = resolve_scans(keys, normalised_label_maps, "normalised_label_maps")
    return build_mask_input(
        selected, params, files=files, workers=params.workers, desc=f"{split} masks"
    )
