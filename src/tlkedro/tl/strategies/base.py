"""The ``Strategy`` base class, its registry and the helpers strategies share.

A strategy turns a freshly built ``TLModel`` and the source model's state dict into the model to
train (``prepare``), and says how to train it (``param_groups``, ``penalty``, ``callbacks``). The
base class is the plain transfer: load the source encoder, train everything, one parameter group per
top-level part of the model (``encoder``, ``head``), no penalty, no callbacks. Strategies override
what they change.

Freezing (``freeze``) sets ``requires_grad=False`` and keeps every frozen BatchNorm layer in eval
mode through a forward pre-hook. A hook, rather than a Lightning callback or
``BaseFinetuning.freeze``, makes the frozen model self-contained: ``model.train()`` from Lightning,
a notebook loop or anything else cannot put those layers back into batch statistics, so their
running statistics stay bit-identical and the frozen layers compute the same function in training
and evaluation. (``BaseFinetuning.freeze`` with ``train_bn=False`` only stops the running statistics
from updating; in training mode the layer would still normalise with the batch's statistics.) The
hook survives ``copy.deepcopy`` and pickling; it does not survive
``SyncBatchNorm.convert_sync_batchnorm``, which builds new modules.

Strategies whose training has phases (DAPT's warm-up, partial and full) unfreeze each phase's layers with
``PhaseSwitch``, a Lightning ``BaseFinetuning`` callback that uses this freeze rather than Lightning's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import lightning
from lightning.pytorch.callbacks import BaseFinetuning
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from tlkedro.errors import ConfigurationError
from tlkedro.tl.registry import Registry

if TYPE_CHECKING:
    from tlkedro.tl.architectures import TLModel

STRATEGIES: Registry[Strategy] = Registry("strategy")

S = TypeVar("S", bound="type[Strategy]")

_MAX_LISTED_KEYS = 10


class MissingSourceError(ConfigurationError, ValueError):
    """Raised when a strategy that transfers weights is given no source model."""


class SourceMismatchError(ConfigurationError, ValueError):
    """Raised when the source state dict does not fit the target architecture's encoder."""


def register(name: str) -> Callable[[S], S]:
    """Class decorator registering a strategy under ``name`` and recording the name on the class."""

    def decorator(cls: S) -> S:
        cls.name = name
        STRATEGIES.register(name)(cls)
        return cls

    return decorator


@dataclasses.dataclass
class Strategy:
    """Plain transfer: the source encoder's weights, everything trained at one learning rate.

    Subclasses are dataclasses whose fields are the strategy's keyword arguments (the YAML
    ``strategy.kwargs``); ``summary`` reports them.
    """

    name: ClassVar[str]

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        """Load the source encoder into ``model`` and return it.

        Args:
            model: A freshly built model of the target task.
            source_state: The source model's state dict (``None`` when there is no source model).

        Returns:
            The model to train.

        Raises:
            MissingSourceError: If ``source_state`` is ``None``.
            SourceMismatchError: If the source encoder does not fit ``model``'s encoder.
        """
        load_encoder(model, self.require_source(source_state))
        return model

    def param_groups(self, model: TLModel, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the trainable parameters of each top-level part, at ``lr``.

        Args:
            model: The prepared model.
            lr: The base learning rate.

        Returns:
            Groups ``{"params": [...], "lr": ..., "name": ...}`` holding exactly the parameters with
            ``requires_grad``; parts without any are left out.
        """
        parts: dict[str, list[nn.Parameter]] = {}
        for param_name, param in model.named_parameters():
            if param.requires_grad:
                parts.setdefault(param_name.split(".", 1)[0], []).append(param)
        return [{"params": params, "lr": lr, "name": part} for part, params in parts.items()]

    def penalty(self, model: TLModel) -> Tensor | None:
        """A regularisation term added to the training loss, or ``None`` for none."""
        return None

    def callbacks(self) -> list[lightning.Callback]:
        """Lightning callbacks the strategy needs during training (e.g. phase switches)."""
        return []

    def phases(self) -> list[tuple[str, int]]:
        """Named training phases and the epoch each starts at.

        One phase, ``train``, unless the strategy's callbacks change what is trained part-way (DAPT's
        warm-up, partial and full phases); per-phase reports (``tlkedro.tl.analysis.energy``) group the
        training history by these.
        """
        return [("train", 0)]

    def summary(self, model: TLModel) -> dict[str, Any]:
        """The strategy's name and settings, and the model's total, trainable and frozen parameter counts."""
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {
            "strategy": self.name,
            **settings,
            "total_params": total,
            "trainable_params": trainable,
            "frozen_params": total - trainable,
        }

    def require_source(self, source_state: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """``source_state``, or a ``MissingSourceError`` naming this strategy if it is ``None``."""
        if source_state is None:
            raise MissingSourceError(
                f"Strategy {self.name!r} transfers weights from a source model, but none was given: set "
                f"`init_from` to the pretrain variant to start from (e.g. `init_from: pretrain.default`), "
                f"or use strategy 'scratch' to train without one."
            )
        return source_state


def phase_at(phases: list[tuple[str, int]], epoch: int) -> str:
    """The name of the phase (``Strategy.phases()``) that epoch ``epoch`` belongs to."""
    return [name for name, start in phases if start <= epoch][-1]


def load_encoder(
    model: TLModel, source_state: dict[str, Tensor], stages: Iterable[str] | None = None
) -> None:
    """Copy the source encoder's weights into ``model``, the whole encoder or only some of its stages.

    Only ``encoder.*`` entries are transferred: the head belongs to the source task. The keys of the
    transferred part must match exactly, with the same shapes; otherwise nothing is loaded.

    Args:
        model: The target model; its head is left as it is.
        source_state: The source model's state dict.
        stages: Names of the encoder stages to transfer (``model.stage_names``); all when ``None``.

    Raises:
        SourceMismatchError: Listing the missing, unexpected and mismatched keys.
    """
    prefixes = ("encoder.",) if stages is None else tuple(f"encoder.{stage}." for stage in stages)
    wanted = {key: value for key, value in model.state_dict().items() if key.startswith(prefixes)}
    given = {key: value for key, value in source_state.items() if key.startswith(prefixes)}
    problems = {
        "missing from the source": sorted(wanted.keys() - given.keys()),
        "in the source but not in the model": sorted(given.keys() - wanted.keys()),
        "with different shapes": [
            f"{key} (source {tuple(given[key].shape)}, model {tuple(wanted[key].shape)})"
            for key in sorted(wanted.keys() & given.keys())
            if given[key].shape != wanted[key].shape
        ],
    }
    if any(problems.values()):
        lines = [
            f"  {len(keys)} keys {what}: {', '.join(keys[:_MAX_LISTED_KEYS])}"
            + (
                f", ... ({len(keys) - _MAX_LISTED_KEYS} more)"
                if len(keys) > _MAX_LISTED_KEYS
                else ""
            )
            for what, keys in problems.items()
            if keys
        ]
        raise SourceMismatchError(
            f"The source weights do not fit the encoder of {model.config['name']!r}; "
            f"was the source model (`init_from`) built with the same architecture and arguments?\n"
            + "\n".join(lines)
        )
    model.load_state_dict(given, strict=False)


def freeze(modules: Iterable[nn.Module]) -> None:
    """Stop training ``modules``: no gradients, and their BatchNorm layers run in eval mode.

    The BatchNorm layers are switched to eval mode before each forward pass rather than here, so that
    Lightning does not warn about modules in eval mode at the start of training.

    Args:
        modules: The modules to freeze, with everything inside them.
    """
    for module in modules:
        module.requires_grad_(False)
        for layer in module.modules():
            if (
                isinstance(layer, _BatchNorm)
                and _keep_eval not in layer._forward_pre_hooks.values()
            ):
                layer.register_forward_pre_hook(_keep_eval)


def unfreeze(modules: Iterable[nn.Module]) -> None:
    """Undo ``freeze``: gradients again, and BatchNorm layers follow the module's training mode.

    Args:
        modules: The modules to train, with everything inside them.
    """
    for module in modules:
        module.requires_grad_(True)
        for layer in module.modules():
            if isinstance(layer, _BatchNorm):
                for key, hook in list(layer._forward_pre_hooks.items()):
                    if hook is _keep_eval:
                        del layer._forward_pre_hooks[key]
                # The hook left the layer in eval mode; back to the mode the rest of the module is in.
                layer.training = module.training


def _keep_eval(module: nn.Module, args: tuple[Any, ...]) -> None:
    # Undo any model.train() since freezing, before the layer could use or update batch statistics.
    module.training = False


class PhasedStrategy(Protocol):
    """A strategy whose later phases unfreeze more of the model (``Strategy.phases`` beyond the first)."""

    def phases(self) -> list[tuple[str, int]]: ...

    def phase_modules(self, model: TLModel, phase: str) -> list[nn.Module]:
        """The modules that phase ``phase`` makes trainable."""
        ...

    def phase_lr(self, phase: str) -> float | None:
        """The learning rate of the layers ``phase`` unfreezes (``None``: the optimizer's base one)."""
        ...


class PhaseSwitch(BaseFinetuning):
    """Unfreezes a strategy's phases at their first epoch and adds their layers to the optimizer.

    Lightning's ``BaseFinetuning`` keeps the optimizer's parameter groups in the callback's state and
    puts them back into the optimizer on resume, before Lightning restores the optimizer's state. Two
    things differ from its defaults:

    - Freezing and unfreezing are ``freeze`` and ``unfreeze`` of this module (frozen BatchNorm layers stay
      in eval mode). ``strategy.prepare`` froze the first phase's layers already, so
      ``freeze_before_training`` does nothing, and a resumed run unfreezes again the phases whose
      parameters the restored optimizer holds.
    - The switch happens at the end of the epoch before a phase starts (``BaseFinetuning`` switches at the
      start of the epoch), before the epoch's checkpoints are written, so that ``last.ckpt`` holds the
      new parameter group, and the epoch-level schedule steps it with the others.

    The new group is named ``encoder.<phase>`` and starts at ``strategy.phase_lr(phase)``; schedulers
    that keep one base rate per group (cosine) get one for it. Expects a ``TransferModule`` (the model to
    switch is ``pl_module.model``).

    Args:
        strategy: The strategy whose phases are switched.
    """

    def __init__(self, strategy: PhasedStrategy) -> None:
        super().__init__()
        self.strategy = strategy

    def freeze_before_training(self, pl_module: lightning.LightningModule) -> None:
        """Nothing: ``strategy.prepare`` froze the layers."""

    def on_fit_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        super().on_fit_start(trainer, pl_module)  # on resume: the saved parameter groups
        optimized = _optimized(trainer.optimizers[0])
        for phase, _ in self.strategy.phases()[1:]:
            modules = self.strategy.phase_modules(pl_module.model, phase)
            if all(id(p) in optimized for module in modules for p in module.parameters()):
                unfreeze(modules)

    def on_train_epoch_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Nothing: the switch happens at the end of the epoch before."""

    def on_train_epoch_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        # BaseFinetuning.on_train_epoch_start's work, for the epoch that starts next.
        optimizer = trainer.optimizers[0]
        groups = len(optimizer.param_groups)
        self.finetune_function(pl_module, trainer.current_epoch + 1, optimizer)
        self._store(pl_module, 0, groups, optimizer.param_groups)
        for config in trainer.lr_scheduler_configs:
            # ReduceLROnPlateau extends its per-group minimum itself; per-group base rates do not.
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs.extend(
                    group["initial_lr"] for group in optimizer.param_groups[groups:]
                )

    def finetune_function(
        self, pl_module: lightning.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        """Unfreeze the phases that start at ``epoch`` and add their new parameters as a group."""
        model = pl_module.model
        for phase, start in self.strategy.phases()[1:]:
            if start != epoch:
                continue
            optimized = _optimized(optimizer)
            unfreeze(self.strategy.phase_modules(model, phase))
            new = [p for p in model.parameters() if p.requires_grad and id(p) not in optimized]
            if not new:  # e.g. a full phase after a partial one that already trained every block
                continue
            lr = self.strategy.phase_lr(phase)
            lr = optimizer.defaults["lr"] if lr is None else lr
            optimizer.add_param_group(
                {"params": new, "lr": lr, "initial_lr": lr, "name": f"encoder.{phase}"}
            )


def _optimized(optimizer: Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}
