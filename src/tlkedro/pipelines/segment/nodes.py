"""Nodes of the ``segment`` pipeline: record, train and evaluate one variant (``tlkedro.tl.segmentation``).

Each node receives its variant's ``SegmentVariantConfig``, validated once by the plan, bound in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tlkedro.imaging.folds import nested_subsets
from tlkedro.pipelines.training.nodes import weights_file_source
from tlkedro.plan import SegmentVariantConfig, WeightsFile
from tlkedro.provenance import run_record
from tlkedro.tl.segmentation import (
    DICE_MEAN,
    HD95,
    fit_segmentation,
    mean_interval,
    predict_masks,
    subject_metrics,
)


def record_segment_run(*, namespace: str, config: SegmentVariantConfig) -> dict[str, Any]:
    """The run record saved beside the variant's metrics: its configuration and provenance."""
    return {
        "namespace": namespace,
        "config": config.model_dump(mode="json"),
        "provenance": run_record(),
    }


def training_subjects(labels: pd.DataFrame, config: SegmentVariantConfig) -> list[str]:
    """The split's subjects, or the nested seeded ``train_size`` subset of them."""
    subjects = sorted(labels["subject_id"].astype(str).unique())
    if config.train_size is None:
        return subjects
    return nested_subsets(subjects, [config.train_size], seed=config.seed)[config.train_size]


def train_segmenter(
    images: np.ndarray,
    masks: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
    *,
    config: SegmentVariantConfig,
) -> tuple[dict, pd.DataFrame, dict[str, Any]]:
    """Fit the variant's segmentation model on its training subjects.

    Returns:
        The model checkpoint (its meta records the training subjects), the per-epoch history and the
        training summary (the strategy's parameter counts, epochs, ``n_train_subjects``).
    """
    if isinstance(config.init_from, WeightsFile):
        source = weights_file_source(config.init_from, config, images)
    keep = labels["subject_id"].astype(str).isin(training_subjects(labels, config)).to_numpy()
    rows = np.flatnonzero(keep)
    if len(rows) < len(labels):
        images, masks = images[rows], masks[rows]
        labels = labels.iloc[rows].reset_index(drop=True)
    fitted = fit_segmentation(config, images, masks, labels, source)
    return fitted.checkpoint, fitted.history, fitted.summary


def evaluate_segmenter(
    model: dict,
    images: np.ndarray,
    masks: np.ndarray,
    labels: pd.DataFrame,
    *,
    config: SegmentVariantConfig,
    split: str,
) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """Predict every image of a split and score each subject.

    Returns:
        ``{split}/dice_mean`` and ``{split}/hd95`` (means over subjects) with their 95% BCa intervals
        (``_low``, ``_high``) and ``{split}/n_subjects``; the per-subject table (``subject_id``,
        ``dice_<class>``, ``dice_mean``, ``hd95``); the predicted label maps, shaped like ``masks``.
    """
    predicted = predict_masks(model, images, batch_size=config.trainer.batch_size)
    table = subject_metrics(predicted, masks, labels, config.class_names)
    metrics: dict[str, Any] = {f"{split}/n_subjects": len(table)}
    for metric in (DICE_MEAN, HD95):
        interval = mean_interval(table[metric], metric, seed=config.seed)
        metrics.update(
            {
                f"{split}/{metric}": interval.estimate,
                f"{split}/{metric}_low": interval.low,
                f"{split}/{metric}_high": interval.high,
            }
        )
    return metrics, table, predicted
