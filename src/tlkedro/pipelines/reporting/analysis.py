"""Analysis sections of the pretrain and finetune reports: energy per training phase, SVCCA per stage with
a suggested truncation point, and saliency maps.

Thin nodes over ``tlkedro.tl.analysis`` (``energy``, ``svcca``, ``saliency``); :func:`analysis_nodes`
builds them from the experiment plan and ``reporting``'s ``energy`` and ``analysis`` parameters. Each
section is a markdown dataset (``<pipeline>_<section>_markdown``, :data:`REPORT_SECTIONS`) that the
reporting pipeline joins into ``<pipeline>_report``.

A cross-validated variant is analysed on its first fold: the fold's model (against its source's model of
the same fold, or the one source model), on that fold's held-out subjects. Its energy is summed over
all its folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from kedro.pipeline import Node
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from tlkedro.imaging.folds import fold_subjects
from tlkedro.pipelines import bind
from tlkedro.pipelines.reporting.nodes import EvaluationParams, for_pipeline
from tlkedro.pipelines.training.nodes import CV_SPLIT
from tlkedro.pipelines.training.pipeline import FOLDS
from tlkedro.plan import (
    TRAINING_PIPELINES,
    ExperimentPlan,
    Fold,
    PlanError,
    TrainingVariant,
    format_validation_error,
)
from tlkedro.tl import reports
from tlkedro.tl.analysis.energy import PowerModel, training_energy
from tlkedro.tl.analysis.saliency import (
    SALIENCY_METHODS,
    class_mean_maps,
    label_correlation_map,
    plot_mean_maps,
    plot_saliency_overlays,
    roi_importance,
    saliency_maps,
)
from tlkedro.tl.analysis.svcca import (
    CUTOFF_RULES,
    plot_svcca_by_stage,
    suggest_cutoff,
    svcca_by_stage,
)
from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.labels import target_values

# The analysis sections of a report, in the order they are joined after the comparison and evaluation.
REPORT_SECTIONS = ("energy", "svcca", "saliency")


class EnergyParams(PowerModel):
    """``reporting.energy``: the power model of every training run (as ``dapt.energy``) and the carbon
    intensity that turns its energy into emissions.

    Attributes:
        carbon_intensity_g_per_kwh: Grams of CO2-equivalent per kWh of the grid the runs draw from;
            475 is Green Algorithms' world average (Lannelongue et al. 2021). Set your grid's.
    """

    carbon_intensity_g_per_kwh: float = Field(475.0, ge=0)


class SvccaParams(BaseModel):
    """``reporting.analysis.svcca``: SVCCA similarity per encoder stage of each finetune variant to its
    pretrain source, and the suggested truncation point (``tlkedro.tl.analysis.svcca``).

    Attributes:
        enabled: Compute it.
        max_samples: Data points per stage (positions drawn across the images).
        max_images: Images of the evaluated split used at most (evenly spaced rows of it).
        rule: ``suggest_cutoff``'s rule: ``largest_drop`` or ``threshold``.
        threshold: The ``threshold`` rule's similarity.
        seed: Seed of the position draws.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_samples: PositiveInt = 4096
    max_images: PositiveInt = 256
    rule: Literal[CUTOFF_RULES] = "largest_drop"
    threshold: float | None = Field(None, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _threshold_rule_has_a_threshold(self) -> SvccaParams:
        if self.rule == "threshold" and self.threshold is None:
            raise ValueError("rule `threshold` needs `threshold` (a similarity in (0, 1])")
        return self


class SaliencyParams(BaseModel):
    """``reporting.analysis.saliency``: saliency maps of chosen variants (``tlkedro.tl.analysis.saliency``).

    Attributes:
        enabled: Compute them.
        method: ``grad_cam`` or ``integrated_gradients``.
        layer: Grad-CAM's encoder stage; ``null``: the last one. A mid stage (``layer3`` of resnet18)
            keeps a map coarser than the input but finer than the last stage's, which is 1x1 or 2x2 on
            small slices and cannot localise.
        variants: Namespaces to explain (``finetune.full``); ``null``: per pipeline, the variant that
            ``reporting.evaluation.reference`` names, else the pipeline's first variant.
        n_subjects: Subjects whose map is overlaid on their image.
        max_images: Images of the evaluated split (evenly spaced rows) averaged into the class-mean maps
            (classification) or correlated with the target (regression).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    method: Literal[SALIENCY_METHODS] = "grad_cam"
    layer: str | None = "layer3"
    variants: list[str] | None = None
    n_subjects: PositiveInt = 4
    max_images: PositiveInt = 128


class AnalysisParams(BaseModel):
    """``reporting.analysis``."""

    model_config = ConfigDict(extra="forbid")

    svcca: SvccaParams = SvccaParams()
    saliency: SaliencyParams = SaliencyParams()


def _validated(model: type[BaseModel], raw: Mapping[str, Any] | None, key: str) -> Any:
    try:
        return model.model_validate(raw or {})
    except ValidationError as error:
        raise PlanError(f"Invalid parameters:\n{format_validation_error(error, key)}") from None


# --- node functions -------------------------------------------------------------------------------


def report_energy(
    *runs: Any, pipeline: str, names: list[str], variants: list[str], power: EnergyParams
) -> tuple[pd.DataFrame, str]:
    """Energy and emissions per training phase of every run, and their sum per variant as markdown.

    Args:
        runs: Each run's record (``<run>.config``), history and training summary, run after run.
        pipeline: The training pipeline, for the section's text.
        names: The runs (a variant's namespace, or a fold's: ``finetune.full.fold_0``).
        variants: The variant of each run (a cross-validated variant has one run per fold).
        power: The power model and carbon intensity.

    Returns:
        One row per run and phase (``variant``, ``run``, ``training_energy``'s columns and
        ``emissions_kg``), and the report section.
    """
    if len(runs) != 3 * len(names):
        raise ValueError(f"{len(names)} runs need 3 inputs each, got {len(runs)}")
    tables = []
    for i, (name, variant) in enumerate(zip(names, variants, strict=True)):
        record, history, summary = runs[3 * i : 3 * i + 3]
        phases = training_energy(record["config"]["strategy"], history, summary, power)
        tables.append(phases.assign(variant=variant, run=name))
    table = pd.concat(tables, ignore_index=True)
    table["emissions_kg"] = table["energy_kwh"] * power.carbon_intensity_g_per_kwh / 1000.0
    table = table[["variant", "run", *(c for c in table.columns if c not in ("variant", "run"))]]

    per_variant = table.groupby("variant", sort=False).agg(
        runs=("run", "nunique"),
        epochs=("epochs", "sum"),
        train_seconds=("train_seconds", "sum"),
        energy_kwh=("energy_kwh", "sum"),
    )
    shown = pd.DataFrame(
        {
            "variant": per_variant.index,
            "runs": per_variant["runs"].to_numpy(),
            "epochs": per_variant["epochs"].to_numpy(),
            "training (s)": per_variant["train_seconds"].to_numpy(),
            "energy (Wh)": per_variant["energy_kwh"].to_numpy() * 1000.0,
            "emissions (g CO2e)": per_variant["energy_kwh"].to_numpy()
            * power.carbon_intensity_g_per_kwh,
        }
    )
    total = table["energy_kwh"].sum()
    text = [
        "## Energy and emissions of training",
        "",
        reports.markdown_table(shown),
        "",
        f"Total: {total * 1000:.4g} Wh, {total * power.carbon_intensity_g_per_kwh:.4g} g CO2e. "
        f"Estimated from each phase's measured training time (evaluation excluded) at "
        f"{power.watts():.4g} W (Green Algorithms' model, `reporting.energy`) and "
        f"{power.carbon_intensity_g_per_kwh:.4g} g CO2e/kWh; a cross-validated variant sums its folds. "
        f"Per phase: `{pipeline}_energy`.",
        "",
    ]
    return table, "\n".join(text)


def _evaluated_rows(
    labels: pd.DataFrame, folds: pd.DataFrame | None, fold: Fold | None
) -> np.ndarray:
    """Rows of the split a variant is evaluated on: all of them, or the fold's held-out subjects."""
    if fold is None:
        return np.arange(len(labels))
    held_out = set(fold_subjects(folds, fold.repeat, fold.index)[1])
    return np.flatnonzero(labels["subject_id"].astype(str).isin(held_out).to_numpy())


def _spread(rows: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``rows``, evenly spaced (deterministic, covers the whole split)."""
    if len(rows) <= count:
        return rows
    return rows[np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))]


def compute_svcca(
    source: dict,
    finetuned: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    folds: pd.DataFrame | None = None,
    *,
    fold: Fold | None,
    params: SvccaParams,
) -> pd.DataFrame:
    """``svcca_by_stage`` of a fine-tuned checkpoint against its source, on the evaluated split."""
    rows = _spread(_evaluated_rows(labels, folds, fold), params.max_images)
    return svcca_by_stage(
        build_model(source),
        build_model(finetuned),
        images[rows],
        max_samples=params.max_samples,
        seed=params.seed,
    )


def report_svcca(
    *tables: pd.DataFrame,
    names: list[str],
    sources: dict[str, str],
    skipped: dict[str, str],
    params: SvccaParams,
) -> tuple[pd.DataFrame, Figure, str]:
    """The variants' SVCCA tables stacked, their plot with the suggested cutoffs, and the report section.

    Args:
        tables: One ``svcca_by_stage`` table per name.
        names: The fine-tuned variants.
        sources: Each variant's source model (the dataset compared with).
        skipped: Variants not analysed, with the reason (listed in the section).
        params: The cutoff rule.
    """
    cutoffs, reasons = {}, {}
    for name, table in zip(names, tables, strict=True):
        try:
            cutoffs[name] = suggest_cutoff(table, params.rule, params.threshold)
        except ValueError as error:  # e.g. a stage with too few samples for its directions
            reasons[name] = str(error)
    stacked = pd.concat(
        [
            table.assign(variant=name, source=sources[name])
            for name, table in zip(names, tables, strict=True)
        ],
        ignore_index=True,
    )
    stacked = stacked[
        ["variant", "source", *(c for c in stacked if c not in ("variant", "source"))]
    ]
    by_stage = stacked.pivot(index="variant", columns="stage", values="similarity")
    by_stage = by_stage.loc[names, list(dict.fromkeys(stacked["stage"]))]
    shown = by_stage.reset_index()
    shown.insert(1, "suggested cutoff", [cutoffs.get(name, "") for name in names])
    rule = params.rule + (f" (threshold {params.threshold})" if params.rule == "threshold" else "")
    text = [
        "## SVCCA similarity to the source model per stage",
        "",
        reports.markdown_table(shown),
        "",
        f"Suggested truncation point: rule `{rule}` (`tlkedro.tl.analysis.svcca.suggest_cutoff`), which "
        "`truncated` takes as its cutoff. Each variant is compared with its source "
        f"({', '.join(f'`{n}`: `{sources[n]}`' for n in names)}) on the images of the split it is "
        "evaluated on; plot: `finetune_svcca_plot`, table with samples and kept directions: "
        "`finetune_svcca`.",
        "",
    ]
    unsuggested: dict[str, list[str]] = {}  # reason -> variants: the same one often holds for all
    for name, reason in reasons.items():
        unsuggested.setdefault(reason, []).append(f"`{name}`")
    text += [f"- No cutoff suggested for {', '.join(v)}: {r}" for r, v in unsuggested.items()]
    text += [f"- Not analysed: `{name}`: {reason}" for name, reason in skipped.items()]
    return stacked, plot_svcca_by_stage(stacked, cutoffs), "\n".join(text).rstrip() + "\n"


def _overlay_rows(subjects: pd.Series, values: np.ndarray, task: str, count: int) -> np.ndarray:
    """One row (the middle image) of each of ``count`` subjects: classes in turn (classification) or
    evenly spaced target values (regression), subject ids sorted within."""
    subjects = subjects.astype(str).reset_index(drop=True)
    per_subject = pd.Series(values, index=subjects.to_numpy()).groupby(level=0).first()
    if task == "classification":
        by_class = [list(ids) for _, ids in per_subject.groupby(per_subject).groups.items()]
        order = [ids[i] for i in range(max(map(len, by_class))) for ids in by_class if i < len(ids)]
        chosen = order[:count]
    else:
        ranked = per_subject.sort_values(kind="stable").index
        picks = np.unique(np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round())
        chosen = [ranked[int(i)] for i in picks]
    rows = []
    for subject in chosen:
        own = np.flatnonzero(subjects.to_numpy() == subject)
        rows.append(own[len(own) // 2])
    return np.asarray(rows)


def _title(subject: str, target: str, value: float, prediction: pd.Series | None, task: str) -> str:
    shown = f"{value:.3g}" if task == "regression" else str(int(value))
    title = f"{subject}: {target} {shown}"
    if prediction is not None:
        predicted = prediction["prediction"]
        title += f", pred {predicted:.3g}" if task == "regression" else f", pred {int(predicted)}"
    return title


def compute_saliency(
    checkpoint: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    folds: pd.DataFrame | None = None,
    *,
    variant: str,
    fold: Fold | None,
    task: str,
    target: str,
    params: SaliencyParams,
) -> dict[str, Any]:
    """A variant's saliency maps on its evaluated split: a few subjects' maps over their images, and the
    class-mean maps (classification) or the map of correlation with the target (regression).

    Returns:
        ``images``, ``maps`` and ``titles`` of the subjects overlaid; ``mean_maps`` (``name -> map``,
        each name saying how many images it rests on), ``background`` (the mean image; ``None`` for
        ROI time series, whose mean is flat), ``signed`` (whether the mean maps are correlations) and
        ``series`` (whether the inputs are ``(N, ROIs, T)`` series, whose maps are ``(ROIs, T)``).

    Raises:
        ValueError: If ``layer`` is not a stage of the model, or a correlation map has too few subjects.
    """
    model = build_model(checkpoint)
    if params.method == "grad_cam" and params.layer not in (None, *model.stage_names):
        raise ValueError(
            f"reporting.analysis.saliency.layer {params.layer!r} is not a stage of {variant}'s model "
            f"({model.config['name']}); its stages: {list(model.stage_names)}"
        )
    evaluated = _evaluated_rows(labels, folds, fold)
    values = target_values(labels, target, task)
    explain = {"method": params.method, "layer": params.layer}
    overlay = evaluated[
        _overlay_rows(
            labels["subject_id"].iloc[evaluated], values[evaluated], task, params.n_subjects
        )
    ]
    by_subject = predictions.assign(subject_id=predictions["subject_id"].astype(str)).set_index(
        "subject_id"
    )
    titles = []
    for row in overlay:
        subject = str(labels["subject_id"].iloc[row])
        prediction = by_subject.loc[subject] if subject in by_subject.index else None
        titles.append(_title(subject, target, values[row], prediction, task))

    averaged = _spread(evaluated, params.max_images)
    maps = saliency_maps(model, images[averaged], **explain)
    short = variant.split(".", 1)[-1]
    subjects = labels["subject_id"].iloc[averaged].astype(str).to_numpy()

    def counted(selected: np.ndarray) -> str:
        return f"{int(selected.sum())} images, {len(set(subjects[selected]))} subjects"

    if task == "classification":
        mean_maps = {
            f"{short}: {target} {label} ({counted(values[averaged] == label)})": mean
            for label, mean in class_mean_maps(maps, values[averaged]).items()
        }
    else:
        everyone = np.ones(len(averaged), dtype=bool)
        mean_maps = {
            f"{short}: r with {target} ({counted(everyone)})": label_correlation_map(
                maps, values[averaged]
            )
        }
    series = images.ndim == 3  # (N, ROIs, T): z-scored series average to a flat line
    return {
        "images": np.asarray(images[overlay]),
        "maps": saliency_maps(model, images[overlay], **explain),
        "titles": [f"{short} {title}" for title in titles],
        "mean_maps": mean_maps,
        "background": None
        if series
        else np.asarray(images[averaged], dtype=np.float64).mean(axis=0)[0],
        "signed": task == "regression",
        "series": series,
    }


def report_saliency(
    *results: dict[str, Any], pipeline: str, variants: list[str], params: SaliencyParams
) -> tuple[Figure, Figure, str]:
    """The overlays and the mean maps of a pipeline's explained variants, and the report section."""
    signed = {result["signed"] for result in results}
    if len(signed) != 1:
        raise ValueError(
            f"{pipeline}: the saliency variants {variants} mix classification and regression; "
            "choose variants of one task in reporting.analysis.saliency.variants"
        )
    series = results[0].get("series", False)
    overlays = plot_saliency_overlays(
        np.concatenate([r["images"] for r in results]),
        np.concatenate([r["maps"] for r in results]),
        [title for r in results for title in r["titles"]],
        series=series,
    )
    mean_maps = {name: m for r in results for name, m in r["mean_maps"].items()}
    diverging = signed.pop()
    means = plot_mean_maps(mean_maps, results[0]["background"], diverging=diverging, series=series)
    layer = f" at stage `{params.layer or 'last'}`" if params.method == "grad_cam" else ""
    text = [
        "## Saliency maps",
        "",
        f"`{params.method}`{layer} maps of {', '.join(f'`{v}`' for v in variants)} on the split each "
        f"is evaluated on: {sum(len(r['titles']) for r in results)} subjects over their images in "
        f"`{pipeline}_saliency_plot`; in `{pipeline}_saliency_mean_plot`:",
        "",
        *(f"- {name}" for name in mean_maps),
        "",
        "Class means average each image's map scaled to its maximum; a correlation map is the Pearson "
        "correlation, per pixel, of that scaled saliency with the target. Both mean something only "
        "where the images share one space (docs/saliency.md).",
        "",
    ]
    if series:
        text += _roi_importance_text(mean_maps, diverging)
    return overlays, means, "\n".join(text)


def _roi_importance_text(mean_maps: Mapping[str, np.ndarray], signed: bool) -> list[str]:
    """The per-ROI summary of series maps: each mean map's mean over time, ROIs ranked by the first."""
    table = roi_importance(mean_maps)
    ranked = table.sort_values(table.columns[0], ascending=False, kind="stable")
    what = "mean correlation over time" if signed else "mean scaled saliency over time"
    return [
        f"Per ROI ({what}; ROIs numbered by their column in the series files, ranked by the first "
        "map; the right-hand bars of the mean-map figure):",
        "",
        reports.markdown_table(ranked.reset_index()),
        "",
    ]


# --- pipeline -------------------------------------------------------------------------------------


def _runs(variant: TrainingVariant) -> list[str]:
    """The training runs of a variant: itself, or each of its folds."""
    if variant.cross_validated:
        return [f"{variant.namespace}.{fold.name}" for fold in variant.folds]
    return [variant.namespace]


def _energy_node(pipeline: str, variants: Sequence[TrainingVariant], power: EnergyParams) -> Node:
    runs = [(run, v.namespace) for v in variants for run in _runs(v)]
    return Node(
        bind(
            report_energy,
            pipeline=pipeline,
            names=[run for run, _ in runs],
            variants=[variant for _, variant in runs],
            power=power,
        ),
        [f"{run}.{kind}" for run, _ in runs for kind in ("config", "history", "training_summary")],
        [f"{pipeline}_energy", f"{pipeline}_energy_markdown"],
        name=f"report_{pipeline}_energy",
    )


def _analysed_run(variant: TrainingVariant) -> tuple[str, Fold | None, str | None, list[str]]:
    """Where a variant is analysed: its model (first fold's when cross-validated), the fold, the split
    and the split's datasets (images, labels, and the folds when cross-validated)."""
    if variant.cross_validated:
        fold = variant.folds[0]
        split = variant.config.train_on
        return (
            f"{variant.namespace}.{fold.name}",
            fold,
            CV_SPLIT,
            [
                f"{split}_images",
                f"{split}_labels",
                FOLDS,
            ],
        )
    split = (variant.config.evaluate_on or [None])[0]
    data = [f"{split}_images", f"{split}_labels"] if split else []
    return variant.namespace, None, split, data


def _source_model(plan: ExperimentPlan, variant: TrainingVariant, fold: Fold | None) -> str:
    source = plan.variants[variant.source]
    if fold is not None and source.cross_validated:
        return f"{source.namespace}.{fold.name}.model"
    return f"{source.namespace}.model"


def _svcca_nodes(plan: ExperimentPlan, params: SvccaParams) -> list[Node]:
    names, sources, skipped, nodes = [], {}, {}, []
    for variant in plan.of("finetune"):
        if variant.source is None or plan.variants[variant.source].pipeline != "pretrain":
            continue
        run, fold, split, data = _analysed_run(variant)
        if split is None:
            skipped[variant.namespace] = "it is evaluated on no split (`evaluate_on` is empty)"
            continue
        source = _source_model(plan, variant, fold)
        nodes.append(
            Node(
                bind(compute_svcca, fold=fold, params=params),
                [source, f"{run}.model", *data],
                f"{variant.namespace}.svcca",
                name=f"compute_svcca_{variant.namespace}",
            )
        )
        names.append(variant.namespace)
        sources[variant.namespace] = source
    if not names:
        return []
    nodes.append(
        Node(
            bind(report_svcca, names=names, sources=sources, skipped=skipped, params=params),
            [f"{name}.svcca" for name in names],
            ["finetune_svcca", "finetune_svcca_plot", "finetune_svcca_markdown"],
            name="report_finetune_svcca",
        )
    )
    return nodes


def _saliency_variants(
    plan: ExperimentPlan, params: SaliencyParams, evaluation: Mapping[str, Any]
) -> dict[str, list[TrainingVariant]]:
    """The variants to explain, by pipeline (see ``SaliencyParams.variants``).

    By default only variants evaluated on a split (or cross-validated) are candidates: a pipeline
    without any, such as a pretraining with ``evaluate_on: []``, has no saliency section.
    """
    if params.variants is None:
        chosen = {}
        for pipeline in TRAINING_PIPELINES:
            if variants := [v for v in plan.of(pipeline) if _analysed_run(v)[2] is not None]:
                names = [v.namespace for v in variants]
                reference = for_pipeline(dict(evaluation), pipeline).get("reference", "scratch")
                named = reports.resolve_reference(names, reference)
                chosen[pipeline] = [plan.variants[named] if named else variants[0]]
        return chosen
    known = [v.namespace for p in TRAINING_PIPELINES for v in plan.of(p)]
    unknown = [name for name in params.variants if name not in known]
    if unknown:
        raise PlanError(
            f"reporting.analysis.saliency.variants names {unknown}, which are not pretrain or finetune "
            f"variants of the plan; they are: {', '.join(known)}"
        )
    chosen = {}
    for name in params.variants:
        chosen.setdefault(plan.variants[name].pipeline, []).append(plan.variants[name])
    return chosen


def _saliency_nodes(
    plan: ExperimentPlan, params: SaliencyParams, evaluation: Mapping[str, Any]
) -> list[Node]:
    nodes = []
    for pipeline, variants in _saliency_variants(plan, params, evaluation).items():
        explained = []
        for variant in variants:
            run, fold, split, data = _analysed_run(variant)
            if split is None:
                raise PlanError(
                    f"reporting.analysis.saliency: {variant.namespace} is evaluated on no split "
                    "(`evaluate_on` is empty), so there are no images to explain; choose another "
                    "variant in reporting.analysis.saliency.variants"
                )
            config = variant.config
            nodes.append(
                Node(
                    bind(
                        compute_saliency,
                        variant=variant.namespace,
                        fold=fold,
                        task=config.task,
                        target=config.target,
                        params=params,
                    ),
                    [f"{run}.model", *data[:2], f"{run}.predictions_{split}", *data[2:]],
                    f"{variant.namespace}.saliency",
                    name=f"compute_saliency_{variant.namespace}",
                )
            )
            explained.append(variant.namespace)
        nodes.append(
            Node(
                bind(report_saliency, pipeline=pipeline, variants=explained, params=params),
                [f"{name}.saliency" for name in explained],
                [
                    f"{pipeline}_saliency_plot",
                    f"{pipeline}_saliency_mean_plot",
                    f"{pipeline}_saliency_markdown",
                ],
                name=f"report_{pipeline}_saliency",
            )
        )
    return nodes


def analysis_nodes(plan: ExperimentPlan, reporting_params: Mapping[str, Any]) -> list[Node]:
    """The energy report of each training pipeline, and the SVCCA and saliency analyses where enabled.

    Raises:
        PlanError: An invalid ``reporting.energy`` or ``reporting.analysis`` parameter, or saliency
            variants that are not in the plan.
    """
    power = _validated(EnergyParams, reporting_params.get("energy"), "reporting.energy")
    analysis = _validated(AnalysisParams, reporting_params.get("analysis"), "reporting.analysis")
    evaluation = reporting_params.get("evaluation") or {}
    EvaluationParams.model_validate(evaluation)
    nodes = [
        _energy_node(pipeline, plan.of(pipeline), power)
        for pipeline in TRAINING_PIPELINES
        if plan.of(pipeline)
    ]
    if analysis.svcca.enabled:
        nodes += _svcca_nodes(plan, analysis.svcca)
    if analysis.saliency.enabled:
        nodes += _saliency_nodes(plan, analysis.saliency, evaluation)
    return nodes


def report_sections(pipeline: str, nodes: Sequence[Node]) -> list[str]:
    """The markdown sections of ``pipeline``'s report that ``nodes`` write, in report order."""
    written = {output for node in nodes for output in node.outputs}
    return [
        name for section in REPORT_SECTIONS if (name := f"{pipeline}_{section}_markdown") in written
    ]
