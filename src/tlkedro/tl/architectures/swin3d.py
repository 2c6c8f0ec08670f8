"""3D Swin Transformer: the encoder of MONAI's SwinUNETR (``monai.networks.nets.swin_unetr.SwinTransformer``).

SwinUNETR (Hatamizadeh et al. 2022; self-supervised pretraining by Tang et al., CVPR 2022) encodes a
volume with a hierarchical Swin Transformer (Liu et al. 2021): a patch embedding (``patch_size`` 2, so
half the input size), then four stages of shifted-window attention blocks, each ending in a patch
merging that halves the size and doubles the channels. This module builds that encoder with MONAI's
SwinUNETR defaults (depths 2, 2, 2, 2; heads 3, 6, 12, 24; window 7) and no decoder.

Stages (input side first): ``patch_embed``, ``layers1`` ... ``layers4``, each a ``(B, C, D, H, W)`` map; on
a 32^3 input with ``feature_size`` 12: 12 channels at 16^3, then 24 at 8^3, 48 at 4^3, 96 at 2^3 and 192
at 1^3. The stages are not sequential inside (a Swin stage is its blocks and their shifted-window mask),
so they are the only cut points. Parameter names are MONAI's (``patch_embed.proj.weight``,
``layers1.0.blocks.0.attn.qkv.weight``): a SwinUNETR checkpoint's ``swinViT.*`` tensors are this
encoder's under ``encoder.*``.

Features: each stage output is layer-normalised over its channels without parameters, as SwinUNETR does
with every output it passes on (``proj_out(normalize=True)``), then averaged over space. Any input size
works (MONAI pads to whole patches and windows); SwinUNETR's decoder, not this encoder, needs sizes
divisible by 32.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import Tensor, nn
from torch.nn import functional

from tlkedro.tl.architectures.base import GlobalAvgPool, TLModel, register_architecture
from tlkedro.tl.architectures.shapes import spatial_size

STAGES = ("patch_embed", "layers1", "layers2", "layers3", "layers4")


class SwinStage(nn.Module):
    """One stage of MONAI's ``SwinTransformer``, its ``BasicLayer`` held as child ``0``.

    MONAI keeps each stage in a one-element ``ModuleList`` that its own forward indexes; a module that
    calls it lets the encoder be a sequence of stages (which ``truncate`` cuts) with MONAI's parameter
    names (``layers1.0.blocks...``).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.add_module("0", layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.get_submodule("0")(x.contiguous())


class ChannelNormPool(nn.Module):
    """Layer norm over the channels without parameters (SwinUNETR's ``proj_out(normalize=True)``), then the
    spatial mean: ``(B, C, *spatial) -> (B, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = GlobalAvgPool()

    def forward(self, x: Tensor) -> Tensor:
        channels_last = x.movedim(1, -1)
        return self.mean(
            functional.layer_norm(channels_last, channels_last.shape[-1:]).movedim(-1, 1)
        )


@register_architecture("swin_3d")
def swin_3d(
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 7,
    patch_size: int = 2,
    drop_path_rate: float = 0.0,
) -> TLModel:
    """SwinUNETR's 3D Swin Transformer encoder (MONAI), with a new head on its pooled last stage.

    Args:
        feature_size: Channels of the patch embedding (SwinUNETR's ``feature_size``; its published
            self-supervised weights use 48); stage ``i`` ends with ``feature_size * 2**i`` channels.
        depths: Swin blocks per stage (four stages).
        num_heads: Attention heads per stage; each must divide that stage's channels.
        window_size: Side of the attention windows.
        patch_size: Side of the embedded patches.
        drop_path_rate: Stochastic depth, rising linearly to this over the blocks.
    """
    if len(depths) != 4 or len(num_heads) != 4:
        raise ValueError(
            f"swin_3d has four stages: depths {list(depths)} and num_heads {list(num_heads)} "
            "need four entries each"
        )
    device = torch.get_default_device()
    # MONAI reads its stochastic-depth rates with ``.item()``, which a tensor on the ``meta`` device (a
    # shape-only build) cannot give: build on the CPU, then move.
    with torch.device("cpu"):
        swin = SwinTransformer(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=(window_size,) * 3,
            patch_size=(patch_size,) * 3,
            depths=list(depths),
            num_heads=list(num_heads),
            drop_path_rate=drop_path_rate,
            spatial_dims=3,
        )
    swin.to(device)
    encoder = nn.Sequential(
        OrderedDict(
            patch_embed=swin.patch_embed,
            pos_drop=swin.pos_drop,
            **{name: SwinStage(getattr(swin, name)[0]) for name in STAGES[1:]},
        )
    )
    return TLModel(
        encoder,
        stage_names=STAGES,
        spatial_dims=3,
        input_size=spatial_size(img_size, 3),
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        pool=ChannelNormPool(),
    )
