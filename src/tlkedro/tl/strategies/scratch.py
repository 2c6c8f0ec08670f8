"""``scratch``: no transfer, the baseline every transfer strategy is compared with.

Schedule: the freshly built model keeps its random initialisation and every parameter is trained at
the base learning rate. A source model, if one is given, is ignored, so a variant can switch to
``scratch`` without also clearing ``init_from``.

Reference: the "random initialisation" baseline of Raghu et al., "Transfusion: Understanding
Transfer Learning for Medical Imaging", NeurIPS 2019.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from torch import Tensor

from tlkedro.tl.strategies.base import Strategy, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("scratch")
@dataclasses.dataclass
class Scratch(Strategy):
    """Train the randomly initialised model; ``source_state`` is ignored."""

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Return ``model`` unchanged, whatever ``source_state`` is."""
        return model
