"""Energy of training, estimated from its measured wall time and a power model.

The model is Green Algorithms' (Lannelongue, Grealey and Inouye, "Green Algorithms: Quantifying the
Carbon Footprint of Computation", Advanced Science 8:2100707, 2021):

    energy (kWh) = runtime (h) x (n_cores x power_per_core x core_usage
                                   + n_gpus x power_per_gpu x gpu_usage
                                   + memory_gb x power_per_gb) x PUE / 1000

with the tool's defaults: 12 W per core (its "any CPU" thermal design power per core), full usage,
0.3725 W per GB of memory available, and a data-centre power usage effectiveness (PUE) of 1.67. Set
``power_per_core_w`` to your CPU's TDP divided by its cores, and ``pue`` to 1.0 for a laptop.

Measuring the power instead was tried: codecarbon (offline mode) installs and runs here, but without RAPL
counters (none in this container) or a CPU model it knows (``AMD EPYC`` is not), it falls back to
constants of its own (here 4 W per thread and 20 W of memory): no measurement, only a less visible
version of this formula. So the formula is used, with every parameter in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from tlkedro.tl.strategies import create_strategy, phase_at

SECONDS_PER_HOUR = 3600.0


class PowerModel(BaseModel):
    """The hardware a run used and what it draws (Green Algorithms' parameters).

    Attributes:
        n_cores: CPU cores the run kept busy; ``None``: the threads torch uses in this process.
        power_per_core_w: Power of one core at full load, in watts (TDP / cores).
        core_usage: Fraction of the cores' time the run used, in (0, 1].
        n_gpus: GPUs the run used.
        power_per_gpu_w: Power of one GPU at full load, in watts (its TDP).
        gpu_usage: Fraction of the GPUs' time the run used, in (0, 1].
        memory_gb: Memory available to the run, in GB (it draws power whether used or not).
        power_per_gb_w: Power of one GB of memory, in watts.
        pue: Power usage effectiveness of the facility (>= 1: cooling, lighting, ...).
    """

    model_config = ConfigDict(extra="forbid")

    n_cores: int | None = Field(None, ge=1)
    power_per_core_w: float = Field(12.0, gt=0)
    core_usage: float = Field(1.0, gt=0, le=1)
    n_gpus: int = Field(0, ge=0)
    power_per_gpu_w: float = Field(0.0, ge=0)
    gpu_usage: float = Field(1.0, gt=0, le=1)
    memory_gb: float = Field(8.0, ge=0)
    power_per_gb_w: float = Field(0.3725, ge=0)
    pue: float = Field(1.67, ge=1)

    def watts(self) -> float:
        """The facility's power draw while the run is going, in watts."""
        n_cores = self.n_cores if self.n_cores is not None else torch.get_num_threads()
        cores = n_cores * self.power_per_core_w * self.core_usage
        gpus = self.n_gpus * self.power_per_gpu_w * self.gpu_usage
        return (cores + gpus + self.memory_gb * self.power_per_gb_w) * self.pue

    def kwh(self, seconds: float) -> float:
        """The energy of ``seconds`` of running, in kWh.

        Raises:
            ValueError: If ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a run cannot take negative time; got {seconds} s")
        return seconds / SECONDS_PER_HOUR * self.watts() / 1000.0


def phase_report(
    history: pd.DataFrame,
    phases: list[tuple[str, int]],
    seconds: Mapping[str, float],
    power: PowerModel,
) -> pd.DataFrame:
    """One row per training phase: its epochs, trainable parameters, wall time and energy.

    Args:
        history: ``FitResult.history`` (``epoch`` and ``trainable_params`` per epoch).
        phases: The strategy's phases (``Strategy.phases()``).
        seconds: The training time of each phase (``FitResult.summary["train_seconds/<phase>"]``).
        power: The power model.

    Returns:
        Columns ``phase``, ``first_epoch``, ``epochs`` (run, early stopping may end a phase early or
        leave it out: 0), ``trainable_params`` (in its first epoch; 0 when not run), ``train_seconds``
        and ``energy_kwh``, in phase order.
    """
    epoch_phase = [phase_at(phases, int(epoch)) for epoch in history["epoch"]]
    rows = []
    for name, start in phases:
        run = history[[phase == name for phase in epoch_phase]]
        rows.append(
            {
                "phase": name,
                "first_epoch": start,
                "epochs": len(run),
                "trainable_params": int(run["trainable_params"].iloc[0]) if len(run) else 0,
                "train_seconds": float(seconds.get(name, 0.0)),
                "energy_kwh": power.kwh(float(seconds.get(name, 0.0))),
            }
        )
    return pd.DataFrame(rows)


def training_energy(
    strategy: Mapping[str, Any],
    history: pd.DataFrame,
    summary: Mapping[str, Any],
    power: PowerModel,
) -> pd.DataFrame:
    """``phase_report`` of one ``fit``: its strategy's phases, history and per-phase seconds.

    Args:
        strategy: The strategy's configuration, ``{"name": ..., "kwargs": {...}}``.
        history: ``FitResult.history``.
        summary: ``FitResult.summary`` (``train_seconds/<phase>``).
        power: The power model.
    """
    phases = create_strategy(strategy["name"], **strategy.get("kwargs", {})).phases()
    seconds = {name: float(summary.get(f"train_seconds/{name}", 0.0)) for name, _ in phases}
    return phase_report(history, phases, seconds, power)
