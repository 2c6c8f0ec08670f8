"""``transfusion``: TransFusion, pretrained lower stages under slimmer, randomly initialised upper
stages.

Schedule: the model is rebuilt with every stage above ``cut_at`` at ``width_factor`` of its channels
(half by default) and random initialisation; the stages up to and including ``cut_at`` get the
source encoder's weights; the head is new. Everything is fine-tuned at the base learning rate. The
lower layers carry most of the useful transferred features, while the over-parameterised upper
layers can be slimmed and trained from scratch at a fraction of the cost.

Reference: Raghu, Zhang, Kleinberg and Bengio, "Transfusion: Understanding Transfer Learning for
Medical Imaging", NeurIPS 2019 (Section 6, hybrid approaches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.strategies.base import Strategy, load_encoder, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("transfusion")
@dataclasses.dataclass
class TransFusion(Strategy):
    """Rebuild the model with slim upper stages; load the source weights into the stages up to ``cut_at``.

    Args:
        cut_at: The last pretrained stage (e.g. ``layer2``); the stages above it are slimmed. It was
            called ``cutoff`` before, which still works for one release.
        width_factor: Channel factor of the slimmed stages.
    """

    cut_at: str
    width_factor: float = 0.5
    renamed_kwargs: ClassVar[Mapping[str, str]] = {"cutoff": "cut_at"}

    def __post_init__(self) -> None:
        if not 0 < self.width_factor <= 1:
            raise ValueError(
                f"transfusion: width_factor must be in (0, 1], got {self.width_factor}"
            )

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Return a slimmed rebuild of ``model`` whose stages up to ``cut_at`` hold the source weights.

        Raises:
            ValueError: If ``cut_at`` is not a stage of the model, listing them.
        """
        source_state = self.require_source(source_state)
        stages = list(model.stage_names)
        if self.cut_at not in stages:
            raise ValueError(
                f"transfusion: cut_at {self.cut_at!r} is not a stage of {model.config['name']!r}; "
                f"its stages: {', '.join(stages)}"
            )
        kept = stages[: stages.index(self.cut_at) + 1]
        kwargs = {key: value for key, value in model.config.items() if key != "name"}
        kwargs["width_factors"] = {
            **(kwargs.get("width_factors") or {}),
            **{stage: self.width_factor for stage in stages[len(kept) :]},
        }
        slim = create_architecture(model.config["name"], **kwargs)
        load_encoder(slim, source_state, stages=kept)
        return slim
