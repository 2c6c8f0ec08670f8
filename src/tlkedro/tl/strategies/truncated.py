"""``truncated``: TruncatedTL, fine-tuning the transferred encoder cut at a chosen depth.

Schedule: the source encoder's weights are loaded; the encoder is truncated after ``cut_at`` (a
stage such as ``layer3`` or a block inside one such as ``layer3.1``), followed by a new global
pooling and a new head; the whole kept encoder and the head are fine-tuned at the base learning
rate. Deep features are often too specific to the source task, so the best cut point is searched: first
over stage boundaries, then around the best stage (``truncation_candidates``), selecting by
validation AUPRC.

``cut_at: auto`` takes the cut point from the SVCCA similarity of a probe fine-tune (by default the
``full`` variant of the same seed) to the source, per stage (``tlkedro.tl.analysis.svcca.auto_cut_at``):
the strategy then only holds the rule; the training pipeline computes the cut point before training and
trains ``truncated`` with that ``cut_at``.

Reference: Peng, Liang, Luo, Li and Sun, "Rethinking Transfer Learning for Medical Image
Classification", BMVC 2023 (arXiv:2106.05152).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from tlkedro.tl.analysis.svcca import CUTOFF_RULES
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.architectures.surgery import truncate, truncation_points
from tlkedro.tl.strategies.base import Strategy, register

AUTO = "auto"
# The keyword arguments that only ``cut_at: auto`` uses, with their defaults there.
AUTO_DEFAULTS: Mapping[str, Any] = {
    "probe": "full",
    "rule": "largest_drop",
    "threshold": None,
    "max_images": 256,
    "max_samples": 4096,
}

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel


@register("truncated")
@dataclasses.dataclass
class Truncated(Strategy):
    """Load the source encoder, keep it up to ``cut_at``, put a new head on it and fine-tune it all.

    Args:
        cut_at: The last kept part of the encoder, without the ``encoder.`` prefix: a stage (``layer3``)
            or a block inside a sequential stage (``layer3.0``); see ``surgery.truncation_points``. It
            was called ``cutoff`` before, which still works for one release. ``auto``: chosen before
            training from the SVCCA profile of ``probe`` (see the module docstring).
        probe: With ``auto``: the finetune variant, or the group (its variant of the same seed), whose
            similarity to the shared source decides the cut point; default ``full``.
        rule: With ``auto``: ``suggest_cutoff``'s rule, ``largest_drop`` (default) or ``threshold``.
        threshold: With ``auto`` and ``rule: threshold``: the similarity a kept stage reaches.
        max_images: With ``auto``: training images (evenly spaced) the similarity is computed on; 256.
        max_samples: With ``auto``: data points per stage (``svcca_by_stage``); 4096.

    Raises:
        ValueError: If an ``auto``-only argument is given with a fixed ``cut_at``, the rule is unknown,
            the threshold rule has no threshold, or a count is not positive.
    """

    cut_at: str
    probe: str | None = None
    rule: str | None = None
    threshold: float | None = None
    max_images: int | None = None
    max_samples: int | None = None
    renamed_kwargs: ClassVar[Mapping[str, str]] = {"cutoff": "cut_at"}

    def __post_init__(self) -> None:
        given = [key for key in AUTO_DEFAULTS if getattr(self, key) is not None]
        if self.cut_at != AUTO:
            if given:
                raise ValueError(
                    f"truncated: {', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                    f"cut_at: auto only (cut_at is {self.cut_at!r})"
                )
            return
        for key, default in AUTO_DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, default)
        if self.rule not in CUTOFF_RULES:
            raise ValueError(
                f"truncated: unknown rule {self.rule!r}; the rules are {', '.join(CUTOFF_RULES)}"
            )
        if self.rule == "threshold" and self.threshold is None:
            raise ValueError("truncated: rule threshold needs threshold (a similarity in (0, 1])")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"truncated: threshold must be in (0, 1], got {self.threshold}")
        for key in ("max_images", "max_samples"):
            if getattr(self, key) < 1:
                raise ValueError(f"truncated: {key} must be positive, got {getattr(self, key)}")

    @property
    def auto(self) -> bool:
        """Whether the cut point is chosen from a probe's SVCCA profile (``cut_at: auto``)."""
        return self.cut_at == AUTO

    def summary(self, model: TLModel) -> dict[str, Any]:
        """As ``Strategy.summary``; the ``auto``-only settings only for ``cut_at: auto``."""
        summary = super().summary(model)
        return {k: v for k, v in summary.items() if self.auto or k not in AUTO_DEFAULTS}

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and return it truncated after ``cut_at``.

        Raises:
            ValueError: If ``cut_at`` is still ``auto`` (the pipeline resolves it before training).
        """
        if self.auto:
            raise ValueError(
                "truncated: cut_at: auto must be resolved to a cut point before training "
                "(tlkedro.tl.analysis.svcca.auto_cut_at); the training pipeline does it from the "
                "probe variant's model"
            )
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
