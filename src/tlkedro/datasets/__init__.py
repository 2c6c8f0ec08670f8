"""Kedro datasets that kedro-datasets lacks: NIfTI collections, memory-mapped arrays, checkpoints."""
from tlkedro.datasets.arrays import NumpyArrayDataset  # noqa: F401
