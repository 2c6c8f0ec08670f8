"""The predict pipeline: ingest new scans (labels optional), preprocess them as the selected models'
training images were, and score them with every head of every model.

Its datasets are ``predict_*`` (conf/base/catalog_09_predict.yml), beside the training ones, so that
scoring never writes over the training cohort's manifest, normalised scans or model input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kedro.pipeline import Node, Pipeline
from pydantic import ValidationError

from tlkedro.pipelines import bind
from tlkedro.pipelines.predict import nodes
from tlkedro.pipelines.preprocessing.nodes import check_registration, normalise_scans
from tlkedro.plan import ExperimentPlan, PlanError, format_validation_error


def scoring_models(plan: ExperimentPlan, params: nodes.PredictParams) -> list[nodes.ScoringModel]:
    """The variants ``predict.model`` names (every finetune variant when it is null), with their runs.

    Raises:
        PlanError: A name is not a training variant of the plan; the message lists them.
    """
    if params.model is None:
        names = [variant.namespace for variant in plan.of("finetune")]
    else:
        names = [params.model] if isinstance(params.model, str) else list(params.model)
    unknown = [name for name in names if name not in plan.variants]
    if unknown or (params.model is not None and not names):
        raise PlanError(
            f"predict.model names {unknown or 'no variant'}; trained variants of this plan: "
            f"{', '.join(plan.variants) or 'none'}"
        )
    models = []
    for name in dict.fromkeys(names):
        variant = plan.variants[name]
        runs = tuple(f"{name}.{fold.name}" for fold in variant.folds) or (name,)
        models.append(nodes.ScoringModel(name, runs, variant.config.trainer))
    return models


def create_pipeline(
    plan: ExperimentPlan, parameters: Mapping[str, Any] | None, layout: str = "ukb"
) -> Pipeline:
    """The predict pipeline for the models of ``parameters`` (the ``predict`` section).

    ``layout`` is ``ingestion.layout`` (``predict.ingestion.layout`` overrides it): ROI time series
    (``timeseries``) are checked, quarantined and turned into model input as the training series were,
    with no registration.

    Raises:
        PlanError: An invalid ``predict`` key or an unknown model, before any node runs.
    """
    try:
        params = nodes.PredictParams.model_validate(parameters or {})
    except ValidationError as error:
        raise PlanError(
            f"Invalid parameters:\n{format_validation_error(error, 'predict')}"
        ) from None
    models = scoring_models(plan, params)
    if not models:  # predict.model null and no finetune variant: nothing to score with
        return Pipeline([])
    preprocessing = "predict_preprocessing"
    model_preprocessing = Node(
        bind(nodes.model_preprocessing, models=[m.runs[0] for m in models]),
        ["params:preprocessing", *[f"{m.runs[0]}.config" for m in models]],
        preprocessing,
        name="predict_model_preprocessing",
    )
    scoring = Node(
        bind(nodes.score_new_scans, models=models),
        [
            "predict_images",
            "predict_labels",
            *[f"{run}.model" for m in models for run in m.runs],
        ],
        "predictions",
        name="predict_score",
    )
    if params.ingestion.get("layout", layout) == "timeseries":
        return Pipeline(
            [model_preprocessing, *_series_nodes(models, params, preprocessing), scoring],
            tags={"predict"},
        )
    return Pipeline(
        [
            model_preprocessing,
            Node(
                bind(nodes.ingest_new_scans, predict=params),
                ["predict_scans", "predict_metadata", "params:ingestion"],
                ["predict_manifest", "predict_quarantine"],
                name="predict_ingest_scans",
            ),
            Node(
                normalise_scans,
                ["predict_manifest", "predict_scans", preprocessing],
                "predict_normalised_scans",
                name="predict_normalise_scans",
            ),
            Node(
                check_registration,
                ["predict_manifest", "predict_scans", "predict_normalised_scans", preprocessing],
                [
                    "predict_normalised_manifest",
                    "predict_registration_qc",
                    "predict_registration_quarantine",
                    "predict_registration_qc_mosaic",
                ],
                name="predict_check_registration",
            ),
            Node(
                nodes.build_predict_arrays,
                [
                    "predict_normalised_manifest",
                    "predict_scans",
                    "predict_normalised_scans",
                    preprocessing,
                ],
                ["predict_images", "predict_labels"],
                name="predict_build_arrays",
            ),
            scoring,
            Node(
                nodes.report_predictions,
                [
                    "predictions",
                    "predict_quarantine",
                    "predict_registration_quarantine",
                    preprocessing,
                ],
                "predict_report",
                name="predict_write_report",
            ),
        ],
        tags={"predict"},
    )


def _series_nodes(
    models: list[nodes.ScoringModel], params: nodes.PredictParams, preprocessing: str
) -> list[Node]:
    """Ingestion, model input and report of new ROI time series: nothing to register."""
    return [
        Node(
            bind(nodes.ingest_new_series, predict=params),
            [
                "predict_scans",
                "predict_metadata",
                "params:ingestion",
                *[f"{m.runs[0]}.model" for m in models],
            ],
            ["predict_manifest", "predict_quarantine"],
            name="predict_ingest_scans",
        ),
        Node(
            nodes.build_predict_series,
            ["predict_manifest", "predict_scans", preprocessing],
            ["predict_images", "predict_labels"],
            name="predict_build_arrays",
        ),
        Node(
            nodes.report_series_predictions,
            ["predictions", "predict_quarantine", preprocessing],
            "predict_report",
            name="predict_write_report",
        ),
    ]
