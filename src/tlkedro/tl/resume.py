"""Exact resume: a run killed part-way continues from its last epoch to the result of an unbroken run.

A fit's working directory holds Lightning's checkpoints and the fingerprint of the run that wrote them
(``RunDirectory``). ``last.ckpt`` is written after every epoch (weights, optimizer, schedulers, loops and
the callbacks' state: the history, the throughput, the strategy's phases) and resumed only by a run with
the same fingerprint; checkpoints of any other run are deleted. What Lightning does not save, the random
generators, ``SeedEachEpoch`` derives from ``(seed, epoch)`` at every epoch's start, and the data derive
their order and augmentation from the same pair (``tlkedro.tl.data``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tlkedro.tl.config import TrainConfig

log = logging.getLogger(__name__)

# Part of the fingerprint: changed when the callbacks' saved state changes shape, so that a last.ckpt
# written by an older version of fit is not resumed into callbacks that cannot read it.
_STATE_FORMAT = "2"
_FINGERPRINT = "fingerprint.txt"
# Lightning warns about a non-empty checkpoint directory on a fresh start, so the fingerprint lives beside it.
_CHECKPOINTS = "checkpoints"
_LAST_NAME = "last"
_BEST = "best"
_SAMPLED_ROWS = 64


def fingerprint(
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
    digest = hashlib.sha256(_STATE_FORMAT.encode())
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


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class SeedEachEpoch(L.Callback):
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


class LocalCheckpointIO(TorchCheckpointIO):
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


class RunDirectory:
    """The working directory of one fit: where it resumes from, and the callbacks that checkpoint it.

    Two checkpoint callbacks: since Lightning 2.6, ``save_last=True`` writes ``last.ckpt`` only in epochs
    that also save a top-k checkpoint, and resuming needs every epoch. Both save at the end of the
    training epoch, after the other callbacks have recorded the epoch (Lightning runs checkpoint
    callbacks last), so that ``last.ckpt`` holds their state. The best epoch's weights are all that is
    read from ``best.ckpt``: a third of the full state to write.

    Args:
        path: The directory (created if missing).
        fingerprint: ``fingerprint(...)`` of the run.
        seed: The run's seed, for ``SeedEachEpoch``.
    """

    def __init__(self, path: Path, fingerprint: str, seed: int) -> None:
        self.path = path
        self.last = path / _CHECKPOINTS / f"{_LAST_NAME}.ckpt"
        self.resume_from = self._resume_point(fingerprint)
        self.best = ModelCheckpoint(
            dirpath=path / _CHECKPOINTS,
            filename=_BEST,
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_weights_only=True,
            save_on_train_epoch_end=True,
        )
        self.callbacks: list[L.Callback] = [
            SeedEachEpoch(seed),
            self.best,
            ModelCheckpoint(
                dirpath=path / _CHECKPOINTS,
                filename=_LAST_NAME,
                save_top_k=1,
                save_on_train_epoch_end=True,
            ),
        ]
        self.plugins = [LocalCheckpointIO()]

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The module's state dict at the lowest validation loss."""
        return torch.load(self.best.best_model_path, map_location="cpu", weights_only=True)[
            "state_dict"
        ]

    def clear(self) -> None:
        """Delete the checkpoints and the fingerprint."""
        for path in [*self._checkpoints(), self.path / _FINGERPRINT]:
            path.unlink(missing_ok=True)

    def _checkpoints(self) -> list[Path]:
        return [self.last, *(self.path / _CHECKPOINTS).glob(f"{_BEST}*.ckpt")]

    def _resume_point(self, fingerprint: str) -> Path | None:
        """``last.ckpt`` if a run of this fingerprint wrote it; otherwise a clean start."""
        marker = self.path / _FINGERPRINT
        if self.last.is_file() and marker.is_file() and marker.read_text() == fingerprint:
            log.info("Resuming from %s", self.last)
            return self.last
        if any(path.exists() for path in self._checkpoints()):
            log.warning(
                "Checkpoints in %s are from another configuration or data; starting afresh",
                self.path,
            )
        self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint)
        return None


@contextlib.contextmanager
def run_directory(
    workdir: str | Path | None, fingerprint: str, seed: int
) -> Iterator[RunDirectory]:
    """The ``RunDirectory`` in ``workdir``, or in a temporary directory (no resume) when ``None``.

    After the block completes, the checkpoints are deleted (the result holds the best model); a block
    that raises leaves them, to be resumed.
    """
    with contextlib.ExitStack() as stack:
        path = (
            Path(workdir)
            if workdir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlkedro-fit-")))
        )
        run = RunDirectory(path, fingerprint, seed)
        yield run
        run.clear()
