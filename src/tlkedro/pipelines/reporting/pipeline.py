"""Comparison tables and plots over every pretrain and finetune variant."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.reporting.nodes import (
    CutoffSearchParams,
    compare_variants,
    plan_cutoff_search,
    plot_learning_curves,
    plot_primary_metric,
    plot_test_predictions,
)
from tlkedro.pipelines.training.nodes import CV_SPLIT
from tlkedro.plan import TRAINING_PIPELINES, ExperimentPlan, TrainingVariant


def _reported_split(variant: TrainingVariant) -> str | None:
    """The split whose predictions stand for a variant in the plots: its held-out folds, or the first
    split it is evaluated on."""
    if variant.cross_validated:
        return CV_SPLIT
    return (variant.config.evaluate_on or [None])[0]


def _history(variant: TrainingVariant) -> str:
    # A cross-validated variant's learning curve is its first fold's.
    if variant.cross_validated:
        return f"{variant.namespace}.{variant.folds[0].name}.history"
    return f"{variant.namespace}.history"


def _report_nodes(
    pipeline_name: str, variants: list[TrainingVariant], primary_metric: str
) -> list[Node]:
    names = [v.namespace for v in variants]
    evaluated = {v.namespace: split for v in variants if (split := _reported_split(v))}
    predictions = [f"{name}.predictions_{split}" for name, split in evaluated.items()]
    out = f"{pipeline_name}_"
    nodes = [
        Node(
            bind(
                compare_variants, title=f"{pipeline_name} variants", primary_metric=primary_metric
            ),
            [f"{name}.metrics" for name in names],
            [f"{out}comparison", f"{out}report"],
            name=f"compare_{pipeline_name}_variants",
        ),
        Node(
            bind(plot_learning_curves, names=names),
            [_history(v) for v in variants],
            f"{out}learning_curves",
            name=f"plot_{pipeline_name}_learning_curves",
        ),
    ]
    if evaluated:
        config = variants[0].config
        nodes += [
            Node(
                bind(
                    plot_test_predictions,
                    names=list(evaluated),
                    task=config.task,
                    target=config.target,
                ),
                predictions,
                f"{out}predictions_plot",
                name=f"plot_{pipeline_name}_predictions",
            ),
            Node(
                bind(plot_primary_metric, names=list(evaluated), metric=primary_metric),
                [f"{out}comparison", *predictions],
                f"{out}metric_plot",
                name=f"plot_{pipeline_name}_primary_metric",
            ),
        ]
    return nodes


def _cutoff_search_node(plan: ExperimentPlan, search: CutoffSearchParams) -> Node:
    truncated = [v for v in plan.of("finetune") if v.config.strategy.name == "truncated"]
    architectures = {repr(v.config.architecture.model_dump()) for v in truncated}
    if len(architectures) != 1:
        raise ValueError(
            "reporting.cutoff_search needs finetune variants with strategy `truncated`, all of one "
            f"architecture; found {len(truncated)} such variants with architectures {sorted(architectures)}"
        )
    plan_search = bind(
        plan_cutoff_search,
        cutoffs={v.namespace: v.config.strategy.kwargs["cut_at"] for v in truncated},
        overrides={v.namespace: dict(v.overrides) for v in plan.of("finetune")},
        architecture=truncated[0].config.architecture.model_dump(),
        search=search,
    )
    return Node(
        plan_search,
        "finetune_comparison",
        ["cutoff_search_stage2", "cutoff_search_report"],
        name="plan_cutoff_search",
    )


def create_pipeline(plan: ExperimentPlan, reporting: dict[str, Any]) -> Pipeline:
    """Reports for each training pipeline of the plan.

    With ``reporting.cutoff_search`` set, the finetune report also plans TruncatedTL's cutoff search.
    """
    primary = reporting["primary_metric"]
    nodes = [
        node
        for pipeline in TRAINING_PIPELINES
        for node in _report_nodes(pipeline, plan.of(pipeline), primary[pipeline])
    ]
    if (search := reporting.get("cutoff_search")) is not None:
        nodes.append(_cutoff_search_node(plan, CutoffSearchParams.model_validate(search)))
    return Pipeline(nodes, tags={"reporting"})
