"""Model complexity for the reports: parameters, multiply-accumulates, CPU latency and file size.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts the matrix products and
convolutions (including attention) and reports two FLOPs per multiply-accumulate; normalisation,
activations, pooling and biases are not counted, as is usual for published MAC figures. Shapes are those
of one image without the batch dimension: ``(C, H, W)`` or ``(C, D, H, W)``.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tlkedro.tl.architectures.base import eval_mode


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` numbers of parameter elements; trainable ones have ``requires_grad``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def macs_per_image(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of one image, in eval mode.

    Args:
        model: The model.
        input_shape: Shape of one image, without the batch dimension.
    """
    x = torch.zeros(1, *input_shape, device=_device(model))
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def cpu_latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 2,
    repeats: int = 10,
) -> float:
    """Median wall time, in milliseconds, of a forward pass of a batch on the CPU, in inference mode.

    A model on another device is timed on a CPU copy. The CPU threads are those torch is set to use.

    Args:
        model: The model.
        input_shape: Shape of one image, without the batch dimension.
        batch_size: Images per forward pass.
        warmup: Untimed passes first (allocations, lazy initialisation).
        repeats: Timed passes; their median is returned.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    cpu_model = model if _device(model).type == "cpu" else copy.deepcopy(model).cpu()
    x = torch.zeros(batch_size, *input_shape)
    times = []
    with eval_mode(cpu_model), torch.inference_mode():
        for _ in range(warmup):
            cpu_model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            cpu_model(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def model_file_size_bytes(model: nn.Module) -> int:
    """Size of the model's state dict serialised with ``torch.save``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def complexity_report(
    model: nn.Module, input_shape: Sequence[int], batch_size: int = 1
) -> dict[str, float]:
    """All the complexity figures of ``model`` for images of ``input_shape``, as a flat dict of numbers.

    Keys: ``params_total``, ``params_trainable``, ``macs_per_image``, ``cpu_latency_ms`` (median per
    batch of ``batch_size``), ``cpu_latency_batch_size`` and ``file_size_bytes``.
    """
    total, trainable = count_parameters(model)
    return {
        "params_total": total,
        "params_trainable": trainable,
        "macs_per_image": macs_per_image(model, input_shape),
        "cpu_latency_ms": cpu_latency_ms(model, input_shape, batch_size=batch_size),
        "cpu_latency_batch_size": batch_size,
        "file_size_bytes": model_file_size_bytes(model),
    }


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
