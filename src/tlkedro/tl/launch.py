"""Where training runs: the accelerator, precision and determinism, and how extra processes are started.

The one module that knows Lightning's launchers. Lightning's ``ddp`` starts the other ranks by running
the command line again: under ``kedro run`` each would run the whole pipeline. So on several devices
``build_trainer`` spawns processes that run only the training (``ddp_spawn``), unless a launcher such as
``torchrun`` or Slurm created them. Callbacks then run in the spawned processes, and Lightning returns
only the model's weights and the best checkpoint's path to this one; ``adopt_launched_state`` takes over
the state that rank 0's callbacks saved in the last checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.strategies.launchers import (
    _MultiProcessingLauncher,
    _SubprocessScriptLauncher,
)

from tlkedro.tl.config import TrainerConfig


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


def build_trainer(
    settings: TrainerConfig,
    directory: Path,
    callbacks: Sequence[L.Callback],
    plugins: Sequence[Any] = (),
) -> L.Trainer:
    """The training ``Trainer`` of ``settings``, writing into ``directory``.

    Raises:
        ValueError: If ``settings.distributed`` names a strategy that would run the command line again.
    """
    accelerator = resolve_accelerator(settings.accelerator)
    deterministic, precision = machine_defaults(settings, accelerator)
    options: dict[str, Any] = {
        "max_epochs": settings.max_epochs,
        "accelerator": accelerator,
        "devices": settings.devices,
        "strategy": settings.distributed,
        "precision": precision,
        "deterministic": deterministic,
        "log_every_n_steps": settings.log_every_n_steps,
        "enable_progress_bar": settings.enable_progress_bar,
        "limit_train_batches": settings.limit_train_batches,
        # The history is collected by a callback and returned; nothing else needs a logger's files.
        "logger": False,
        "default_root_dir": directory,
        "callbacks": [*callbacks, ProcessGroupShutdown()],
        "plugins": list(plugins),
    }
    trainer = L.Trainer(**options)
    strategy = trainer.strategy
    if isinstance(strategy.launcher, _SubprocessScriptLauncher) and not (
        strategy.cluster_environment.creates_processes_externally
    ):
        if settings.distributed != "auto":
            raise ValueError(
                f"trainer.distributed {settings.distributed!r} would start {trainer.num_devices - 1} more "
                f"process(es) by running `{' '.join(sys.argv)}` again; use 'ddp_spawn', or start the "
                "processes with a launcher such as torchrun"
            )
        trainer = L.Trainer(**{**options, "strategy": "ddp_spawn"})
    return trainer


def build_predictor(settings: TrainerConfig) -> L.Trainer:
    """A ``Trainer`` for ``predict`` on one device, with the accelerator and precision of ``settings``.

    One device: with several, Lightning's ``predict`` returns only rank 0's share of the predictions.
    """
    accelerator = resolve_accelerator(settings.accelerator)
    deterministic, precision = machine_defaults(settings, accelerator)
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        deterministic=deterministic,
        enable_progress_bar=settings.enable_progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )


def ran_in_launched_processes(trainer: L.Trainer) -> bool:
    """Whether ``trainer.fit`` ran in processes it started (``ddp_spawn``), not in this one."""
    return isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)


def adopt_launched_state(checkpoint: Path, callbacks: Sequence[L.Callback]) -> None:
    """Give ``callbacks`` the final state that rank 0's copies of them saved in ``checkpoint``."""
    states = torch.load(checkpoint, map_location="cpu", weights_only=True)["callbacks"]
    for callback in callbacks:
        callback.load_state_dict(states[callback.state_key])
