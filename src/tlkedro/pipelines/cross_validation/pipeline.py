"""One node: the folds of the cross-validated split, shared by every pretrain and finetune variant."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from tlkedro.pipelines import bind
from tlkedro.pipelines.cross_validation.nodes import split_into_folds
from tlkedro.pipelines.training.pipeline import FOLDS
from tlkedro.plan import ExperimentPlan


def create_pipeline(plan: ExperimentPlan) -> Pipeline:
    """``folds`` from ``<cross_validation.split>_labels``; empty without cross-validation."""
    cv = plan.cross_validation
    if cv is None:
        return Pipeline([])
    return Pipeline(
        [
            Node(
                bind(split_into_folds, config=cv),
                f"{cv.split}_labels",
                FOLDS,
                name="split_into_folds",
            )
        ],
        tags={"cross_validation"},
    )
