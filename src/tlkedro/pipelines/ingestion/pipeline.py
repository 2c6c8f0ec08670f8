"""Ingestion pipeline: one node from the raw images and metadata to the manifest and the quarantine."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines.ingestion.nodes import ingest_scans

# Catalog entries read for each value of `ingestion.source`, as a remapping of the template's inputs.
SOURCES: dict[str, dict[str, str]] = {
    "raw": {},
    "synthetic": {"raw_images": "synthetic_images", "raw_metadata": "synthetic_metadata"},
}


def create_pipeline(source: str = "raw") -> Pipeline:
    """The ingestion pipeline reading the catalog entries of ``source``.

    Args:
        source: ``raw`` (``raw_images``, ``raw_metadata``) or ``synthetic`` (``synthetic_images``,
            ``synthetic_metadata``); the project's registry passes ``ingestion.source``.

    Raises:
        ValueError: ``source`` is not one of the above.
    """
    if source not in SOURCES:
        raise ValueError(f"ingestion.source must be one of {sorted(SOURCES)}, got {source!r}")
    template = Pipeline(
        [
            Node(
                ingest_scans,
                inputs=["raw_images", "raw_metadata", "params:ingestion"],
                outputs=["manifest", "quarantine"],
                name="ingest_scans",
            )
        ]
    )
    return Pipeline(template, inputs=SOURCES[source])
