"""Domain-adaptive pre-training (DAPT) variants, side by side, and their comparison.

Each variant ``dapt.<variant>`` is three namespaced parts:

- ``dapt.<variant>.adapt``: a copy of the training template that starts from the generic source model
  (``init_from``, e.g. ``pretrain.default``) and trains it further on the in-domain split (``adapt.train_on``)
  with the ``dapt.adapt`` configuration: a surrogate task and one of the DAPT strategies;
- ``dapt.<variant>.finetune``: a copy of the training template that fine-tunes the adapted model on the
  target task (``finetune.train_on``, the ``dapt.finetune`` configuration) and evaluates it;
- ``dapt.<variant>.{evaluate_downstream, report_phases, summarise}``: MLP classifiers on the adapted
  encoder's features, trainable parameters, time and energy per phase, and one flat record.

``dapt_comparison`` and ``dapt_report`` compare the records, with mean and standard deviation over the
variants of a ``group`` (seeds). See docs/dapt.md.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.dapt.nodes import evaluate_downstream, report_phases, summarise_dapt
from tlkedro.pipelines.reporting.nodes import compare_variants
from tlkedro.pipelines.training import create_variant_pipeline
from tlkedro.plan import DAPT_STAGES, DaptVariant, ExperimentPlan


def create_variant(variant: DaptVariant, plan: ExperimentPlan) -> Pipeline:
    """Variant ``dapt.<name>``: adaptation, fine-tuning, downstream MLPs, phase report and record."""
    namespace = variant.namespace
    downstream = variant.downstream
    evaluated = [
        f"{split}_{kind}" for split in downstream.evaluate_on for kind in ("images", "labels")
    ]
    training = [f"{downstream.train_on}_images", f"{downstream.train_on}_labels"]
    histories = [
        f"{stage}.{dataset}"
        for stage in DAPT_STAGES
        for dataset in ("config", "history", "training_summary")
    ]
    nodes = [
        Node(
            bind(evaluate_downstream, config=downstream),
            ["adapt.model", *training, *evaluated],
            "downstream",
            name="evaluate_downstream",
        ),
        Node(
            bind(report_phases, power=plan.dapt_energy),
            histories,
            "phases",
            name="report_phases",
        ),
        Node(
            bind(summarise_dapt, namespace=namespace, group=variant.group, dip=downstream.dip),
            ["adapt.metrics", "finetune.metrics", "downstream", "phases"],
            "metrics",
            name="summarise",
        ),
    ]
    extras = Pipeline(
        nodes,
        namespace=namespace,
        inputs={name: name for name in {*training, *evaluated}},
        tags={"dapt", namespace},
    )
    stages = [
        Pipeline(create_variant_pipeline(stage, plan), tags={namespace})
        for stage in (variant.adapt, variant.finetune)
    ]
    return Pipeline([*stages, extras])


def create_pipeline(plan: ExperimentPlan) -> Pipeline:
    """Every DAPT variant and sweep point of the plan, and their comparison (none with ``dapt: null``)."""
    if not plan.dapt:
        return Pipeline([])
    report = Node(
        bind(compare_variants, title="DAPT variants", primary_metric=plan.dapt_primary_metric),
        [f"{variant.namespace}.metrics" for variant in plan.dapt.values()],
        ["dapt_comparison", "dapt_report"],
        name="compare_dapt_variants",
        tags={"dapt"},
    )
    return Pipeline([*(create_variant(v, plan) for v in plan.dapt.values()), Pipeline([report])])
