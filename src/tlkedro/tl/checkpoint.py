"""Model checkpoints as plain data: the architecture config, the weights and what reading them needs.

A checkpoint is ``{"config": model.config, "state_dict": {name: tensor}, "meta": {...}}`` holding only
tensors and plain Python types, so it loads with ``torch.load(weights_only=True)``: loading never runs
code from the file. ``build_model`` rebuilds the network from ``config`` and loads the weights strictly.
A model trained with multitask heads (``objectives.multitask``) also has ``"heads": {term name: saved
head}``, which ``tlkedro.tl.inference`` reads; ``build_model`` ignores them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tlkedro.tl.architectures import TLModel, create_architecture

_PLAIN = (str, int, float, bool, type(None), Tensor)


def _plain(value: Any, where: str) -> Any:
    """``value`` with tuples as lists and NumPy scalars as Python ones.

    Raises:
        TypeError: For anything else that ``torch.load(weights_only=True)`` would refuse to load.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"checkpoint {where} is a {type(value).__name__}; only tensors, str, int, float, bool, None, "
        "lists and dicts can be loaded with weights_only=True"
    )


def make_checkpoint(
    model: TLModel, meta: Mapping[str, Any], heads: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint of ``model`` with ``meta`` (task, target, target statistics, training facts).

    Tensors are detached copies on the CPU, so the checkpoint does not change as training continues.

    Args:
        model: The trained network.
        meta: What reading its outputs needs, and facts of its training.
        heads: Further heads on its features (``objectives.multitask.saved_heads``); none when empty.

    Raises:
        TypeError: If ``model.config``, ``meta`` or ``heads`` hold something other than plain types
            and tensors.
    """
    checkpoint = {
        "config": _plain(model.config, "config"),
        "state_dict": {
            name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()
        },
        "meta": _plain(meta, "meta"),
    }
    if heads:
        checkpoint["heads"] = _plain(heads, "heads")
    return checkpoint


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint file (``data/06_models/.../model.pt``) read with ``weights_only=True``, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def build_model(checkpoint: Mapping[str, Any]) -> TLModel:
    """Rebuild the checkpoint's model in eval mode, with its weights loaded strictly."""
    model = create_architecture(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()
