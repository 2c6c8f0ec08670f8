"""Project pipelines.

The training pipelines are built from the parameters: every declared variant and sweep point becomes a
namespaced copy of the training template. Within a Kedro session the registry reads the session's
configuration (its ``--env`` and ``--params``, handed over by ``PipelineParametersHook``); outside one it
reads ``conf/`` with the default run environment, or ``KEDRO_ENV`` where set.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from tlkedro.configuration import CONFIG_LOADER_ARGS
from tlkedro.pipelines import (
    cross_validation,
    dapt,
    finetune,
    predict,
    pretrain,
    reporting,
    segment,
)
from tlkedro.pipelines.ingestion import create_pipeline as create_ingestion_pipeline
from tlkedro.pipelines.preprocessing import create_pipeline as create_preprocessing_pipeline
from tlkedro.pipelines.synthetic import create_pipeline as create_synthetic_pipeline
from tlkedro.plan import ExperimentPlan, build_plan, segment_variants


def _project_root() -> Path:
    """The Kedro project folder: the working directory as ``kedro`` sets it, else this checkout."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / settings.CONF_SOURCE / "base").is_dir():
            return candidate
    raise RuntimeError(f"Cannot find the project's {settings.CONF_SOURCE}/base from {Path.cwd()}")


_session_config_loader: AbstractConfigLoader | None = None


def use_config_loader(config_loader: AbstractConfigLoader) -> None:
    """Build the pipelines from this session's configuration from now on."""
    global _session_config_loader  # noqa: PLW0603 - one registry per process, as in Kedro itself
    _session_config_loader = config_loader


def load_parameters() -> dict[str, Any]:
    """The parameters the pipelines are built from (see the module docstring)."""
    if _session_config_loader is not None:  # a config loader is a mapping: never test its truth
        return _session_config_loader["parameters"]
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(_project_root() / settings.CONF_SOURCE),
        env=os.environ.get("KEDRO_ENV"),
        # The project's own arguments (soft merge of environments): without `configure_project`, as in
        # a notebook or a test, Kedro's `settings` holds its defaults, which would replace whole sections.
        **CONFIG_LOADER_ARGS,
    )
    return loader["parameters"]


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        ``synthetic``, ``ingestion``, ``preprocessing``, ``cross_validation`` (the folds, when
        ``cross_validation`` is set), ``pretrain``, ``finetune``, ``reporting``, ``dapt``
        (domain-adaptive pre-training variants, from ``pretrain.default``), ``data`` (ingestion to
        model input and folds), ``predict`` (new scans scored by the ``predict.model`` variants),
        ``segment`` (tissue segmentation variants, with a ``segment`` section) and ``__default__``
        (cohort to report, without ``dapt``, ``predict`` and ``segment``).

    Raises:
        PlanError: An invalid parameter of a variant, named with its key, before any node runs.
    """
    parameters = load_parameters()
    source = parameters["ingestion"]["source"]
    plan = build_plan(parameters)
    with warnings.catch_warnings():
        # Finetune variants read `pretrain.<variant>.model` and reporting reads every variant's outputs:
        # consuming another namespace's datasets is the point of the design, not a naming mistake.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        pipelines = _build(plan, parameters, source)
    # The demo generates its own cohort; with real data (`ingestion.source: raw`) nothing is generated.
    data = (pipelines["synthetic"] if source == "synthetic" else Pipeline([])) + pipelines[
        "ingestion"
    ]
    pipelines["data"] = data + pipelines["preprocessing"] + pipelines["cross_validation"]
    pipelines["__default__"] = (
        pipelines["data"] + pipelines["pretrain"] + pipelines["finetune"] + pipelines["reporting"]
    )
    return pipelines


def _build(plan: ExperimentPlan, parameters: dict[str, Any], source: str) -> dict[str, Pipeline]:
    # `preprocessing.label_maps` set: ingestion and preprocessing carry a label map per scan.
    label_maps = parameters.get("preprocessing", {}).get("label_maps") is not None
    return {
        "synthetic": create_synthetic_pipeline(
            label_maps=bool(parameters.get("synthetic", {}).get("label_maps", False))
        ),
        "ingestion": create_ingestion_pipeline(source=source, label_maps=label_maps),
        "preprocessing": create_preprocessing_pipeline(
            source=source,
            layout=parameters["ingestion"].get("layout", "ukb"),
            label_maps=label_maps,
        ),
        "cross_validation": cross_validation.create_pipeline(plan),
        "pretrain": pretrain.create_pipeline(plan),
        "finetune": finetune.create_pipeline(plan),
        "reporting": reporting.create_pipeline(plan, parameters["reporting"]),
        "dapt": dapt.create_pipeline(plan),
        "predict": predict.create_pipeline(
            plan, parameters.get("predict"), layout=parameters["ingestion"].get("layout", "ukb")
        ),
        # Segmentation on a transferred encoder (conf/segmentation, docs/segmentation.md); empty
        # without a `segment` section.
        "segment": segment.create_pipeline(segment_variants(parameters, plan)),
    }
