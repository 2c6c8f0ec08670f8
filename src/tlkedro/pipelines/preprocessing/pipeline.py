"""The preprocessing pipeline: ``normalise_scans``, ``check_registration``, ``split_subjects``, then one
``build_<split>_arrays`` node per split (for 2D images and time series, ``split_subjects`` and the arrays
only)."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from tlkedro.imaging.splits import SPLITS
from tlkedro.pipelines.ingestion import SOURCES
from tlkedro.pipelines.preprocessing import nodes


def _build_arrays_for(split: str, build=nodes.build_split_arrays) -> partial:
    # update_wrapper gives the partial a name for Kedro's logs and the type hints Kedro validates
    # `params:preprocessing` against.
    return update_wrapper(partial(build, split=split), build)


def _unregistered_pipeline(build) -> Pipeline:
    """2D images or time series (nothing to register): split the manifest, then each split's arrays."""
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
                    _build_arrays_for(split, build),
                    inputs=["manifest", "splits", "raw_images", "params:preprocessing"],
                    outputs=[f"{split}_images", f"{split}_labels"],
                    name=f"build_{split}_arrays",
                )
                for split in SPLITS
            ),
        ]
    )


def _label_map_nodes() -> list[Node]:
    """Carry each scan's label map through its scan's normalisation, then each split's masks."""
    return [
        Node(
            nodes.normalise_label_maps,
            inputs=["manifest", "raw_label_maps", "normalised_scans", "params:preprocessing"],
            outputs="normalised_label_maps",
            name="normalise_label_maps",
        ),
        *(
            Node(
                _build_arrays_for(split, nodes.build_split_masks),
                inputs=[
                    "normalised_manifest",
                    "splits",
                    "raw_label_maps",
                    "normalised_label_maps",
                    "params:preprocessing",
                ],
                outputs=f"{split}_masks",
                name=f"build_{split}_masks",
            )
            for split in SPLITS
        ),
    ]


def create_pipeline(source: str = "raw", layout: str = "ukb", label_maps: bool = False) -> Pipeline:
    """Normalise and check the scans, split the subjects, then write each split's images and labels.

    Args:
        source: Which raw-image dataset the scans are read from, as for the ingestion pipeline
            (``raw``: ``raw_images``; ``synthetic``: ``synthetic_images``); the project's registry
            passes ``ingestion.source``.
        layout: ``ingestion.layout``; ``folders`` (2D images) and ``timeseries`` (ROI time series) skip
            the spatial normalisation and its checks, which are for 3D scans.
        label_maps: Whether ``preprocessing.label_maps`` is set: each scan's label map (``label_key``
            in the manifest) is carried through the same steps into ``<split>_masks``.

    Raises:
        ValueError: ``source`` is not one of the ingestion pipeline's sources.
    """
    if source not in SOURCES:
        raise ValueError(f"ingestion.source must be one of {sorted(SOURCES)}, got {source!r}")
    images = SOURCES[source].get("raw_images", "raw_images")
    unregistered = {
        "folders": nodes.build_image_split_arrays,
        "timeseries": nodes.build_timeseries_split_arrays,
    }
    if layout in unregistered:
        return Pipeline(_unregistered_pipeline(unregistered[layout]), inputs={"raw_images": images})
    template = Pipeline(
        [
            Node(
                nodes.normalise_scans,
                inputs=["manifest", "raw_images", "params:preprocessing"],
                outputs="normalised_scans",
                name="normalise_scans",
            ),
            Node(
                nodes.check_registration,
                inputs=["manifest", "raw_images", "normalised_scans", "params:preprocessing"],
                outputs=[
                    "normalised_manifest",
                    "registration_qc",
                    "registration_quarantine",
                    "registration_qc_mosaic",
                ],
                name="check_registration",
            ),
            Node(
                nodes.split_subjects,
                inputs=["normalised_manifest", "params:preprocessing"],
                outputs="splits",
                name="split_subjects",
            ),
            *(
                Node(
                    _build_arrays_for(split),
                    inputs=[
                        "normalised_manifest",
                        "splits",
                        "raw_images",
                        "normalised_scans",
                        "params:preprocessing",
                    ],
                    outputs=[f"{split}_images", f"{split}_labels"],
                    name=f"build_{split}_arrays",
                )
                for split in SPLITS
            ),
            *(_label_map_nodes() if label_maps else []),
        ]
    )
    inputs = {"raw_images": images}
    if label_maps:
        inputs["raw_label_maps"] = SOURCES[source].get("raw_label_maps", "raw_label_maps")
    return Pipeline(template, inputs=inputs)
