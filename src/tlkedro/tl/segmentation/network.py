"""``SegmentationNet``: a U-Net-style decoder on the encoder of any registered architecture.

The encoder is a ``TLModel``'s, after a transfer-learning strategy prepared it (loaded, frozen, truncated),
so every strategy of ``tlkedro.tl.strategies`` applies to segmentation as to classification. Its skip
features are the outputs of its stages (``TLModel.stage_names``), collected with forward hooks; stages that
keep the spatial size form one *level*, whose last stage's output is the level's skip. The decoder has one
up-sampling block per level below the deepest (the bottleneck) and a last one back to the input's
resolution, where the input itself is the skip, then a 1x1 convolution to one logit per class. A truncated
encoder (``cut_at``) keeps fewer levels, so its decoder is shorter by as many blocks: symmetric to the
stages kept (TTL, Peng et al. 2023, appendix A.2).

The blocks are MONAI's (``UpSample`` transposed convolutions, ``UnetBasicBlock``, ``UnetOutBlock``).
``UpBlock`` is written here rather than MONAI's ``UnetUpBlock`` because that one concatenates the skip
without matching sizes: slices of MNI152 at 2 mm (91 x 109) give stage sizes that are not exact halves, so
the up-sampled map is padded or cropped to the skip's size first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock, UnetOutBlock, UpSample
from torch import Tensor, nn

from tlkedro.tl.architectures import TLModel, create_architecture
from tlkedro.tl.architectures.base import eval_mode

NORM = "instance"  # the decoder's normalisation: per image, so batch size does not matter (volumes)


def stage_outputs(encoder: nn.Module, stages: Sequence[str], x: Tensor) -> dict[str, Tensor]:
    """The output of each of ``stages`` (module paths in ``encoder``) for input ``x``."""
    outputs: dict[str, Tensor] = {}
    handles = [
        encoder.get_submodule(stage).register_forward_hook(
            lambda _module, _args, output, stage=stage: outputs.__setitem__(stage, output)
        )
        for stage in stages
    ]
    try:
        encoder(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def skip_levels(model: TLModel) -> list[tuple[str, int, tuple[int, ...]]]:
    """The encoder's resolution levels, input side first: ``(stage, channels, spatial size)`` each.

    A level is a run of consecutive stages whose outputs have one spatial size; its last stage gives the
    skip feature. Measured on ``model.example_input()``.

    Raises:
        ValueError: If a stage's output is not a ``(B, C, *spatial)`` map (a transformer's tokens), naming
            the architecture and the stage.
    """
    with eval_mode(model), torch.no_grad():
        outputs = stage_outputs(model.encoder, model.stage_names, model.example_input())
    levels: list[tuple[str, int, tuple[int, ...]]] = []
    for stage in model.stage_names:
        output = outputs.get(stage)
        if not isinstance(output, Tensor) or output.ndim != model.spatial_dims + 2:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"stage {stage!r} of {model.config.get('name')!r} gives {shape}, not a "
                f"(B, C, *spatial) map with {model.spatial_dims} spatial dimensions: a U-Net decoder "
                "needs a convolutional encoder"
            )
        level = (stage, int(output.shape[1]), tuple(int(n) for n in output.shape[2:]))
        previous = levels[-1][2] if levels else model.input_size
        if any(n > m for n, m in zip(level[2], previous, strict=True)):
            # e.g. a Swin stage's channels-last (B, H, W, C) output, read as (B, C, *spatial)
            raise ValueError(
                f"stage {stage!r} of {model.config.get('name')!r} gives {tuple(output.shape)}, larger "
                f"than the stage or input before it ({previous}): not a (B, C, *spatial) map that "
                "shrinks with depth, which a U-Net decoder needs"
            )
        if levels and levels[-1][2] == level[2]:
            levels[-1] = level
        else:
            levels.append(level)
    return levels


def _match_size(x: Tensor, size: Sequence[int]) -> Tensor:
    """``x`` zero-padded or cropped (centred) to spatial ``size``."""
    pad: list[int] = []
    for have, want in reversed(list(zip(x.shape[2:], size, strict=True))):
        before = (want - have) // 2
        pad += [before, want - have - before]
    return F.pad(x, pad) if any(pad) else x


class UpBlock(nn.Module):
    """Transposed convolution by ``scale``, matched to the skip's size, concatenated, two convolutions."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        scale: Sequence[int],
    ) -> None:
        super().__init__()
        self.up = UpSample(
            spatial_dims, in_channels, out_channels, scale_factor=scale, mode="deconv"
        )
        self.conv = UnetBasicBlock(
            spatial_dims, out_channels + skip_channels, out_channels, 3, 1, norm_name=NORM
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = _match_size(self.up(x), skip.shape[2:])
        return self.conv(torch.cat([x, skip], dim=1))


class SegmentationNet(nn.Module):
    """A prepared ``TLModel``'s encoder with a U-Net decoder: ``(B, C, *size) -> (B, classes, *size)``.

    Only the encoder of ``model`` is kept (its pooling and head serve the source task). Parameter names
    are ``encoder.*`` (as in the ``TLModel``, so strategies and source weights address the same keys) and
    ``decoder.*``; the strategies' parameter groups are therefore ``encoder`` and ``decoder``.

    Args:
        model: The model a strategy prepared; its ``stage_names`` (fewer when truncated) set the levels.
        num_classes: Output channels, one logit per class (background included).
        decoder_channels: Channels of the last up-sampling block, at input resolution; each deeper
            block has its skip's channels.

    Attributes:
        config: ``architecture`` (the ``TLModel``'s config, with ``cut_at`` when truncated),
            ``num_classes`` and ``decoder_channels``: what ``segmentation_net`` rebuilds it from.
    """

    def __init__(self, model: TLModel, num_classes: int, decoder_channels: int = 32) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"num_classes must be at least 2 (background and one class); got {num_classes}"
            )
        self.encoder = model.encoder
        self.spatial_dims = model.spatial_dims
        self.input_size = model.input_size
        self.in_channels = model.in_channels
        self.levels = skip_levels(model)
        self.skip_stages = tuple(stage for stage, _, _ in self.levels)
        sizes = [model.input_size, *(size for _, _, size in self.levels)]
        channels = [model.in_channels, *(c for _, c, _ in self.levels)]
        widths = [decoder_channels, *channels[1:-1]]  # each block's output width
        blocks = []
        # From the bottleneck up: block i brings level i + 1 to level i's size (level 0: the input).
        for i in reversed(range(len(self.levels))):
            scale = [math.ceil(a / b) for a, b in zip(sizes[i], sizes[i + 1], strict=True)]
            in_channels = channels[-1] if i == len(self.levels) - 1 else widths[i + 1]
            blocks.append(UpBlock(self.spatial_dims, in_channels, channels[i], widths[i], scale))
        self.decoder = nn.ModuleDict(
            {
                "blocks": nn.ModuleList(blocks),
                "out": UnetOutBlock(self.spatial_dims, widths[0], num_classes),
            }
        )
        self.num_classes = num_classes
        self.config: dict[str, Any] = {
            "architecture": dict(model.config),
            "num_classes": num_classes,
            "decoder_channels": decoder_channels,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, *x.shape[2:])``."""
        features = stage_outputs(self.encoder, self.skip_stages, x)
        skips = [x, *(features[stage] for stage in self.skip_stages)]
        y = skips[-1]
        for block, skip in zip(self.decoder["blocks"], reversed(skips[:-1]), strict=True):
            y = block(y, skip)
        return self.decoder["out"](y)

    def example_input(self, batch_size: int = 1) -> Tensor:
        """Zeros of shape ``(batch_size, in_channels, *input_size)`` on the model's device."""
        device = next(self.parameters()).device
        return torch.zeros(batch_size, self.in_channels, *self.input_size, device=device)


def segmentation_net(
    architecture: Mapping[str, Any], num_classes: int, decoder_channels: int = 32
) -> SegmentationNet:
    """A ``SegmentationNet`` on a fresh encoder of ``architecture`` (``{"name": ..., **kwargs}``)."""
    return SegmentationNet(create_architecture(**architecture), num_classes, decoder_channels)


def build_segmentation_model(checkpoint: Mapping[str, Any]) -> SegmentationNet:
    """Rebuild a checkpoint's ``SegmentationNet`` in eval mode, with its weights loaded strictly."""
    model = segmentation_net(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()
