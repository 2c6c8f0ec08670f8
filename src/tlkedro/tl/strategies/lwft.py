"""``lwft``: layer-wise fine-tuning of the top ``k`` encoder stages.

Schedule: the source encoder's weights are loaded; the top ``k`` stages (output side) are fine-tuned
and the stages below them are frozen for the whole run (no gradients, BatchNorm running statistics
kept). The head and the top stage train at the base learning rate; each trainable stage below the
top one has its learning rate multiplied by ``lr_decay`` once more (``lr * lr_decay ** depth``,
depth 0 at the top). Only stages that hold parameters count (a ResNet's ``act1`` and ``maxpool``
have nothing to fine-tune), so on resnet18 ``k`` runs from 0 (a linear probe) to 6 (with ``lr_decay
= 1``, full fine-tuning). Parameters the encoder holds outside its stages (a ViT's class token and
position embedding) count as part of the bottom stage.

References: Tajbakhsh et al., "Convolutional Neural Networks for Medical Image Analysis: Full
Training or Fine Tuning?", IEEE TMI 2016 (layer-wise fine-tuning, from the top layers down); the
per-stage learning rate decay is the discriminative fine-tuning of Howard and Ruder, "Universal
Language Model Fine-tuning for Text Classification", ACL 2018.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from tlkedro.tl.strategies.base import Strategy, freeze, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("lwft")
@dataclasses.dataclass
class LayerWiseFineTuning(Strategy):
    """Load the source encoder, fine-tune its top ``k`` stages with decaying learning rates.

    Args:
        k: How many encoder stages, counted from the top, are fine-tuned.
        lr_decay: Learning-rate factor per stage down from the top trainable stage (1: no decay).
    """

    k: int
    lr_decay: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(
                f"lwft: k must be >= 0 (the number of top stages to fine-tune), got {self.k}"
            )
        if self.lr_decay <= 0:
            raise ValueError(f"lwft: lr_decay must be > 0, got {self.lr_decay}")

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and freeze all but its top ``k`` stages.

        Raises:
            ValueError: If ``k`` exceeds the number of stages with parameters, listing them.
        """
        weighted = _weighted_stages(model)
        if self.k > len(weighted):
            raise ValueError(
                f"lwft: k={self.k} but {model.config['name']!r} has {len(weighted)} stages with parameters: "
                f"{', '.join(weighted)}"
            )
        model = super().prepare(model, source_state)
        stages = list(model.stage_names)
        lowest_trained = stages.index(weighted[-self.k]) if self.k else len(stages)
        # Parameter-free stages below the trained ones are frozen too: they may hold non-affine BatchNorms.
        freeze(model.encoder.get_submodule(stage) for stage in stages[:lowest_trained])
        for name, param in model.encoder.named_parameters():
            if _depth(weighted, name) >= self.k:
                param.requires_grad_(False)
        return model

    def param_groups(self, model: TLModel, lr: float) -> list[dict[str, Any]]:
        """One group per trainable stage at ``lr * lr_decay ** depth``, then the head's group at ``lr``."""
        weighted = _weighted_stages(model)
        by_depth: dict[int, list[nn.Parameter]] = {}
        for name, param in model.encoder.named_parameters():
            if param.requires_grad:
                by_depth.setdefault(_depth(weighted, name), []).append(param)
        stage_groups = [
            {
                "params": params,
                "lr": lr * self.lr_decay**depth,
                "name": f"encoder.{weighted[-1 - depth]}",
            }
            for depth, params in sorted(by_depth.items())
        ]
        other_groups = [
            group for group in super().param_groups(model, lr) if group["name"] != "encoder"
        ]
        return stage_groups + other_groups


def _weighted_stages(model: TLModel) -> list[str]:
    """The stages that hold parameters, input side first."""
    return [
        stage
        for stage in model.stage_names
        if next(model.encoder.get_submodule(stage).parameters(), None) is not None
    ]


def _depth(stages: list[str], param_name: str) -> int:
    """How many of ``stages`` below the top one the encoder parameter ``param_name`` sits."""
    for depth, stage in enumerate(reversed(stages)):
        if param_name.startswith(f"{stage}."):
            return depth
    # Parameters outside every stage are the encoder's own input-side embeddings (a ViT's class token
    # and position embedding): they go with the bottom stage.
    return len(stages) - 1
