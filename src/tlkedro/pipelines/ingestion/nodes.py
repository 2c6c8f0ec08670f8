"""Node of the ingestion pipeline: a thin wrapper around ``tlkedro.imaging.ingest``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import pandas as pd

from tlkedro.imaging.ingest import IngestionConfig, ingest


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
