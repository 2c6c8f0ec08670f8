"""Preprocessing: manifest -> subject splits -> model-input arrays and labels per split."""

from tlkedro.pipelines.preprocessing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
