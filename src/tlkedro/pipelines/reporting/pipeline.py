"""Comparison tables and plots over every pretrain and finetune variant."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.reporting.analysis import analysis_nodes, report_sections
from tlkedro.pipelines.reporting.nodes import (
    CutoffSearchParams,
    compare_variants,
    compute_cross_validated_baselines,
    compute_split_baselines,
    for_pipeline,
    join_reports,
    plan_cutoff_search,
    plot_learning_curves,
    plot_primary_metric,
    plot_test_predictions,
    plot_training_size_curve,
    report_classes,
    report_evaluation,
    report_external_sites,
    report_head_size,
)
from tlkedro.pipelines.reporting.tuning import report_studies
from tlkedro.pipelines.training.nodes import CV_SPLIT
from tlkedro.pipelines.training.pipeline import FOLDS
from tlkedro.plan import TRAINING_PIPELINES, ExperimentPlan, TrainingVariant, cuts_automatically


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


def _baselines_node(
    pipeline_name: str, reference: TrainingVariant, split: str, evaluation: dict[str, Any]
) -> Node:
    """The baselines, fitted where the reference variant trains and tested where it is tested."""
    config = reference.config
    task = {"task": config.task, "target": config.target, "evaluation_params": evaluation}
    train = [f"{config.train_on}_images", f"{config.train_on}_labels"]
    if split == CV_SPLIT:
        return Node(
            bind(compute_cross_validated_baselines, **task),
            [*train, FOLDS],
            f"{pipeline_name}_baselines",
            name=f"fit_{pipeline_name}_baselines",
        )
    return Node(
        bind(compute_split_baselines, **task),
        [*train, f"{split}_images", f"{split}_labels"],
        f"{pipeline_name}_baselines",
        name=f"fit_{pipeline_name}_baselines",
    )


def _ablation_lines(variants: list[TrainingVariant]) -> dict[str, str]:
    """The line of each variant in the training-size plot: variants whose configurations differ only in
    ``train_size``, ``seed`` and ``group`` share one, named by their strategy (and their first
    variant, where two lines would share a strategy)."""
    varying = {"train_size", "seed", "group"}
    keys = {v.namespace: repr(v.config.model_dump(exclude=varying)) for v in variants}
    first = {}
    for variant in variants:
        first.setdefault(keys[variant.namespace], variant)
    strategies = [v.config.strategy.name for v in first.values()]
    names = {
        key: v.config.strategy.name
        if strategies.count(v.config.strategy.name) == 1
        else f"{v.config.strategy.name} ({v.name})"
        for key, v in first.items()
    }
    return {namespace: names[key] for namespace, key in keys.items()}


def _training_size_node(pipeline_name: str, variants: list[TrainingVariant]) -> Node:
    """The metric against the real training-set size of every compared variant, full-size ones too:
    each run's record counts its training subjects (one record per fold when cross-validated)."""
    runs = {
        v.namespace: [f"{v.namespace}.{fold.name}.metrics" for fold in v.folds]
        or [f"{v.namespace}.metrics"]
        for v in variants
    }
    return Node(
        bind(
            plot_training_size_curve,
            models=[name for name, records in runs.items() for _ in records],
            lines=_ablation_lines(variants),
        ),
        [f"{pipeline_name}_evaluation", *(r for records in runs.values() for r in records)],
        f"{pipeline_name}_training_size_plot",
        name=f"plot_{pipeline_name}_training_size",
    )


def _evaluation_nodes(
    pipeline_name: str,
    variants: list[TrainingVariant],
    evaluated: dict[str, str],
    primary_metric: str,
    evaluation: dict[str, Any],
) -> list[Node]:
    """Baselines, the evaluation table with intervals and flags, and the data-size ablation plot.

    The variants compared are those reported on the same split as the first evaluated one: intervals and
    paired differences need the same subjects.
    """
    evaluation = for_pipeline(evaluation, pipeline_name)
    by_name = {v.namespace: v for v in variants}
    first = next(iter(evaluated))
    split = evaluated[first]
    compared = [name for name, s in evaluated.items() if s == split]
    config = by_name[first].config
    out = f"{pipeline_name}_"
    nodes = [
        _baselines_node(pipeline_name, by_name[first], split, evaluation),
        Node(
            bind(
                report_evaluation,
                names=compared,
                task=config.task,
                target=config.target,
                evaluation_params=evaluation,
                title=f"{pipeline_name}: {config.target} on {split} ({primary_metric})",
                metric=primary_metric,
            ),
            [f"{out}baselines", *(f"{name}.predictions_{split}" for name in compared)],
            [f"{out}evaluation", f"{out}evaluation_markdown"],
            name=f"evaluate_{pipeline_name}_variants",
        ),
        Node(
            bind(
                report_head_size,
                covariates={name: list(by_name[name].config.covariates) for name in compared},
                evaluation_params=evaluation,
            ),
            [f"{config.train_on}_labels", f"{out}evaluation", f"{config.train_on}_images"],
            f"{out}head_size_markdown",
            name=f"report_{pipeline_name}_head_size",
        ),
    ]
    if config.task == "classification":  # per-class metrics and confusion matrices
        nodes.append(
            Node(
                bind(
                    report_classes,
                    names=compared,
                    target=config.target,
                    evaluation_params=evaluation,
                    title=f"{pipeline_name}: {config.target} per class on {split}",
                ),
                [
                    f"{config.train_on}_labels",
                    *(f"{name}.predictions_{split}" for name in compared),
                ],
                [
                    f"{out}class_metrics",
                    f"{out}confusion",
                    f"{out}confusion_plot",
                    f"{out}classes_markdown",
                ],
                name=f"report_{pipeline_name}_classes",
            )
        )
    if any(by_name[name].config.train_size is not None for name in compared):
        nodes.append(_training_size_node(pipeline_name, [by_name[name] for name in compared]))
    return nodes


def _external_sites_node(
    pipeline_name: str, variants: list[TrainingVariant], primary_metric: str, evaluation: dict
) -> Node:
    """Every variant evaluated on ``external``, per held-out site (a cross-validated one: its folds)."""
    runs = {
        v.namespace: [f"{v.namespace}.{fold.name}.predictions_external" for fold in v.folds]
        or [f"{v.namespace}.predictions_external"]
        for v in variants
    }
    config = variants[0].config
    return Node(
        bind(
            report_external_sites,
            models=[name for name, tables in runs.items() for _ in tables],
            task=config.task,
            evaluation_params=for_pipeline(evaluation, pipeline_name),
            title=f"{pipeline_name}: {config.target} per held-out site",
            metric=primary_metric,
        ),
        ["external_labels", *(t for tables in runs.values() for t in tables)],
        [f"{pipeline_name}_external_sites", f"{pipeline_name}_external_sites_markdown"],
        name=f"evaluate_{pipeline_name}_external_sites",
    )


def _report_nodes(
    pipeline_name: str,
    variants: list[TrainingVariant],
    primary_metric: str,
    evaluation: dict[str, Any],
    analysis_sections: list[str],
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
            [f"{out}comparison", f"{out}comparison_markdown"],
            name=f"compare_{pipeline_name}_variants",
        ),
        Node(
            bind(plot_learning_curves, names=names),
            [_history(v) for v in variants],
            f"{out}learning_curves",
            name=f"plot_{pipeline_name}_learning_curves",
        ),
    ]
    sections = [f"{out}comparison_markdown"]
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
                bind(
                    plot_primary_metric,
                    names=list(evaluated),
                    metric=primary_metric,
                    evaluation_params=evaluation,
                ),
                [f"{out}comparison", *predictions],
                f"{out}metric_plot",
                name=f"plot_{pipeline_name}_primary_metric",
            ),
            *_evaluation_nodes(pipeline_name, variants, evaluated, primary_metric, evaluation),
        ]
        sections += [f"{out}evaluation_markdown", f"{out}head_size_markdown"]
        if config.task == "classification":
            sections.append(f"{out}classes_markdown")
    if tuned := [v for v in variants if v.tuning is not None]:
        studies = {v.namespace: v.tuning.study for v in tuned}
        nodes.append(
            Node(
                bind(
                    report_studies,
                    names=list(studies),
                    metrics={name: study.metric for name, study in studies.items()},
                    directions={name: study.direction for name, study in studies.items()},
                ),
                [f"{name}.study" for name in studies],
                [f"{out}tuning_plot", f"{out}tuning_markdown"],
                name=f"report_{pipeline_name}_studies",
            )
        )
        sections.append(f"{out}tuning_markdown")
    if external := [v for v in variants if "external" in v.config.evaluate_on]:
        nodes.append(_external_sites_node(pipeline_name, external, primary_metric, evaluation))
        sections.append(f"{out}external_sites_markdown")
    sections += analysis_sections
    nodes.append(Node(join_reports, sections, f"{out}report", name=f"write_{pipeline_name}_report"))
    return nodes


def _cutoff_search_node(plan: ExperimentPlan, search: CutoffSearchParams) -> Node:
    # A `cut_at: auto` variant's cut point is chosen at run time, by its probe rather than the search.
    truncated = [
        v
        for v in plan.of("finetune")
        if v.config.strategy.name == "truncated" and not cuts_automatically(v.config)
    ]
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

    Each report ends with the analysis sections of ``analysis_nodes`` (energy per training phase, and
    with ``reporting.analysis`` SVCCA and saliency maps). With ``reporting.cutoff_search`` set, the
    finetune report also plans TruncatedTL's cutoff search.
    """
    primary = reporting["primary_metric"]
    evaluation = reporting.get("evaluation") or {}
    analysis = analysis_nodes(plan, reporting)
    nodes = [
        node
        for pipeline in TRAINING_PIPELINES
        if plan.of(pipeline)
        for node in _report_nodes(
            pipeline,
            plan.of(pipeline),
            primary[pipeline],
            evaluation,
            report_sections(pipeline, analysis),
        )
    ]
    nodes += analysis
    if (search := reporting.get("cutoff_search")) is not None:
        nodes.append(_cutoff_search_node(plan, CutoffSearchParams.model_validate(search)))
    return Pipeline(nodes, tags={"reporting"})
