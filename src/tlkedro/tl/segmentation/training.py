"""Training and inference of a ``SegmentationNet``: the typed configuration, the module and ``fit_segmentation``.

The pieces are those of classification: the architecture, objective, strategy, optimizer and schedule
configurations of ``tlkedro.tl.config`` (validated once), the strategy registry (``prepare`` on the
``TLModel`` before the decoder is put on its encoder, ``param_groups`` over ``encoder`` and ``decoder``), the
``TransferModule``'s optimizer set-up, the project's ``Trainer`` (``tl.launch.build_trainer``) and the
per-epoch ``History``. What differs is the target, a label map per image (the ``<split>_masks`` array),
and the loss (``dice_ce``).

Not supported (yet): augmentation (a random spatial transform would have to move the mask with the
image), exact resume of a killed run, covariates and auxiliary terms.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics import MetricCollection

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import make_checkpoint
from tlkedro.tl.config import (
    ArchitectureConfig,
    ObjectiveConfig,
    OptimizerConfig,
    SchedulerConfig,
    StrategyConfig,
    TrainerConfig,
)
from tlkedro.tl.data import ArrayDataset, subject_split
from tlkedro.tl.history import History
from tlkedro.tl.launch import build_trainer
from tlkedro.tl.module import TransferModule
from tlkedro.tl.objectives import Objective, TaskInfo
from tlkedro.tl.objectives.segmentation import SEGMENTATION
from tlkedro.tl.segmentation.network import SegmentationNet, build_segmentation_model
from tlkedro.tl.strategies import Strategy, create_strategy

# The synthetic cohort's tissue classes, background first (what conf/segmentation trains on).
DEFAULT_CLASSES = ("background", "csf", "grey_matter", "white_matter", "ventricles")


class SegmentConfig(BaseModel):
    """Everything ``fit_segmentation`` needs to train one segmentation model.

    Attributes:
        seed: Seed of the validation split, the initialisation and the data order.
        class_names: Every class of the label maps, index 0 the background; sets the output channels.
        architecture: The encoder's network (any registered convolutional architecture).
        decoder_channels: Channels of the decoder's last block, at input resolution.
        objective: The loss; its task must be ``segmentation`` (``dice_ce``).
        strategy: How the source encoder becomes the encoder to train (``scratch``, ``full``,
            ``freeze_up_to``, ``truncated``, ``linear_probe``: the decoder only, ...).
        optimizer: The optimizer.
        scheduler: The learning-rate schedule.
        trainer: Lightning and loop settings (``keep_epoch``, ``early_stopping_patience``, ...).
        val_fraction: Fraction of the training subjects held out for validation (the loss that picks
            the kept epoch).
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    class_names: list[str] = Field(default_factory=lambda: list(DEFAULT_CLASSES), min_length=2)
    architecture: ArchitectureConfig
    decoder_channels: int = Field(32, ge=1)
    objective: ObjectiveConfig = Field(default_factory=lambda: ObjectiveConfig(name="dice_ce"))
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="scratch"))
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    val_fraction: float = Field(0.2, gt=0, lt=1)

    @field_validator("objective")
    @classmethod
    def _segments(cls, objective: ObjectiveConfig) -> ObjectiveConfig:
        task = objective.build().task
        if task != SEGMENTATION:
            raise ValueError(
                f"objective {objective.name!r} is for {task}, not segmentation; use dice_ce"
            )
        return objective

    @field_validator("strategy")
    @classmethod
    def _no_auto_cut(cls, strategy: StrategyConfig) -> StrategyConfig:
        if strategy.kwargs.get("cut_at") == "auto":
            raise ValueError("truncated with cut_at: auto is for classification; give a stage")
        return strategy

    @property
    def info(self) -> TaskInfo:
        """The task as the objective reads it: one output per class."""
        return TaskInfo(task=SEGMENTATION, num_classes=len(self.class_names))  # type: ignore[arg-type]


def build_segmenter(
    config: SegmentConfig, image_shape: tuple[int, ...], source: dict | None
) -> tuple[SegmentationNet, Strategy]:
    """The configured encoder, prepared by the strategy from the source's encoder, with a decoder.

    Args:
        config: The configuration.
        image_shape: ``(N, C, *spatial)`` of the images (channels and size build the encoder).
        source: A source checkpoint (``make_checkpoint``: a pretrain variant's model, or a weights
            file's); only its ``encoder.*`` weights are used. ``None`` for none.
    """
    model = create_architecture(
        config.architecture.name,
        **{
            "in_channels": int(image_shape[1]),
            "img_size": [int(n) for n in image_shape[2:]],
            **config.architecture.kwargs,
        },
    )
    strategy = create_strategy(config.strategy.name, **config.strategy.kwargs)
    model = strategy.prepare(model, source["state_dict"] if source is not None else None)
    return SegmentationNet(model, len(config.class_names), config.decoder_channels), strategy


class SegmentationModule(TransferModule):
    """``TransferModule`` on batches of ``(images, masks)``: the optimizer and callbacks are its own.

    No per-step metric collection: Dice and HD95 are computed per subject on the whole label map at
    evaluation (``tlkedro.tl.segmentation.metrics``); training logs ``train/loss`` and ``val/loss``.
    """

    def __init__(
        self,
        model: SegmentationNet,
        objective: Objective,
        strategy: Strategy,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        info: TaskInfo,
    ) -> None:
        # TransferModule builds its classification or regression metric collections; none apply here.
        super().__init__(model, objective, strategy, optimizer, scheduler, info)
        self.train_metrics = MetricCollection({})
        self.val_metrics = MetricCollection({})

    def _loss(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        images, masks = batch
        loss = self.objective.loss(self.model(images), masks, self.info)
        if stage == "train" and (penalty := self.strategy.penalty(self.model)) is not None:
            loss = loss + penalty
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._loss(batch, "val")


@dataclasses.dataclass
class SegmentationFit:
    """What ``fit_segmentation`` returns: the kept model's checkpoint, the history and a summary."""

    checkpoint: dict[str, Any]
    history: pd.DataFrame
    summary: dict[str, Any]


def fit_segmentation(
    config: SegmentConfig,
    images: np.ndarray,
    masks: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
) -> SegmentationFit:
    """Train a segmentation model on the subjects of ``labels`` minus a validation set.

    Args:
        config: The validated configuration.
        images: ``(N, C, *spatial)`` images.
        masks: ``(N, 1, *spatial)`` label maps (class indices), row ``i`` that of image ``i``.
        labels: One row per image with ``subject_id`` (the validation split keeps subjects whole).
        source: The source checkpoint whose encoder the strategy transfers, or ``None``.

    Returns:
        The checkpoint of the model at the lowest validation loss (``trainer.keep_epoch: best``) or at
        the last epoch; ``meta`` holds ``class_names``, ``seed``, ``train_subjects``, ``best_epoch``.
    """
    if masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}: one label map "
            "per image row, of the image's spatial size"
        )
    if int(masks.max()) >= len(config.class_names):
        raise ValueError(
            f"masks hold label {int(masks.max())}, but class_names has {len(config.class_names)} "
            f"classes ({', '.join(config.class_names)})"
        )
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_rows, val_rows = subject_split(labels["subject_id"], config.val_fraction, config.seed)
    model, strategy = build_segmenter(config, images.shape, source)
    module = SegmentationModule(
        model, config.objective.build(), strategy, config.optimizer, config.scheduler, config.info
    )
    batch = config.trainer.batch_size
    train = DataLoader(
        ArrayDataset(images, masks, train_rows),
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    val = DataLoader(ArrayDataset(images, masks, val_rows), batch_size=batch)
    history = History()
    with tempfile.TemporaryDirectory() as directory:
        best = ModelCheckpoint(
            dirpath=directory, monitor="val/loss", mode="min", save_weights_only=True
        )
        stopping = EarlyStopping(
            monitor="val/loss", mode="min", patience=config.trainer.early_stopping_patience
        )
        trainer = build_trainer(config.trainer, Path(directory), [history, best, stopping])
        start = time.perf_counter()
        trainer.fit(module, train, val)
        seconds = time.perf_counter() - start
        rows = history.frame()
        if config.trainer.keep_epoch == "best":
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            kept = rows.loc[rows["val/loss"].idxmin()]
        else:
            kept = rows.iloc[-1]
    subjects = labels["subject_id"].astype(str)
    meta = {
        "task": SEGMENTATION,
        "class_names": list(config.class_names),
        "objective": config.objective.model_dump(mode="json"),
        "seed": config.seed,
        "epochs_run": len(rows),
        "best_epoch": int(kept["epoch"]),
        "train_subjects": sorted(subjects.iloc[train_rows].unique()),
    }
    summary = {
        **strategy.summary(model),
        "epochs_run": len(rows),
        "best_epoch": int(kept["epoch"]),
        "best_val_loss": float(kept["val/loss"]),
        "fit_seconds": seconds,
        "n_train_subjects": int(subjects.nunique()),
    }
    return SegmentationFit(make_checkpoint(model, meta), rows, summary)


def predict_masks(
    checkpoint: dict[str, Any], images: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """The checkpoint's predicted label map of every image, ``(N, 1, *spatial)`` uint8."""
    model = build_segmentation_model(checkpoint)
    loader = DataLoader(ArrayDataset(images, np.zeros(len(images))), batch_size=batch_size)
    with torch.no_grad():
        maps = [model(batch).argmax(dim=1, keepdim=True) for batch, _ in loader]
    return torch.cat(maps).numpy().astype(np.uint8)
