"""``full``: full fine-tuning of the transferred encoder.

Schedule: the source encoder's weights initialise the encoder, the head is new (random), and every
parameter is trained at the base learning rate from the first step.

Reference: Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014
(the "fine-tuned" transfer condition).
"""

from __future__ import annotations

import dataclasses

from tlkedro.tl.strategies.base import Strategy, register


@register("full")
@dataclasses.dataclass
class Full(Strategy):
    """Load the source encoder and fine-tune everything (the base class's behaviour)."""
