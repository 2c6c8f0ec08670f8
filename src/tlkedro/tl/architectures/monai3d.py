"""3D networks from MONAI: ResNet-10/18/34/50, DenseNet-121 and ViT-Ti/S.

- ResNets are ``monai.networks.nets.ResNet`` with the block types and depths of MONAI's ``resnet10`` ...
  ``resnet50`` (the MedicalNet / Med3D family), a 7x7x7 stem convolution of stride 2
  (``conv1_t_stride=2``) and ``feed_forward=False``, so the encoder returns its pooled features. The
  ResNet class is built directly, rather than through ``resnet18(...)``, because only the class takes
  per-stage widths (``block_inplanes``), which ``width_factors`` scales. MONAI's stem has the width of
  ``layer1``, so a factor on ``layer1`` also slims ``conv1`` and ``bn1``.
- DenseNet-121 is ``monai.networks.nets.DenseNet121`` with its final linear layer replaced by an
  identity; its ``class_layers`` (ReLU, pooling, flatten) stay in the encoder.
- ViTs are ``monai.networks.nets.ViT`` without a class token (``classification=False``) at the sizes of
  ViT-Ti (192 wide, 3 heads) and ViT-S (384 wide, 6 heads), 12 blocks; the features are the mean of the
  output tokens. ``img_size`` must be the input size and a multiple of ``patch_size``.

``img_size`` defaults to the project's preprocessed volume, 80x96x80 at 2 mm; for the CNNs it only sets
the example input size (any input of at least 32 voxels per side works).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

from monai.networks.nets import DenseNet121, ResNet, ViT
from torch import Tensor, nn

from tlkedro.tl.architectures.base import TLModel, register_architecture
from tlkedro.tl.architectures.shapes import scale_widths, spatial_size, stage_paths

_RESNET_SPEC = ("conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4")
_RESNET_WIDTHS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
# name -> (MONAI block type, blocks per stage), as in monai.networks.nets.resnet10 ... resnet50
_RESNETS = {
    "resnet10_3d": ("basic", (1, 1, 1, 1)),
    "resnet18_3d": ("basic", (2, 2, 2, 2)),
    "resnet34_3d": ("basic", (3, 4, 6, 3)),
    "resnet50_3d": ("bottleneck", (3, 4, 6, 3)),
}
# name -> (hidden size, MLP size, heads)
_VITS = {"vit_tiny_3d": (192, 768, 3), "vit_small_3d": (384, 1536, 6)}


class TokenMeanPool(nn.Module):
    """Mean of the output tokens of a MONAI ViT, whose forward returns ``(tokens, hidden_states)``."""

    def forward(self, outputs: tuple[Tensor, list[Tensor]]) -> Tensor:
        return outputs[0].mean(dim=1)


def monai_resnet(
    block: str,
    layers: Sequence[int],
    *,
    spatial_dims: int = 3,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    width_factors: Mapping[str, float] | None = None,
    shortcut_type: str = "B",
    bias_downsample: bool = True,
) -> TLModel:
    """A MONAI ResNet (Chen et al. 2019, Med3D), 3D or (time series) 1D; ``width_factors`` scales
    ``layer1``-``layer4``.

    ``shortcut_type`` and ``bias_downsample`` are MONAI's; MedicalNet's published weights need the values
    of ``monai.networks.nets.resnet.get_medicalnet_pretrained_resnet_args`` (docs/architectures.md).
    """
    widths = scale_widths(_RESNET_WIDTHS, width_factors, _RESNET_SPEC)
    encoder = ResNet(
        block,
        list(layers),
        list(widths.values()),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_stride=2,
        feed_forward=False,
        shortcut_type=shortcut_type,
        bias_downsample=bias_downsample,
    )
    return TLModel(
        encoder,
        stage_names=_RESNET_SPEC,
        spatial_dims=spatial_dims,
        input_size=spatial_size(img_size, spatial_dims),
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
    )


@register_architecture("densenet121_3d")
def densenet121_3d(
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
) -> TLModel:
    """MONAI 3D DenseNet-121 (Huang et al. 2017); stages are the children of ``features``."""
    encoder = DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=1)
    encoder.class_layers.out = nn.Identity()
    return TLModel(
        encoder,
        stage_names=stage_paths(encoder, ("features*",)),
        spatial_dims=3,
        input_size=spatial_size(img_size, 3),
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
    )


def monai_vit(
    hidden_size: int,
    mlp_dim: int,
    num_heads: int,
    *,
    spatial_dims: int = 3,
    num_layers: int = 12,
    in_channels: int = 1,
    num_outputs: int = 1,
    dropout: float = 0.0,
    img_size: int | Sequence[int] | None = None,
    patch_size: int | Sequence[int] = 16,
) -> TLModel:
    """A MONAI Vision Transformer (Dosovitskiy et al. 2021), 3D or (time series) 1D; stages are its blocks."""
    size = spatial_size(img_size, spatial_dims)
    encoder = ViT(
        in_channels=in_channels,
        img_size=size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        classification=False,
        spatial_dims=spatial_dims,
    )
    for block in encoder.blocks:
        # MONAI builds this norm even without cross-attention; unused, it would only inflate the parameter
        # count and sit in the optimizer without ever getting a gradient.
        block.norm_cross_attn = nn.Identity()
    return TLModel(
        encoder,
        stage_names=stage_paths(encoder, ("patch_embedding", "blocks*", "norm")),
        spatial_dims=spatial_dims,
        input_size=size,
        in_channels=in_channels,
        num_outputs=num_outputs,
        dropout=dropout,
        pool=TokenMeanPool(),
    )


for _name, (_block, _layers) in _RESNETS.items():
    register_architecture(_name)(partial(monai_resnet, _block, _layers))
for _name, (_hidden, _mlp, _heads) in _VITS.items():
    register_architecture(_name)(partial(monai_vit, _hidden, _mlp, _heads))
