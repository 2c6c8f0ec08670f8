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
from tlkedro.variants import deep_merge, expand_variants

TRAINING_PIPELINES = ("pretrain", "finetune")


def _report_nodes(pipeline_name: str, section: dict[str, Any], primary_metric: str) -> list[Node]:
    variants = expand_variants(section, pipeline_name)
    names = [f"{pipeline_name}.{v}" for v in variants]
    merged = {
        name: deep_merge(section, overrides) for name, overrides in zip(names, variants.values())
    }
    first_split = {name: (cfg.get("evaluate_on") or [None])[0] for name, cfg in merged.items()}
    evaluated = [name for name in names if first_split[name]]
    predictions = [f"{name}.predictions_{first_split[name]}" for name in evaluated]
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
            [f"{name}.history" for name in names],
            f"{out}learning_curves",
            name=f"plot_{pipeline_name}_learning_curves",
        ),
    ]
    if evaluated:
        nodes += [
            Node(
                bind(
                    plot_test_predictions,
                    names=evaluated,
                    task=section["task"],
                    target=section["target"],
                ),
                predictions,
                f"{out}predictions_plot",
                name=f"plot_{pipeline_name}_predictions",
            ),
            Node(
                bind(plot_primary_metric, names=evaluated, metric=primary_metric),
                [f"{out}comparison", *predictions],
                f"{out}metric_plot",
                name=f"plot_{pipeline_name}_primary_metric",
            ),
        ]
    return nodes


def _cutoff_search_node(section: dict[str, Any], search: CutoffSearchParams) -> Node:
    variants = expand_variants(section, "finetune")
    merged = {f"finetune.{v}": deep_merge(section, overrides) for v, overrides in variants.items()}
    truncated = {
        name: cfg for name, cfg in merged.items() if cfg["strategy"]["name"] == "truncated"
    }
    architectures = {repr(cfg["architecture"]) for cfg in truncated.values()}
    if len(architectures) != 1:
        raise ValueError(
            "reporting.cutoff_search needs finetune variants with strategy `truncated`, all of one "
            f"architecture; found {len(truncated)} such variants with architectures {sorted(architectures)}"
        )
    plan = bind(
        plan_cutoff_search,
        cutoffs={name: cfg["strategy"]["kwargs"]["cutoff"] for name, cfg in truncated.items()},
        overrides={f"finetune.{v}": overrides for v, overrides in variants.items()},
        architecture=next(iter(truncated.values()))["architecture"],
        search=search,
    )
    return Node(
        plan,
        "finetune_comparison",
        ["cutoff_search_stage2", "cutoff_search_report"],
        name="plan_cutoff_search",
    )


def create_pipeline(parameters: dict[str, Any]) -> Pipeline:
    """Reports for each training pipeline, built from the same parameters as its variants.

    With ``reporting.cutoff_search`` set, the finetune report also plans TruncatedTL's cutoff search.
    """
    primary = parameters["reporting"]["primary_metric"]
    nodes = [n for p in TRAINING_PIPELINES for n in _report_nodes(p, parameters[p], primary[p])]
    if (search := parameters["reporting"].get("cutoff_search")) is not None:
        nodes.append(
            _cutoff_search_node(parameters["finetune"], CutoffSearchParams.model_validate(search))
        )
    return Pipeline(nodes, tags={"reporting"})
