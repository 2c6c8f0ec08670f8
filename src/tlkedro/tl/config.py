"""Typed training parameters: the keys of ``parameters_pretrain.yml`` / ``parameters_finetune.yml``.

Validated once, at the edge: an unknown key, a misspelt component name, a value out of range or a MONAI
augmentation that does not exist is an error naming the key, the value given and what is allowed, before
any training starts. Values given as strings on the command line (``--params "finetune.optimizer.lr=1e-4"``)
are coerced to the field's type. The pipeline-level keys (``variants``, ``sweeps``, ``init_from``,
``evaluate_on``) belong to the pipelines, which subclass ``TrainConfig``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tlkedro.tl.architectures.base import ARCHITECTURES
from tlkedro.tl.data import augmentation_transform
from tlkedro.tl.objectives import (
    OBJECTIVES,
    Objective,
    Task,
    build_objective,
    create_auxiliary_term,
    create_objective,
)
from tlkedro.tl.optim import check_optimizer_kwargs, check_optimizer_name, check_schedule
from tlkedro.tl.registry import Registry, UnknownComponentError
from tlkedro.tl.strategies import STRATEGIES, create_strategy

# "auto": chosen by the accelerator (see TrainerConfig).
Precision = Literal["auto", "64-true", "32-true", "16-true", "16-mixed", "bf16-true", "bf16-mixed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Strict):
    """A component named by its registry key, with its keyword arguments.

    Attributes:
        name: The registry key.
        kwargs: Keyword arguments of the component's builder.
    """

    name: str
    kwargs: dict[str, Any] = {}


class ArchitectureConfig(ComponentConfig):
    """An architecture of ``tlkedro.tl.architectures``; ``num_outputs`` comes from the objective."""

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        try:
            ARCHITECTURES.get(name)
        except UnknownComponentError as error:
            raise ValueError(str(error)) from None
        return name

    @field_validator("kwargs")
    @classmethod
    def _no_num_outputs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "num_outputs" in kwargs:
            raise ValueError(
                f"num_outputs is set by the objective and the data, not by architecture.kwargs "
                f"(got num_outputs={kwargs['num_outputs']!r})"
            )
        return kwargs

    @model_validator(mode="after")
    def _new_names(self) -> ArchitectureConfig:
        _rename_kwargs(self, ARCHITECTURES)
        return self


class AuxiliaryTermConfig(ComponentConfig):
    """An auxiliary term of ``tlkedro.tl.objectives`` with its weight; its kwargs are checked by building it.

    Attributes:
        weight: The factor of the term's loss in the training loss.
    """

    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _builds(self) -> AuxiliaryTermConfig:
        _check_builds(self, create_auxiliary_term)
        return self


class ObjectiveConfig(ComponentConfig):
    """An objective of ``tlkedro.tl.objectives``; its kwargs are checked by building it.

    Attributes:
        auxiliary: Weighted auxiliary terms added to the training loss (multitask heads,
            self-supervised and domain-adversarial losses).
    """

    auxiliary: list[AuxiliaryTermConfig] = []

    @model_validator(mode="after")
    def _builds(self) -> ObjectiveConfig:
        _check_builds(self, create_objective)
        try:
            self.build()
        except ValueError as error:  # e.g. two terms with the same name
            raise ValueError(str(error)) from None
        return self

    def build(self) -> Objective:
        """The objective with its auxiliary terms."""
        return build_objective(
            self.name, self.kwargs, [term.model_dump() for term in self.auxiliary]
        )


class StrategyConfig(ComponentConfig):
    """A strategy of ``tlkedro.tl.strategies``; its kwargs are checked by building it."""

    @model_validator(mode="after")
    def _builds(self) -> StrategyConfig:
        _rename_kwargs(self, STRATEGIES)
        _check_builds(self, create_strategy)
        return self


class AugmentationConfig(ComponentConfig):
    """A MONAI array transform (``RandAffine``, ``RandFlip``, ...) with its kwargs, checked by building it."""

    @model_validator(mode="after")
    def _builds(self) -> AugmentationConfig:
        augmentation_transform(self.name, self.kwargs)
        return self


class OptimizerConfig(_Strict):
    """The optimizer, one of timm's (``tlkedro.tl.optim``).

    Attributes:
        name: A name of ``timm.optim.list_optimizers()``: ``adamw``, ``adam``, ``momentum`` (SGD with
            classical momentum), ``sgd`` (SGD with Nesterov momentum), ``lamb``, ...
        lr: Base learning rate (strategies may scale it per parameter group).
        weight_decay: Weight decay (decoupled for ``adamw``).
        momentum: Momentum of the optimizers that have one; the others ignore it.
        kwargs: Further arguments of the optimizer (``betas``, ``eps``, ...).
    """

    name: str = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    kwargs: dict[str, Any] = {}

    _known_name = field_validator("name")(check_optimizer_name)

    @model_validator(mode="after")
    def _known_kwargs(self) -> OptimizerConfig:
        check_optimizer_kwargs(self.name, self.kwargs)
        return self


class SchedulerConfig(_Strict):
    """The learning-rate schedule, stepped once per epoch (``tlkedro.tl.optim.SCHEDULES``).

    Attributes:
        name: ``cosine`` (``CosineAnnealingLR`` over ``max_epochs``), ``plateau`` (``ReduceLROnPlateau``
            on the validation loss) or ``none``.
        kwargs: Further arguments of the torch scheduler (``eta_min``; ``factor``, ``patience``, ...).
    """

    name: Literal["cosine", "plateau", "none"] = "cosine"
    kwargs: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_kwargs(self) -> SchedulerConfig:
        check_schedule(self.name, self.kwargs)
        return self


class TrainerConfig(_Strict):
    """Lightning ``Trainer`` settings and the loop's own.

    Attributes:
        max_epochs: Upper bound on epochs.
        batch_size: Images per batch (training and validation).
        early_stopping_patience: Epochs without a lower validation loss before training stops.
        accelerator: Lightning accelerator: ``auto`` (what the machine has), ``cpu``, ``gpu``, ...
        devices: Lightning devices: ``auto`` (one CPU, or every GPU), a count, or a list of device
            indices.
        distributed: Lightning's distributed strategy (its ``Trainer(strategy=...)``; named apart from the
            transfer-learning ``strategy``; ``trainer.strategy`` still works for one release): ``auto``
            (``ddp_spawn`` when training on more than one device),
            ``ddp_spawn``, ... Strategies that start their processes by re-running the command line
            (``ddp``) are refused unless a launcher such as ``torchrun`` started them.
        precision: Lightning precision; ``auto``: ``bf16-mixed`` on a CUDA GPU with bfloat16 support,
            ``32-true`` otherwise.
        num_workers: Data-loading worker processes.
        deterministic: Deterministic algorithms (``True``), warnings for non-deterministic ones
            (``"warn"``), speed (``False``), or ``"auto"``: ``True`` on the CPU, ``"warn"`` on an
            accelerator, where some backward passes (adaptive average pooling, 3D max pooling) have no
            deterministic implementation and ``True`` would make them raise.
        log_every_n_steps: Logging interval of step-level values.
        enable_progress_bar: Show the progress bar.
        limit_train_batches: Train on this many batches (int) or this fraction (float) per epoch.
        recalibrate_batchnorm: Recompute the running statistics of the trained BatchNorm layers over the
            training rows before every validation (``tlkedro.tl.batchnorm``): ``True``, ``False``, or
            ``"auto"``: for volumes (3D), whose few, small batches leave the running statistics far from
            the data after a short run, not for slices, where it would change results that were right.
        keep_epoch: Which epoch's weights ``fit`` returns: ``best`` (the lowest validation loss) or
            ``last`` (the end of the schedule). ``last`` is for validation sets too small to choose an
            epoch by: with a dozen subjects the lowest loss is mostly noise, and the pick is optimistic.
    """

    max_epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    early_stopping_patience: int = Field(5, ge=0)
    accelerator: str = "auto"
    devices: int | list[int] | str = "auto"
    distributed: str = "auto"
    precision: Precision = "auto"
    num_workers: int = Field(0, ge=0)
    deterministic: bool | Literal["warn", "auto"] = "auto"
    log_every_n_steps: int = Field(10, ge=1)
    enable_progress_bar: bool = True
    limit_train_batches: int | float | None = None
    recalibrate_batchnorm: bool | Literal["auto"] = "auto"
    keep_epoch: Literal["best", "last"] = "best"

    @model_validator(mode="before")
    @classmethod
    def _renamed_strategy(cls, data: Any) -> Any:
        if isinstance(data, dict) and "strategy" in data:
            if "distributed" in data:
                raise ValueError("give trainer.distributed only (trainer.strategy is its old name)")
            # FutureWarning: the reader edits YAML, and Python shows FutureWarnings by default.
            warnings.warn(
                "parameter trainer.strategy is deprecated; use trainer.distributed",
                FutureWarning,
                stacklevel=2,
            )
            data = {**data, "distributed": data["strategy"]}
            del data["strategy"]
        return data

    @field_validator("devices", mode="before")
    @classmethod
    def _device_count(cls, devices: Any) -> Any:
        # "2" from the command line means two devices, as it would in YAML.
        return int(devices) if isinstance(devices, str) and devices.isdigit() else devices

    @field_validator("limit_train_batches")
    @classmethod
    def _batch_limit(cls, limit: int | float | None) -> int | float | None:
        if limit is not None and (limit <= 0 or (isinstance(limit, float) and limit > 1)):
            raise ValueError(f"must be a count >= 1 or a fraction in (0, 1]; got {limit!r}")
        return limit


class DataConfig(_Strict):
    """Validation split and augmentation.

    Attributes:
        val_fraction: Fraction of the training split's subjects held out for validation.
        augmentation: MONAI array transforms applied, in order, to training images only.
    """

    val_fraction: float = Field(0.2, gt=0, lt=1)
    augmentation: list[AugmentationConfig] = []


class TrainConfig(_Strict):
    """Everything ``tlkedro.tl.training.fit`` needs to train one model.

    Attributes:
        seed: Seed of the split, initialisation, data order and augmentation.
        target: The label column to predict (``age``, ``sex``).
        task: ``classification`` or ``regression``; must match the objective.
        architecture: The network.
        objective: The loss.
        strategy: How the source model becomes the model to train.
        optimizer: The optimizer.
        scheduler: The learning-rate schedule.
        trainer: Lightning and loop settings.
        data: Validation split and augmentation.
        covariates: Label columns (e.g. ``head_scale``, the affine scale, a head-size proxy) the network's
            head takes beside the pooled image features, standardised with the training rows' mean and
            standard deviation (``TLModel.add_covariates``). A report then says the variant is given head
            size: it is no longer controlled.
    """

    seed: int = 42
    target: str
    task: Task
    architecture: ArchitectureConfig
    objective: ObjectiveConfig
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="scratch"))
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    covariates: list[str] = []

    @field_validator("data")
    @classmethod
    def _views_come_from_the_objective(cls, data: DataConfig, info: ValidationInfo) -> DataConfig:
        objective = info.data.get("objective")
        if objective is not None and data.augmentation and not objective.build().needs_labels:
            raise ValueError(
                f"augmentation must be [] with the self-supervised objective {objective.name!r}: it makes "
                "its own views of every image (set them with objective.kwargs, docs/ssl.md)"
            )
        return data

    @model_validator(mode="after")
    def _objective_fits_task(self) -> TrainConfig:
        objective_task = create_objective(self.objective.name, **self.objective.kwargs).task
        if objective_task is None:  # self-supervised: no target is read, whatever the task
            return self
        if objective_task != self.task:
            fitting = [
                name for name in OBJECTIVES.names() if create_objective(name).task == self.task
            ]
            raise ValueError(
                f"objective {self.objective.name!r} is for {objective_task}, but task is {self.task!r}; "
                f"objectives for {self.task}: {', '.join(fitting)}"
            )
        return self


def _check_builds(component: ComponentConfig, create: Callable[..., Any]) -> None:
    try:
        create(component.name, **component.kwargs)
    except (UnknownComponentError, TypeError) as error:
        raise ValueError(str(error)) from None


def _rename_kwargs(component: ComponentConfig, registry: Registry[Any]) -> None:
    # Old keyword names (strategy.kwargs.cutoff) become the new ones (cut_at) here, with a warning, so
    # everything reading the validated config sees one name.
    try:
        component.kwargs = registry.canonical_kwargs(component.name, component.kwargs)
    except (UnknownComponentError, TypeError) as error:  # a ValueError, so the key is named
        raise ValueError(str(error)) from None
