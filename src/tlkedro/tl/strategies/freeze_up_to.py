"""``freeze_up_to``: freeze the transferred encoder below a given layer, fine-tune the rest.

Schedule: the source encoder's weights are loaded; every encoder layer before ``cut_at`` in forward
order is frozen for the whole run (no gradients, BatchNorm running statistics kept); ``cut_at``, the
layers after it and the new head are trained at the base learning rate. On resnet18 the levels
compared in TLIMB are ``layer3.1.conv1``, ``layer4.0.conv1`` and ``layer4.1.conv1`` (and no
freezing: strategy ``full``).

Reference: Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014
(transfer of the first n layers, frozen); the layer levels follow the TLIMB brain-MRI transfer
benchmark.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from tlkedro.tl.architectures.surgery import ordered_layers
from tlkedro.tl.strategies.base import Strategy, freeze, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("freeze_up_to")
@dataclasses.dataclass
class FreezeUpTo(Strategy):
    """Load the source encoder, freeze every layer before ``cut_at``, fine-tune from ``cut_at`` on.

    Args:
        cut_at: The first trained encoder layer, without the ``encoder.`` prefix (e.g. ``layer3.1.conv1``);
            it was called ``layer`` before, which still works for one release.
    """

    cut_at: str
    renamed_kwargs: ClassVar[Mapping[str, str]] = {"layer": "cut_at"}

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and freeze the layers before ``cut_at``.

        Raises:
            ValueError: If ``cut_at`` is not a layer of the model, listing the valid names.
        """
        layers = ordered_layers(model)
        if self.cut_at not in layers:
            close = difflib.get_close_matches(self.cut_at, layers, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"freeze_up_to: cut_at {self.cut_at!r} is not a layer of {model.config['name']!r}.{hint} "
                f"Valid layers, in forward order: {', '.join(layers)}"
            )
        model = super().prepare(model, source_state)
        frozen = layers[: layers.index(self.cut_at)]
        freeze(model.encoder.get_submodule(name) for name in frozen)
        if frozen:
            # Parameters the encoder holds itself (a ViT's class token and position embedding) belong to no
            # layer; they act right after the first one (the patch embedding), so they are frozen with it.
            for param in model.encoder.parameters(recurse=False):
                param.requires_grad_(False)
        return model
