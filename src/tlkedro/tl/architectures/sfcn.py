"""SFCN, the Simple Fully Convolutional Network for brain age (Peng et al. 2021).

Peng, Gong, Beckmann, Vedaldi and Smith, "Accurate brain age prediction with lightweight deep neural
networks", Medical Image Analysis 68, 2021. Five blocks of 3x3x3 convolution, BatchNorm, 2x max-pooling
and ReLU with 32, 64, 128, 256 and 256 channels, a sixth block of 1x1x1 convolution to 64 channels with
BatchNorm and ReLU, global average pooling, dropout 0.5 and the head. The stages keep the names of the
authors' code (``conv_0`` ... ``conv_5``, each an ``nn.Sequential`` indexed as there), so their published
UK Biobank weights map onto ``encoder.*`` by dropping the ``module.feature_extractor.`` prefix.

In the paper the head is a 1x1x1 convolution to 40 outputs followed by log-softmax: a distribution over
40 one-year age bins (42 to 82 years, bin ``k`` centred on ``42.5 + k``), trained with the KL divergence
to a Gaussian soft label of sigma 1 year centred on the true age; the prediction is the expectation over
the bin centres. Here the head is a linear layer giving logits (``num_outputs=40`` for that set-up): the
soft-label objective applies the log-softmax and owns the bin range. ``num_outputs=1`` is a plain
regression head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from tlkedro.tl.architectures.base import GlobalAvgPool, TLModel, register_architecture
from tlkedro.tl.architectures.shapes import scale_widths, spatial_size

_WIDTHS = {"conv_0": 32, "conv_1": 64, "conv_2": 128, "conv_3": 256, "conv_4": 256, "conv_5": 64}


def _block(in_channels: int, out_channels: int, spatial_dims: int, *, last: bool) -> nn.Sequential:
    conv, norm, pool = (
        Conv[Conv.CONV, spatial_dims],
        Norm[Norm.BATCH, spatial_dims],
        Pool[Pool.MAX, spatial_dims],
    )
    if last:
        return nn.Sequential(conv(in_channels, out_channels, 1), norm(out_channels), nn.ReLU())
    return nn.Sequential(
        conv(in_channels, out_channels, 3, padding=1),
        norm(out_channels),
        pool(2, stride=2),
        nn.ReLU(),
    )


@register_architecture("sfcn")
def sfcn(
    *,
    spatial_dims: int = 3,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.5,
    img_size: int | Sequence[int] | None = None,
    width_factors: Mapping[str, float] | None = None,
) -> TLModel:
    """SFCN (Peng et al. 2021), 3D by default or 2D; ``width_factors`` scales any of ``conv_0``-``conv_5``.

    Five max-poolings need inputs of at least 32 per side.
    """
    input_size = spatial_size(
        img_size, spatial_dims
    )  # checks spatial_dims before any layer is built
    widths = scale_widths(_WIDTHS, width_factors, tuple(_WIDTHS))
    channels = [in_channels, *widths.values()]
    blocks = OrderedDict(
        (stage, _block(channels[i], channels[i + 1], spatial_dims, last=i == len(widths) - 1))
        for i, stage in enumerate(widths)
    )
    return TLModel(
        nn.Sequential(blocks),
        stage_names=tuple(blocks),
        spatial_dims=spatial_dims,
        input_size=input_size,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        pool=GlobalAvgPool(),
    )
