"""Segmentation on a transferred encoder: every `segment` variant trained, evaluated and compared."""

from tlkedro.pipelines.segment.pipeline import create_pipeline

__all__ = ["create_pipeline"]
