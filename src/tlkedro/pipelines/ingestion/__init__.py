"""Ingestion: raw scans and metadata -> validated manifest + quarantine."""

from tlkedro.pipelines.ingestion.nodes import IngestionParams
from tlkedro.pipelines.ingestion.pipeline import SOURCES, create_pipeline

__all__ = ["SOURCES", "IngestionParams", "create_pipeline"]
