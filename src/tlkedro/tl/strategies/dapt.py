"""Domain-adaptive pre-training (DAPT): full, partial, hybrid and simplified, each after a head-only warm-up.

DAPT starts from a model pretrained on a generic source task and trains it further on a moderately sized
in-domain set, usually with a surrogate task, before the target task is fine-tuned. Mehmood, Bajwa and
Sun ("Resource-efficient domain adaptive pre-training for medical images", arXiv:2204.13280, 2022) make
it cheaper in three ways, each registered here next to the standard one:

- ``dapt_full`` (standard DAPT): warm-up, then every encoder layer is trained.
- ``dapt_partial``: warm-up, then only the last ``blocks`` blocks of the encoder (the rest stays frozen,
  bit-identical, and is never back-propagated through).
- ``dapt_hybrid``: warm-up, partial DAPT for ``partial_epochs``, then every layer (at ``full_lr``).
- ``dapt_simplified``: the encoder is cut after ``cut_at`` (one or two of its first stages), followed by
  global pooling and a new head (``surgery.truncate``); warm-up, then every kept layer.

Schedule: the source encoder's weights are loaded and the whole encoder is frozen, so for the first
``warmup_epochs`` epochs only the new head trains (at the optimizer's base learning rate): a randomly
initialised head would otherwise send large gradients into the pretrained layers. At the end of the last
warm-up epoch a Lightning callback (``PhaseSwitch``) unfreezes the next phase's layers and adds them to the
optimizer as a parameter group ``encoder.<phase>`` at ``lr`` (the base learning rate when ``None``); a
learning-rate schedule then anneals the new group from there. A "block" is a residual or transformer
block inside a stage (``layer4.1`` on a ResNet, ``blocks.11`` on a ViT), or the stage itself where the
stage is a plain sequence of layers (SFCN, CBR); see ``encoder_blocks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import lightning as L
from torch import Tensor, nn

from tlkedro.tl.architectures.surgery import truncate
from tlkedro.tl.strategies.base import PhaseSwitch, Strategy, freeze, register

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel

WARMUP = "warmup"


@dataclasses.dataclass
class DomainAdaptivePretraining(Strategy):
    """The shared schedule: load and freeze the encoder, warm the head up, then unfreeze in phases.

    As it stands, standard (full) DAPT; subclasses change which encoder modules a phase unfreezes
    (``phase_modules``) or add phases (``_unfreezing``).

    Args:
        warmup_epochs: Epochs during which only the head trains (at least 1).
        lr: Learning rate of the encoder layers unfrozen after the warm-up; ``None`` for the base one.
    """

    warmup_epochs: int = 1
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.warmup_epochs < 1:
            raise ValueError(
                f"{self.name}: warmup_epochs must be >= 1 (every DAPT variant starts with a head-only "
                f"warm-up); got {self.warmup_epochs}"
            )
        _check_lr(self.name, "lr", self.lr)

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and freeze it: the warm-up trains the head only."""
        model = super().prepare(model, source_state)
        freeze([model.encoder])
        return model

    def phases(self) -> list[tuple[str, int]]:
        """``warmup`` from epoch 0, then the unfreezing phases."""
        return [(WARMUP, 0), *((name, start) for name, start, _ in self._unfreezing())]

    def phase_modules(self, model: TLModel, phase: str) -> list[nn.Module]:
        """The encoder modules that phase ``phase`` makes trainable: the whole encoder."""
        return [model.encoder]

    def phase_lr(self, phase: str) -> float | None:
        """The learning rate of the layers that ``phase`` unfreezes (``None``: the base one)."""
        return next(lr for name, _, lr in self._unfreezing() if name == phase)

    def _unfreezing(self) -> list[tuple[str, int, float | None]]:
        """``(phase, start epoch, learning rate)`` of each phase after the warm-up."""
        return [("full", self.warmup_epochs, self.lr)]

    def callbacks(self) -> list[L.Callback]:
        """The callback that unfreezes each phase's layers at its first epoch."""
        return [PhaseSwitch(self)]


def _check_lr(strategy: str, field: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(
            f"{strategy}: {field} must be > 0 or null (the base learning rate); got {value}"
        )


def encoder_blocks(model: TLModel) -> list[str]:
    """The encoder's blocks that hold parameters, input side first.

    A block is a child of a sequential stage that is itself made of several parameterised layers (a
    residual block, an EfficientNet or transformer block); a stage that has none is a block as a whole
    (a ResNet's ``conv1``, an SFCN or CBR stage). On a timm resnet18: ``conv1, bn1, layer1.0, layer1.1,
    ..., layer4.0, layer4.1``.
    """
    blocks = []
    for stage in model.stage_names:
        module = model.encoder.get_submodule(stage)
        children = list(module.named_children()) if isinstance(module, nn.Sequential) else []
        composite = [
            f"{stage}.{name}" for name, child in children if _parameterised_layers(child) > 1
        ]
        if composite:
            blocks.extend(composite)
        elif _parameterised_layers(module):
            blocks.append(stage)
    return blocks


def _parameterised_layers(module: nn.Module) -> int:
    return sum(
        1 for layer in module.modules() if next(layer.parameters(recurse=False), None) is not None
    )


def _last_blocks(model: TLModel, count: int, strategy: str) -> list[nn.Module]:
    blocks = encoder_blocks(model)
    if not 1 <= count <= len(blocks):
        raise ValueError(
            f"{strategy}: blocks must be between 1 and the {len(blocks)} blocks of "
            f"{model.config.get('name', 'the encoder')!r} ({', '.join(blocks)}); got {count}"
        )
    return [model.encoder.get_submodule(block) for block in blocks[-count:]]


@register("dapt_full")
@dataclasses.dataclass
class FullDapt(DomainAdaptivePretraining):
    """Standard DAPT: after the warm-up, every encoder layer is trained."""


@register("dapt_partial")
@dataclasses.dataclass
class PartialDapt(DomainAdaptivePretraining):
    """Partial DAPT: after the warm-up, only the last ``blocks`` encoder blocks are trained.

    Args:
        blocks: How many blocks, counted from the output side, are trained (``encoder_blocks``).
    """

    blocks: int = 2

    def phase_modules(self, model: TLModel, phase: str) -> list[nn.Module]:
        """The last ``blocks`` blocks."""
        return _last_blocks(model, self.blocks, self.name)

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """As the base, and check that the encoder has ``blocks`` blocks before any training."""
        model = super().prepare(model, source_state)
        _last_blocks(model, self.blocks, self.name)
        return model


@register("dapt_hybrid")
@dataclasses.dataclass
class HybridDapt(PartialDapt):
    """Hybrid DAPT: warm-up, partial DAPT for ``partial_epochs``, then every encoder layer.

    Args:
        partial_epochs: Epochs of partial DAPT between the warm-up and the full phase (at least 1).
        full_lr: Learning rate of the layers unfrozen in the full phase; ``None``: the same as ``lr``.
    """

    partial_epochs: int = 2
    full_lr: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.partial_epochs < 1:
            raise ValueError(f"{self.name}: partial_epochs must be >= 1; got {self.partial_epochs}")
        _check_lr(self.name, "full_lr", self.full_lr)

    def _unfreezing(self) -> list[tuple[str, int, float | None]]:
        full_start = self.warmup_epochs + self.partial_epochs
        return [
            ("partial", self.warmup_epochs, self.lr),
            ("full", full_start, self.lr if self.full_lr is None else self.full_lr),
        ]

    def phase_modules(self, model: TLModel, phase: str) -> list[nn.Module]:
        """The last ``blocks`` blocks in the partial phase, the whole encoder in the full phase."""
        return super().phase_modules(model, phase) if phase == "partial" else [model.encoder]


@register("dapt_simplified")
@dataclasses.dataclass
class SimplifiedDapt(FullDapt):
    """DAPT of a simplified encoder: the first stages up to ``cut_at``, then pooling and a new head.

    Args:
        cut_at: The last kept part of the encoder (``surgery.truncation_points``): one or two of its first
            stages, e.g. ``layer1`` or ``layer2`` on a ResNet, ``conv_1`` on SFCN. It was called
            ``cutoff`` before, which still works for one release.
    """

    cut_at: str = "layer2"
    renamed_kwargs: ClassVar[Mapping[str, str]] = {"cutoff": "cut_at"}

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder, cut it after ``cut_at`` and freeze what is kept."""
        # The copy that truncate makes keeps the frozen flags and BatchNorm hooks; its head is new.
        return truncate(super().prepare(model, source_state), self.cut_at)
