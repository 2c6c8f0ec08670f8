"""``fit`` and ``evaluate``: the entry points the training pipelines' nodes call.

``fit`` trains one model with Lightning from a validated ``TrainConfig`` and returns its best checkpoint,
a per-epoch history and a summary. It is reproducible: the same configuration, data and seed give the
same metrics on a CPU (deterministic algorithms; every epoch's data order, augmentation and global random
state are derived from ``(seed, epoch)``). It is resumable: given a ``workdir``, Lightning keeps
``last.ckpt`` there after every epoch, and a run killed part-way continues from it when started again with
the same configuration and data, to the same result as a run that was never interrupted.

``evaluate`` runs a checkpoint over one split and computes the metrics per subject.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies.launchers import (
    _MultiProcessingLauncher,
    _SubprocessScriptLauncher,
)
from torch.utils.data import DataLoader

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model, make_checkpoint
from tlkedro.tl.config import TrainConfig, TrainerConfig
from tlkedro.tl.data import ArrayDataset, MRIDataModule, subject_labels, target_values
from tlkedro.tl.metrics import metric_collection
from tlkedro.tl.module import TransferModule
from tlkedro.tl.objectives import PROGRESS, UNLABELLED, TaskInfo, create_objective
from tlkedro.tl.strategies import create_strategy, phase_at

log = logging.getLogger(__name__)

_FINGERPRINT = "fingerprint.txt"
# Lightning warns about a non-empty checkpoint directory on a fresh start, so the fingerprint lives beside it.
_CHECKPOINTS = "checkpoints"
_LAST_NAME = "last"
_LAST = f"{_LAST_NAME}.ckpt"
_BEST = "best"
_SAMPLED_ROWS = 64


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        checkpoint: ``make_checkpoint`` of the model at its lowest validation loss; ``meta`` holds the
            task statistics (``TaskInfo`` fields: task, num_classes, target_mean, target_std, ...),
            ``target``, ``objective`` (name and kwargs), ``seed``, ``epochs_run`` and ``best_epoch``.
        history: One row per epoch: ``epoch`` (from 0), ``train/loss``, ``val/loss``, the train and
            validation metrics, the learning rate of each parameter group (``lr/<group>``) and the
            number of parameters trained in that epoch (``trainable_params``: strategies with phases,
            such as DAPT's, change it).
        summary: ``total_params``, ``trainable_params``, ``epochs_run``, ``best_epoch``,
            ``best_val_loss``, ``fit_seconds``, ``train_images_per_second``, ``train_seconds/<phase>``
            (the training batches' time in each of the strategy's phases; ``train`` for strategies
            without phases; these three for this call only, when resumed), ``resumed``.
    """

    checkpoint: dict[str, Any]
    history: pd.DataFrame
    summary: dict[str, Any]


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class _SeedEachEpoch(L.Callback):
    """Reseeds the global generators at the start of every epoch from ``(seed, epoch)``.

    Lightning checkpoints do not hold the random generators' states, so without this a resumed epoch
    would draw different random numbers (dropout, random ops of a model or strategy) than the same
    epoch of an uninterrupted run.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(
            _epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False
        )


class _Recorder(L.Callback):
    """Records one history row per epoch and the training throughput.

    The rows are part of the callback's state, which Lightning saves in its checkpoints, so the history
    of a resumed run includes the epochs before the interruption. It runs before ModelCheckpoint (which
    monitors a metric, and such callbacks run last), so ``last.ckpt`` holds the row of its own epoch.
    The saved state also holds the timing counts, which a resumed run does not restore (it reports its
    own call's), for ``adopt`` after a run whose training ran in launched processes (``ddp_spawn``).
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.images = 0
        self.seconds = 0.0
        self._epoch_start = self._last_batch_end = 0.0
        self._lrs: dict[str, float] = {}
        self._trainable = 0
        # Wall time is not part of the history, which must be identical between runs of one configuration.
        self.epoch_seconds: dict[int, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's learning rates: epoch-level schedulers step before on_train_epoch_end.
        self._lrs = {
            f"lr/{group.get('name', index)}": float(group["lr"])
            for index, group in enumerate(trainer.optimizers[0].param_groups)
        }
        self._trainable = sum(p.numel() for p in pl_module.model.parameters() if p.requires_grad)
        self._epoch_start = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Every rank trains on an equally long shard (distributed samplers pad them), in batches of this size.
        self.images += len(batch[0]) * trainer.world_size
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Up to the last batch: the validation that follows it is not training time.
        seconds = self._last_batch_end - self._epoch_start
        self.seconds += seconds
        self.epoch_seconds[trainer.current_epoch] = seconds
        row = {"epoch": float(trainer.current_epoch)}
        row.update({name: float(value) for name, value in sorted(trainer.callback_metrics.items())})
        row.update(self._lrs)
        row["trainable_params"] = float(self._trainable)
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "images": self.images,
            "seconds": self.seconds,
            "epoch_seconds": self.epoch_seconds,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def adopt(self, state_dict: dict[str, Any]) -> None:
        """Take over the whole state, timing counts included, of a copy that ran in another process."""
        self.load_state_dict(state_dict)
        self.images, self.seconds = state_dict["images"], state_dict["seconds"]
        self.epoch_seconds = dict(state_dict["epoch_seconds"])


class ProcessGroupShutdown(L.Callback):
    """Destroys the process group of launched processes together, before they exit.

    Otherwise each process tears gloo down while exiting: a rank that still finalises its interpreter
    when rank 0 (the store's host) has exited can abort on the closed connection (SIGABRT), which fails
    a finished training. The barrier makes every rank finish its collectives first.
    """

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


class _LocalCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints with ``torch.save`` straight into a temporary file, then renames it into place.

    Lightning's own writer serialises the whole checkpoint into memory first (so that it can write to
    any fsspec file system), which made saving ``last.ckpt`` every epoch cost about twice as much; the
    working directory is a local one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name the checkpoint globs do not match, so that a killed write leaves nothing to resume from.
        temporary = path.with_name(f".{path.name}.partial")
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)


def _fingerprint(
    config: TrainConfig,
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None,
    unlabelled: np.ndarray | None = None,
) -> str:
    """A digest of what decides a run's result, to tell whether ``last.ckpt`` belongs to this run.

    Covers the training configuration (not the pipeline-level keys of subclasses), the labels, the
    source weights, and the shape, dtype and an evenly spaced sample of rows of the images and of the
    unlabelled images (hashing every row of a large memory-mapped array would read all of it).
    """
    digest = hashlib.sha256()
    settings = config.model_dump(mode="json", include=set(TrainConfig.model_fields))
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(labels, index=False).to_numpy().tobytes())
    for array in (images, unlabelled) if unlabelled is not None else (images,):
        digest.update(f"{array.shape}{array.dtype}".encode())
        for row in np.unique(np.linspace(0, len(array) - 1, _SAMPLED_ROWS).astype(int)):
            digest.update(np.ascontiguousarray(array[row]).tobytes())
    if source is not None:
        for name, tensor in sorted(source["state_dict"].items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _checkpoints(directory: Path) -> list[Path]:
    return [directory / _CHECKPOINTS / _LAST, *(directory / _CHECKPOINTS).glob(f"{_BEST}*.ckpt")]


def _clear(directory: Path) -> None:
    for path in [*_checkpoints(directory), directory / _FINGERPRINT]:
        path.unlink(missing_ok=True)


def _resume_point(directory: Path, fingerprint: str) -> Path | None:
    """``last.ckpt`` if it was written by a run of this configuration and data; otherwise a clean start."""
    marker = directory / _FINGERPRINT
    last = directory / _CHECKPOINTS / _LAST
    if last.is_file() and marker.is_file() and marker.read_text() == fingerprint:
        log.info("Resuming from %s", last)
        return last
    if any(path.exists() for path in _checkpoints(directory)):
        log.warning(
            "Checkpoints in %s are from another configuration or data; starting afresh", directory
        )
    _clear(directory)
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    return None


@contextlib.contextmanager
def _working_directory(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is not None:
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="tlkedro-fit-") as temporary:
        yield Path(temporary)


def _build_module(
    config: TrainConfig,
    info: TaskInfo,
    image_shape: tuple[int, ...],
    source: dict | None,
    extra_labels: dict[str, np.ndarray],
) -> TransferModule:
    """The configured model, prepared by the strategy from the source, in a TransferModule.

    ``extra_labels`` are the training rows' values of the label columns the auxiliary terms need.
    """
    objective = config.objective.build()
    architecture_kwargs = {
        "in_channels": int(image_shape[1]),
        "img_size": [int(size) for size in image_shape[2:]],
        **config.architecture.kwargs,
        "num_outputs": objective.num_outputs(info),
    }
    model = create_architecture(config.architecture.name, **architecture_kwargs)
    strategy = create_strategy(config.strategy.name, **config.strategy.kwargs)
    model = strategy.prepare(model, source["state_dict"] if source is not None else None)
    objective.attach(model, extra_labels)
    return TransferModule(model, objective, strategy, config.optimizer, config.scheduler, info)


def resolve_accelerator(accelerator: str) -> str:
    """The accelerator that Lightning's ``"auto"`` or ``"gpu"`` stands for on this machine; others as given.

    Lightning's order: ``tpu``, ``mps``, ``cuda``, then ``cpu`` (``gpu``: ``mps`` or ``cuda``).
    """
    if accelerator not in ("auto", "gpu"):
        return accelerator
    if accelerator == "auto" and XLAAccelerator.is_available():
        return "tpu"
    if MPSAccelerator.is_available():
        return "mps"
    if CUDAAccelerator.is_available():
        return "cuda"
    return "cpu" if accelerator == "auto" else accelerator


def machine_defaults(settings: TrainerConfig, accelerator: str) -> tuple[bool | str, str]:
    """``(deterministic, precision)`` with their ``"auto"`` resolved for ``accelerator``.

    Deterministic on the CPU, where every operation has a deterministic implementation; ``"warn"`` on
    accelerators, where some backward passes have none and ``True`` would make them raise. bfloat16
    mixed precision on CUDA GPUs that compute in bfloat16 natively (compute capability 8 and later),
    float32 elsewhere.
    """
    deterministic = settings.deterministic
    if deterministic == "auto":
        deterministic = True if accelerator == "cpu" else "warn"
    precision = settings.precision
    if precision == "auto":
        bf16 = accelerator == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
        precision = "bf16-mixed" if bf16 else "32-true"
    return deterministic, precision


def _trainer(settings: TrainerConfig, directory: Path, callbacks: list[L.Callback]) -> L.Trainer:
    accelerator = resolve_accelerator(settings.accelerator)
    deterministic, precision = machine_defaults(settings, accelerator)
    options: dict[str, Any] = {
        "max_epochs": settings.max_epochs,
        "accelerator": accelerator,
        "devices": settings.devices,
        "strategy": settings.strategy,
        "precision": precision,
        "deterministic": deterministic,
        "log_every_n_steps": settings.log_every_n_steps,
        "enable_progress_bar": settings.enable_progress_bar,
        "limit_train_batches": settings.limit_train_batches,
        # The history is collected by _Recorder and returned; nothing else needs a logger's files.
        "logger": False,
        "default_root_dir": directory,
        "callbacks": [*callbacks, ProcessGroupShutdown()],
        "plugins": [_LocalCheckpointIO()],
    }
    trainer = L.Trainer(**options)
    strategy = trainer.strategy
    # Lightning's "ddp" starts the other ranks by running the command line again: under `kedro run` each
    # would run the whole pipeline. Spawned processes run only the training.
    if isinstance(strategy.launcher, _SubprocessScriptLauncher) and not (
        strategy.cluster_environment.creates_processes_externally
    ):
        if settings.strategy != "auto":
            raise ValueError(
                f"trainer.strategy {settings.strategy!r} would start {trainer.num_devices - 1} more "
                f"process(es) by running `{' '.join(sys.argv)}` again; use 'ddp_spawn', or start the "
                "processes with a launcher such as torchrun"
            )
        trainer = L.Trainer(**{**options, "strategy": "ddp_spawn"})
    return trainer


def _adopt_launched_state(last: Path, recorder: _Recorder, best: ModelCheckpoint) -> None:
    """Give ``recorder`` and ``best`` the final state that rank 0's copies of them saved in ``last``.

    With launched processes (``ddp_spawn``) the callbacks ran in those processes, and Lightning returns
    only the model's weights and the best checkpoint's path to this one.
    """
    states = torch.load(last, map_location="cpu", weights_only=True)["callbacks"]
    best.load_state_dict(states[best.state_key])
    recorder.adopt(states[recorder.state_key])


def fit(
    config: TrainConfig,
    images: np.ndarray,
    labels: pd.DataFrame,
    source: dict | None = None,
    workdir: str | Path | None = None,
    unlabelled: np.ndarray | None = None,
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
            each training image is paired with one of them per epoch.

    Returns:
        The best model's checkpoint, the per-epoch history and a summary.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    needs = config.objective.build().needs()
    if UNLABELLED in needs and unlabelled is None:
        raise ValueError(
            f"objective {config.objective.name!r} has auxiliary terms that need unlabelled images; give "
            "fit(unlabelled=...) (in the pipelines: `unlabelled_from: <split>`, e.g. external)"
        )
    if UNLABELLED not in needs:
        unlabelled = None  # nothing would read them, and they would change the fingerprint
    extra_columns = sorted(needs - {UNLABELLED, PROGRESS})
    datamodule = MRIDataModule(
        images,
        labels,
        target=config.target,
        task=config.task,
        val_fraction=config.data.val_fraction,
        batch_size=config.trainer.batch_size,
        seed=config.seed,
        augmentation=config.data.augmentation,
        num_workers=config.trainer.num_workers,
        extra_columns=extra_columns,
        unlabelled=unlabelled,
    )
    info = TaskInfo.from_targets(
        config.task, datamodule.targets[datamodule.train_indices], datamodule.targets
    )
    extra_labels = {
        name: values[datamodule.train_indices] for name, values in datamodule.extras.items()
    }
    module = _build_module(config, info, images.shape, source, extra_labels)
    total_params = sum(p.numel() for p in module.model.parameters())
    trainable_params = sum(p.numel() for p in module.model.parameters() if p.requires_grad)

    with _working_directory(workdir) as directory:
        resume = _resume_point(directory, _fingerprint(config, images, labels, source, unlabelled))
        recorder = _Recorder()
        # Two checkpoint callbacks: since Lightning 2.6, save_last=True writes last.ckpt only in epochs
        # that also save a top-k checkpoint, and resuming needs every epoch. Both save at the end of the
        # training epoch, after the epoch's history row is recorded, so that last.ckpt holds it. The
        # best epoch's weights are all that is read from best.ckpt: a third of the full state to write.
        best = ModelCheckpoint(
            dirpath=directory / _CHECKPOINTS,
            filename=_BEST,
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_weights_only=True,
            save_on_train_epoch_end=True,
        )
        latest = ModelCheckpoint(
            dirpath=directory / _CHECKPOINTS,
            filename=_LAST_NAME,
            save_top_k=1,
            save_on_train_epoch_end=True,
        )
        early_stopping = EarlyStopping(
            monitor="val/loss", mode="min", patience=config.trainer.early_stopping_patience
        )
        callbacks = [_SeedEachEpoch(config.seed), recorder, early_stopping, best, latest]
        trainer = _trainer(config.trainer, directory, callbacks)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        fit_seconds = time.perf_counter() - start
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            _adopt_launched_state(directory / _CHECKPOINTS / _LAST, recorder, best)
        best_state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best_state["state_dict"])
        best_val_loss = float(best.best_model_score)
        _clear(directory)

    history = pd.DataFrame(recorder.rows).astype({"epoch": int})
    best_epoch = int(history.loc[history["val/loss"].idxmin(), "epoch"])
    meta = {
        **info.as_dict(),
        "target": config.target,
        "objective": config.objective.model_dump(mode="json"),
        "seed": config.seed,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
    }
    summary = {
        "total_params": total_params,
        "trainable_params": trainable_params,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val_loss": best_val_loss,
        "fit_seconds": fit_seconds,
        "train_images_per_second": recorder.images / recorder.seconds if recorder.seconds else 0.0,
        "resumed": resume is not None,
    }
    phases = module.strategy.phases()
    summary.update({f"train_seconds/{name}": 0.0 for name, _ in phases})
    for epoch, seconds in recorder.epoch_seconds.items():
        summary[f"train_seconds/{phase_at(phases, epoch)}"] += seconds
    return FitResult(
        checkpoint=make_checkpoint(module.model, meta), history=history, summary=summary
    )


def evaluate(
    checkpoint: dict,
    images: np.ndarray,
    labels: pd.DataFrame,
    target: str,
    split: str,
    batch_size: int = 64,
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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(checkpoint).to(device)
    loader = DataLoader(ArrayDataset(images, targets), batch_size=batch_size)
    outputs = []
    with torch.inference_mode():
        for batch, _ in loader:
            prediction = objective.predict(model(batch.to(device)), info)
            kept = (
                prediction.values if prediction.probabilities is None else prediction.probabilities
            )
            outputs.append(kept.float().cpu())
    rows = pd.DataFrame(torch.cat(outputs).numpy().reshape(len(targets), -1))
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
