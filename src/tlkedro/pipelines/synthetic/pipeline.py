"""Synthetic pipeline: one node from the ``synthetic`` parameters to the demo cohort's images and labels."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines.synthetic.nodes import (
    generate_synthetic_cohort,
    generate_synthetic_cohort_with_label_maps,
)

LABEL_MAP_OUTPUTS = [
    "synthetic_label_maps",
    "synthetic_label_lookup",
    "synthetic_label_description",
]


def create_pipeline(label_maps: bool = False, **kwargs: Any) -> Pipeline:
    """The synthetic cohort pipeline.

    Args:
        label_maps: ``synthetic.label_maps``: also write each subject's tissue label map, its lookup
            table and (BIDS) derivative description; the project's registry passes it.
    """
    # Images first: their dataset creates (and marks as its own) the folder that a BIDS
    # participants.tsv and the label maps' derivatives/ folder are then written into.
    return Pipeline(
        [
            Node(
                generate_synthetic_cohort_with_label_maps
                if label_maps
                else generate_synthetic_cohort,
                inputs="params:synthetic",
                outputs=["synthetic_images", "synthetic_metadata"]
                + (LABEL_MAP_OUTPUTS if label_maps else []),
                name="generate_synthetic_cohort",
            )
        ]
    )
