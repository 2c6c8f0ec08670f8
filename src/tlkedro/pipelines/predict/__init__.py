"""Predict: new scans, labels optional -> the model's preprocessing -> every head's predictions per subject."""

from tlkedro.pipelines.predict.nodes import PredictParams
from tlkedro.pipelines.predict.pipeline import create_pipeline

__all__ = ["PredictParams", "create_pipeline"]
