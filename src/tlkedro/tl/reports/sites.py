"""The held-out sites, each on its own: a metric per model and site (Kedro-agnostic: data in, data out).

The ``external`` split holds every held-out site's subjects (``preprocessing.splits.external_sites``); a
pooled metric would mix domains that shift differently, so the report gives each site its own row.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tlkedro.tl import evaluation
from tlkedro.tl.reports.tables import _plus_minus, _with_interval, markdown_table


def site_table(
    tables: Mapping[str, pd.DataFrame],
    sites: pd.Series,
    task: str,
    metric: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> pd.DataFrame:
    """Per model and site: the metric on that site's subjects, with its bootstrap interval.

    Args:
        tables: Predictions tables on the held-out split, by model. A cross-validated model's table
            stacks its fold models' predictions (``repeat`` and ``fold`` columns, every subject once per
            fold): its row is their mean ± std over folds, without an interval.
        sites: The site of each subject (``tlkedro.imaging.splits.subject_sites``), by subject id.
        task: ``regression`` or ``classification``.
        metric: The metric; ``None``: ``mae`` or ``auroc``.
        confidence, n_resamples, seed, method: As for ``evaluation.metric_interval``.

    Returns:
        One row per model and site (sites sorted): ``model``, ``site``, ``n_subjects``, ``metric``,
        ``estimate``, ``low``, ``high``, ``confidence``, ``fold_std``, ``folds`` (0 without folds).

    Raises:
        ValueError: A predicted subject has no site (the labels are older than the predictions).
    """
    metric = metric or evaluation.default_metric(task)
    index = sites.set_axis(sites.index.astype(str))
    rows = []
    for name, table in tables.items():
        site = table["subject_id"].astype(str).map(index)
        if site.isna().any():
            unknown = table.loc[site.isna(), "subject_id"].astype(str).unique()
            raise ValueError(
                f"{name}: {len(unknown)} predicted subjects have no site in the labels (e.g. "
                f"{', '.join(unknown[:5])}): the labels are older than the predictions; re-run both"
            )
        for value in sorted(site.unique()):
            part = table[site == value]
            row = {"model": name, "site": value, "metric": metric, "confidence": confidence}
            if "fold" in part.columns:
                # Each fold model predicts every subject: one "repeat" per fold model, so that
                # fold_summary scores each model on all of the site's subjects.
                runs = (
                    part.groupby(["repeat", "fold"]).ngroup() if "repeat" in part else part["fold"]
                )
                summary = evaluation.fold_summary(part.assign(repeat=runs), metric, task)
                row |= {
                    "n_subjects": part["subject_id"].nunique(),
                    "estimate": summary.mean,
                    "low": np.nan,
                    "high": np.nan,
                    "fold_std": summary.std,
                    "folds": summary.folds,
                }
            else:
                interval = evaluation.metric_interval(
                    part, metric, task, confidence, n_resamples, seed, method
                )
                row |= {
                    "n_subjects": interval.n,
                    "estimate": interval.estimate,
                    "low": interval.low,
                    "high": interval.high,
                    "fold_std": np.nan,
                    "folds": 0,
                }
            rows.append(row)
    columns = ["model", "site", "n_subjects", "metric", "estimate", "low", "high", "confidence"]
    return pd.DataFrame(rows, columns=[*columns, "fold_std", "folds"])


def site_markdown(table: pd.DataFrame, title: str, n_resamples: int, method: str) -> str:
    """``site_table`` as a markdown section: one row per model and site."""
    metric = table["metric"].iloc[0]
    level = f"{table['confidence'].iloc[0]:.0%}"
    shown = pd.DataFrame(
        {
            "model": table["model"],
            "site": table["site"],
            "subjects": table["n_subjects"],
            f"{metric} ({level} interval, or mean ± std over folds)": [
                _plus_minus(v.estimate, v.fold_std, v.folds)
                if v.folds
                else _with_interval(v.estimate, v.low, v.high)
                for v in table.itertuples(index=False)
            ],
        }
    )
    note = (
        f"Each held-out site on its own. Intervals: {method} bootstrap over the site's subjects "
        f"({n_resamples} resamples). A cross-validated variant gives the mean ± std of its fold models, "
        "each scored on all of the site's subjects."
    )
    return "\n".join([f"## {title}", "", markdown_table(shown), "", note, ""])
