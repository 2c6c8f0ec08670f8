"""1D networks for ROI time series (``(B, ROIs, T)``: the ROIs are the channels): MONAI's, with ``spatial_dims=1``.

- ``resnet10_1d`` and ``resnet18_1d`` are the 3D ResNets' builder
  (:func:`tlkedro.tl.architectures.monai3d.monai_resnet`) with ``spatial_dims=1``: the block depths of
  MONAI's ``resnet10``/``resnet18``, a kernel-7 stem convolution of stride 2 and ``feed_forward=False``
  (the encoder returns its pooled features); ``width_factors`` scales ``layer1``-``layer4`` (and the
  stem, which has ``layer1``'s width).
- ``transformer_1d`` is ``monai.networks.nets.ViT`` without a class token: the series is cut into
  ``patch_size`` time points per token (every ROI of them in one token), 4 blocks of width 64 with 4
  heads; the features are the mean of the output tokens. ``img_size`` must be the series length and a
  multiple of ``patch_size``.

``img_size`` is the series length (``preprocessing.timeseries.length``; default 128); the training
template passes the model input's. Stages are named as in the 3D families, so every strategy (scratch,
full, linear_probe, freeze_*, truncated) applies unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from tlkedro.tl.architectures.base import TLModel, register_architecture
from tlkedro.tl.architectures.monai3d import monai_resnet, monai_vit

_RESNETS = {"resnet10_1d": (1, 1, 1, 1), "resnet18_1d": (2, 2, 2, 2)}


@register_architecture("transformer_1d")
def transformer_1d(
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    patch_size: int = 16,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
) -> TLModel:
    """A small MONAI transformer encoder over patches of time points; stages are its blocks."""
    return monai_vit(
        hidden_size,
        2 * hidden_size,
        num_heads,
        spatial_dims=1,
        num_layers=num_layers,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        img_size=img_size,
        patch_size=(patch_size,),
    )


for _name, _layers in _RESNETS.items():
    register_architecture(_name)(partial(monai_resnet, "basic", _layers, spatial_dims=1))
