"""The template pipeline that every pretrain and finetune variant is a namespaced copy of."""

from tlkedro.pipelines.training.pipeline import create_variant_pipeline, create_variants_pipeline

__all__ = ["create_variant_pipeline", "create_variants_pipeline"]
