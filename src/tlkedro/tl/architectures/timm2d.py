"""2D networks from timm: ResNet-18/34/50, DenseNet-121, EfficientNet-B0, ConvNeXt-T, ViT-Ti/S, Swin-T.

The encoder is the timm model itself, built with ``pretrained=False`` (nothing can be downloaded),
``in_chans=in_channels`` and ``num_classes=0``, so it returns its pooled pre-logits features and keeps
timm's parameter names (``encoder.layer3.1.conv1.weight``). Stages are the timm modules listed below, with
the containers timm nests its stages in expanded (``blocks.0``, ``blocks.1``, ...).

Choices for small single-channel images (the project's slices are 64x64):

- ViT: ``img_size`` (default: the preprocessed slice, 64x64) and ``patch_size`` (default 8, so a 64x64
  slice gives 8x8 = 64 tokens instead of the 16 of 16x16 patches); the input must be exactly ``img_size``.
- Swin: ``img_size`` (default: the preprocessed slice) and ``window_size`` (default 4, which tiles the
  16, 8 and 4 wide feature maps of a 64x64 input; timm shrinks a window to the feature map when the map is smaller). timm
  accepts any ``img_size`` of at least 4; multiples of 32 avoid padding in the patch merging.
- ConvNeXt: ``head_norm_first=True`` puts the final LayerNorm before the pooling (``norm_pre``), so the
  encoder holds no ``head.*`` module that could be confused with the model's head.
- CNNs: any input of at least 32x32 (five stride-2 reductions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import timm

from tlkedro.tl.architectures.base import TLModel, register_architecture
from tlkedro.tl.architectures.shapes import scale_widths, spatial_size, stage_paths

_RESNET_SPEC = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")
_RESNET_WIDTHS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}

# name -> (timm name, stage spec with "blocks*" for every child of ``blocks``, extra timm arguments)
_CNNS = {
    "densenet121": ("densenet121", ("features*",), {}),
    "efficientnet_b0": ("efficientnet_b0", ("conv_stem", "bn1", "blocks*", "conv_head", "bn2"), {}),
    "convnext_tiny": ("convnext_tiny", ("stem", "stages*", "norm_pre"), {"head_norm_first": True}),
}
_VITS = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}
_VIT_SPEC = ("patch_embed", "blocks*", "norm")
_SWIN_SPEC = ("patch_embed", "layers*", "norm")


def _timm_model(
    timm_name: str,
    spec: Sequence[str],
    *,
    in_channels: int,
    num_outputs: int,
    dropout: float,
    input_size: tuple[int, ...],
    **timm_kwargs: Any,
) -> TLModel:
    encoder = timm.create_model(
        timm_name, pretrained=False, in_chans=in_channels, num_classes=0, **timm_kwargs
    )
    return TLModel(
        encoder,
        stage_names=stage_paths(encoder, spec),
        spatial_dims=2,
        input_size=input_size,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
    )


def _resnet(
    timm_name: str,
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    width_factors: Mapping[str, float] | None = None,
) -> TLModel:
    """A timm ResNet (He et al. 2016); ``width_factors`` scales ``layer1``-``layer4`` (the stem stays 64)."""
    widths = scale_widths(_RESNET_WIDTHS, width_factors, _RESNET_SPEC)
    return _timm_model(
        timm_name,
        _RESNET_SPEC,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        input_size=spatial_size(img_size, 2),
        channels=tuple(widths.values()),
    )


def _cnn(
    timm_name: str,
    spec: Sequence[str],
    timm_kwargs: Mapping[str, Any],
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
) -> TLModel:
    """A timm convolutional network; ``img_size`` only sets the example input size."""
    return _timm_model(
        timm_name,
        spec,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        input_size=spatial_size(img_size, 2),
        **timm_kwargs,
    )


def _vit(
    timm_name: str,
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    patch_size: int = 8,
) -> TLModel:
    """A timm Vision Transformer (Dosovitskiy et al. 2021) with a class token; stages are its blocks."""
    size = spatial_size(img_size, 2)
    return _timm_model(
        timm_name,
        _VIT_SPEC,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        input_size=size,
        img_size=size,
        patch_size=patch_size,
    )


@register_architecture("swin_tiny")
def swin_tiny(
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    window_size: int = 4,
) -> TLModel:
    """Swin-T (Liu et al. 2021) from timm, patch 4; stages are its four resolution stages."""
    size = spatial_size(img_size, 2)
    return _timm_model(
        "swin_tiny_patch4_window7_224",
        _SWIN_SPEC,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        input_size=size,
        img_size=size,
        window_size=window_size,
    )


for _name in ("resnet18", "resnet34", "resnet50"):
    register_architecture(_name)(partial(_resnet, _name))
for _name, (_timm_name, _spec, _kwargs) in _CNNS.items():
    register_architecture(_name)(partial(_cnn, _timm_name, _spec, _kwargs))
for _name, _timm_name in _VITS.items():
    register_architecture(_name)(partial(_vit, _timm_name))
