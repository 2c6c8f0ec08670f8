"""The report's hyperparameter-search section: the studies of the tuned variants (``kind: optuna``)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from tlkedro.tl.tuning import plot_studies, study_markdown


def report_studies(
    *trials: pd.DataFrame, names: list[str], metrics: dict[str, str], directions: dict[str, str]
) -> tuple[Figure, str]:
    """The optimisation-history plot and the markdown section of the studies, one per tuned variant."""
    studies = dict(zip(names, trials, strict=True))
    return plot_studies(studies, metrics), study_markdown(studies, metrics, directions)
