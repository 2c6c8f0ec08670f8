"""Node of the ingestion pipeline: a thin wrapper around ``tlkedro.imaging.ingest``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import pandas as pd

from tlkedro.imaging.ingest import IngestionConfig, ingest
from tlkedro.imaging.labels import LabelMapParams


class IngestionParams(IngestionConfig):
    """The ``ingestion`` parameters: ``ingest``'s options plus which catalog entries are read.

    Attributes:
        source: ``synthetic`` reads ``synthetic_images``/``synthetic_metadata`` (the demo cohort),
            ``raw`` reads ``raw_images``/``raw_metadata`` (real data, configured in conf/local).
    """

    source: Literal["synthetic", "raw"] = "synthetic"


class _HasPath(Protocol):
    path: Path


def ingest_scans(
    images: Mapping[str, _HasPath], metadata: pd.DataFrame, params: IngestionParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate the raw scans and their metadata.

    Args:
        images: The images dataset: relative path -> reference with an absolute ``.path``.
        metadata: The metadata table (UK Biobank showcase export or BIDS participants.tsv).
        params: The ``ingestion`` parameters.

    Returns:
        The manifest (one row per usable scan) and the quarantine (one row per rejected file or record).
    """
    # Kedro validates typed parameters in a session; a bare runner hands over the raw dictionary.
    params = IngestionParams.model_validate(params)
    paths = {key: ref.path for key, ref in images.items()}
    return ingest(paths, metadata, params, metadata_label=f"{params.source}_metadata")


def ingest_scans_with_label_maps(
    images: Mapping[str, _HasPath],
    metadata: pd.DataFrame,
    label_maps: Mapping[str, _HasPath],
    params: IngestionParams,
    label_params: LabelMapParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`ingest_scans` where every scan needs a label map (``preprocessing.label_maps`` set).

    Args:
        images: The images dataset.
        metadata: The metadata table.
        label_maps: The label-map dataset (``raw_label_maps``): relative path in the images' layout
            -> reference.
        params: The ``ingestion`` parameters.
        label_params: ``preprocessing.label_maps``: the label scheme.

    Returns:
        The manifest, with ``label_key`` (the key of each scan's label map), and the quarantine.
    """
    params = IngestionParams.model_validate(params)
    return ingest(
        {key: ref.path for key, ref in images.items()},
        metadata,
        params,
        metadata_label=f"{params.source}_metadata",
        label_maps={key: ref.path for key, ref in label_maps.items()},
        label_config=LabelMapParams.model_validate(label_params),
    )
