"""Target-task training (default: sex classification on the finetune split, from the pretrain checkpoint)."""

from tlkedro.pipelines.finetune.pipeline import create_pipeline

__all__ = ["create_pipeline"]
