"""Kedro datasets that kedro-datasets lacks: NIfTI collections, memory-mapped arrays, checkpoints."""
