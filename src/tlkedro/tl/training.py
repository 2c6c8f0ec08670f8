"""``fit`` and ``evaluate``: the entry points the training pipelines' nodes call.

``fit`` trains one model with Lightning from a validated ``TrainConfig`` and returns its best checkpoint,
a per-epoch history and a summary. It composes the parts: the data module (``tlkedro.tl.data``), the
module (``tlkedro.tl.module``), the recording callbacks (``tlkedro.tl.history``), exact resume
(``tlkedro.tl.resume``) and the trainer (``tlkedro.tl.launch``). It is reproducible: the same
configuration, data and seed give the same metrics on a CPU. It is resumable: given a ``workdir``, a run
killed part-way continues from its last epoch when started again with the same configuration and data, to
the same result as a run that was never interrupted.

``evaluate`` runs a checkpoint over one split with ``Trainer.predict`` and computes the metrics per
subject.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from tlkedro.tl.batchnorm import RecalibrateBatchNorm, trained_batchnorms
from tlkedro.tl.checkpoint import build_model, make_checkpoint
from tlkedro.tl.config import TrainConfig, TrainerConfig
from tlkedro.tl.data import ArrayDataset, MRIDataModule, subject_labels
from tlkedro.tl.history import History, Throughput
from tlkedro.tl.inference import predict_heads, validation_predictions
from tlkedro.tl.labels import covariate_values, target_values
from tlkedro.tl.launch import (
    adopt_launched_state,
    build_predictor,
    build_trainer,
    ran_in_launched_processes,
)
from tlkedro.tl.metrics import metric_collection, trivial_check
from tlkedro.tl.module import PredictionModule, build_module
from tlkedro.tl.objectives import PROGRESS, UNLABELLED, TaskInfo, create_objective
from tlkedro.tl.objectives.multitask import saved_heads
from tlkedro.tl.resume import fingerprint, run_directory
from tlkedro.tl.strategies import phase_at
from tlkedro.tl.views import ViewsDataModule

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        checkpoint: ``make_checkpoint`` of the model at its lowest validation loss (or at its last epoch,
            ``trainer.keep_epoch: last``), with its multitask heads; ``meta`` holds the task statistics
            (``TaskInfo`` fields: task, num_classes, target_mean, target_std, ...), ``target``,
            ``objective`` (name and kwargs), ``covariates`` (the label columns the head takes), ``seed``,
            ``epochs_run``, ``best_epoch`` (the epoch whose weights it holds) and
            ``validation_predictions`` (every head's, per validation subject:
            ``tlkedro.tl.inference.validation_predictions``).
        history: One row per epoch (``tlkedro.tl.history.History``): ``epoch`` (from 0),
            ``train/loss``, ``val/loss``, the train and validation metrics, the learning rate of each
            parameter group (``lr/<group>``) and ``trainable_params``.
        summary: ``total_params``, ``trainable_params``, ``epochs_run``, ``best_epoch``,
            ``best_val_loss``, ``fit_seconds`` (this call), ``train_images_per_second``,
            ``train_seconds/<phase>`` (the training batches' time in each of the strategy's phases;
            ``train`` for strategies without phases; a resumed run counts the epochs before its
            interruption too), ``resumed``, and the check against the trivial predictor
            (``tlkedro.tl.metrics.trivial_check``): ``best_val_<metric>``, ``trivial_val_<metric>``
            and ``worse_than_trivial``.
    """

    checkpoint: dict[str, Any]
    history: pd.DataFrame
    summary: dict[str, Any]


def fit(
    config: TrainConfig,
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
    workdir: str | Path | None = None,
    unlabelled: np.ndarray | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train a model as ``config`` says, on the subjects of ``labels`` minus a validation set.

    Args:
        config: The validated training configuration.
        images: ``(N, 1, ...)`` images, e.g. the memory-mapped ``<split>_images``.
        labels: One row per image row with ``subject_id`` and the target column.
        source: The source model's checkpoint (``make_checkpoint``), handed to the strategy as
            ``source["state_dict"]``; ``None`` when there is none.
        workdir: Directory for Lightning's checkpoints (``last.ckpt``, ``best.ckpt``) and the run's
            fingerprint. A ``last.ckpt`` left there by a killed run of the same configuration and data is
            resumed; checkpoints of any other run are deleted. After a complete run the directory's
            checkpoints are deleted, since the result holds the best model. ``None``: a temporary
            directory, no resume.
        unlabelled: ``(M, 1, ...)`` images without labels (another split or site), for objectives whose
            auxiliary terms need them (``reconstruction``, ``consistency``, ``domain_adversarial``);
            each training image is paired with one of them per epoch. A self-supervised objective
            (``simclr``, ``masked_autoencoder``) trains on them too, besides the training rows of
            ``images``, and reads no label column of ``labels`` (only ``subject_id``, for the split).
        callbacks: Further Lightning callbacks, e.g. Optuna's pruning callback (``tlkedro.tl.tuning``).

    Returns:
        The best model's checkpoint, the per-epoch history and a summary.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    unlabelled = _needed_unlabelled(config, unlabelled)
    datamodule = _datamodule(config, images, labels, unlabelled)
    train_targets = datamodule.targets[datamodule.train_indices]
    labelled = config.objective.build().needs_labels
    info = (
        TaskInfo.from_targets(config.task, train_targets, datamodule.targets)
        if labelled
        else TaskInfo(task=config.task)  # nothing is predicted: the statistics stay unset
    )
    extra_labels = {
        name: values[datamodule.train_indices] for name, values in datamodule.extras.items()
    }
    covariates = datamodule.covariates
    train_covariates = None if covariates is None else covariates[datamodule.train_indices]
    module = build_module(
        config, info, images.shape, source, extra_labels, train_covariates, train_targets
    )
    trainable_params = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    run_fingerprint = fingerprint(config, images, labels, source, unlabelled)
    history, throughput = History(), Throughput()
    with run_directory(workdir, run_fingerprint, config.seed) as run:
        early_stopping = EarlyStopping(
            monitor="val/loss", mode="min", patience=config.trainer.early_stopping_patience
        )
        callbacks = [history, throughput, early_stopping, *run.callbacks, *callbacks]
        if _recalibrates(config.trainer, images, module):
            plain = ArrayDataset(images, datamodule.targets, datamodule.train_indices)
            callbacks.append(RecalibrateBatchNorm(plain, config.trainer.batch_size, config.seed))
        trainer = build_trainer(config.trainer, run.path, callbacks, run.plugins)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=run.resume_from, weights_only=True)
        fit_seconds = time.perf_counter() - start
        if ran_in_launched_processes(trainer):
            adopt_launched_state(run.last, [history, throughput, run.best])
        rows = history.frame()
        if config.trainer.keep_epoch == "best":
            module.load_state_dict(run.best_weights())
            best = rows.loc[rows["val/loss"].idxmin()]
        else:
            if ran_in_launched_processes(trainer):  # this process's module was not trained
                module.load_state_dict(
                    torch.load(run.last, map_location="cpu", weights_only=True)["state_dict"]
                )
            best = rows.iloc[-1]
        best_val_loss = float(best["val/loss"])

    best_epoch = int(best["epoch"])
    meta = {
        **info.as_dict(),
        "target": config.target if labelled else None,
        "objective": config.objective.model_dump(mode="json"),
        "covariates": list(config.covariates),
        "seed": config.seed,
        "epochs_run": len(rows),
        "best_epoch": best_epoch,
    }
    phases = module.strategy.phases()
    summary: dict[str, Any] = {
        "total_params": sum(p.numel() for p in module.model.parameters()),
        "trainable_params": trainable_params,
        "epochs_run": len(rows),
        "best_epoch": best_epoch,
        "best_val_loss": best_val_loss,
        "fit_seconds": fit_seconds,
        "train_images_per_second": throughput.images_per_second(),
        "resumed": run.resume_from is not None,
        **{f"train_seconds/{name}": 0.0 for name, _ in phases},
    }
    if labelled:  # a self-supervised loss has no trivial predictor to compare with
        summary.update(
            trivial_check(info, train_targets, datamodule.targets[datamodule.val_indices], best)
        )
    for epoch, seconds in throughput.epoch_seconds.items():
        summary[f"train_seconds/{phase_at(phases, epoch)}"] += seconds
    checkpoint = make_checkpoint(module.model, meta, heads=saved_heads(module.objective))
    if labelled:  # every head's predictions of the validation subjects: predict's bias correction
        val_rows = datamodule.val_indices
        val_predictions = predict_heads(
            checkpoint,
            images[val_rows],
            labels["subject_id"].iloc[val_rows],
            batch_size=config.trainer.batch_size,
            trainer=config.trainer,
            covariates=None if covariates is None else covariates[val_rows],
        )
        checkpoint["meta"]["validation_predictions"] = validation_predictions(
            val_predictions, labels.iloc[val_rows]
        )
    return FitResult(checkpoint, rows, summary)


def _needed_unlabelled(config: TrainConfig, unlabelled: np.ndarray | None) -> np.ndarray | None:
    """``unlabelled`` if the objective's auxiliary terms or its self-supervised term read them, else
    ``None``.

    Raises:
        ValueError: If the terms need them and none were given.
    """
    objective = config.objective.build()
    if not objective.needs_labels:
        return unlabelled  # further training images, if any
    if UNLABELLED not in objective.needs():
        return None  # nothing would read them, and they would change the fingerprint
    if unlabelled is None:
        raise ValueError(
            f"objective {config.objective.name!r} has auxiliary terms that need unlabelled images; give "
            "fit(unlabelled=...) (in the pipelines: `unlabelled_from: <split>`, e.g. external)"
        )
    return unlabelled


def _recalibrates(settings: TrainerConfig, images: np.ndarray, module: L.LightningModule) -> bool:
    """Whether BatchNorm statistics are recomputed before validations (``trainer.recalibrate_batchnorm``)."""
    wanted = settings.recalibrate_batchnorm
    if wanted == "auto":
        wanted = images.ndim == 5  # (N, C, D, H, W) volumes
    return bool(wanted) and bool(trained_batchnorms(module.model))


def _datamodule(
    config: TrainConfig,
    images: np.ndarray,
    labels: pd.DataFrame,
    unlabelled: np.ndarray | None,
) -> MRIDataModule:
    objective = config.objective.build()
    if not objective.needs_labels:
        return ViewsDataModule(
            images,
            labels,
            views=objective.primary.view_transforms(images.shape[2:]),
            val_fraction=config.data.val_fraction,
            batch_size=config.trainer.batch_size,
            seed=config.seed,
            num_workers=config.trainer.num_workers,
            unlabelled=unlabelled,
        )
    return MRIDataModule(
        images,
        labels,
        target=config.target,
        task=config.task,
        val_fraction=config.data.val_fraction,
        batch_size=config.trainer.batch_size,
        seed=config.seed,
        augmentation=config.data.augmentation,
        num_workers=config.trainer.num_workers,
        covariate_columns=config.covariates,
        extra_columns=sorted(objective.needs() - {UNLABELLED, PROGRESS}),
        unlabelled=unlabelled,
    )


def evaluate(
    checkpoint: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    target: str,
    split: str,
    batch_size: int = 64,
    trainer: TrainerConfig | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and predictions of a checkpoint on one split, per subject.

    The rows of one subject (several slices, or sessions) are averaged before the metrics: class
    probabilities for classification (the predicted class is the most probable one after averaging),
    predictions and targets for regression.

    Args:
        checkpoint: A checkpoint from ``fit`` (``FitResult.checkpoint``).
        images: ``(N, 1, ...)`` images of the split.
        labels: One row per image row with ``subject_id`` and the target column.
        target: The label column; must be the one the model was trained on.
        split: Name of the split, used as the metrics' prefix and in the predictions table.
        batch_size: Images per forward pass.
        trainer: Where and how to run the model: ``accelerator``, ``precision`` and
            ``enable_progress_bar`` are used (on one device); ``None``: the defaults without a
            progress bar.

    Returns:
        Metrics keyed ``"<split>/<metric>"``, and a table with one row per subject: ``subject_id``,
        ``split``, ``target``, ``prediction`` and, for classification, ``probability`` (of class 1) with
        two classes or ``probability_<k>`` for each class ``k`` with more.
    """
    meta = checkpoint["meta"]
    if target != meta["target"]:
        raise ValueError(f"the checkpoint predicts {meta['target']!r}, not {target!r}")
    info = TaskInfo.from_dict(meta)
    objective = create_objective(meta["objective"]["name"], **meta["objective"]["kwargs"])
    targets = target_values(labels, target, info.task)
    if info.task == "classification" and targets.max() >= info.num_classes:
        raise ValueError(f"{split}: class {targets.max()} of {target!r} is unknown to the model")
    settings = trainer if trainer is not None else TrainerConfig(enable_progress_bar=False)
    module = PredictionModule(build_model(checkpoint), objective, info)
    covariates = covariate_values(labels, meta.get("covariates", []))
    loader = DataLoader(ArrayDataset(images, targets, covariates=covariates), batch_size=batch_size)
    outputs = build_predictor(settings).predict(module, loader)
    rows = pd.DataFrame(torch.cat(outputs).cpu().numpy().reshape(len(targets), -1))
    subjects = labels["subject_id"].astype(str).reset_index(drop=True)
    per_subject = rows.groupby(subjects.to_numpy()).mean()

    table = pd.DataFrame({"subject_id": per_subject.index, "split": split})
    if info.task == "classification":
        probabilities = torch.tensor(per_subject.to_numpy())
        subject_targets = torch.tensor(
            subject_labels(subjects, targets).loc[per_subject.index].to_numpy()
        )
        table["target"] = subject_targets.numpy()
        table["prediction"] = probabilities.argmax(dim=1).numpy()
        if info.num_classes == 2:
            table["probability"] = probabilities[:, 1].numpy()
        else:
            for k in range(info.num_classes):
                table[f"probability_{k}"] = probabilities[:, k].numpy()
        metric_inputs = (probabilities, subject_targets)
    else:
        mean_targets = pd.Series(targets, index=subjects.to_numpy()).groupby(level=0).mean()
        table["target"] = mean_targets.loc[per_subject.index].to_numpy()
        table["prediction"] = per_subject[0].to_numpy()
        metric_inputs = (
            torch.tensor(table["prediction"].to_numpy(), dtype=torch.float32),
            torch.tensor(table["target"].to_numpy(), dtype=torch.float32),
        )
    metrics = metric_collection(info, split)
    metrics.update(*metric_inputs)
    values = {name: float(value) for name, value in metrics.compute().items()}
    return values, table
