"""Source-task training (default: brain-age regression on the pretrain split)."""

from tlkedro.pipelines.pretrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
