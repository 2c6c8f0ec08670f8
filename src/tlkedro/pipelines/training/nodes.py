"""Nodes of the training template: record the run, train, evaluate, summarise.

Each node receives its variant's configuration, validated once by the experiment plan
(:mod:`tlkedro.plan`), bound in by the template; the catalog hands it the arrays and models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tlkedro.imaging.folds import check_fold_leakage, fold_subjects, nested_subsets
from tlkedro.pipelines.preprocessing.nodes import PreprocessingParams
from tlkedro.plan import Fold, VariantConfig, WeightsFile
from tlkedro.provenance import run_record
from tlkedro.tl.analysis.complexity import complexity_report
from tlkedro.tl.analysis.svcca import auto_cut_at
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.config import StrategyConfig
from tlkedro.tl.strategies import create_strategy
from tlkedro.tl.training import evaluate, fit
from tlkedro.tl.tuning import best_point, run_study, study_name, trials_table
from tlkedro.tl.weights import load_source_weights
from tlkedro.variants import Sweep, deep_merge, sweep_overrides

# The held-out fold's metrics and predictions are named as a split would be.
CV_SPLIT = "cv"


def record_run(
    auto_cut: dict[str, Any] | None = None,
    *,
    namespace: str,
    config: VariantConfig,
    workdir: str,
    preprocessing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run record saved next to the variant's metrics: its configuration and provenance.

    Every result can so be traced to its configuration, seed, package versions and git revision. The
    preprocessing parameters, with their defaults filled in, are those the ``predict`` pipeline
    preprocesses new scans with for this model. A ``cut_at: auto`` variant's record also holds the
    chosen cut point and the profile it came from (``auto_cut``, from :func:`choose_cut_at`).
    """
    record = {
        "namespace": namespace,
        "config": config.model_dump(mode="json"),
        "preprocessing": PreprocessingParams.model_validate(preprocessing or {}).model_dump(
            mode="json"
        ),
        "provenance": run_record(),
        "workdir": workdir,
    }
    if auto_cut is not None:
        record["auto_cut"] = auto_cut
    return record


def choose_cut_at(
    source: dict,
    probe: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    folds: pd.DataFrame | None = None,
    *,
    namespace: str,
    config: VariantConfig,
    probe_name: str,
    fold: Fold | None = None,
) -> dict[str, Any]:
    """The cut point of a ``truncated`` variant with ``cut_at: auto``, from its probe's SVCCA profile.

    The probe (a fine-tune of the same source, :func:`tlkedro.plan.auto_cut_probe`) is compared with the
    source on the variant's own training images (no labels, and never the test split), and the
    strategy's rule picks the stage where similarity to the source drops.

    Returns:
        ``cut_at`` (the stage), ``probe``, ``rule``, ``threshold``, ``images`` (how many were used) and
        ``profile`` (the ``svcca_by_stage`` rows).

    Raises:
        ValueError: Naming the variant and the probe, if no cut point can be chosen (e.g. too few images
            for a stage's kept directions).
    """
    strategy = create_strategy(config.strategy.name, **config.strategy.kwargs)
    rows = training_rows(labels, folds, fold, config)
    try:
        cut_at, table = auto_cut_at(
            build_model(source),
            build_model(probe),
            images[rows],
            rule=strategy.rule,
            threshold=strategy.threshold,
            max_images=strategy.max_images,
            max_samples=strategy.max_samples,
        )
    except ValueError as error:
        raise ValueError(
            f"{namespace}: cut_at: auto could not choose a cut point from probe {probe_name}: {error}"
        ) from None
    return {
        "cut_at": cut_at,
        "probe": probe_name,
        "rule": strategy.rule,
        "threshold": strategy.threshold,
        "images": min(len(rows), strategy.max_images),
        "profile": table.to_dict("records"),
    }


def _rows(labels: pd.DataFrame, subjects: set[str]) -> np.ndarray:
    return np.flatnonzero(labels["subject_id"].astype(str).isin(subjects).to_numpy())


def training_rows(
    labels: pd.DataFrame, folds: pd.DataFrame | None, fold: Fold | None, config: VariantConfig
) -> np.ndarray:
    """Row indices of the training images: the fold's training part, then the ``train_size`` subset."""
    subjects = labels["subject_id"].astype(str)
    train = set(subjects)
    if fold is not None:
        train &= set(fold_subjects(folds, fold.repeat, fold.index)[0])
    if config.train_size is not None:
        # Nested within the fold: one seeded ordering of the fold's subjects serves every size, so
        # variants that differ only in train_size train on nested sets. Classes keep their proportions.
        strata = None
        if config.task == "classification" and config.objective.build().needs_labels:
            strata = labels.assign(subject_id=subjects).groupby("subject_id")[config.target].first()
        subsets = nested_subsets(
            sorted(train), [config.train_size], seed=config.seed, strata=strata
        )
        train = set(subsets[config.train_size])
    return _rows(labels, train)


def weights_file_source(weights: WeightsFile, config: VariantConfig, images: np.ndarray) -> dict:
    """A source checkpoint from a published weights file, mapped onto the variant's architecture.

    The encoder is built as ``fit`` builds it (input channels and size from the images), so the file's
    tensors must fit the network that is trained; the load report goes into the checkpoint's meta.
    """
    data_kwargs = {
        "in_channels": int(images.shape[1]),
        "img_size": [int(n) for n in images.shape[2:]],
    }
    model = create_architecture(
        config.architecture.name, **{**data_kwargs, **config.architecture.kwargs}
    )
    source, _ = load_source_weights(model, weights.file, weights.format, weights.min_match)
    return source


def training_data(
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None,
    folds: pd.DataFrame | None,
    fold: Fold | None,
    config: VariantConfig,
) -> tuple[np.ndarray, pd.DataFrame, dict | None]:
    """The images, labels and source model a variant trains on.

    With a fold, the fold's held-out subjects are left out (and must not be among the subjects the
    source model was trained on); with ``train_size``, a reproducible nested subset of the rest is used;
    a weights file as ``init_from`` becomes the source checkpoint.
    """
    if isinstance(config.init_from, WeightsFile):
        source = weights_file_source(config.init_from, config, images)
    rows = training_rows(labels, folds, fold, config)
    if fold is not None and source is not None:
        held_out = folds.loc[(folds["repeat"] == fold.repeat) & (folds["fold"] == fold.index)]
        check_fold_leakage(held_out, pretraining_subjects=source["meta"].get("train_subjects"))
    if len(rows) < len(labels):
        images, labels = images[rows], labels.iloc[rows].reset_index(drop=True)
    return images, labels, source


def train_model(
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
    unlabelled: np.ndarray | None = None,
    folds: pd.DataFrame | None = None,
    auto_cut: dict[str, Any] | None = None,
    *,
    config: VariantConfig,
    workdir: str,
    fold: Fold | None = None,
) -> tuple[dict, pd.DataFrame, dict[str, Any]]:
    """Fit the variant's model on its training subjects (:func:`training_data`); resumes from the
    variant's last checkpoint.

    The checkpoint records the training subjects, which the leakage guard of later variants reads, and,
    for a weights file as the source, its load report. A ``cut_at: auto`` variant trains ``truncated``
    at the cut point ``auto_cut`` chose, which its checkpoint and training summary (``cut_at``) record.
    """
    if auto_cut is not None:
        strategy = StrategyConfig(name="truncated", kwargs={"cut_at": auto_cut["cut_at"]})
        config = config.model_copy(update={"strategy": strategy})
    images, labels, source = training_data(images, labels, source, folds, fold, config)
    result = fit(config, images, labels, source=source, workdir=workdir, unlabelled=unlabelled)
    result.checkpoint["meta"]["train_subjects"] = sorted(labels["subject_id"].astype(str).unique())
    if source is not None and "source_weights" in source["meta"]:
        result.checkpoint["meta"]["source_weights"] = source["meta"]["source_weights"]
    summary = {**result.summary, "n_train_subjects": int(labels["subject_id"].nunique())}
    if auto_cut is not None:
        summary["cut_at"] = auto_cut["cut_at"]
    if "source_weights" in result.checkpoint["meta"]:
        summary["source_weights_matched"] = result.checkpoint["meta"]["source_weights"][
            "matched_fraction"
        ]
    return result.checkpoint, result.history, summary


def tune_model(
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
    unlabelled: np.ndarray | None = None,
    *,
    namespace: str,
    config: VariantConfig,
    tuning: Sweep,
    storage: str,
    workdir: str,
    preprocessing: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict, pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Run the variant's Optuna study (:func:`tlkedro.tl.tuning.run_study`), then train its best trial.

    Every trial trains on the variant's training subjects, as ``train`` would, and is valued on their
    validation part. The best trial's configuration is trained again into the variant's model (the
    same configuration, data and seed give the same model), so the variant is evaluated and reported
    like any other.

    Returns:
        The run record (with the best configuration), the model, its history, its training summary
        (plus ``tuning/...``: the study, the best trial and its value, the trials complete and pruned)
        and the study's trials table (:func:`tlkedro.tl.tuning.trials_table`).
    """
    base = config
    study = tuning.study
    images, labels, source = training_data(images, labels, source, None, None, config)

    def make_config(point: dict[str, Any]) -> VariantConfig:
        merged = deep_merge(base.model_dump(mode="json"), sweep_overrides(tuning, point))
        return VariantConfig.model_validate(merged)

    name = study_name(namespace, base, tuning.space, study)
    trials = trials_table(
        run_study(
            tuning.space,
            study,
            base,
            make_config,
            images,
            labels,
            storage=storage,
            name=name,
            source=source,
            unlabelled=unlabelled,
        )
    )
    best_trial, point = best_point(trials, study.direction)
    best = make_config(point)
    checkpoint, history, summary = train_model(
        images, labels, source, unlabelled, config=best, workdir=workdir
    )
    states = trials["state"].value_counts()
    summary.update(
        {
            "tuning/study": name,
            "tuning/metric": study.metric,
            "tuning/best_trial": best_trial,
            "tuning/best_value": float(trials.loc[trials["trial"] == best_trial, "value"].iloc[0]),
            "tuning/trials_complete": int(states.get("COMPLETE", 0)),
            "tuning/trials_pruned": int(states.get("PRUNED", 0)),
            # The comparison table's `lr` column reads the summary last: the tuned value, not the base's.
            "lr": best.optimizer.lr,
        }
    )
    return (
        record_run(namespace=namespace, config=best, workdir=workdir, preprocessing=preprocessing),
        checkpoint,
        history,
        summary,
        trials,
    )


def evaluate_model(
    checkpoint: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    folds: pd.DataFrame | None = None,
    *,
    config: VariantConfig,
    split: str,
    fold: Fold | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and per-subject predictions of the trained model on one split, or on its held-out fold."""
    if split == CV_SPLIT:
        rows = _rows(labels, set(fold_subjects(folds, fold.repeat, fold.index)[1]))
        images, labels = images[rows], labels.iloc[rows].reset_index(drop=True)
    metrics, predictions = evaluate(
        checkpoint,
        images,
        labels,
        target=config.target,
        split=split,
        batch_size=config.trainer.batch_size,
        trainer=config.trainer,
    )
    if fold is not None:
        predictions = predictions.assign(repeat=fold.repeat, fold=fold.index)
    return metrics, predictions


def measure_complexity(checkpoint: dict, images: np.ndarray) -> dict[str, float]:
    """Parameters, MACs per image, CPU latency and file size of the trained model."""
    return complexity_report(build_model(checkpoint), input_shape=tuple(images.shape[1:]))


def summarise_variant(
    summary: dict[str, Any],
    history: pd.DataFrame,
    complexity: dict[str, float],
    *split_metrics: dict,
    namespace: str,
    config: VariantConfig,
) -> dict[str, Any]:
    """One flat record per variant (or fold): what reporting compares.

    Besides the test metrics it holds the validation metrics (``val/...``) of the epoch whose model was
    kept, the only unbiased basis for choosing between variants (e.g. TruncatedTL's cutoff search).
    """
    record: dict[str, Any] = {
        "variant": namespace,
        "group": config.group or namespace,
        "architecture": config.architecture.name,
        "strategy": config.strategy.name,
        "init_from": config.init_from.file
        if isinstance(config.init_from, WeightsFile)
        else config.init_from,
        "target": config.target,
        "seed": config.seed,
        "lr": config.optimizer.lr,
        "train_size": config.train_size,
    }
    record.update(summary)
    [kept] = history.loc[history["epoch"] == summary["best_epoch"]].to_dict("records")
    record.update({key: float(value) for key, value in kept.items() if key.startswith("val/")})
    # Parameter counts come from the training summary: it knows what the strategy froze, whereas the
    # reloaded model has every parameter trainable.
    record.update({k: v for k, v in complexity.items() if not k.startswith("params_")})
    for metrics in split_metrics:
        record.update(metrics)
    return record


def summarise_folds(
    *records_and_predictions: Any, namespace: str, group: str, n_folds: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A cross-validated variant's record and its pooled out-of-fold predictions.

    ``records_and_predictions`` holds each fold's record, then each fold's held-out predictions. The
    record keeps the first fold's descriptive columns; every metric ``m`` becomes ``m`` (the mean over
    folds), ``m_std`` (their standard deviation) and ``m_folds`` (how many folds it averages); the
    reports add the metrics of the pooled predictions, with intervals.
    """
    records, predictions = records_and_predictions[:n_folds], records_and_predictions[n_folds:]
    table = pd.DataFrame(records)
    record = {k: v for k, v in records[0].items() if "/" not in k}
    record.update(variant=namespace, group=group)
    for metric in [c for c in table.columns if "/" in c]:
        values = pd.to_numeric(table[metric], errors="coerce").dropna()
        record[metric] = float(values.mean())
        record[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        record[f"{metric}_folds"] = int(len(values))
    record["folds"] = n_folds
    return record, pd.concat(predictions, ignore_index=True)
