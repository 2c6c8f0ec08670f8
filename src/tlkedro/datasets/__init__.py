"""Kedro datasets that kedro-datasets lacks: NIfTI collections, memory-mapped arrays, checkpoints,
CSV-or-TSV metadata tables."""

from tlkedro.datasets.arrays import NumpyArrayDataset  # noqa: F401
from tlkedro.datasets.checkpoint import TorchCheckpointDataset  # noqa: F401
from tlkedro.datasets.nifti import NiftiCollectionDataset, NiftiRef  # noqa: F401
from tlkedro.datasets.tables import DelimitedTableDataset  # noqa: F401
