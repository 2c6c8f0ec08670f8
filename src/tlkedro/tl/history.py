"""What ``fit`` records while it trains: one history row per epoch, and the training throughput.

Both are Lightning callbacks whose state Lightning saves in its checkpoints and restores on resume, so a
resumed run reports the epochs (and the training time) from before its interruption too. They must run
before the checkpoint callbacks, which Lightning runs last, so that ``last.ckpt`` holds their state of
its own epoch. Wall time is kept apart from the history, which must be identical between runs of one
configuration.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import pandas as pd


class History(L.Callback):
    """One row per epoch: the logged metrics, each parameter group's learning rate, the trained count.

    The row of epoch ``e`` holds ``epoch``, every value logged for the epoch (``train/loss``,
    ``val/loss``, the metrics), ``lr/<group>`` at the epoch's start (epoch-level schedulers step after
    it) and ``trainable_params`` (strategies with phases change it).
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._lrs: dict[str, float] = {}
        self._trainable = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._lrs = {
            f"lr/{group.get('name', index)}": float(group["lr"])
            for index, group in enumerate(trainer.optimizers[0].param_groups)
        }
        self._trainable = sum(p.numel() for p in pl_module.model.parameters() if p.requires_grad)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({name: float(value) for name, value in sorted(trainer.callback_metrics.items())})
        row.update(self._lrs)
        row["trainable_params"] = float(self._trainable)
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        """The rows as a table, ``epoch`` an integer."""
        return pd.DataFrame(self.rows).astype({"epoch": int})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


class Throughput(L.Callback):
    """Training images and the seconds their batches took, per epoch (validation excluded)."""

    def __init__(self) -> None:
        self.images = 0
        self.epoch_seconds: dict[int, float] = {}
        self._epoch_start = self._last_batch_end = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
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
        self.epoch_seconds[trainer.current_epoch] = self._last_batch_end - self._epoch_start

    def images_per_second(self) -> float:
        """Training images per second of training batches; 0 before any."""
        seconds = sum(self.epoch_seconds.values())
        return self.images / seconds if seconds else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "epoch_seconds": self.epoch_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.images = int(state_dict["images"])
        self.epoch_seconds = {int(k): float(v) for k, v in state_dict["epoch_seconds"].items()}
