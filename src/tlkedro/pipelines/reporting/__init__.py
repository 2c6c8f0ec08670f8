"""Comparison tables and plots over every pretrain and finetune variant."""

from tlkedro.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
