"""Ingestion pipeline: one node from the raw images and metadata to the manifest and the quarantine."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines.ingestion.nodes import ingest_scans, ingest_scans_with_label_maps

# Catalog entries read for each value of `ingestion.source`, as a remapping of the template's inputs.
SOURCES: dict[str, dict[str, str]] = {
    "raw": {},
    "synthetic": {
        "raw_images": "synthetic_images",
        "raw_metadata": "synthetic_metadata",
        "raw_label_maps": "synthetic_label_maps",
    },
}


def create_pipeline(source: str = "raw", label_maps: bool = False) -> Pipeline:
    """The ingestion pipeline reading the catalog entries of ``source``.

    Args:
        source: ``raw`` (``raw_images``, ``raw_metadata``) or ``synthetic`` (``synthetic_images``,
            ``synthetic_metadata``); the project's registry passes ``ingestion.source``.
        label_maps: Whether ``preprocessing.label_maps`` is set: every scan then needs its label map
            from ``raw_label_maps`` (``synthetic_label_maps``), and the manifest gains ``label_key``.

    Raises:
        ValueError: ``source`` is not one of the above.
    """
    if source not in SOURCES:
        raise ValueError(f"ingestion.source must be one of {sorted(SOURCES)}, got {source!r}")
    if label_maps:
        node = Node(
            ingest_scans_with_label_maps,
            inputs=[
                "raw_images",
                "raw_metadata",
                "raw_label_maps",
                "params:ingestion",
                "params:preprocessing.label_maps",
            ],
            outputs=["manifest", "quarantine"],
            name="ingest_scans",
        )
        return Pipeline([node], inputs=SOURCES[source])
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
    inputs = {k: v for k, v in SOURCES[source].items() if k != "raw_label_maps"}
    return Pipeline(template, inputs=inputs)
