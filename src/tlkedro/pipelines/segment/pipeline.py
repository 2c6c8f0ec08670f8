"""The ``segment`` pipeline: one namespaced copy per variant of ``segment`` (conf/segmentation), then the
comparison and the figure of predicted masks.

A variant ``segment.<name>`` records its run, trains on ``<train_on>_images`` and ``<train_on>_masks`` (from
``<init_from>.model`` when set) and is evaluated on each split of ``evaluate_on``; the variants' datasets
are resolved by the catalog's factories (``segment.<name>.model``, ``...subject_metrics_<split>``).
"""

from __future__ import annotations

from collections.abc import Mapping

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.reporting.segmentation import compare_segmenters, plot_segmentations
from tlkedro.pipelines.segment.nodes import evaluate_segmenter, record_segment_run, train_segmenter
from tlkedro.plan import SegmentVariant

REPORTED_SPLIT = "test"


def _variant_pipeline(variant: SegmentVariant) -> Pipeline:
    config = variant.config
    train_on = config.train_on
    train_inputs = {
        "images": f"{train_on}_images",
        "masks": f"{train_on}_masks",
        "labels": f"{train_on}_labels",
    }
    if variant.source:
        train_inputs["source"] = "source_model"
    nodes = [
        Node(
            bind(record_segment_run, namespace=variant.namespace, config=config),
            None,
            "config",
            name="record_run",
        ),
        Node(
            bind(train_segmenter, config=config),
            train_inputs,
            ["model", "history", "training_summary"],
            name="train",
        ),
    ]
    for split in config.evaluate_on:
        nodes.append(
            Node(
                bind(evaluate_segmenter, config=config, split=split),
                ["model", f"{split}_images", f"{split}_masks", f"{split}_labels"],
                [f"metrics_{split}", f"subject_metrics_{split}", f"masks_{split}"],
                name=f"evaluate_{split}",
            )
        )
    shared = {
        f"{s}_{kind}"
        for s in {train_on, *config.evaluate_on}
        for kind in ("images", "masks", "labels")
    }
    return Pipeline(
        nodes,
        namespace=variant.namespace,
        inputs={
            **{name: name for name in shared},
            **({"source_model": f"{variant.source}.model"} if variant.source else {}),
        },
        tags={"segment", variant.namespace},
    )


def baselines(variants: Mapping[str, SegmentVariant]) -> dict[str, str | None]:
    """Each variant's baseline: the first ``scratch`` variant with the same ``train_size`` (not itself)."""
    scratch = [v for v in variants.values() if v.config.strategy.name == "scratch"]
    return {
        v.namespace: next(
            (
                s.namespace
                for s in scratch
                if s.config.train_size == v.config.train_size and s.name != v.name
            ),
            None,
        )
        for v in variants.values()
    }


def create_pipeline(variants: Mapping[str, SegmentVariant]) -> Pipeline:
    """Every ``segment`` variant, and the comparison and figure of those evaluated on ``test``."""
    pipeline = Pipeline([_variant_pipeline(v) for v in variants.values()])
    reported = [v for v in variants.values() if REPORTED_SPLIT in v.config.evaluate_on]
    if not reported:
        return pipeline
    names = [v.namespace for v in reported]
    settings = {
        v.namespace: {
            "strategy": v.config.strategy.name,
            "init_from": v.source or ("file" if v.config.init_from else ""),
            "train_size": v.config.train_size,
        }
        for v in reported
    }
    split = REPORTED_SPLIT
    report = Pipeline(
        [
            Node(
                bind(
                    compare_segmenters,
                    names=names,
                    baselines={
                        n: b for n, b in baselines(variants).items() if n in names and b in names
                    },
                    settings=settings,
                    split=split,
                ),
                [f"{n}.subject_metrics_{split}" for n in names],
                ["segment_comparison", "segment_report"],
                name="compare_segmenters",
            ),
            Node(
                bind(plot_segmentations, names=names, class_names=reported[0].config.class_names),
                [
                    f"{split}_images",
                    f"{split}_masks",
                    f"{split}_labels",
                    *[f"{n}.masks_{split}" for n in names],
                ],
                "segment_masks_plot",
                name="plot_segmentations",
            ),
        ],
        tags={"segment"},
    )
    return pipeline + report
