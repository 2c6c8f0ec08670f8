"""Scoring images with trained checkpoints, labels optional: every head, per subject, bias-corrected.

What the ``predict`` pipeline's nodes call, and what a notebook calls on a ``model.pt`` it loaded with
``tlkedro.tl.checkpoint.load_checkpoint``:

- ``model_heads(checkpoint)``: the network and each head it was trained with: the primary head, named by
  its target (``sex``), then the multitask heads (``objectives.multitask``, named by their label column).
- ``predict_heads(checkpoint, images, subject_ids)``: one row per subject and head, the outputs of the
  subject's rows (slices, sessions) averaged as ``tl.training.evaluate`` averages them.
- ``validation_predictions``: what ``fit`` saves in ``meta["validation_predictions"]``: each head's
  per-subject predictions of the validation subjects, on which the bias correction is fitted.
- ``fit_bias_correction``: the linear correction of the regression to the mean of brain-age models.
- ``score(checkpoints, images, labels)``: a model's predictions table, averaged over several checkpoints
  (the fold models of a cross-validated variant), with the known targets and the gap where labels exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.config import TrainerConfig
from tlkedro.tl.data import COVARIATES, ArrayDataset
from tlkedro.tl.evaluation.predictions import class_probabilities
from tlkedro.tl.labels import covariate_values
from tlkedro.tl.launch import build_predictor
from tlkedro.tl.objectives import PrimaryTerm, TaskInfo, create_objective
from tlkedro.tl.objectives.multitask import load_head

# A fit on fewer validation subjects gives a slope too noisy to divide by.
MIN_BIAS_SUBJECTS = 10
# Dividing by a slope below this would multiply a model's errors more than tenfold: such a model has not
# learnt the target (it predicts about the training mean), and no correction makes it a brain-age model.
MIN_BIAS_SLOPE = 0.1
NOT_CORRECTED = "n/a (classification)"


@dataclasses.dataclass(frozen=True)
class Head:
    """One output of a trained model.

    Attributes:
        name: The label column it predicts (``sex``, ``age``).
        term: The loss term it was trained with, which turns its outputs into predictions.
        info: Its task statistics (class count, target mean and spread).
        layer: Its layer on the encoder's pooled features.
    """

    name: str
    term: PrimaryTerm
    info: TaskInfo
    layer: nn.Module

    @property
    def width(self) -> int:
        """Columns of its predictions: the class probabilities, or one value."""
        return self.info.num_classes if self.info.task == "classification" else 1


def model_heads(checkpoint: Mapping[str, Any]) -> tuple[nn.Module, list[Head]]:
    """The checkpoint's network (eval mode) and its heads, the primary one first."""
    model = build_model(checkpoint)
    meta = checkpoint["meta"]
    objective = create_objective(meta["objective"]["name"], **meta["objective"]["kwargs"])
    # head(head_drop(features)) is the TLModel's forward; head_drop is the identity in eval mode.
    heads = [
        Head(
            meta["target"],
            objective.primary,
            TaskInfo.from_dict(meta),
            _PrimaryHead(model),
        )
    ]
    for saved in checkpoint.get("heads", {}).values():
        heads.append(Head(*load_head(saved)))
    names = [head.name for head in heads]
    if len(set(names)) != len(names):
        raise ValueError(f"the checkpoint has two heads for one label column: {names}")
    return model, heads


class _PrimaryHead(nn.Module):
    """The model's own head on pooled features, taking the covariates the model was trained with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, covariates: Tensor | None = None) -> Tensor:
        return self.model.head_outputs(features, covariates)


class _HeadsModule(L.LightningModule):
    """One encoder pass per batch, then every head's predictions side by side, as float32."""

    def __init__(self, model: nn.Module, heads: Sequence[Head]) -> None:
        super().__init__()
        self.model = model
        self.heads = list(heads)
        self.layers = nn.ModuleList(head.layer for head in heads)

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        features = self.model.forward_features(batch[0])
        covariates = batch[2].get(COVARIATES) if len(batch) > 2 else None
        columns = []
        for index, (head, layer) in enumerate(zip(self.heads, self.layers, strict=True)):
            # Only the primary head (the model's own) takes covariates; the auxiliary heads do not.
            outputs = layer(features, covariates) if index == 0 else layer(features)
            prediction = head.term.predict(outputs, head.info)
            if prediction.probabilities is not None:
                columns.append(prediction.probabilities.float())
            else:
                columns.append(prediction.values.float().reshape(-1, 1))
        return torch.cat(columns, dim=1)


def _probability_names(num_classes: int) -> list[str]:
    """The predictions tables' class-probability columns: ``probability`` (class 1 of two), or
    ``probability_<k>`` for each class of more (docs/architecture.md, "Predictions tables")."""
    return ["probability"] if num_classes == 2 else [f"probability_{k}" for k in range(num_classes)]


def predict_heads(
    checkpoint: Mapping[str, Any],
    images: np.ndarray,
    subject_ids: Sequence[str] | pd.Series,
    *,
    batch_size: int = 64,
    trainer: TrainerConfig | None = None,
    covariates: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every head's predictions, per subject.

    Args:
        checkpoint: A checkpoint of ``fit``.
        images: ``(N, 1, ...)`` images, preprocessed as the model's training images were.
        subject_ids: The subject of each image row.
        batch_size: Images per forward pass.
        trainer: Where to run (``accelerator``, ``precision``, ``enable_progress_bar``); ``None``: the
            defaults without a progress bar.
        covariates: ``(N, K)`` values of the checkpoint's ``covariates`` per image row
            (``tlkedro.tl.labels.covariate_values``); required by a model trained with covariates.

    Returns:
        One row per subject and head (subjects sorted): ``subject_id``, ``head``, ``task``,
        ``prediction`` (class, or value in the target's units) and, for classification, the class
        probabilities (``probability`` of class 1 of two, or ``probability_<k>`` of each class). Classes: the most probable after averaging the rows.

    Raises:
        ValueError: No images, not one subject per image row, or a model trained with covariates
            given none.
    """
    subjects = pd.Series(subject_ids).astype(str).to_numpy()
    needed = checkpoint["meta"].get("covariates") or []
    if needed and covariates is None:
        raise ValueError(f"this model's head takes the covariates {needed}: give their values")
    if not len(images) or len(subjects) != len(images):
        raise ValueError(
            f"need one subject per image row; got {len(images)} images, {len(subjects)} ids"
        )
    model, heads = model_heads(checkpoint)
    settings = trainer if trainer is not None else TrainerConfig(enable_progress_bar=False)
    # Predicting reads only the images; the zero targets fill the slot ArrayDataset keeps for them.
    loader = DataLoader(
        ArrayDataset(images, np.zeros(len(images), np.float32), covariates=covariates),
        batch_size=batch_size,
    )
    outputs = torch.cat(build_predictor(settings).predict(_HeadsModule(model, heads), loader))
    outputs = outputs.cpu().numpy()
    tables, start = [], 0
    for head in heads:
        block = pd.DataFrame(outputs[:, start : start + head.width]).groupby(subjects).mean()
        start += head.width
        table = pd.DataFrame({"subject_id": block.index, "head": head.name, "task": head.info.task})
        if head.info.task == "classification":
            probabilities = block.to_numpy()
            table["prediction"] = probabilities.argmax(axis=1)
            columns = _probability_names(head.info.num_classes)
            table[columns] = probabilities[:, -len(columns) :]
        else:
            table["prediction"] = block[0].to_numpy()
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def subject_targets(labels: pd.DataFrame, column: str) -> pd.Series:
    """A label column averaged per subject (index: subject id), NaN where unknown or absent."""
    subjects = labels["subject_id"].astype(str)
    if column not in labels.columns:
        return pd.Series(np.nan, index=pd.Index(sorted(subjects.unique())), dtype=np.float64)
    values = pd.to_numeric(labels[column], errors="coerce").astype(np.float64)
    return values.groupby(subjects.to_numpy()).mean()


def validation_predictions(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """Each head's predictions of the subjects whose label is known, as plain lists for a checkpoint.

    Args:
        predictions: ``predict_heads`` of the validation images.
        labels: Their label rows (``subject_id`` and the heads' columns).

    Returns:
        ``{head: {"subject_id": [...], "target": [...], "prediction": [...]}}``.
    """
    record = {}
    for head, rows in predictions.groupby("head", sort=False):
        targets = subject_targets(labels, head).reindex(rows["subject_id"]).to_numpy()
        known = ~np.isnan(targets)
        record[str(head)] = {
            "subject_id": rows["subject_id"][known].tolist(),
            "target": targets[known].tolist(),
            "prediction": rows["prediction"][known].astype(float).tolist(),
        }
    return record


class BiasCorrectionError(ValueError):
    """The bias correction cannot be fitted; the message says why."""


@dataclasses.dataclass(frozen=True)
class BiasCorrection:
    """``corrected = (predicted - intercept) / slope``, from ``predicted = slope * target + intercept``.

    Attributes:
        slope: ``a`` of the fit on the validation subjects.
        intercept: ``b`` of the fit.
        n_subjects: Validation subjects it was fitted on.
    """

    slope: float
    intercept: float
    n_subjects: int

    def apply(self, predicted: np.ndarray | pd.Series) -> np.ndarray:
        """The corrected predictions."""
        return (np.asarray(predicted, dtype=np.float64) - self.intercept) / self.slope

    def describe(self) -> str:
        """One line for the predictions table and the report."""
        return (
            f"linear: (prediction - {self.intercept:.4g}) / {self.slope:.4g}, fitted on "
            f"{self.n_subjects} validation subjects"
        )


def fit_bias_correction(target: Sequence[float], predicted: Sequence[float]) -> BiasCorrection:
    """The linear age-bias correction, fitted on a model's validation predictions.

    Brain-age models regress to the mean: they overestimate the young and underestimate the old, so the
    raw gap correlates with age. Fitting ``predicted = a * age + b`` on held-out (validation) subjects and
    taking ``(predicted - b) / a`` removes that trend without using the new subjects' ages (Smith et al.
    2019, NeuroImage 200:528-539; de Lange & Cole 2020, NeuroImage: Clinical 26:102229). ``scipy.stats``
    fits the line.

    Raises:
        BiasCorrectionError: Fewer than ``MIN_BIAS_SUBJECTS`` subjects, constant targets, or a slope
            below ``MIN_BIAS_SLOPE``; the message gives the figures.
    """
    target, predicted = np.asarray(target, np.float64), np.asarray(predicted, np.float64)
    if len(target) < MIN_BIAS_SUBJECTS:
        raise BiasCorrectionError(
            f"{len(target)} validation subjects, fewer than the {MIN_BIAS_SUBJECTS} a fit needs"
        )
    if np.ptp(target) == 0:
        raise BiasCorrectionError("the validation subjects' targets are all equal")
    fit = stats.linregress(target, predicted)
    if not fit.slope >= MIN_BIAS_SLOPE:
        raise BiasCorrectionError(
            f"slope {fit.slope:.3g} of the prediction on the target over {len(target)} validation "
            f"subjects is below {MIN_BIAS_SLOPE}: the model has not learnt the target"
        )
    return BiasCorrection(float(fit.slope), float(fit.intercept), len(target))


def _correction(checkpoint: Mapping[str, Any], head: str) -> BiasCorrection:
    saved = checkpoint["meta"].get("validation_predictions")
    if saved is None:
        raise BiasCorrectionError(
            "the checkpoint has no validation predictions (trained before tlkedro saved them)"
        )
    return fit_bias_correction(saved[head]["target"], saved[head]["prediction"])


def _corrected(runs: list[pd.DataFrame], checkpoints: Sequence[Mapping[str, Any]]) -> None:
    """Add ``corrected_prediction`` and ``bias_correction`` to each run's table, in place.

    Each regression head is corrected with each checkpoint's own fit, or, if any of its checkpoints
    cannot be corrected, none is (so that a fold average never mixes corrected and raw predictions).
    """
    for run in runs:
        run["corrected_prediction"] = np.nan
        run["bias_correction"] = NOT_CORRECTED
    regression = runs[0].loc[runs[0]["task"] == "regression", "head"].unique()
    for head in regression:
        try:
            corrections = [_correction(checkpoint, head) for checkpoint in checkpoints]
        except BiasCorrectionError as error:
            corrections, description = None, f"none: {error}"
        else:
            description = corrections[0].describe()
            if len(corrections) > 1:
                slopes = [c.slope for c in corrections]
                description = (
                    f"linear, fitted per model on its validation subjects ({len(corrections)} models, "
                    f"slopes {min(slopes):.3g} to {max(slopes):.3g}), corrected predictions averaged"
                )
        for i, run in enumerate(runs):
            rows = run["head"] == head
            raw = run.loc[rows, "prediction"]
            run.loc[rows, "corrected_prediction"] = (
                raw.to_numpy(np.float64) if corrections is None else corrections[i].apply(raw)
            )
            run.loc[rows, "bias_correction"] = description


def score(
    checkpoints: Sequence[Mapping[str, Any]],
    images: np.ndarray,
    labels: pd.DataFrame,
    *,
    batch_size: int = 64,
    trainer: TrainerConfig | None = None,
) -> pd.DataFrame:
    """A model's predictions table for new images: every head, per subject, bias-corrected.

    Args:
        checkpoints: One model's checkpoint, or the fold models of a cross-validated variant, whose
            predictions are averaged (class probabilities, then the most probable class; values, raw
            and corrected, each corrected by its own model's fit).
        images: ``(N, 1, ...)`` images preprocessed as the model's training images were.
        labels: One row per image row: ``subject_id``, any known labels (NaN where unknown) and the
            covariates a model was trained with (``head_scale``).
        batch_size: Images per forward pass.
        trainer: Where to run, as for ``predict_heads``.

    Returns:
        One row per subject and head: ``subject_id``, ``head``, ``task``, ``target`` (the known label,
        NaN where unknown), ``prediction``, the class probabilities (classification), and for regression
        ``corrected_prediction`` and ``gap`` (corrected prediction minus target: the brain-age gap of
        an age head); ``bias_correction`` says which correction was applied; ``models`` counts the
        checkpoints averaged.
    """
    if not checkpoints:
        raise ValueError("no checkpoint to score with")
    runs = [
        predict_heads(
            c,
            images,
            labels["subject_id"],
            batch_size=batch_size,
            trainer=trainer,
            covariates=covariate_values(labels, c["meta"].get("covariates") or []),
        )
        for c in checkpoints
    ]
    _corrected(runs, checkpoints)
    stacked = pd.concat(runs, ignore_index=True)
    keys = ["subject_id", "head", "task", "bias_correction"]
    values = [c for c in stacked.columns if c not in keys]
    table = stacked.groupby(keys, sort=False)[values].mean().reset_index()
    for head, rows in table.groupby("head", sort=False):
        if rows["task"].iloc[0] == "classification":
            # Without the other heads' probability columns, empty on these rows.
            probabilities = class_probabilities(rows.dropna(axis=1, how="all"))
            table.loc[rows.index, "prediction"] = probabilities.argmax(axis=1)
        targets = subject_targets(labels, str(head))
        table.loc[rows.index, "target"] = targets.reindex(rows["subject_id"]).to_numpy()
    table["gap"] = np.where(
        table["task"] == "regression", table["corrected_prediction"] - table["target"], np.nan
    )
    table["models"] = len(checkpoints)
    front = ["subject_id", "head", "task", "target", "prediction", "corrected_prediction", "gap"]
    rest = [c for c in table.columns if c not in front and c not in ("bias_correction", "models")]
    return table[[*front, *rest, "bias_correction", "models"]]
