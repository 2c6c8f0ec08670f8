"""Nodes of the reporting pipeline: thin wrappers over tlkedro.reporting."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from tlkedro import reporting
from tlkedro.tl.strategies import truncation_candidates
from tlkedro.variants import deep_merge, expand_variants

REPORT_COLUMNS_FIRST = [
    "variant",
    "strategy",
    "init_from",
    "seed",
    "trainable_params",
    "total_params",
    "macs_per_image",
    "cpu_latency_ms",
    "file_size_bytes",
]


def compare_variants(
    *records: dict[str, Any], title: str, primary_metric: str
) -> tuple[pd.DataFrame, str]:
    """The comparison table (CSV) and its markdown report, best variant first."""
    table = reporting.comparison_table(list(records))
    if primary_metric in table:
        table = table.sort_values(
            primary_metric, ascending=not reporting.higher_is_better(primary_metric), kind="stable"
        )
    metrics = [c for c in table.columns if "/" in c]
    summary = reporting.group_summary(table, metrics)
    columns = REPORT_COLUMNS_FIRST + metrics
    return table, reporting.markdown_report(title, table, summary, columns)


def plot_primary_metric(
    table: pd.DataFrame, *predictions: pd.DataFrame, names: list[str], metric: str
) -> Figure:
    """The primary metric per variant, with bootstrap intervals for classification predictions."""
    intervals = None
    if all("probability" in frame for frame in predictions):
        intervals = dict(zip(names, (reporting.bootstrap_interval(frame) for frame in predictions)))
    return reporting.plot_metric_by_variant(
        table.set_index("variant").loc[names].reset_index(), metric, intervals
    )


def plot_learning_curves(*histories: pd.DataFrame, names: list[str]) -> Figure:
    """Loss curves of every variant."""
    return reporting.plot_learning_curves(dict(zip(names, histories)))


def plot_test_predictions(
    *predictions: pd.DataFrame, names: list[str], task: str, target: str
) -> Figure:
    """ROC curves for classification, predicted against true values for regression."""
    by_variant = dict(zip(names, predictions))
    if task == "classification":
        return reporting.plot_roc_curves(by_variant, title=f"{target}: ROC on the test split")
    return reporting.plot_predicted_vs_true(by_variant, quantity=target)


class CutoffSearchParams(BaseModel):
    """``reporting.cutoff_search``: TruncatedTL's two-stage cutoff search over the finetune variants.

    Attributes:
        metric: What selects the cutoff; a validation metric, so that the test split stays unseen.
        reference_group: The group the others' complexity is compared with (full fine-tuning).
        stage2_prefix: Prefix of the stage-2 sweep and group names (``ttl2_layer3_0``).
        metrics: The metrics shown per group, mean and std over seeds.
    """

    model_config = ConfigDict(extra="forbid")

    metric: str = "val/auprc"
    reference_group: str = "full"
    stage2_prefix: str = "ttl2_"
    metrics: list[str] = ["test/auroc", "test/auprc", "external/auroc", "val/auprc"]


def plan_cutoff_search(
    comparison: pd.DataFrame,
    *,
    cutoffs: dict[str, str],
    overrides: dict[str, dict[str, Any]],
    architecture: dict[str, Any],
    search: CutoffSearchParams,
) -> tuple[dict[str, Any], str]:
    """Pick the best stage cutoff (stage 1) and write the sweep around it (stage 2) as a run config.

    Args:
        comparison: The finetune comparison table.
        cutoffs: The cutoff of every ``truncated`` finetune variant, by namespace.
        overrides: Those variants' overrides of the finetune base, by namespace.
        architecture: Their ``architecture`` parameters (``{"name": ..., "kwargs": {...}}``).
        search: The search's parameters.

    Returns:
        A ``kedro run --config`` file whose ``params`` add the stage-2 sweeps (the cutoffs around the
        best stage that stage 1 did not run, with the seeds and settings of the best stage's group) and
        whose ``from_nodes`` run them and the reports after them; and a markdown report of both stages.
    """
    ranking = reporting.rank_cutoffs(comparison, cutoffs, search.metric)
    stages = truncation_candidates(architecture["name"], **architecture.get("kwargs", {}))
    stage1 = ranking[ranking["cutoff"].isin(stages)]
    if stage1.empty:
        raise ValueError(
            f"cutoff search: no finetune variant truncated at a stage ({', '.join(stages)}) has run"
        )
    best = stage1.iloc[0]
    around = truncation_candidates(
        architecture["name"], best["cutoff"], **architecture.get("kwargs", {})
    )
    template = next(
        overrides[v] for v in comparison.loc[comparison["group"] == best["group"], "variant"]
    )
    seeds = sorted(
        int(seed) for seed in comparison.loc[comparison["group"] == best["group"], "seed"]
    )
    sweeps = _stage2_sweeps(
        [c for c in around if c not in stages], template, seeds, search.stage2_prefix
    )
    first_nodes = [
        f"finetune.{name}.{node}"
        for name in expand_variants({"sweeps": sweeps}, "finetune")
        for node in ("record_run", "train")
    ]
    # Nothing to refine (no blocks around the best stage): re-running the reports is all that is left.
    run = (
        {"params": {"finetune": {"sweeps": sweeps}}, "from_nodes": ",".join(first_nodes)}
        if sweeps
        else {"pipelines": "reporting"}
    )
    table = reporting.group_comparison(comparison, search.metrics, search.reference_group)
    return {"run": run}, _cutoff_search_markdown(table, ranking, stage1, around, search)


def _stage2_sweeps(
    cutoffs: list[str], template: dict[str, Any], seeds: list[int], prefix: str
) -> dict[str, dict[str, Any]]:
    """One grid sweep over ``seeds`` per cutoff, otherwise configured as the variant ``template``."""
    sweeps = {}
    for cutoff in cutoffs:
        name = prefix + cutoff.replace(".", "_")
        base = {key: value for key, value in template.items() if key != "seed"}
        sweeps[name] = {
            "kind": "grid",
            "overrides": deep_merge(
                base, {"strategy": {"kwargs": {"cutoff": cutoff}}, "group": name}
            ),
            "grid": {"seed": list(seeds)},  # a list per sweep: a shared one would be a YAML alias
        }
    return sweeps


def _cutoff_search_markdown(
    groups: pd.DataFrame,
    ranking: pd.DataFrame,
    stage1: pd.DataFrame,
    around: list[str],
    search: CutoffSearchParams,
) -> str:
    best_stage, metric = stage1["cutoff"].iloc[0], search.metric
    stage2 = ranking[ranking["cutoff"].isin(around)]
    pending = [c for c in around if c not in set(ranking["cutoff"])]
    best = ranking.iloc[0]
    parts = [
        "# TruncatedTL cutoff search",
        "",
        f"## Groups (mean and std over seeds; complexity against `{search.reference_group}`)",
        "",
        reporting.markdown_table(groups),
        "",
        f"## Stage 1: stage cutoffs by {metric}",
        "",
        reporting.markdown_table(stage1),
        "",
        f"Best stage: `{best_stage}`.",
        "",
        f"## Stage 2: around `{best_stage}` ({', '.join(f'`{c}`' for c in around)})",
        "",
        reporting.markdown_table(stage2),
        "",
    ]
    if pending:
        parts += [
            f"Not run yet: {', '.join(f'`{c}`' for c in pending)}. Run them with "
            "`kedro run --env <env> --config data/08_reporting/cutoff_search_stage2.yml`.",
            "",
        ]
    parts += [
        f"Best cutoff so far: `{best['cutoff']}` ({metric} {best[f'{metric} mean']:.4g} "
        f"± {best[f'{metric} std']:.2g} over {best[f'{metric} count']} seeds).",
        "",
    ]
    return "\n".join(parts)
