"""The training template and its copies, one per variant of the experiment plan.

Each variant (``pretrain.default``, ``finetune.linear_probe``, ...) is a copy of this template in its own
namespace; its datasets (``<pipeline>.<variant>.model``, ``...metrics``) are resolved by the catalog's
dataset factories, and the shared model-input datasets stay un-namespaced. A cross-validated variant
holds one copy per fold (``finetune.full.fold_0``) and a node that pools them into the variant's record.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.training.nodes import (
    CV_SPLIT,
    choose_cut_at,
    evaluate_model,
    measure_complexity,
    record_run,
    summarise_folds,
    summarise_variant,
    train_model,
    tune_model,
)
from tlkedro.plan import ExperimentPlan, Fold, TrainingVariant, auto_cut_probe, cuts_automatically

FOLDS = "folds"


def _run_pipeline(variant: TrainingVariant, plan: ExperimentPlan, fold: Fold | None) -> Pipeline:
    """One training run of a variant: the whole variant, or one of its folds."""
    config = variant.config
    namespace = variant.namespace if fold is None else f"{variant.namespace}.{fold.name}"
    train_on = config.train_on
    source = variant.source
    if source is not None and fold is not None and plan.variants[source].cross_validated:
        source = (
            f"{source}.{fold.name}"  # each fold starts from the source's model of the same fold
        )
    train_inputs = {"images": f"{train_on}_images", "labels": f"{train_on}_labels"}
    if source:
        train_inputs["source"] = "source_model"
    if config.unlabelled_from:
        train_inputs["unlabelled"] = f"{config.unlabelled_from}_images"
    if fold is not None:
        train_inputs["folds"] = FOLDS
    evaluated = [*([CV_SPLIT] if fold is not None else []), *config.evaluate_on]
    workdir = plan.workdir(namespace)
    nodes, probe = [], None
    if cuts_automatically(config):
        probe = auto_cut_probe(plan.variants, variant).namespace
        if fold is not None and plan.variants[probe].cross_validated:
            probe = f"{probe}.{fold.name}"
        nodes.append(
            Node(
                bind(
                    choose_cut_at, namespace=namespace, config=config, probe_name=probe, fold=fold
                ),
                {
                    "source": "source_model",
                    "probe": "probe_model",
                    **{
                        k: train_inputs[k]
                        for k in ("images", "labels", "folds")
                        if k in train_inputs
                    },
                },
                "auto_cut",
                name="choose_cut_at",
            )
        )
        train_inputs["auto_cut"] = "auto_cut"
    if variant.tuning is not None:  # an optuna sweep: the study, then its best trial's model
        tune = bind(
            tune_model,
            namespace=namespace,
            config=config,
            tuning=variant.tuning,
            storage=plan.study_storage(variant),
            workdir=workdir,
            preprocessing=plan.preprocessing,
        )
        outputs = ["config", "model", "history", "training_summary", "study"]
        nodes.append(Node(tune, train_inputs, outputs, name="tune"))
    else:
        nodes += [
            Node(
                bind(
                    record_run,
                    namespace=namespace,
                    config=config,
                    workdir=workdir,
                    preprocessing=plan.preprocessing,
                ),
                ["auto_cut"] if probe else None,
                "config",
                name="record_run",
            ),
            Node(
                bind(train_model, config=config, workdir=workdir, fold=fold),
                train_inputs,
                ["model", "history", "training_summary"],
                name="train",
            ),
        ]
    nodes += [
        Node(
            measure_complexity,
            ["model", f"{train_on}_images"],
            "complexity",
            name="measure_complexity",
        ),
    ]
    for split in evaluated:
        data = (
            [f"{train_on}_images", f"{train_on}_labels", FOLDS]
            if split == CV_SPLIT
            else [
                f"{split}_images",
                f"{split}_labels",
            ]
        )
        nodes.append(
            Node(
                bind(evaluate_model, config=config, split=split, fold=fold),
                ["model", *data],
                [f"metrics_{split}", f"predictions_{split}"],
                name=f"evaluate_{split}",
            )
        )
    nodes.append(
        Node(
            bind(summarise_variant, namespace=namespace, config=config),
            [
                "training_summary",
                "history",
                "complexity",
                *[f"metrics_{split}" for split in evaluated],
            ],
            "metrics",
            name="summarise",
        )
    )
    shared = {
        f"{s}_{kind}" for s in {train_on, *config.evaluate_on} for kind in ("images", "labels")
    }
    shared |= {f"{config.unlabelled_from}_images"} if config.unlabelled_from else set()
    shared |= {FOLDS} if fold is not None else set()
    return Pipeline(
        nodes,
        namespace=namespace,
        inputs={
            **{name: name for name in shared},
            **({"source_model": f"{source}.model"} if source else {}),
            **({"probe_model": f"{probe}.model"} if probe else {}),
        },
        tags={variant.pipeline, variant.namespace},
    )


def create_variant_pipeline(variant: TrainingVariant, plan: ExperimentPlan) -> Pipeline:
    """A variant as a namespaced copy of the training template, one per fold when cross-validated."""
    if not variant.cross_validated:
        return _run_pipeline(variant, plan, None)
    folds = Pipeline([_run_pipeline(variant, plan, fold) for fold in variant.folds])
    pooled = Pipeline(
        [
            Node(
                bind(
                    summarise_folds,
                    namespace=variant.namespace,
                    group=variant.config.group or variant.namespace,
                    n_folds=len(variant.folds),
                ),
                [
                    *[f"{fold.name}.metrics" for fold in variant.folds],
                    *[f"{fold.name}.predictions_{CV_SPLIT}" for fold in variant.folds],
                ],
                ["metrics", f"predictions_{CV_SPLIT}"],
                name="summarise_folds",
            )
        ],
        namespace=variant.namespace,
        tags={variant.pipeline, variant.namespace},
    )
    return folds + pooled


def create_variants_pipeline(plan: ExperimentPlan, pipeline_name: str) -> Pipeline:
    """Every variant of one training pipeline of the plan, side by side."""
    return Pipeline([create_variant_pipeline(variant, plan) for variant in plan.of(pipeline_name)])
