"""Nodes of the training template: resolve a variant's configuration, train, evaluate, summarise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from tlkedro.provenance import run_record
from tlkedro.tl.analysis.complexity import complexity_report
from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.training import evaluate, fit
from tlkedro.variants import base_config, deep_merge


class VariantConfig(TrainConfig):
    """A training configuration plus the keys that decide a variant's place in the pipeline."""

    init_from: str | None = None
    evaluate_on: list[str] = []
    unlabelled_from: str | None = None  # split whose images auxiliary terms use without labels
    group: str | None = (
        None  # variants sharing a group (e.g. seeds of one setting) are aggregated in reports
    )


def resolve_config(
    base: dict[str, Any],
    overrides: dict[str, Any] | None,
    runtime: dict[str, Any],
    *,
    namespace: str,
    wired_source: str | None,
    wired_unlabelled: str | None = None,
) -> dict[str, Any]:
    """Merge the pipeline's base parameters with a variant's overrides and validate the result.

    The returned run record is saved next to the variant's metrics, so every result can be traced to
    its configuration, seed, package versions and git revision.
    """
    merged = deep_merge(base_config(base), overrides)
    try:
        config = VariantConfig.model_validate(merged)
    except ValidationError as error:
        raise ValueError(f"Invalid parameters for variant {namespace!r}:\n{error}") from None
    if config.init_from != wired_source:
        raise ValueError(
            f"{namespace}: init_from is {config.init_from!r} but the pipeline was built with "
            f"{wired_source!r}. init_from decides which checkpoint the pipeline reads, so set it in "
            "conf/<env>/parameters_*.yml rather than with --params."
        )
    if config.unlabelled_from != wired_unlabelled:
        raise ValueError(
            f"{namespace}: unlabelled_from is {config.unlabelled_from!r} but the pipeline was built with "
            f"{wired_unlabelled!r}; set it in conf/<env>/parameters_*.yml rather than with --params."
        )
    return {
        "namespace": namespace,
        "config": config.model_dump(mode="json"),
        "run": run_record(),
        "workdir": f"{runtime['checkpoint_dir']}/{namespace}",
    }


def train_model(
    run: dict[str, Any],
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
    unlabelled: np.ndarray | None = None,
) -> tuple[dict, pd.DataFrame, dict[str, Any]]:
    """Fit the variant's model on its training split; resumes from the variant's last checkpoint."""
    config = VariantConfig.model_validate(run["config"])
    result = fit(
        config, images, labels, source=source, workdir=run["workdir"], unlabelled=unlabelled
    )
    return result.checkpoint, result.history, result.summary


def evaluate_model(
    run: dict[str, Any], checkpoint: dict, images: np.ndarray, labels: pd.DataFrame, *, split: str
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and per-subject predictions of the trained model on one split."""
    config = VariantConfig.model_validate(run["config"])
    return evaluate(
        checkpoint,
        images,
        labels,
        target=config.target,
        split=split,
        batch_size=config.trainer.batch_size,
    )


def measure_complexity(checkpoint: dict, images: np.ndarray) -> dict[str, float]:
    """Parameters, MACs per image, CPU latency and file size of the trained model."""
    return complexity_report(build_model(checkpoint), input_shape=tuple(images.shape[1:]))


def summarise_variant(
    run: dict[str, Any],
    summary: dict[str, Any],
    history: pd.DataFrame,
    complexity: dict[str, float],
    *split_metrics: dict,
) -> dict[str, Any]:
    """One flat record per variant: what reporting compares.

    Besides the test metrics it holds the validation metrics (``val/...``) of the epoch whose model was
    kept, the only unbiased basis for choosing between variants (e.g. TruncatedTL's cutoff search).
    """
    config = run["config"]
    record: dict[str, Any] = {
        "variant": run["namespace"],
        "group": config["group"] or run["namespace"],
        "architecture": config["architecture"]["name"],
        "strategy": config["strategy"]["name"],
        "init_from": config["init_from"],
        "target": config["target"],
        "seed": config["seed"],
        "lr": config["optimizer"]["lr"],
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
