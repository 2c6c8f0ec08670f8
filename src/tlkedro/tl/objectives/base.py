"""What every objective is made of: a primary term for the task, optional weighted auxiliary terms.

The primary term turns the network's outputs into a loss against the target and into predictions in the
target's own units. Auxiliary terms (multitask heads, self-supervised reconstruction, domain-adversarial
losses) are added to the training loss with a weight; they are given the model and its inputs, so a term
can compute what it needs (features, a second head) without the training module knowing about it.

What a term needs beyond the labelled batch it declares in ``needs``, and the training data supply it as
keyword arguments, per batch: other label columns (``"age"``, with NaN where a label is missing),
``"unlabelled"`` (as many unlabelled images, e.g. of another site, as the batch has labelled ones) and
``"progress"`` (the fraction of training done, in [0, 1]). A term with layers of its own (a second head,
a decoder, a domain classifier) is an ``nn.Module``; it sizes them in ``attach`` once the model is built,
and is trained and checkpointed with the model.

A ``SelfSupervisedTerm`` is a primary term that needs no label at all (``Objective.needs_labels`` is
``False``): the data give each image as several random views, and the term's loss compares them
(``contrastive``, ``reconstruction``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import numpy as np
from torch import Tensor, nn

from tlkedro.tl.registry import Registry

Task = Literal["classification", "regression"]


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What an objective needs to know about the target, measured on the data.

    Stored in the checkpoint meta, so a trained model's outputs are turned into predictions in the same
    units without the training data.

    Attributes:
        task: The kind of task.
        num_classes: Number of classes (classification; 0 for regression).
        target_mean: Mean of the training targets (regression), used to standardise them.
        target_std: Standard deviation of the training targets (regression; 1 when they are constant).
        target_min: Smallest training target (regression).
        target_max: Largest training target (regression).
    """

    task: Task
    num_classes: int = 0
    target_mean: float = 0.0
    target_std: float = 1.0
    target_min: float = 0.0
    target_max: float = 0.0

    @classmethod
    def from_targets(
        cls, task: Task, train_targets: np.ndarray, all_targets: np.ndarray
    ) -> TaskInfo:
        """Measure the target on the data.

        Args:
            task: The kind of task.
            train_targets: Targets of the training rows: regression statistics come from these only, so
                nothing about the validation rows leaks into training.
            all_targets: Targets of every row: the class count comes from these, so a class that happens
                to be missing from the training split still gets an output.
        """
        if task == "classification":
            return cls(task=task, num_classes=int(np.max(all_targets)) + 1)
        values = np.asarray(train_targets, dtype=np.float64)
        std = float(values.std())
        return cls(
            task=task,
            target_mean=float(values.mean()),
            target_std=std if std > 0 else 1.0,
            target_min=float(values.min()),
            target_max=float(values.max()),
        )

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> TaskInfo:
        """Read the fields back from ``mapping`` (e.g. a checkpoint's meta); other keys are ignored."""
        return cls(**{field.name: mapping[field.name] for field in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        return dataclasses.asdict(self)


class Prediction(NamedTuple):
    """Predictions in the target's units.

    Attributes:
        values: ``(B,)`` predicted class indices (classification) or target values (regression).
        probabilities: ``(B, num_classes)`` class probabilities (classification), else ``None``.
    """

    values: Tensor
    probabilities: Tensor | None


class PrimaryTerm(ABC):
    """The loss of the task itself; defines how many outputs the head has and what they mean."""

    task: ClassVar[Task]

    @abstractmethod
    def num_outputs(self, info: TaskInfo) -> int:
        """Width of the model's head for this task."""

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        """Mean loss of a batch; ``targets`` are in the target's units (class indices, years)."""

    @abstractmethod
    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        """Turn a batch of outputs into predictions in the target's units."""


class SelfSupervisedTerm(nn.Module, ABC):
    """A label-free primary term (SimCLR, a masked autoencoder): its loss compares views of each image.

    The data give every image as ``len(view_transforms(...))`` views, training and validation alike (the
    validation views are drawn once, so ``val/loss`` is comparable between epochs); no label column is
    read. The term's own layers (a projection head, a decoder) are sized in ``attach`` and trained with
    the model; the model's ``head`` stays untrained, since fine-tuning replaces it (strategies transfer
    ``encoder.*`` only).
    """

    needs_labels: ClassVar[bool] = False
    task: ClassVar[None] = None
    name: str

    def num_outputs(self, info: TaskInfo) -> int:
        """One output: the head of a self-supervised model is never trained or used."""
        return 1

    @abstractmethod
    def view_transforms(self, spatial_shape: Sequence[int]) -> list[Callable[[Tensor], Tensor]]:
        """One random transform per view of a ``(C, *spatial_shape)`` image."""

    @abstractmethod
    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """Build the term's layers for ``model`` (``labels`` is empty: the term reads none)."""

    @abstractmethod
    def forward(self, model: nn.Module, views: Sequence[Tensor]) -> Tensor:
        """The mean loss of a batch given as its ``(B, C, ...)`` views."""


def self_supervised_objective(term: type[SelfSupervisedTerm]) -> Callable[..., Objective]:
    """A builder of ``Objective(term(**kwargs))`` with ``term``'s signature and documentation, to register."""

    def build(**kwargs: Any) -> Objective:
        return Objective(term(**kwargs))

    build.__signature__ = inspect.signature(term)  # type: ignore[attr-defined]
    build.__doc__ = term.__doc__
    return build


class AuxiliaryTerm(Protocol):
    """An extra loss added to the primary one with a weight (multitask, self-supervised, adversarial).

    Two members are optional, so that a plain callable with a ``name`` is a term: ``needs``, the batch
    extras the term takes as keyword arguments (label columns, ``"unlabelled"``, ``"progress"``; none by
    default), and, for a term that is an ``nn.Module``, ``attach(model, labels)``, called once with the
    prepared model and the training rows' values of the label columns it needs, to size its layers.
    """

    name: str

    def __call__(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor, **extras: Any
    ) -> Tensor:
        """The term's loss for a batch; ``outputs`` are ``model(inputs)``, ``extras`` those it needs."""
        ...


UNLABELLED = "unlabelled"
PROGRESS = "progress"


def needs(term: AuxiliaryTerm) -> tuple[str, ...]:
    """The batch extras ``term`` takes: label column names, ``UNLABELLED``, ``PROGRESS``."""
    return tuple(getattr(term, "needs", ()))


class Objective:
    """A primary term plus weighted auxiliary terms.

    Args:
        primary: The task's loss.
        auxiliary: ``(weight, term)`` pairs added to the training loss.
    """

    def __init__(
        self,
        primary: PrimaryTerm | SelfSupervisedTerm,
        auxiliary: Sequence[tuple[float, AuxiliaryTerm]] = (),
    ) -> None:
        names = [term.name for _, term in auxiliary]
        if "primary" in names or len(set(names)) != len(names):
            raise ValueError(f"auxiliary term names must be unique and not 'primary'; got {names}")
        if auxiliary and isinstance(primary, SelfSupervisedTerm):
            raise ValueError(
                f"the self-supervised objective {primary.name!r} takes no auxiliary terms; got {names}"
            )
        self.primary = primary
        self.auxiliary = list(auxiliary)

    @property
    def task(self) -> Task | None:
        """The kind of task the primary term serves; ``None`` for a self-supervised one."""
        return self.primary.task

    @property
    def needs_labels(self) -> bool:
        """``False`` for a self-supervised primary term, which learns from views of unlabelled images."""
        return not isinstance(self.primary, SelfSupervisedTerm)

    def num_outputs(self, info: TaskInfo) -> int:
        """Width of the model's head."""
        return self.primary.num_outputs(info)

    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        """The primary loss: what validation loss, early stopping and checkpointing follow."""
        return self.primary.loss(outputs, targets, info)

    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        """Predictions in the target's units."""
        return self.primary.predict(outputs, info)

    def needs(self) -> set[str]:
        """The batch extras the auxiliary terms need (see the module docstring)."""
        return {extra for _, term in self.auxiliary for extra in needs(term)}

    def term_modules(self) -> list[nn.Module]:
        """The terms with layers of their own (a self-supervised primary term, auxiliary terms), trained
        and checkpointed with the model."""
        terms = [self.primary] + [term for _, term in self.auxiliary]
        return [term for term in terms if isinstance(term, nn.Module)]

    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """Size the layers of the ``term_modules`` for ``model``.

        Args:
            model: The prepared model.
            labels: The training rows' values of every label column the terms need.
        """
        for term in self.term_modules():
            term.attach(model, {name: labels[name] for name in needs(term) if name in labels})

    def terms(
        self,
        model: nn.Module,
        inputs: Tensor,
        outputs: Tensor,
        targets: Tensor,
        info: TaskInfo,
        extras: Mapping[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Every weighted term of the training loss, keyed ``"primary"`` and by auxiliary term name.

        Args:
            model: The network.
            inputs: The labelled images of the batch.
            outputs: ``model(inputs)``.
            targets: The primary targets of the batch.
            info: The primary task's statistics.
            extras: The batch extras of ``needs()``.
        """
        extras = extras or {}
        terms = {"primary": self.loss(outputs, targets, info)}
        for weight, term in self.auxiliary:
            given = {name: extras[name] for name in needs(term)}
            terms[term.name] = weight * term(model, inputs, outputs, targets, **given)
        return terms


OBJECTIVES: Registry[Objective] = Registry("objective")
AUXILIARY_TERMS: Registry[AuxiliaryTerm] = Registry("auxiliary term")


def check_positive(name: str, value: float) -> None:
    """Raise a ValueError naming the keyword argument unless ``value`` is a positive finite number."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
