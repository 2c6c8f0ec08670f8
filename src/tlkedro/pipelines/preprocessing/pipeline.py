"""The preprocessing pipeline: ``split_subjects`` then one ``build_<split>_arrays`` node per split."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from tlkedro.imaging.splits import SPLITS
from tlkedro.pipelines.preprocessing import nodes


def _build_arrays_for(split: str) -> partial:
    # update_wrapper gives the partial a name for Kedro's logs and the type hints Kedro validates
    # `params:preprocessing` against.
    return update_wrapper(partial(nodes.build_split_arrays, split=split), nodes.build_split_arrays)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Split subjects, then write ``<split>_images`` and ``<split>_labels`` for each split."""
    return Pipeline(
        [
            Node(
                nodes.split_subjects,
                inputs=["manifest", "params:preprocessing"],
                outputs="splits",
                name="split_subjects",
            ),
            *(
                Node(
                    _build_arrays_for(split),
                    inputs=["manifest", "splits", "params:preprocessing"],
                    outputs=[f"{split}_images", f"{split}_labels"],
                    name=f"build_{split}_arrays",
                )
                for split in SPLITS
            ),
        ]
    )
