"""Nodes of a DAPT variant besides its two training phases (which are copies of the training template):
downstream MLP evaluation of the adapted encoder, the per-phase energy report and the variant's record."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tlkedro.tl.analysis.energy import PowerModel, training_energy
from tlkedro.tl.downstream import DownstreamConfig, downstream_evaluation


def evaluate_downstream(
    checkpoint: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    *evaluated: Any,
    config: DownstreamConfig,
) -> pd.DataFrame:
    """Train the MLP classifiers on the adapted encoder's features and evaluate them on every split.

    ``evaluated`` holds ``images, labels`` of each split of ``evaluate_on``, in order.
    """
    splits = dict(
        zip(config.evaluate_on, zip(evaluated[::2], evaluated[1::2], strict=True), strict=True)
    )
    return downstream_evaluation(
        checkpoint,
        (images, labels),
        splits,
        target=config.target,
        classifiers=config.classifiers,
        seed=config.seed,
        dip=config.dip,
        max_iter=config.max_iter,
        batch_size=config.batch_size,
    )


def report_phases(
    adapt_run: dict[str, Any],
    adapt_history: pd.DataFrame,
    adapt_summary: dict[str, Any],
    finetune_run: dict[str, Any],
    finetune_history: pd.DataFrame,
    finetune_summary: dict[str, Any],
    *,
    power: PowerModel,
) -> pd.DataFrame:
    """Per phase of the adaptation and of the fine-tuning: trainable parameters, wall time, energy."""
    stages = {
        "adapt": (adapt_run, adapt_history, adapt_summary),
        "finetune": (finetune_run, finetune_history, finetune_summary),
    }
    reports = [
        training_energy(run["config"]["strategy"], history, summary, power).assign(stage=stage)
        for stage, (run, history, summary) in stages.items()
    ]
    table = pd.concat(reports, ignore_index=True)
    return table[["stage", *[column for column in table.columns if column != "stage"]]]


def summarise_dapt(
    adapt: dict[str, Any],
    finetune: dict[str, Any],
    downstream: pd.DataFrame,
    phases: pd.DataFrame,
    *,
    namespace: str,
    group: str | None,
    dip: tuple[str, str] | None,
) -> dict[str, Any]:
    """One flat record per DAPT variant, for the comparison across variants and seeds.

    Descriptive columns (the adaptation's strategy and seed, ``trainable_params``: the most parameters
    the adaptation trained at once, the fine-tuned model's size and cost), then metrics
    named ``<what>/...``: the fine-tuned model's (``finetune/test/auroc``) and their ``dip`` from the
    reference to the shifted split (``finetune/dip/auroc``), the MLPs' (``mlp_64_32/external/auroc``,
    ``mlp_64_32/dip/auroc``), and each phase's epochs, trainable parameters, seconds and energy
    (``adapt/partial/energy_kwh``), with each stage's total energy (``adapt/energy_kwh``).
    """
    record: dict[str, Any] = {
        "variant": namespace,
        "group": group or namespace,
        "strategy": adapt["strategy"],
        "init_from": adapt["init_from"],
        "seed": adapt["seed"],
        "trainable_params": int(phases.loc[phases["stage"] == "adapt", "trainable_params"].max()),
    }
    record.update(
        {
            key: finetune[key]
            for key in ("total_params", "macs_per_image", "cpu_latency_ms", "file_size_bytes")
        }
    )
    metrics = {
        key: value
        for key, value in finetune.items()
        if "/" in key and not key.startswith("train_seconds/")
    }
    record.update({f"finetune/{key}": value for key, value in metrics.items()})
    if dip is not None:
        reference, shifted = dip
        for key, value in metrics.items():
            split, _, metric = key.partition("/")
            if split == reference and f"{shifted}/{metric}" in metrics:
                record[f"finetune/dip/{metric}"] = value - metrics[f"{shifted}/{metric}"]
    for row in downstream.itertuples(index=False):
        for metric in (
            "auroc",
            "auroc_low",
            "auroc_high",
            "auprc",
            "accuracy",
            "balanced_accuracy",
        ):
            value = getattr(row, metric, np.nan)
            if not pd.isna(value):
                record[f"{row.classifier}/{row.split}/{metric}"] = value
    for row in phases.itertuples(index=False):
        for column in ("epochs", "trainable_params", "train_seconds", "energy_kwh"):
            record[f"{row.stage}/{row.phase}/{column}"] = getattr(row, column)
    for stage, rows in phases.groupby("stage"):
        record[f"{stage}/energy_kwh"] = float(rows["energy_kwh"].sum())
    return record
