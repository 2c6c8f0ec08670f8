"""Nodes of the reporting pipeline: thin wrappers over tlkedro.tl.reports and tlkedro.tl.evaluation."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from tlkedro.imaging.splits import subject_sites
from tlkedro.tl import evaluation, reports
from tlkedro.tl.strategies import STRATEGIES, truncation_candidates
from tlkedro.variants import deep_merge, expand_variants

logger = logging.getLogger(__name__)

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
    table = reports.comparison_table(list(records))
    if primary_metric in table:
        table = table.sort_values(
            primary_metric, ascending=not reports.higher_is_better(primary_metric), kind="stable"
        )
    metrics = [c for c in table.columns if "/" in c]
    summary = reports.group_summary(table, metrics)
    columns = REPORT_COLUMNS_FIRST + metrics
    return table, reports.markdown_report(title, table, summary, columns)


def plot_primary_metric(
    table: pd.DataFrame,
    *predictions: pd.DataFrame,
    names: list[str],
    metric: str,
    evaluation_params: dict[str, Any] | None = None,
) -> Figure:
    """The primary metric per variant, with its bootstrap interval over subjects.

    Intervals are drawn where the metric (``test/auroc``: ``auroc``) is one of ``tlkedro.tl.evaluation``'s
    for the predictions' task (classification where they have class probabilities).
    """
    params = EvaluationParams.model_validate(evaluation_params or {})
    name = metric.split("/")[-1]
    task = "classification" if evaluation.probability_columns(predictions[0]) else "regression"
    intervals = None
    if name in evaluation.METRICS[task]:
        intervals = {
            variant: _interval_ends(frame, name, task, params)
            for variant, frame in zip(names, predictions)
        }
    return reports.plot_metric_by_variant(
        table.set_index("variant").loc[names].reset_index(), metric, intervals
    )


def _interval_ends(
    frame: pd.DataFrame, metric: str, task: str, params: EvaluationParams
) -> tuple[float, float]:
    interval = evaluation.metric_interval(
        frame, metric, task, params.confidence, params.n_resamples, params.seed, params.method
    )
    return interval.low, interval.high


def plot_learning_curves(*histories: pd.DataFrame, names: list[str]) -> Figure:
    """Loss curves of every variant."""
    return reports.plot_learning_curves(dict(zip(names, histories)))


def plot_test_predictions(
    *predictions: pd.DataFrame, names: list[str], task: str, target: str
) -> Figure:
    """ROC curves for classification, predicted against true values for regression."""
    by_variant = dict(zip(names, predictions))
    if task == "classification":
        return reports.plot_roc_curves(by_variant, title=f"{target}: ROC on the test split")
    return reports.plot_predicted_vs_true(by_variant, quantity=target)


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
    ranking = reports.rank_cutoffs(comparison, cutoffs, search.metric)
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
    table = reports.group_comparison(comparison, search.metrics, search.reference_group)
    return {"run": run}, _cutoff_search_markdown(table, ranking, stage1, around, search)


def _stage2_sweeps(
    cutoffs: list[str], template: dict[str, Any], seeds: list[int], prefix: str
) -> dict[str, dict[str, Any]]:
    """One grid sweep over ``seeds`` per cutoff, otherwise configured as the variant ``template``."""
    sweeps = {}
    for cutoff in cutoffs:
        name = prefix + cutoff.replace(".", "_")
        base = {key: value for key, value in template.items() if key != "seed"}
        if "strategy" in base:  # an old name of cut_at (cutoff) in the template would clash with it
            kwargs = STRATEGIES.canonical_kwargs("truncated", base["strategy"].get("kwargs", {}))
            base["strategy"] = {**base["strategy"], "kwargs": kwargs}
        sweeps[name] = {
            "kind": "grid",
            "overrides": deep_merge(
                base, {"strategy": {"kwargs": {"cut_at": cutoff}}, "group": name}
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
        reports.markdown_table(groups),
        "",
        f"## Stage 1: stage cutoffs by {metric}",
        "",
        reports.markdown_table(stage1),
        "",
        f"Best stage: `{best_stage}`.",
        "",
        f"## Stage 2: around `{best_stage}` ({', '.join(f'`{c}`' for c in around)})",
        "",
        reports.markdown_table(stage2),
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


class EvaluationParams(BaseModel):
    """``reporting.evaluation``: intervals, paired comparisons, baselines and flags (docs/evaluation.md).

    Attributes:
        confidence: Confidence level of every interval.
        n_resamples: Bootstrap resamples per interval.
        method: ``BCa`` (bias-corrected and accelerated) or ``percentile``.
        seed: Seed of the resampling and of the baselines' inner folds.
        small_sample: Metrics on fewer subjects than this are flagged.
        reference: The model every other is compared with (``scratch`` matches ``finetune.scratch``;
            a baseline such as ``baseline.linear`` works too); null for none; or one per training
            pipeline, ``{pretrain: baseline.linear, finetune: scratch}``.
        baselines: Baseline kinds fitted on the same splits or folds (``trivial``, ``linear``,
            ``covariate``).
        covariate: The covariate baseline's label column (a head-size proxy); skipped where absent.
        pooled_size: Voxels per spatial axis of the linear baseline's downsampled images.
        inner_folds: Folds of the logistic baseline's inner cross-validation.
    """

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(0.95, gt=0, lt=1)
    n_resamples: PositiveInt = 2000
    method: Literal["BCa", "percentile"] = "BCa"
    seed: int = 0
    small_sample: PositiveInt = 30
    reference: str | dict[str, str | None] | None = "scratch"
    baselines: list[Literal["trivial", "linear", "covariate"]] = list(evaluation.BASELINE_KINDS)
    covariate: str = evaluation.DEFAULT_COVARIATE
    pooled_size: PositiveInt = 8
    inner_folds: int = Field(5, ge=2)


def for_pipeline(evaluation_params: dict[str, Any], pipeline: str) -> dict[str, Any]:
    """``reporting.evaluation`` with the reference of one training pipeline, where it is given per pipeline."""
    reference = evaluation_params.get("reference", "scratch")
    if isinstance(reference, dict):
        return {**evaluation_params, "reference": reference.get(pipeline)}
    return evaluation_params


def _long_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame({"model": pd.Series(dtype=str)})
    return pd.concat(
        [table.assign(model=f"{reports.BASELINE_PREFIX}{kind}") for kind, table in tables.items()],
        ignore_index=True,
    )


def compute_split_baselines(
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    test_images: np.ndarray,
    test_labels: pd.DataFrame,
    *,
    task: str,
    target: str,
    evaluation_params: dict[str, Any],
) -> pd.DataFrame:
    """The baselines fitted on one split (e.g. ``finetune``) and predicting another (``test``).

    Returns:
        Their predictions tables stacked, with a ``model`` column (``baseline.<kind>``); a ``covariate``
        baseline whose column the labels lack is left out with a warning.
    """
    params = EvaluationParams.model_validate(evaluation_params)
    tables = {}
    for kind in params.baselines:
        try:
            tables[kind] = evaluation.baseline_predictions(
                kind,
                train_images,
                train_labels,
                test_images,
                test_labels,
                task,
                target,
                params.covariate,
                params.pooled_size,
                params.inner_folds,
                params.seed,
            )
        except evaluation.MissingCovariateError as error:
            logger.warning("covariate baseline skipped: %s", error)
    return _long_table(tables)


def compute_cross_validated_baselines(
    images: np.ndarray,
    labels: pd.DataFrame,
    folds: pd.DataFrame,
    *,
    task: str,
    target: str,
    evaluation_params: dict[str, Any],
) -> pd.DataFrame:
    """The baselines' out-of-fold predictions on the models' folds, stacked with a ``model`` column."""
    params = EvaluationParams.model_validate(evaluation_params)
    tables = evaluation.cross_validated_baselines(
        images,
        labels,
        folds,
        task,
        target,
        params.baselines,
        params.covariate,
        params.pooled_size,
        params.inner_folds,
        params.seed,
    )
    return _long_table(tables)


def report_evaluation(
    baselines: pd.DataFrame,
    *predictions: pd.DataFrame,
    names: list[str],
    task: str,
    target: str,
    evaluation_params: dict[str, Any],
    title: str,
    metric: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """The evaluation table (CSV) and its markdown section, the baselines beside the variants, with flags.

    Args:
        baselines: Stacked baseline predictions (``compute_split_baselines`` or
            ``compute_cross_validated_baselines``).
        predictions: One predictions table per variant (test-split or out-of-fold), in ``names`` order.
        names: The variants' names (``finetune.full``).
        task: ``regression`` or ``classification``.
        target: The target column's name.
        evaluation_params: ``reporting.evaluation`` (``EvaluationParams``).
        title: The markdown section's title.
        metric: The metric with intervals, with or without a split prefix (``test/auroc`` or
            ``auroc``); ``None``: ``mae`` or ``auroc``.
    """
    params = EvaluationParams.model_validate(evaluation_params)
    metric = metric.split("/")[-1] if metric else None
    if len(names) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions tables for {len(names)} names {names}")
    tables = dict(zip(names, predictions)) | evaluation.split_models(baselines)
    settings = dict(
        confidence=params.confidence,
        n_resamples=params.n_resamples,
        seed=params.seed,
        method=params.method,
    )
    table = reports.evaluation_table(
        tables,
        task,
        metric,
        params.reference,
        covariate_baseline=f"{reports.BASELINE_PREFIX}covariate",
        **settings,
    )
    flags = evaluation.quality_flags(
        tables, task, target, metric, evaluation.TRIVIAL, params.small_sample, **settings
    )
    markdown = reports.evaluation_markdown(
        table, flags, title, params.n_resamples, params.method, params.covariate
    )
    return table, markdown


def report_classes(
    labels: pd.DataFrame,
    *predictions: pd.DataFrame,
    names: list[str],
    target: str,
    evaluation_params: dict[str, Any],
    title: str,
) -> tuple[pd.DataFrame, pd.DataFrame, Figure, str]:
    """Per-class metrics with intervals and the confusion matrices of classification variants.

    Args:
        labels: The training split's labels: class names from its ``<target>_name`` column, if any.
        predictions: One predictions table per variant, in ``names`` order.
        names: The variants' names.
        target: The target column's name.
        evaluation_params: ``reporting.evaluation`` (intervals' confidence, resamples, seed, method).
        title: The markdown section's title.

    Returns:
        The per-class table, the confusion matrices (long form), their figure and the markdown section.
    """
    params = EvaluationParams.model_validate(evaluation_params)
    tables = dict(zip(names, predictions, strict=True))
    num_classes = len(evaluation.probability_columns(predictions[0])) or 0
    num_classes = max(num_classes, 2)  # `probability` alone is class 1 of two
    classes = reports.class_names(labels, target, num_classes)
    settings = dict(
        confidence=params.confidence,
        n_resamples=params.n_resamples,
        seed=params.seed,
        method=params.method,
    )
    per_class = reports.per_class_table(tables, classes, **settings)
    confusion = reports.confusion_table(tables, classes)
    figure = reports.plot_confusion_matrices(reports.confusion_matrices(confusion))
    markdown = reports.class_markdown(
        per_class, confusion, title, params.confidence, params.n_resamples, params.method
    )
    return per_class, confusion, figure, markdown


def report_head_size(
    labels: pd.DataFrame,
    evaluation_table: pd.DataFrame,
    images: np.ndarray | None = None,
    *,
    covariates: dict[str, list[str]],
    evaluation_params: dict[str, Any],
) -> str:
    """The report's head-size section: per variant whether head size is controlled, beside the baseline.

    Args:
        labels: The variants' training labels (``head_scale`` tells how the scans were registered).
        evaluation_table: ``report_evaluation``'s table.
        images: The variants' training images: ``(N, ROIs, T)`` ROI time series skip the section, with
            a line saying why.
        covariates: Each variant's ``covariates``, by name.
        evaluation_params: ``reporting.evaluation`` (its ``covariate`` column).
    """
    if images is not None and images.ndim == 3:
        return (
            "### Head size\n\nNot applicable: the inputs are ROI time series (`(subjects, ROIs, time "
            "points)`), which show no head and carry no head scale (`head_scale` is empty), so there "
            "is nothing to control and no head-size baseline.\n"
        )
    column = EvaluationParams.model_validate(evaluation_params).covariate
    head_scale = labels[column] if column in labels else np.full(len(labels), np.nan)
    status = evaluation.head_size_status(head_scale, covariates, column)
    for name, (state, reason) in status.items():
        logger.info("%s: head size %s: %s", name, state, reason)
    return evaluation.head_size_markdown(
        status, evaluation_table, f"{reports.BASELINE_PREFIX}covariate", column
    )


def plot_training_size_curve(
    evaluation_table: pd.DataFrame,
    *records: dict[str, Any],
    models: list[str],
    lines: dict[str, str],
) -> Figure:
    """The data-size ablation: metric against target training subjects per setting, with intervals.

    Args:
        evaluation_table: ``report_evaluation``'s table.
        records: The training runs' records (``<namespace>.metrics``; a cross-validated variant's one per
            fold), each with ``n_train_subjects``.
        models: The model (variant) of each record, in order; a model's size is the mean over its runs.
        lines: The line (e.g. strategy) of each model, by name.

    Raises:
        ValueError: A record lacks ``n_train_subjects`` (it was written before the count was recorded:
            re-run that variant).
    """
    if len(models) != len(records):
        raise ValueError(f"{len(records)} run records for {len(models)} models")
    stale = [model for model, record in zip(models, records) if "n_train_subjects" not in record]
    if stale:
        raise ValueError(
            f"the records of {sorted(set(stale))} lack n_train_subjects: re-run those variants"
        )
    sizes = pd.Series([r["n_train_subjects"] for r in records], index=models, dtype=float)
    train_sizes = sizes.groupby(level=0, sort=False).mean().to_dict()
    return reports.plot_metric_by_training_size(evaluation_table, train_sizes, lines)


def report_external_sites(
    labels: pd.DataFrame,
    *predictions: pd.DataFrame,
    models: list[str],
    task: str,
    evaluation_params: dict[str, Any],
    title: str,
    metric: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """Each held-out site on its own: the metric per model and site (CSV) and its markdown section.

    Args:
        labels: ``external_labels``: the site of every external subject.
        predictions: The models' predictions on ``external``, in ``models`` order; a cross-validated
            variant has one table per fold model, stacked.
        models: The model of each predictions table.
        task: ``regression`` or ``classification``.
        evaluation_params: ``reporting.evaluation`` (``EvaluationParams``).
        title: The markdown section's title.
        metric: The metric, with or without a split prefix; ``None`` or one the task lacks: ``mae`` or
            ``auroc``.
    """
    params = EvaluationParams.model_validate(evaluation_params)
    if len(models) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions tables for {len(models)} models")
    name = metric.split("/")[-1] if metric else None
    stacked: dict[str, list[pd.DataFrame]] = {}
    for model, frame in zip(models, predictions):
        stacked.setdefault(model, []).append(frame)
    table = reports.site_table(
        {model: pd.concat(frames, ignore_index=True) for model, frames in stacked.items()},
        subject_sites(labels),
        task,
        name if name in evaluation.METRICS[task] else None,
        confidence=params.confidence,
        n_resamples=params.n_resamples,
        seed=params.seed,
        method=params.method,
    )
    return table, reports.site_markdown(table, title, params.n_resamples, params.method)


def join_reports(*sections: str) -> str:
    """One markdown report from its sections (the comparison, then the evaluation), in order."""
    return "\n\n".join(section.strip() for section in sections) + "\n"
