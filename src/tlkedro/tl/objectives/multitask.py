"""``task``: multitask learning, one more head on the shared encoder for another label.

Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 28:41-75, 1997): the encoder is
shared, each task has its own head, and the training loss is the primary task's loss plus the weighted
loss of each further task (``objective.auxiliary: [{name: task, weight: 0.5, kwargs: {target: age, task:
regression}}]`` next to a sex classifier). A row whose label for a task is missing (NaN) does not count
in that task's loss; a batch with no label for it gives the task a loss of zero and its head zero
gradients, so cohorts where not every subject has every label can still be used. The head reads the
encoder's pooled features (``model.forward_features``, one more encoder pass over the batch) and is
trained and checkpointed with the model. The saved model keeps every head: ``saved_heads`` turns the
objective's heads into plain data for the checkpoint's ``heads`` entry and ``load_head`` rebuilds one, so
``tlkedro.tl.inference`` predicts each of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tlkedro.tl.objectives.base import (
    AUXILIARY_TERMS,
    OBJECTIVES,
    Objective,
    PrimaryTerm,
    Task,
    TaskInfo,
)

_DEFAULT_OBJECTIVE = {"classification": "cross_entropy", "regression": "mse"}


@AUXILIARY_TERMS.register("task")
class AuxiliaryTask(nn.Module):
    """A head and a loss for the label column ``target``; missing labels are masked.

    Args:
        target: The label column (``age``, ``sex``, ...); NaN where a row has no label.
        task: ``classification`` (class indices 0, 1, ...) or ``regression``.
        objective: The head's loss, a registered objective for ``task`` (default: ``cross_entropy`` or
            ``mse``).
        kwargs: Keyword arguments of that objective.
    """

    def __init__(
        self,
        target: str,
        task: Task,
        objective: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if task not in _DEFAULT_OBJECTIVE:
            raise ValueError(f"task must be one of {sorted(_DEFAULT_OBJECTIVE)}; got {task!r}")
        objective = objective or _DEFAULT_OBJECTIVE[task]
        term = OBJECTIVES.create(objective, **dict(kwargs or {})).primary
        if term.task != task:
            raise ValueError(f"objective {objective!r} is for {term.task}, but task is {task!r}")
        self.name = f"task_{target}"
        self.loss_spec = {"name": objective, "kwargs": dict(kwargs or {})}
        self.needs = (target,)
        self.target = target
        self.term = term
        self.info = TaskInfo(task=task)
        self.head: nn.Linear | None = None

    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """Measure the label on the training rows that have it and build the head.

        Raises:
            ValueError: If no training row has the label, or classification labels are not class indices.
        """
        values = np.asarray(labels[self.target], dtype=np.float64)
        known = values[~np.isnan(values)]
        if not len(known):
            raise ValueError(
                f"auxiliary task {self.target!r}: no training row has a {self.target!r} label"
            )
        if self.info.task == "classification" and (
            (known < 0).any() or (known != np.round(known)).any()
        ):
            raise ValueError(
                f"auxiliary task {self.target!r}: classification labels must be class indices 0, 1, ...; "
                f"got {sorted(set(known.tolist()))[:10]}"
            )
        self.info = TaskInfo.from_targets(self.info.task, known, known)
        self.head = nn.Linear(model.num_features, self.term.num_outputs(self.info))

    def forward(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor, **extras: Tensor
    ) -> Tensor:
        """The task's loss over the rows of the batch that have its label."""
        predicted = self.head(model.forward_features(inputs))
        labels = extras[self.target].to(predicted.device)
        known = ~torch.isnan(labels)
        if not bool(known.any()):
            # Zero, but on the head's graph: every parameter gets a zero gradient rather than none.
            return predicted.sum() * 0.0
        return self.term.loss(predicted[known], labels[known], self.info)

    def saved(self) -> dict[str, Any]:
        """The head as plain data and tensors (``load_head`` rebuilds it).

        Raises:
            RuntimeError: If the head was never built (``attach`` not called).
        """
        if self.head is None:
            raise RuntimeError(f"auxiliary task {self.target!r} has no head yet: call attach first")
        return {
            "target": self.target,
            "objective": self.loss_spec,
            "info": self.info.as_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()},
        }


def saved_heads(objective: Objective) -> dict[str, dict[str, Any]]:
    """The multitask heads of ``objective`` (its ``task`` terms) by term name, as ``AuxiliaryTask.saved``."""
    return {
        term.name: term.saved()
        for _, term in objective.auxiliary
        if isinstance(term, AuxiliaryTask)
    }


def load_head(saved: Mapping[str, Any]) -> tuple[str, PrimaryTerm, TaskInfo, nn.Linear]:
    """Rebuild a head saved by ``AuxiliaryTask.saved``: its label column, loss term, task statistics and
    layer (on the encoder's pooled features), with its weights loaded strictly."""
    term = OBJECTIVES.create(saved["objective"]["name"], **saved["objective"]["kwargs"]).primary
    weight = saved["state_dict"]["weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict(saved["state_dict"], strict=True)
    return saved["target"], term, TaskInfo.from_dict(saved["info"]), head.eval()
