"""The training template and its expansion into namespaced variants.

Each variant of a pipeline (``pretrain.default``, ``finetune.linear_probe``, ...) is a copy of this
template in its own namespace; its datasets (``<pipeline>.<variant>.model``, ``...metrics``) are resolved
by the catalog's dataset factories, and the shared model-input datasets stay un-namespaced.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.training.nodes import (
    evaluate_model,
    measure_complexity,
    resolve_config,
    summarise_variant,
    train_model,
)
from tlkedro.variants import expand_variants


def create_variant_pipeline(
    pipeline_name: str,
    variant: str,
    *,
    train_split: str,
    evaluate_on: list[str],
    source: str | None,
    declared: bool,
    overrides: dict[str, Any],
    unlabelled_from: str | None = None,
) -> Pipeline:
    """One variant as a namespaced copy of the training template.

    Args:
        pipeline_name: ``pretrain`` or ``finetune``: the parameter section and the namespace's first part.
        variant: The variant's name, the namespace's second part.
        train_split: Split whose ``<split>_images``/``<split>_labels`` the model is trained on.
        evaluate_on: Splits the trained model is evaluated on.
        source: Namespace of the variant whose model this one starts from (``pretrain.default``), or
            ``None`` for no source model.
        declared: ``True`` for a variant declared under ``<pipeline>.variants`` (its overrides are read
            from the parameters at run time, so ``--params`` can change them); ``False`` for a sweep
            point, whose overrides are fixed here.
        overrides: The variant's overrides (used when ``declared`` is ``False``).
        unlabelled_from: Split whose images the objective's auxiliary terms use without their labels
            (semi-supervised, domain-adversarial), e.g. ``external``; ``None`` for none.
    """
    namespace = f"{pipeline_name}.{variant}"
    resolve = bind(
        resolve_config, namespace=namespace, wired_source=source, wired_unlabelled=unlabelled_from
    )
    resolve_inputs = {"base": "params:base", "runtime": "params:runtime"}
    if declared:
        resolve_inputs["overrides"] = "params:overrides"
    else:
        resolve = bind(resolve, overrides=overrides)
    train_inputs = {
        "run": "config",
        "images": f"{train_split}_images",
        "labels": f"{train_split}_labels",
    }
    if source:
        train_inputs["source"] = "source_model"
    if unlabelled_from:
        train_inputs["unlabelled"] = f"{unlabelled_from}_images"
    nodes = [
        Node(resolve, resolve_inputs, "config", name="resolve_config"),
        Node(train_model, train_inputs, ["model", "history", "training_summary"], name="train"),
        Node(
            measure_complexity,
            ["model", f"{train_split}_images"],
            "complexity",
            name="measure_complexity",
        ),
    ]
    for split in evaluate_on:
        nodes.append(
            Node(
                bind(evaluate_model, split=split),
                ["config", "model", f"{split}_images", f"{split}_labels"],
                [f"metrics_{split}", f"predictions_{split}"],
                name=f"evaluate_{split}",
            )
        )
    nodes.append(
        Node(
            summarise_variant,
            [
                "config",
                "training_summary",
                "history",
                "complexity",
                *[f"metrics_{s}" for s in evaluate_on],
            ],
            "metrics",
            name="summarise",
        )
    )
    shared = {f"{s}_{kind}" for s in {train_split, *evaluate_on} for kind in ("images", "labels")}
    shared |= {f"{unlabelled_from}_images"} if unlabelled_from else set()
    parameters = {"params:base": f"params:{pipeline_name}", "params:runtime": "params:runtime"}
    if declared:
        parameters["params:overrides"] = f"params:{pipeline_name}.variants.{variant}"
    return Pipeline(
        nodes,
        namespace=namespace,
        inputs={
            **{name: name for name in shared},
            **({"source_model": f"{source}.model"} if source else {}),
        },
        parameters=parameters,
        tags={pipeline_name, namespace},
    )


def create_variants_pipeline(
    pipeline_name: str, section: dict[str, Any], *, train_split: str
) -> Pipeline:
    """Every variant and sweep point of a pipeline's parameter section, side by side.

    ``init_from``, ``evaluate_on`` and ``unlabelled_from`` shape the pipeline (which checkpoint is read,
    which splits are evaluated, which images are read without labels), so they are read here from the
    merged configuration of each variant.
    """
    declared = set(section.get("variants") or {})
    pipelines = []
    for variant, overrides in expand_variants(section, pipeline_name).items():
        init_from = overrides.get("init_from", section.get("init_from"))
        evaluate_on = overrides.get("evaluate_on", section.get("evaluate_on", []))
        unlabelled_from = overrides.get("unlabelled_from", section.get("unlabelled_from"))
        pipelines.append(
            create_variant_pipeline(
                pipeline_name,
                variant,
                train_split=train_split,
                evaluate_on=list(evaluate_on),
                source=init_from,
                declared=variant in declared,
                overrides=overrides,
                unlabelled_from=unlabelled_from,
            )
        )
    return Pipeline(pipelines)
