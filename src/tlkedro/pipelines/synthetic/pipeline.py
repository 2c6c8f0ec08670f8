"""Synthetic pipeline: one node from the ``synthetic`` parameters to the demo cohort's images and labels."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines.synthetic.nodes import generate_synthetic_cohort


def create_pipeline(**kwargs: Any) -> Pipeline:
    """The synthetic cohort pipeline."""
    return Pipeline(
        [
            Node(
                generate_synthetic_cohort,
                inputs="params:synthetic",
                # Images first: their dataset creates (and marks as its own) the folder that a BIDS
                # participants.tsv is then written into.
                outputs=["synthetic_images", "synthetic_metadata"],
                name="generate_synthetic_cohort",
            )
        ]
    )
