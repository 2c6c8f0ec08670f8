"""Subject-level k-fold assignment of the cross-validated split (``cross_validation``)."""

from tlkedro.pipelines.cross_validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
