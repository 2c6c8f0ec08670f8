"""Complexity figures against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tlkedro.tl.analysis.complexity import (
    complexity_report,
    count_parameters,
    cpu_latency_ms,
    macs_per_image,
    model_file_size_bytes,
)
from tlkedro.tl.architectures import create_architecture


def _tiny() -> nn.Sequential:
    # conv 1*4*3*3 + 4 = 40, BatchNorm 2*4 = 8, linear 4*2 + 2 = 10
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_parameter_counts_by_hand() -> None:
    model = _tiny()
    assert count_parameters(model) == (58, 58)
    model[0].requires_grad_(False)
    assert count_parameters(model) == (58, 18)


@pytest.mark.parametrize(
    ("layer", "input_shape", "macs"),
    [
        (nn.Conv2d(2, 4, 3, padding=1), (2, 8, 8), 4 * 2 * 3 * 3 * 8 * 8),
        (nn.Conv2d(2, 4, 3, stride=2), (2, 9, 9), 4 * 2 * 3 * 3 * 4 * 4),
        (nn.Conv3d(1, 2, 3, padding=1), (1, 4, 4, 4), 2 * 1 * 27 * 4**3),
        (nn.Linear(16, 3), (16,), 16 * 3),
    ],
)
def test_macs_of_a_single_layer_are_analytic(
    layer: nn.Module, input_shape: tuple[int, ...], macs: int
) -> None:
    assert macs_per_image(layer, input_shape) == macs


def test_macs_of_cbr_small_are_analytic() -> None:
    # 7x7 "same" convolutions at 32, 16, 8 and 4 pixels (each pooling halves), then a 256 -> 1 head.
    expected = 49 * (1 * 32 * 32**2 + 32 * 64 * 16**2 + 64 * 128 * 8**2 + 128 * 256 * 4**2) + 256
    assert (
        macs_per_image(create_architecture("cbr_small", img_size=32), (1, 32, 32))
        == expected
        == 78_676_224
    )


def test_measurements_leave_training_mode_and_statistics_alone() -> None:
    model = _tiny().train()
    model[1].eval()  # e.g. a frozen BatchNorm
    statistics = model[1].running_mean.clone()
    macs_per_image(model, (1, 8, 8))
    cpu_latency_ms(model, (1, 8, 8), warmup=0, repeats=1)
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, statistics)


def test_latency_is_a_positive_duration() -> None:
    latency = cpu_latency_ms(_tiny(), (1, 16, 16), batch_size=4, warmup=1, repeats=3)
    assert 0 < latency < 10_000 and math.isfinite(latency)
    with pytest.raises(ValueError, match="repeats"):
        cpu_latency_ms(_tiny(), (1, 16, 16), repeats=0)


def test_file_size_is_the_float32_weights_plus_a_small_overhead() -> None:
    model = _tiny()
    elements = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert 4 * elements < model_file_size_bytes(model) < 4 * elements + 4096


def test_report_combines_the_figures_as_numbers() -> None:
    model = _tiny()
    report = complexity_report(model, (1, 8, 8), batch_size=2)
    assert report["params_total"] == report["params_trainable"] == 58
    assert report["macs_per_image"] == macs_per_image(model, (1, 8, 8)) == 4 * 9 * 36 + 4 * 2
    assert report["file_size_bytes"] == model_file_size_bytes(model)
    assert report["cpu_latency_ms"] > 0 and report["cpu_latency_batch_size"] == 2
    assert all(isinstance(value, int | float) for value in report.values())
