"""Energy accounting: the Green Algorithms formula, proportional to time, and the per-phase report."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from tlkedro.tl.analysis.energy import PowerModel, phase_report, training_energy


def test_energy_is_the_green_algorithms_formula_and_proportional_to_time() -> None:
    power = PowerModel(n_cores=4, power_per_core_w=10.0, core_usage=0.5, memory_gb=16.0, pue=1.5)
    watts = (4 * 10.0 * 0.5 + 16.0 * 0.3725) * 1.5
    assert power.watts() == pytest.approx(watts)
    assert power.kwh(3600.0) == pytest.approx(watts / 1000)
    assert power.kwh(1.0) > 0
    assert power.kwh(90.0) == pytest.approx(3 * power.kwh(30.0))
    assert power.kwh(0.0) == 0.0
    gpu = power.model_copy(update={"n_gpus": 1, "power_per_gpu_w": 300.0})
    assert gpu.watts() == pytest.approx(watts + 300.0 * 1.5)
    with pytest.raises(ValueError, match="negative time"):
        power.kwh(-1.0)


def test_power_model_rejects_impossible_parameters_by_name() -> None:
    with pytest.raises(ValidationError, match="pue"):
        PowerModel(pue=0.9)
    with pytest.raises(ValidationError, match="core_usage"):
        PowerModel(core_usage=1.5)
    with pytest.raises(ValidationError, match="watts"):
        PowerModel(watts=3)


def test_phase_report_groups_epochs_by_phase_with_their_parameters_time_and_energy() -> None:
    history = pd.DataFrame({"epoch": [0, 1, 2, 3], "trainable_params": [10.0, 50.0, 50.0, 90.0]})
    phases = [("warmup", 0), ("partial", 1), ("full", 3), ("never_reached", 6)]
    seconds = {"warmup": 2.0, "partial": 6.0, "full": 3.0, "never_reached": 0.0}
    power = PowerModel()
    report = phase_report(history, phases, seconds, power)
    assert report["phase"].tolist() == ["warmup", "partial", "full", "never_reached"]
    assert report["epochs"].tolist() == [1, 2, 1, 0]
    assert report["trainable_params"].tolist() == [10, 50, 90, 0]
    assert report["energy_kwh"].tolist() == pytest.approx(
        [power.kwh(s) for s in (2.0, 6.0, 3.0, 0.0)]
    )
    assert report.loc[1, "energy_kwh"] == pytest.approx(3 * report.loc[0, "energy_kwh"])


def test_training_energy_reads_the_strategy_s_phases_and_the_summary_s_seconds() -> None:
    history = pd.DataFrame({"epoch": [0, 1, 2], "trainable_params": [5.0, 7.0, 9.0]})
    summary = {"train_seconds/warmup": 1.0, "train_seconds/partial": 2.0, "train_seconds/full": 4.0}
    strategy = {"name": "dapt_hybrid", "kwargs": {"partial_epochs": 1}}
    power = PowerModel(memory_gb=0.0, pue=1.0)  # n_cores: the threads torch uses
    report = training_energy(strategy, history, summary, power)
    assert report["phase"].tolist() == ["warmup", "partial", "full"]
    assert report["trainable_params"].tolist() == [5, 7, 9]
    watts = torch.get_num_threads() * 12.0
    assert report["energy_kwh"].tolist() == pytest.approx(
        [s / 3600 * watts / 1000 for s in (1, 2, 4)]
    )
    plain = training_energy({"name": "full"}, history, {"train_seconds/train": 3.0}, power)
    assert plain[["phase", "epochs", "train_seconds"]].values.tolist() == [["train", 3, 3.0]]
