"""The CBR networks of Raghu et al. 2019: small stacks of convolution, BatchNorm, ReLU and max-pooling.

Raghu, Zhang, Kleinberg and Bengio, "Transfusion: Understanding Transfer Learning for Medical Imaging",
NeurIPS 2019, Section 3 and Appendix: each layer is a convolution (stride 1), BatchNorm and ReLU followed
by a 3x3 max-pooling of stride 2; then global average pooling and the head.

=============  =====================  ======
name           channels               kernel
=============  =====================  ======
cbr_large_t    32, 64, 128, 256, 512  7
cbr_large_w    64, 128, 256, 512      7
cbr_small      32, 64, 128, 256       7
cbr_tiny       64, 128, 256, 512      5
=============  =====================  ======

The paper does not state the padding. Convolutions here are padded to keep the size ("same") and the
poolings padded by 1, so each layer exactly halves the size (rounding up) and a 32x32 slice still has a
1x1 map after the five layers of CBR-LargeT. Convolutions have no bias, which the following BatchNorm
would cancel. Stages are ``layer1`` ... ``layerN``, each an ``nn.Sequential`` of ``conv``, ``bn``,
``relu``, ``pool``; ``width_factors`` scales any of them. 2D by default (as in the paper), 3D with
``spatial_dims=3``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial

from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from tlkedro.tl.architectures.base import GlobalAvgPool, TLModel, register_architecture
from tlkedro.tl.architectures.shapes import scale_widths, spatial_size

# name -> (channels per layer, kernel size), from the paper's appendix
_CBRS = {
    "cbr_large_t": ((32, 64, 128, 256, 512), 7),
    "cbr_large_w": ((64, 128, 256, 512), 7),
    "cbr_small": ((32, 64, 128, 256), 7),
    "cbr_tiny": ((64, 128, 256, 512), 5),
}


def _layer(
    in_channels: int, out_channels: int, kernel_size: int, spatial_dims: int
) -> nn.Sequential:
    conv, norm, pool = (
        Conv[Conv.CONV, spatial_dims],
        Norm[Norm.BATCH, spatial_dims],
        Pool[Pool.MAX, spatial_dims],
    )
    return nn.Sequential(
        OrderedDict(
            conv=conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            bn=norm(out_channels),
            relu=nn.ReLU(inplace=True),
            pool=pool(3, stride=2, padding=1),
        )
    )


def _cbr(
    channels: Sequence[int],
    kernel_size: int,
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    width_factors: Mapping[str, float] | None = None,
) -> TLModel:
    """A CBR network (Raghu et al. 2019); ``img_size`` only sets the example input size."""
    input_size = spatial_size(
        img_size, spatial_dims
    )  # checks spatial_dims before any layer is built
    stages = tuple(f"layer{i + 1}" for i in range(len(channels)))
    widths = scale_widths(dict(zip(stages, channels, strict=True)), width_factors, stages)
    sizes = [in_channels, *widths.values()]
    layers = OrderedDict(
        (stage, _layer(sizes[i], sizes[i + 1], kernel_size, spatial_dims))
        for i, stage in enumerate(stages)
    )
    return TLModel(
        nn.Sequential(layers),
        stage_names=stages,
        spatial_dims=spatial_dims,
        input_size=input_size,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        pool=GlobalAvgPool(),
    )


for _name, (_channels, _kernel) in _CBRS.items():
    register_architecture(_name)(partial(_cbr, _channels, _kernel))
