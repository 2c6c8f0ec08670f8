"""Nodes of the preprocessing pipeline: split the subjects, then build each split's model input."""

from __future__ import annotations

import pandas as pd
from pydantic import PositiveInt

from tlkedro.imaging import splits as splitting
from tlkedro.imaging.extraction import ExtractionConfig, LazyArrayStack, build_model_input


class PreprocessingParams(ExtractionConfig):
    """The ``preprocessing`` parameters (conf/base/parameters_preprocessing.yml).

    The extraction keys (``spacing_mm``, ``normalisation``, ``mode``, ``slices``, ``volume``, ``dtype``)
    are those of :class:`~tlkedro.imaging.extraction.ExtractionConfig`; ``splits`` those of
    :class:`~tlkedro.imaging.splits.SplitConfig`.
    """

    seed: int = 7
    workers: PositiveInt | None = None
    splits: splitting.SplitConfig = splitting.SplitConfig()


def split_subjects(manifest: pd.DataFrame, params: PreprocessingParams) -> pd.DataFrame:
    """Assign every subject of the manifest to one split (see :mod:`tlkedro.imaging.splits`).

    Args:
        manifest: One row per usable scan.
        params: The preprocessing parameters.

    Returns:
        The split table: ``subject_id``, ``split``.
    """
    return splitting.split_subjects(manifest, params.splits, seed=params.seed)


def build_split_arrays(
    manifest: pd.DataFrame, splits: pd.DataFrame, params: PreprocessingParams, *, split: str
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """The model-input images (lazy: computed while the catalog writes them) and labels of one split.

    Args:
        manifest: One row per usable scan.
        splits: The split table; checked for leakage and staleness.
        params: The preprocessing parameters.
        split: Which split to build.

    Returns:
        The image stack, and one label row per image row (``subject_id``, ``age``, ``sex``, ``site``,
        ``slice``).
    """
    scans = splitting.select_split(manifest, splits, split)
    return build_model_input(scans, params, workers=params.workers, desc=f"{split} images")
