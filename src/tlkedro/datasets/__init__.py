"""Kedro datasets that kedro-datasets lacks: NIfTI collections, memory-mapped arrays, checkpoints."""

from tlkedro.datasets.arrays import NumpyArrayDataset  # noqa: F401
from tlkedro.datasets.checkpoint import TorchCheckpointDataset  # noqa: F401
from tlkedro.datasets.nifti import NiftiCollectionDataset, NiftiRef  # noqa: F401
