"""Domain-adaptive pre-training: adapt a generic model in-domain, fine-tune it, evaluate it downstream."""

from tlkedro.pipelines.dapt.pipeline import create_pipeline

__all__ = ["create_pipeline"]
