"""Whether a model could use head size, stated per model, beside the head-size-only baseline.

Head size predicts sex well (and age a little), so a sex classifier's AUROC means little until one knows
whether the model could see it. Spatial normalisation decides that for the images: an affine
registration scales every brain to the template (``head_scale``, the determinant of its linear part,
varies between subjects, and the images no longer show it); a rigid one keeps each brain's size
(``head_scale`` is 1); without registration by the pipeline (``head_scale`` missing) the pipeline cannot
tell. A model given ``head_scale`` as a covariate (``TrainConfig.covariates``) sees head size whatever
the images show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

CONTROLLED = "controlled"
NOT_CONTROLLED = "not controlled"
UNKNOWN = "unknown"


def head_size_status(
    head_scale: pd.Series | np.ndarray,
    covariates: Mapping[str, Sequence[str]],
    column: str = "head_scale",
) -> dict[str, tuple[str, str]]:
    """Per model, whether head size is controlled, and why.

    Args:
        head_scale: The ``head_scale`` label of the models' training rows (NaN where the pipeline did not
            register the scan).
        covariates: Each model's covariate columns (``TrainConfig.covariates``), by model name.
        column: The head-size covariate's column.

    Returns:
        ``{model: (status, reason)}`` with status ``controlled``, ``not controlled`` or ``unknown``.
    """
    values = pd.to_numeric(pd.Series(np.asarray(head_scale, dtype=float)), errors="coerce")
    if values.isna().all():
        images = (
            UNKNOWN,
            "the pipeline registered none of these inputs (`spatial_normalisation.method: none`, 2D "
            "image folders, time series): unless scans were affine-registered before ingestion, they "
            "show head size",
        )
    elif values.isna().any():
        images = (
            UNKNOWN,
            f"`{column}` is missing for {int(values.isna().sum())} of {len(values)} rows: some scans "
            "were not registered, and those show head size",
        )
    elif np.allclose(values, values.iloc[0]):
        images = (
            NOT_CONTROLLED,
            f"`{column}` is {values.iloc[0]:.3g} for every scan: a rigid registration keeps each "
            "brain's size, so the images show head size",
        )
    else:
        images = (
            CONTROLLED,
            f"the affine registration scaled every brain to the template (`{column}` "
            f"{values.min():.2f} to {values.max():.2f}), so the images do not show head size, and the "
            "model is not given it",
        )
    return {
        model: (
            (NOT_CONTROLLED, f"the model is given `{column}` (head size) as an input")
            if column in columns
            else images
        )
        for model, columns in covariates.items()
    }


def head_size_markdown(
    status: Mapping[str, tuple[str, str]],
    evaluation_table: pd.DataFrame,
    covariate_model: str,
    column: str = "head_scale",
) -> str:
    """The head-size section of a report: each model's status and metric beside the head-size baseline.

    Args:
        status: ``head_size_status``.
        evaluation_table: The report's evaluation table (``model``, ``metric``, ``estimate``, ``low``,
            ``high``, ``confidence``, and the paired differences to ``covariate_model``:
            ``covariate_difference``, ``covariate_difference_low``, ``covariate_difference_high``,
            ``covariate_verdict``, where it was computed); a table without ``covariate_model`` says the
            baseline is missing.
        covariate_model: The head-size-only baseline's model name (``baseline.covariate``).
        column: The head-size covariate's column.
    """
    rows = evaluation_table.set_index("model")
    metric = evaluation_table["metric"].iloc[0]
    level = f"{evaluation_table['confidence'].iloc[0]:.0%}"
    baseline = covariate_model in rows.index

    def figure(model: str) -> str:
        if model not in rows.index:
            return "not evaluated here"
        row = rows.loc[model]
        return f"{row['estimate']:.3g} ({row['low']:.3g} to {row['high']:.3g})"

    def versus(model: str) -> str:
        if model not in rows.index or "covariate_verdict" not in rows.columns:
            return "not computed"
        row = rows.loc[model]
        estimate = f"{row['covariate_difference']:+.3g}"
        interval = (
            f"{row['covariate_difference_low']:.3g} to {row['covariate_difference_high']:.3g}"
        )
        return f"{estimate} ({interval}): {row['covariate_verdict']}"

    header = f"| model | head size | why | {metric} ({level} interval) |"
    if baseline:
        header += f" difference to {covariate_model} ({level} interval) |"
    lines = ["### Head size", "", header, "|---|---|---|---|" + ("---|" if baseline else "")]
    for model, (state, reason) in status.items():
        line = f"| {model} | **{state}** | {reason} | {figure(model)} |"
        lines.append(line + (f" {versus(model)} |" if baseline else ""))
    if not baseline:
        lines += [
            "",
            f"No head-size-only baseline: the labels have no `{column}` (or `covariate` is not among "
            "`reporting.evaluation.baselines`).",
        ]
        return "\n".join([*lines, ""])
    lines.append(
        f"| {covariate_model} | the only input | `{column}` alone (head size) | "
        f"{figure(covariate_model)} | reference |"
    )
    lines += [
        "",
        f"A model whose head size is controlled cannot have learned it; one given `{column}` can, and "
        f"has to beat {covariate_model} (head size alone) to show that the images add anything "
        "(paired difference on the same subjects; a verdict says better or worse only where its "
        "interval excludes 0).",
    ]
    if "covariate_verdict" in rows.columns:
        for model, (state, _) in status.items():
            if state == NOT_CONTROLLED and model in rows.index:
                better = rows.loc[model, "covariate_verdict"].startswith("better")
                adds = "the images add to it" if better else "no evidence that the images add to it"
                lines.append(f"- {model} against head size alone: {versus(model)}: {adds}.")
    return "\n".join([*lines, ""])
