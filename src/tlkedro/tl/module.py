"""``TransferModule``: the LightningModule that trains a given network with a given objective and strategy.

The module is a system, not a model: it is given its network (already prepared by the strategy), the
objective, the strategy and the optimizer and scheduler settings, and knows nothing about architectures
or transfer learning beyond what the strategy tells it (parameter groups, penalty, callbacks).

Batches are ``(images, targets)``, or ``(images, targets, extras)`` where the objective's auxiliary
terms need more than the labelled images (other labels, unlabelled images; see ``tlkedro.tl.objectives``)
or the network's head takes covariates (the ``covariates`` extra, ``TLModel.add_covariates``); the
module adds the fraction of training done as the ``progress`` extra. The auxiliary terms with layers
of their own are submodules (``auxiliary``), so they are optimised (group ``auxiliary``, base learning
rate) and saved in Lightning's checkpoints with the network.

A self-supervised objective (``objective.needs_labels`` false) gets batches of ``(views, targets)``,
``views`` being ``(B, V, C, ...)``; its loss over the views is ``train/loss`` (plus the strategy's
penalty) and ``val/loss``, and no metric is computed, since there is no target.

Logged per epoch: ``train/loss`` (the whole training loss: objective terms plus the strategy's penalty),
``train/loss_<term>`` for each part when there is more than one, ``val/loss`` (the objective's primary
loss, which early stopping and checkpointing follow), and the metric collections ``train/<metric>`` and
``val/<metric>`` (see ``tlkedro.tl.metrics``).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from sklearn.linear_model import LinearRegression, LogisticRegression
from torch import Tensor, nn
from torchmetrics import MetricCollection

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.config import OptimizerConfig, SchedulerConfig, TrainConfig
from tlkedro.tl.data import COVARIATES
from tlkedro.tl.metrics import metric_collection
from tlkedro.tl.objectives import PROGRESS, Objective, TaskInfo
from tlkedro.tl.optim import create_optimizer, create_schedule
from tlkedro.tl.strategies import Strategy, create_strategy


def network_outputs(model: nn.Module, images: Tensor, covariates: Tensor | None) -> Tensor:
    """``model(images)``, or ``model(images, covariates)`` for a head that takes covariates."""
    return model(images) if covariates is None else model(images, covariates)


class TransferModule(L.LightningModule):
    """Trains ``model`` on batches of ``(images, targets)``.

    Args:
        model: The network to train, as returned by ``strategy.prepare``.
        objective: The loss and how outputs become predictions.
        strategy: Supplies parameter groups, an optional penalty and callbacks.
        optimizer: Optimizer settings.
        scheduler: Learning-rate schedule settings.
        info: The task, its class count and target statistics (``TaskInfo.from_targets``); the objective
            needs it to read the outputs, the metrics to know the task.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        strategy: Strategy,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        info: TaskInfo,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.strategy = strategy
        self.optimizer_config = optimizer
        self.scheduler_config = scheduler
        self.info = info
        self.auxiliary = nn.ModuleList(objective.term_modules())
        # A self-supervised loss predicts no target, so there is nothing for the metrics to score.
        labelled = objective.needs_labels
        self.train_metrics = metric_collection(info, "train") if labelled else MetricCollection({})
        self.val_metrics = metric_collection(info, "val") if labelled else MetricCollection({})

    def forward(self, images: Tensor, covariates: Tensor | None = None) -> Tensor:
        """The network's outputs."""
        return network_outputs(self.model, images, covariates)

    def _update_metrics(self, metrics: MetricCollection, outputs: Tensor, targets: Tensor) -> None:
        prediction = self.objective.predict(outputs.detach(), self.info)
        if prediction.probabilities is not None:
            metrics.update(prediction.probabilities, targets)
        else:
            metrics.update(prediction.values, targets)

    def _self_supervised_step(self, views: Tensor, stage: str) -> Tensor:
        """The self-supervised loss of a batch of ``(B, V, C, ...)`` views, logged as ``<stage>/loss``."""
        loss = self.objective.primary(self.model, views.unbind(dim=1))
        if stage == "train" and (penalty := self.strategy.penalty(self.model)) is not None:
            loss = loss + penalty
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(views),
            sync_dist=True,
        )
        return loss

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Objective terms plus the strategy's penalty."""
        if not self.objective.needs_labels:
            return self._self_supervised_step(batch[0], "train")
        images, targets, *rest = batch
        extras = {**(rest[0] if rest else {}), PROGRESS: self._progress(batch_idx)}
        outputs = self(images, extras.get(COVARIATES))
        terms = self.objective.terms(self.model, images, outputs, targets, self.info, extras)
        penalty = self.strategy.penalty(self.model)
        if penalty is not None:
            terms["penalty"] = penalty
        loss = torch.stack(list(terms.values())).sum()
        batch_size = len(images)
        # sync_dist: with several processes (DDP) each sees a shard; the epoch's value is their mean, the
        # same on every rank, so that early stopping and checkpointing decide alike (a no-op otherwise).
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        if len(terms) > 1:
            parts = {f"train/loss_{name}": value for name, value in terms.items()}
            self.log_dict(
                parts, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True
            )
        self._update_metrics(self.train_metrics, outputs, targets)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _progress(self, batch_idx: int) -> float:
        """The fraction of training done at this batch, in [0, 1)."""
        trainer = self.trainer
        batches = max(1, int(trainer.num_training_batches))
        return (trainer.current_epoch + batch_idx / batches) / max(1, trainer.max_epochs)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """The objective's primary loss and the validation metrics."""
        if not self.objective.needs_labels:
            self._self_supervised_step(batch[0], "val")
            return
        images, targets, *rest = batch
        outputs = self(images, rest[0].get(COVARIATES) if rest else None)
        loss = self.objective.loss(outputs, targets, self.info)
        self.log(
            "val/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(images),
            sync_dist=True,
        )
        self._update_metrics(self.val_metrics, outputs, targets)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | torch.optim.Optimizer:
        """The configured optimizer over the strategy's parameter groups, with the configured schedule."""
        config = self.optimizer_config
        groups = []
        for group in self.strategy.param_groups(self.model, config.lr):
            params = [p for p in group["params"] if p.requires_grad]
            if params:
                groups.append({**group, "params": params})
        if not groups:
            raise ValueError(f"strategy {self.strategy.name!r} left no trainable parameters")
        auxiliary = [p for p in self.auxiliary.parameters() if p.requires_grad]
        if auxiliary:
            groups.append({"params": auxiliary, "lr": config.lr, "name": "auxiliary"})
        optimizer = create_optimizer(
            groups, config.name, config.lr, config.weight_decay, config.momentum, config.kwargs
        )
        schedule = self.scheduler_config
        # The trainer is read only by schedules that need the epoch count (cosine).
        scheduler = create_schedule(
            optimizer, schedule.name, schedule.kwargs, lambda: self.trainer.max_epochs
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def configure_callbacks(self) -> list[L.Callback]:
        """The strategy's callbacks (e.g. phase switches)."""
        return self.strategy.callbacks()


def build_module(
    config: TrainConfig,
    info: TaskInfo,
    image_shape: tuple[int, ...],
    source: dict | None,
    extra_labels: dict[str, np.ndarray],
    covariates: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> TransferModule:
    """The configured network, prepared by the strategy from the source, in a ``TransferModule``.

    Args:
        config: The training configuration.
        info: The task statistics of the training rows.
        image_shape: ``(N, C, ...)`` shape of the images (channels and spatial size size the network).
        source: The source model's checkpoint, or ``None``.
        extra_labels: The training rows' values of the label columns the auxiliary terms need.
        covariates: The training rows' ``(N, K)`` values of ``config.covariates``: the head takes them,
            standardised with these rows' mean and standard deviation only (no held-out row's value
            reaches the model's statistics).
        targets: The training rows' targets, to warm-start the head's covariate weights
            (``warm_start_covariates``).
    """
    objective = config.objective.build()
    architecture_kwargs = {
        "in_channels": int(image_shape[1]),
        "img_size": [int(size) for size in image_shape[2:]],
        **config.architecture.kwargs,
        "num_outputs": objective.num_outputs(info),
    }
    if config.covariates:
        architecture_kwargs["num_covariates"] = len(config.covariates)
    model = create_architecture(config.architecture.name, **architecture_kwargs)
    strategy = create_strategy(config.strategy.name, **config.strategy.kwargs)
    model = strategy.prepare(model, source["state_dict"] if source is not None else None)
    if config.covariates:
        if covariates is None or covariates.shape[1:] != (len(config.covariates),):
            raise ValueError(f"build_module needs the training rows' values of {config.covariates}")
        mean, std = covariates.mean(axis=0), covariates.std(axis=0)
        if not (std > 0).all():
            constant = [c for c, s in zip(config.covariates, std, strict=True) if not s > 0]
            raise ValueError(f"covariates {constant} are constant over the training rows")
        model.set_covariate_statistics(torch.from_numpy(mean), torch.from_numpy(std))
        if targets is not None:
            warm_start_covariates(model, (covariates - mean) / std, targets, info)
    objective.attach(model, extra_labels)
    return TransferModule(model, objective, strategy, config.optimizer, config.scheduler, info)


def warm_start_covariates(
    model: nn.Module, standardised: np.ndarray, targets: np.ndarray, info: TaskInfo
) -> None:
    """Start the head's covariate weights and bias at the training rows' linear model of the covariates.

    With Adam, a weight moves by about the learning rate per step, so a few hundred steps at 3e-4
    cannot grow a randomly initialised covariate weight to the size its effect needs (about 1.5 logits
    per SD for head size and sex): the covariate would be given but not used. Starting from the linear
    model of the covariates alone (scikit-learn's logistic regression, or least squares in the
    standardised target units a one-output regression head predicts), fitted on the training rows only,
    the network starts at the covariate baseline and learns what the images add. Other heads (e.g.
    soft-label bins) keep their random initialisation.
    """
    count = model.num_covariates
    head = model.head
    with torch.no_grad():
        if info.task == "classification":
            fitted = LogisticRegression().fit(standardised, targets)
            coef, intercept = fitted.coef_, fitted.intercept_
            if len(fitted.classes_) == 2:  # one logit difference: split it between the two logits
                coef, intercept = (
                    np.vstack([-coef / 2, coef / 2]),
                    np.array([-1, 1]) * intercept / 2,
                )
            if coef.shape[0] != head.out_features:
                return  # a class absent from the training rows: keep the random initialisation
            head.weight[:, -count:] = torch.as_tensor(coef, dtype=head.weight.dtype)
            head.bias[:] = torch.as_tensor(intercept, dtype=head.bias.dtype)
        elif head.out_features == 1:
            values = (targets - info.target_mean) / info.target_std
            fitted = LinearRegression().fit(standardised, values)
            head.weight[0, -count:] = torch.as_tensor(fitted.coef_, dtype=head.weight.dtype)
            head.bias[0] = float(fitted.intercept_)


class PredictionModule(L.LightningModule):
    """A trained network for ``Trainer.predict``: each batch's predictions in the target's units.

    ``predict_step`` returns the ``(B, num_classes)`` class probabilities (classification) or the
    ``(B, 1)`` predicted values (regression), as float32.

    Args:
        model: The network.
        objective: Turns its outputs into predictions.
        info: The task statistics stored with the network.
    """

    def __init__(self, model: nn.Module, objective: Objective, info: TaskInfo) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.info = info

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Predictions of the batch's images."""
        covariates = batch[2].get(COVARIATES) if len(batch) > 2 else None
        outputs = network_outputs(self.model, batch[0], covariates)
        prediction = self.objective.predict(outputs, self.info)
        if prediction.probabilities is not None:
            return prediction.probabilities.float()
        return prediction.values.float().reshape(-1, 1)
