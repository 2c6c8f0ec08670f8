"""Synthetic pipeline: a UK-Biobank-like demo cohort of T1 images with known ground truth."""

from tlkedro.pipelines.synthetic.pipeline import create_pipeline

__all__ = ["create_pipeline"]
