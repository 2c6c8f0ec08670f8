"""Discrete tissue label maps ("dseg" in BIDS terms): the label scheme and its lookup table.

A label map is an integer NIfTI image on the grid of its T1 scan, one label per voxel. The synthetic
cohort writes them (:func:`tlkedro.imaging.synthetic.generate_label_map`); ingestion checks them and
preprocessing carries them through the same steps as their scans into the ``<split>_masks`` arrays
(docs/data.md, "Label maps").
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Annotated, Any

import nibabel as nib
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlkedro.imaging.nifti_checks import InvalidScanError, check_nifti

# The tissue scheme of the synthetic cohort: ventricles are the deep CSF that
# `tlkedro.imaging.anatomy._ventricle_distance` finds (and its age-related dilation), csf the rest.
TISSUE_LABELS: dict[int, str] = {
    0: "background",
    1: "csf",
    2: "grey_matter",
    3: "white_matter",
    4: "ventricles",
}
# BIDS Derivatives: the lookup of a discrete segmentation, columns `index` and `name`.
LOOKUP_COLUMNS = ("index", "name")
# The largest label a uint8 mask array holds.
MAX_LABEL = 255


class LabelMapParams(BaseModel):
    """The ``preprocessing.label_maps`` parameters: a label map per scan, carried into ``<split>_masks``.

    Attributes:
        labels: Label value -> name; a label map's voxel outside these keys quarantines its scan.
            ``0`` must be the background (what padding and the outside of a registered brain get).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[Annotated[int, Field(ge=0, le=MAX_LABEL)], str] = Field(
        default_factory=lambda: dict(TISSUE_LABELS), min_length=2
    )

    @field_validator("labels")
    @classmethod
    def _background_is_zero(cls, labels: dict[int, str]) -> dict[int, str]:
        if 0 not in labels:
            raise ValueError(
                f"label_maps.labels must give label 0 (the background that padding and the outside "
                f"of a registered brain get), got the labels {sorted(labels)}"
            )
        return dict(sorted(labels.items()))

    def __hash__(self) -> int:
        # Part of the frozen, hashable preprocessing parameters that workers cache transforms by.
        return hash(tuple(self.labels.items()))


def parse_label_maps(value: LabelMapParams | Mapping[str, Any] | None) -> LabelMapParams | None:
    """``preprocessing.label_maps`` validated: ``None`` (off), or the label scheme."""
    return None if value is None else LabelMapParams.model_validate(value)


def lookup_table(labels: Mapping[int, str] = TISSUE_LABELS) -> pd.DataFrame:
    """The BIDS ``dseg.tsv`` of a label scheme: one row per label, columns ``index`` and ``name``."""
    return pd.DataFrame({"index": list(labels), "name": list(labels.values())})


def derivative_description(name: str, generated_by: str) -> dict[str, Any]:
    """The ``dataset_description.json`` of a BIDS derivative dataset holding label maps."""
    return {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": generated_by}],
    }


# Voxel-to-world affines of a scan and its label map may differ by rounding in their headers, not more.
_AFFINE_TOLERANCE_MM = 1e-3


def check_label_map(
    paths: tuple[str | os.PathLike[str], str | os.PathLike[str]],
    labels: Collection[int],
    *,
    voxel_size_range: tuple[float, float] = (0.1, 10.0),
) -> InvalidScanError | None:
    """Whether a label map can label its scan: ``None`` if so, else the rejection (for process pools).

    The file passes :func:`~tlkedro.imaging.nifti_checks.check_nifti` (readable, complete, one finite
    3D volume; an all-background map is refused), lies on its scan's grid (same shape and affine), and
    holds integers among ``labels`` only.

    Args:
        paths: The label map and its scan (one argument, for ``imap_ordered``).
        labels: The label values allowed.
        voxel_size_range: As for the scans.

    Returns:
        ``None``, or an ``InvalidScanError`` naming the label map with code ``label_map_unreadable``
        (the check of the file failed; the reason gives its own code), ``label_map_grid``,
        ``label_map_not_integer`` or ``label_map_values``.
    """
    label_path, scan_path = paths
    try:
        check_nifti(label_path, voxel_size_range=voxel_size_range)
    except InvalidScanError as exc:
        return InvalidScanError(
            label_path, "label_map_unreadable", f"label map {label_path} {exc.reason} [{exc.code}]"
        )
    label_img, scan = nib.load(label_path), nib.load(scan_path)
    shape, scan_shape = label_img.shape[:3], scan.shape[:3]
    if shape != scan_shape or not np.allclose(
        label_img.affine, scan.affine, atol=_AFFINE_TOLERANCE_MM
    ):
        return InvalidScanError(
            label_path,
            "label_map_grid",
            f"label map {label_path} is not on its scan's grid: shape {list(shape)} and affine "
            f"{label_img.affine[:3].round(3).tolist()} against {list(scan_shape)} and "
            f"{scan.affine[:3].round(3).tolist()}",
        )
    values = np.unique(np.asanyarray(label_img.dataobj))
    if not np.array_equal(values, np.round(values)):
        return InvalidScanError(
            label_path,
            "label_map_not_integer",
            f"label map {label_path} holds non-integer values (e.g. {values[values != np.round(values)][:3].tolist()}): "
            "labels must not be interpolated",
        )
    unknown = sorted(set(values.astype(np.int64).tolist()) - set(labels))
    if unknown:
        return InvalidScanError(
            label_path,
            "label_map_values",
            f"label map {label_path} holds labels {unknown[:10]} outside the lookup "
            f"{sorted(labels)} (preprocessing.label_maps.labels)",
        )
    return None
