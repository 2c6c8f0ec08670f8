"""Domain-adaptive pre-training (DAPT) variants, side by side, and their comparison.

Each variant ``dapt.<variant>`` is three namespaced parts:

- ``dapt.<variant>.adapt``: a copy of the training template that starts from the generic source model
  (``init_from``, e.g. ``pretrain.default``) and trains it further on the in-domain split (``adapt_on``)
  with the ``dapt.adapt`` configuration: a surrogate task and one of the DAPT strategies;
- ``dapt.<variant>.finetune``: a copy of the training template that fine-tunes the adapted model on the
  target task (``finetune_on``, the ``dapt.finetune`` configuration) and evaluates it;
- ``dapt.<variant>.{evaluate_downstream, report_phases, summarise}``: MLP classifiers on the adapted
  encoder's features, trainable parameters, time and energy per phase, and one flat record.

``dapt_comparison`` and ``dapt_report`` compare the records, with mean and standard deviation over the
variants of a ``group`` (seeds). See docs/dapt.md.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline
from pydantic import BaseModel, ConfigDict, ValidationError

from tlkedro.pipelines import bind
from tlkedro.pipelines.dapt.nodes import (
    DownstreamConfig,
    evaluate_downstream,
    report_phases,
    summarise_dapt,
)
from tlkedro.pipelines.reporting.nodes import compare_variants
from tlkedro.pipelines.training import create_variant_pipeline
from tlkedro.variants import deep_merge, expand_variants

STAGES = ("adapt", "finetune")


class DaptVariant(BaseModel):
    """What a ``dapt`` variant (or sweep point) may override.

    Attributes:
        adapt: Overrides of the ``dapt.adapt`` configuration (e.g. the DAPT strategy).
        finetune: Overrides of the ``dapt.finetune`` configuration.
        downstream: Overrides of ``dapt.downstream``.
        seed: One seed for the adaptation, the fine-tuning and the MLPs.
        group: The report's group (variants that differ only by seed).
    """

    model_config = ConfigDict(extra="forbid")

    adapt: dict[str, Any] = {}
    finetune: dict[str, Any] = {}
    downstream: dict[str, Any] = {}
    seed: int | None = None
    group: str | None = None


def _stage_overrides(variant: DaptVariant, stage: str, init_from: str) -> dict[str, Any]:
    shared = {
        key: getattr(variant, key) for key in ("seed", "group") if getattr(variant, key) is not None
    }
    # init_from is the pipeline's to set: the adaptation reads the generic model, the fine-tuning the adapted one.
    return deep_merge(getattr(variant, stage), {**shared, "init_from": init_from})


def _training_stage(
    name: str,
    stage: str,
    train_split: str,
    source: str,
    section: dict[str, Any],
    overrides: dict[str, Any],
) -> Pipeline:
    """One training phase of variant ``name`` as a copy of the training template, ``dapt.<name>.<stage>``."""
    merged = deep_merge(section[stage], overrides)
    template = create_variant_pipeline(
        "dapt",
        f"{name}.{stage}",
        train_split=train_split,
        evaluate_on=list(merged.get("evaluate_on", [])),
        source=source,
        declared=False,
        overrides=overrides,
        unlabelled_from=merged.get("unlabelled_from"),
    )
    # The template reads its base configuration from `params:<pipeline>`; a stage's is `dapt.<stage>`.
    return Pipeline(template, parameters={"params:dapt": f"params:dapt.{stage}"})


def create_variant(name: str, variant: DaptVariant, section: dict[str, Any]) -> Pipeline:
    """Variant ``name``: adaptation, fine-tuning, downstream MLPs, phase report and record."""
    namespace = f"dapt.{name}"
    adapt = _training_stage(
        name,
        "adapt",
        section["adapt_on"],
        section["init_from"],
        section,
        _stage_overrides(variant, "adapt", section["init_from"]),
    )
    finetune = _training_stage(
        name,
        "finetune",
        section["finetune_on"],
        f"{namespace}.adapt",
        section,
        _stage_overrides(variant, "finetune", f"{namespace}.adapt"),
    )
    downstream_overrides = deep_merge(
        variant.downstream, {"seed": variant.seed} if variant.seed is not None else {}
    )
    downstream = DownstreamConfig.model_validate(
        deep_merge(section.get("downstream", {}), downstream_overrides)
    )
    evaluated = [
        f"{split}_{kind}" for split in downstream.evaluate_on for kind in ("images", "labels")
    ]
    training = [f"{downstream.train_on}_images", f"{downstream.train_on}_labels"]
    histories = [
        f"{stage}.{dataset}"
        for stage in STAGES
        for dataset in ("config", "history", "training_summary")
    ]
    nodes = [
        Node(
            bind(evaluate_downstream, overrides=downstream_overrides, namespace=namespace),
            ["params:downstream", "adapt.model", *training, *evaluated],
            "downstream",
            name="evaluate_downstream",
        ),
        Node(report_phases, ["params:energy", *histories], "phases", name="report_phases"),
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
        parameters={
            "params:downstream": "params:dapt.downstream",
            "params:energy": "params:dapt.energy",
        },
        tags={"dapt", namespace},
    )
    return adapt + finetune + extras


def create_pipeline(parameters: dict[str, Any]) -> Pipeline:
    """Every DAPT variant and sweep point of ``parameters["dapt"]``, and their comparison."""
    section = parameters["dapt"]
    pipelines = []
    for name, overrides in expand_variants(section, "dapt").items():
        try:
            variant = DaptVariant.model_validate(overrides)
        except ValidationError as error:
            raise ValueError(f"Invalid overrides for variant 'dapt.{name}':\n{error}") from None
        pipelines.append(create_variant(name, variant, section))
    records = [f"dapt.{name}.metrics" for name in expand_variants(section, "dapt")]
    report = Node(
        bind(
            compare_variants,
            title="DAPT variants",
            primary_metric=section.get("primary_metric", "finetune/test/auroc"),
        ),
        records,
        ["dapt_comparison", "dapt_report"],
        name="compare_dapt_variants",
        tags={"dapt"},
    )
    return Pipeline([*pipelines, Pipeline([report])])
