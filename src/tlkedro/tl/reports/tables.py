"""Comparison and evaluation tables of the reports, and their markdown (Kedro-agnostic: data in, data out).

The evaluation report (``evaluation_table``, ``evaluation_markdown``) rests on ``tlkedro.tl.evaluation``: a
metric with its bootstrap interval per model, the paired difference to a reference model, per-fold
summaries and the quality flags; docs/evaluation.md says how to read it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tlkedro.tl import evaluation

#: Columns shown first in a comparison table, when present.
LEADING_COLUMNS = [
    "variant",
    "group",
    "architecture",
    "strategy",
    "init_from",
    "seed",
    "lr",
    "total_params",
    "trainable_params",
    "macs_per_image",
    "cpu_latency_ms",
    "file_size_bytes",
    "epochs_run",
    "fit_seconds",
]


def comparison_table(records: list[Mapping[str, object]]) -> pd.DataFrame:
    """One row per variant, the descriptive columns first, then the metrics in sorted order."""
    table = pd.DataFrame([dict(r) for r in records])
    leading = [c for c in LEADING_COLUMNS if c in table.columns]
    metrics = sorted(c for c in table.columns if c not in leading)
    return table[leading + metrics].reset_index(drop=True)


#: Complexity columns of a comparison table, averaged per group by ``group_comparison``.
COMPLEXITY_COLUMNS = ["total_params", "macs_per_image", "cpu_latency_ms"]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (``test/auroc``, ``val/loss``, ...) is better."""
    return metric.endswith(("auroc", "auprc", "accuracy", "r2", "pearson_r"))


def group_summary(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric per group (variants that differ only by seed)."""
    present = [m for m in metrics if m in table.columns]
    grouped = table.groupby("group", sort=False)[present]
    summary = grouped.agg(["mean", "std", "count"])
    summary.columns = [f"{metric} {stat}" for metric, stat in summary.columns]
    return summary.reset_index()


def group_comparison(table: pd.DataFrame, metrics: list[str], reference: str) -> pd.DataFrame:
    """Each group's metrics (mean, std, count over seeds) and complexity against a reference group.

    Args:
        table: A comparison table (``comparison_table``).
        metrics: Metric columns to aggregate, e.g. ``["test/auroc", "val/auprc"]``.
        reference: The group the others are compared with, e.g. ``full`` (full fine-tuning).

    Returns:
        One row per group, in the table's order: the ``group_summary`` columns, the mean of each
        complexity column, ``params_reduction`` and ``macs_reduction`` (the reference's value over the
        group's: 3.0 is three times fewer) and ``speedup`` (the reference's CPU latency over the group's).

    Raises:
        ValueError: If no variant belongs to ``reference``.
    """
    present = [c for c in COMPLEXITY_COLUMNS if c in table.columns]
    complexity = table.groupby("group", sort=False)[present].mean()
    if reference not in complexity.index:
        raise ValueError(
            f"reference group {reference!r} is not among the groups {list(complexity.index)}"
        )
    ratios = pd.DataFrame(index=complexity.index)
    for column, name in (
        ("total_params", "params_reduction"),
        ("macs_per_image", "macs_reduction"),
        ("cpu_latency_ms", "speedup"),
    ):
        if column in complexity:
            ratios[name] = complexity.loc[reference, column] / complexity[column]
    summary = group_summary(table, metrics).set_index("group")
    return summary.join(complexity).join(ratios).reset_index()


def rank_cutoffs(table: pd.DataFrame, cutoffs: Mapping[str, str], metric: str) -> pd.DataFrame:
    """Truncation cutoffs ranked by a metric's mean over the seeds of their group, best first.

    Args:
        table: A comparison table (``comparison_table``).
        cutoffs: The cutoff of each truncated variant, by variant (``{"finetune.ttl_layer3_0": "layer3"}``);
            variants of the table not named here are ignored, and variants named here but absent from
            the table have not run yet.
        metric: The selection metric, e.g. ``val/auprc`` (never a test metric: it would select on test).

    Returns:
        Columns ``cutoff``, ``group``, ``<metric> mean``, ``<metric> std``, ``<metric> count``; ties keep
        the table's order.

    Raises:
        ValueError: If the variants of one group have different cutoffs, which a mean would blur.
    """
    rows = table[table["variant"].isin(list(cutoffs))].assign(
        cutoff=lambda t: t["variant"].map(cutoffs)
    )
    mixed = rows.groupby("group")["cutoff"].nunique()
    if (mixed > 1).any():
        raise ValueError(
            f"groups {list(mixed[mixed > 1].index)} mix truncation cutoffs; give each its own group"
        )
    summary = group_summary(rows, [metric])
    summary.insert(0, "cutoff", summary["group"].map(rows.groupby("group")["cutoff"].first()))
    return summary.sort_values(
        f"{metric} mean", ascending=not higher_is_better(metric), kind="stable", ignore_index=True
    )


def _format(value: object) -> str:
    if value is None or pd.isna(value):  # e.g. init_from of a variant without a source model
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no optional dependency such as tabulate)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = [
        "| " + " | ".join(_format(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def markdown_report(
    title: str, table: pd.DataFrame, summary: pd.DataFrame, columns: list[str]
) -> str:
    """The comparison as a readable markdown document."""
    shown = [c for c in columns if c in table.columns]
    parts = [f"# {title}", "", "## Variants", "", markdown_table(table[shown]), ""]
    if summary["group"].nunique() < len(table):
        parts += ["## Groups (mean, std and count over seeds)", "", markdown_table(summary), ""]
    return "\n".join(parts)


BASELINE_PREFIX = "baseline."


def resolve_reference(names: list[str], reference: str | None) -> str | None:
    """The model ``reference`` names: an exact name, or the one whose last dotted part it is.

    ``scratch`` resolves to ``finetune.scratch``. ``None`` where ``reference`` is ``None`` or names
    none of the models.

    Raises:
        ValueError: ``reference`` matches several models.
    """
    if reference is None or reference in names:
        return reference
    matches = [name for name in names if name.split(".")[-1] == reference]
    if len(matches) > 1:
        raise ValueError(
            f"reference {reference!r} matches several models: {matches}; give the full name"
        )
    return matches[0] if matches else None


def evaluation_table(
    tables: Mapping[str, pd.DataFrame],
    task: str,
    metric: str | None = None,
    reference: str | None = "scratch",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
    covariate_baseline: str | None = None,
) -> pd.DataFrame:
    """Per model: the metric with its bootstrap interval, per-fold figures, the paired difference to a reference.

    Args:
        tables: Predictions tables (``tlkedro.tl.evaluation``) by model name; names starting with
            ``baseline.`` are baselines, the others variants.
        task: ``regression`` or ``classification``.
        metric: The metric with intervals; ``None``: ``mae`` or ``auroc``.
        reference: The model each is compared with (``resolve_reference``); ``None`` or a name of no
            model: no comparison.
        confidence: Confidence level of the intervals.
        n_resamples: Bootstrap resamples per interval.
        seed: Seed of the resampling.
        method: ``BCa`` or ``percentile``.
        covariate_baseline: The covariate-only baseline (``baseline.covariate``): where it is among
            ``tables``, each variant's paired difference to it is added as well, since a model given
            the covariate shows that its images add anything only by beating it.

    Returns:
        One row per model, variants first, in the given order: ``model``, ``kind`` (``variant`` or
        ``baseline``), ``n_subjects``, ``repeats``, ``metric``, ``estimate``, ``low``, ``high``,
        ``confidence``, ``fold_mean``, ``fold_std``, ``folds`` (NaN/0 without folds), ``reference``, ``difference``
        (model minus reference, on their shared subjects), ``difference_low``, ``difference_high``,
        ``verdict`` (``better than``, ``worse than`` or ``not distinguishable from`` the reference, as
        the interval says), ``fold_difference_mean``, ``fold_difference_std`` (per-fold differences,
        where both have the same folds), with ``covariate_baseline``: ``covariate_difference``,
        ``covariate_difference_low``, ``covariate_difference_high`` and ``covariate_verdict`` (NaN and
        ``""`` for baselines), then every metric of the task on the pooled predictions.
    """
    metric = metric or evaluation.default_metric(task)
    names = sorted(tables, key=lambda n: n.startswith(BASELINE_PREFIX))  # stable: variants first
    reference = resolve_reference(names, reference)
    settings = dict(confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
    rows = []
    for name in names:
        table = tables[name]
        interval = evaluation.metric_interval(table, metric, task, **settings)
        folds = (
            evaluation.fold_summary(table, metric, task)
            if "fold" in table.columns
            else evaluation.FoldSummary(metric, np.nan, np.nan, 0)
        )
        row = {
            "model": name,
            "kind": "baseline" if name.startswith(BASELINE_PREFIX) else "variant",
            "n_subjects": interval.n,
            "repeats": interval.repeats,
            "metric": metric,
            "estimate": interval.estimate,
            "low": interval.low,
            "high": interval.high,
            "confidence": confidence,
            "fold_mean": folds.mean,
            "fold_std": folds.std,
            "folds": folds.folds,
            "reference": reference,
        }
        row |= _comparison(tables, name, reference, metric, task, settings)
        if covariate_baseline in tables:
            versus = _comparison(
                tables,
                name,
                None if row["kind"] == "baseline" else covariate_baseline,
                metric,
                task,
                settings,
            )
            row |= {
                f"covariate_{key}": versus[key]
                for key in ("difference", "difference_low", "difference_high", "verdict")
            }
        rows.append(row | evaluation.metric_values(table, task))
    return pd.DataFrame(rows)


def _comparison(
    tables: Mapping[str, pd.DataFrame],
    name: str,
    reference: str | None,
    metric: str,
    task: str,
    settings: dict,
) -> dict[str, object]:
    empty = dict.fromkeys(
        [
            "difference",
            "difference_low",
            "difference_high",
            "fold_difference_mean",
            "fold_difference_std",
        ],
        np.nan,
    )
    if reference is None:
        return empty | {"verdict": ""}
    if name == reference:
        return empty | {"verdict": "reference"}
    model, ref = tables[name], tables[reference]
    difference = evaluation.paired_difference(
        model, ref, metric, task, names=(name, reference), **settings
    )
    result = empty | {
        "difference": difference.estimate,
        "difference_low": difference.low,
        "difference_high": difference.high,
        "verdict": difference.verdict(reference),
    }
    if "fold" in model.columns and "fold" in ref.columns:
        per_fold = evaluation.fold_differences(model, ref, metric, task, (name, reference))
        summary = evaluation.summarise_folds(per_fold["difference"], metric)
        result |= {"fold_difference_mean": summary.mean, "fold_difference_std": summary.std}
    return result


def _with_interval(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "undefined"
    if pd.isna(low):
        return f"{value:.3g} (no interval)"
    return f"{value:.3g} ({low:.3g} to {high:.3g})"


def _plus_minus(mean: float, std: float, folds: int) -> str:
    if folds == 0:
        return ""
    return f"{mean:.3g} ± {std:.2g} ({folds} folds)" if folds > 1 else f"{mean:.3g} (1 fold)"


def evaluation_markdown(
    table: pd.DataFrame,
    flags: list[str],
    title: str,
    n_resamples: int = 2000,
    method: str = "BCa",
    covariate: str | None = None,
) -> str:
    """The evaluation table (``evaluation_table``) and the flags as a markdown section.

    ``n_resamples`` and ``method`` are the ones the table was computed with, for its notes;
    ``covariate`` is the column of the ``baseline.covariate`` row, if any, named in a note.
    """
    metric = table["metric"].iloc[0]
    reference = table["reference"].iloc[0]
    level = f"{table['confidence'].iloc[0]:.0%}"
    shown = pd.DataFrame(
        {
            "model": table["model"],
            "kind": table["kind"],
            "subjects": table["n_subjects"],
            f"{metric} ({level} interval)": [
                _with_interval(*v)
                for v in table[["estimate", "low", "high"]].itertuples(index=False)
            ],
        }
    )
    if (table["folds"] > 0).any():
        shown[f"{metric} per fold (mean ± std)"] = [
            _plus_minus(*v)
            for v in table[["fold_mean", "fold_std", "folds"]].itertuples(index=False)
        ]
    if isinstance(reference, str):
        shown[f"difference to {reference} ({level} interval)"] = [
            ""
            if v.verdict == "reference"
            else _with_interval(v.difference, v.difference_low, v.difference_high)
            for v in table.itertuples(index=False)
        ]
        shown["verdict"] = table["verdict"]
    repeats = int(table["repeats"].max())
    notes = [
        f"Intervals: {method} bootstrap over subjects ({n_resamples} resamples; classes resampled "
        "separately), so they show how much the metric would move with another sample of subjects of "
        "this size."
    ]
    if isinstance(reference, str):
        notes.append(
            f"Differences to {reference} are paired: both models on the same resampled subjects. A "
            "verdict says better or worse only where the interval excludes 0."
        )
    if covariate is not None and (table["model"] == f"{BASELINE_PREFIX}covariate").any():
        notes.append(
            f"{BASELINE_PREFIX}covariate predicts from `{covariate}` alone; a variant that does not beat "
            "it may have learned no more than that covariate (for `head_scale`: head size)."
        )
    if repeats > 1:
        notes.append(
            f"Each subject's out-of-fold predictions are averaged over the {repeats} repeats before a "
            "pooled metric or interval is computed; the per-fold std is the spread between folds, not a "
            "standard error."
        )
    parts = [f"## {title}", "", markdown_table(shown), "", *notes, "", "### Flags", ""]
    parts += [f"- {flag}" for flag in flags] if flags else ["None."]
    return "\n".join([*parts, ""])
