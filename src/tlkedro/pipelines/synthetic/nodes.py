"""Node of the synthetic pipeline: a thin wrapper around ``tlkedro.imaging.synthetic``."""

from __future__ import annotations

from collections.abc import Callable

import nibabel as nib
import pandas as pd

from tlkedro.imaging.labels import TISSUE_LABELS, derivative_description, lookup_table
from tlkedro.imaging.synthetic import (
    SyntheticCohortParams,
    cohort_metadata,
    cohort_recipes,
    draw_cohort,
    label_map_recipes,
)


def generate_synthetic_cohort(
    params: SyntheticCohortParams,
) -> tuple[dict[str, Callable[[], nib.Nifti1Image | pd.DataFrame]], pd.DataFrame]:
    """Draw the cohort and describe its images (or time series), without rendering them.

    Args:
        params: The ``synthetic`` parameters.

    Returns:
        One recipe per subject keyed by its relative image (or series) path (``synthetic_images`` renders and writes
        them in parallel), and the metadata table with the labels and the ground truth.
    """
    # Kedro validates typed parameters in a session; a bare runner hands over the raw dictionary.
    params = SyntheticCohortParams.model_validate(params)
    subjects = draw_cohort(params)
    return cohort_recipes(subjects, params), cohort_metadata(subjects, params.metadata_layout)


def generate_synthetic_cohort_with_label_maps(
    params: SyntheticCohortParams,
) -> tuple[
    dict[str, Callable[[], nib.Nifti1Image | pd.DataFrame]],
    pd.DataFrame,
    dict[str, Callable[[], nib.Nifti1Image]],
    pd.DataFrame,
    dict,
]:
    """:func:`generate_synthetic_cohort` plus each subject's tissue label map (``synthetic.label_maps``).

    Returns:
        The recipes of the images, the metadata table, one recipe per label map keyed by its relative
        path (``synthetic_label_maps`` renders them), the label lookup (BIDS ``dseg.tsv``: ``index``,
        ``name``) and the ``dataset_description.json`` of the label maps' BIDS derivative dataset.
    """
    params = SyntheticCohortParams.model_validate(params)
    subjects = draw_cohort(params)
    return (
        cohort_recipes(subjects, params),
        cohort_metadata(subjects, params.metadata_layout),
        label_map_recipes(subjects, params),
        lookup_table(TISSUE_LABELS),
        derivative_description("tissue_labels", "tlkedro synthetic cohort"),
    )
