"""``truncated``: TruncatedTL, fine-tuning the transferred encoder cut at a chosen depth.

Schedule: the source encoder's weights are loaded; the encoder is truncated after ``cut_at`` (a
stage such as ``layer3`` or a block inside one such as ``layer3.1``), followed by a new global
pooling and a new head; the whole kept encoder and the head are fine-tuned at the base learning
rate. Deep features are often too specific to the source task, so the best cut point is searched: first
over stage boundaries, then around the best stage (``truncation_candidates``), selecting by
validation AUPRC.

Reference: Peng, Liang, Luo, Li and Sun, "Rethinking Transfer Learning for Medical Image
Classification", BMVC 2023 (arXiv:2106.05152).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.architectures.surgery import truncate, truncation_points
from tlkedro.tl.strategies.base import Strategy, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("truncated")
@dataclasses.dataclass
class Truncated(Strategy):
    """Load the source encoder, keep it up to ``cut_at``, put a new head on it and fine-tune it all.

    Args:
        cut_at: The last kept part of the encoder, without the ``encoder.`` prefix: a stage (``layer3``)
            or a block inside a sequential stage (``layer3.0``); see ``surgery.truncation_points``. It
            was called ``cutoff`` before, which still works for one release.
    """

    cut_at: str
    renamed_kwargs: ClassVar[Mapping[str, str]] = {"cutoff": "cut_at"}

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and return it truncated after ``cut_at``."""
        return truncate(super().prepare(model, source_state), self.cut_at)


def truncation_candidates(
    architecture: str, best_stage: str | None = None, **kwargs: Any
) -> list[str]:
    """Cut points to try in TruncatedTL's hierarchical search.

    Stage 1 (``best_stage=None``) tries every stage boundary. Stage 2 refines around the stage-1 winner:
    every cut point (``truncation_points``) strictly between the ends of its neighbouring stages, i.e. inside
    the best stage, its end, and inside the next stage. A cut point at the last block of a stage is the
    stage's end under another name, so only the stage's name is kept. On resnet18, stage 2 around
    ``layer3`` gives ``["layer3.0", "layer3", "layer4.0"]``.

    Args:
        architecture: A registered architecture name.
        best_stage: The stage-1 winner; ``None`` for the stage-1 candidates.
        **kwargs: The architecture's builder arguments, if they change its stages.

    Returns:
        Values for ``truncated``'s ``cut_at``, input side first.

    Raises:
        ValueError: If ``best_stage`` is not a stage of the architecture.
    """
    model = create_architecture(architecture, **kwargs)
    stages = list(model.stage_names)
    if best_stage is None:
        return stages
    if best_stage not in stages:
        raise ValueError(
            f"{best_stage!r} is not a stage of {architecture!r}; its stages: {', '.join(stages)}"
        )
    index = stages.index(best_stage)
    points = truncation_points(model)
    start = points.index(stages[index - 1]) + 1 if index > 0 else 0
    stop = points.index(stages[index + 1]) if index + 1 < len(stages) else len(points)
    return [
        point
        for i, point in enumerate(points[start:stop], start)
        if i + 1 == len(points) or points[i + 1] != point.rpartition(".")[0]
    ]
