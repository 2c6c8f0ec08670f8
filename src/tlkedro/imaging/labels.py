"""Discrete tissue label maps ("dseg" in BIDS terms): the label scheme and its lookup table.

A label map is an integer NIfTI image on the grid of its T1 scan, one label per voxel. The synthetic
cohort writes them (:func:`tlkedro.imaging.synthetic.generate_label_map`); ingestion checks them and
preprocessing carries them through the same steps as their scans into the ``<split>_masks`` arrays
(docs/data.md, "Label maps").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

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
