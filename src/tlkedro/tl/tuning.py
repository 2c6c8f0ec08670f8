"""Hyperparameter search with Optuna: a study of training runs, pruned on the validation metric.

Each trial draws a point of the search space (dotted configuration keys: ``optimizer.lr``), builds its
configuration, trains it with :func:`tlkedro.tl.training.fit` and is valued by the validation metric of the
epoch whose model ``fit`` keeps. Optuna's ``PyTorchLightningPruningCallback`` reports that metric after
every validation and stops trials the pruner judges hopeless. The test split is never seen.

The study lives in a storage: a journal file (``journal:<path>``) or an RDB URL (``sqlite:///...``), so
that several processes (ParallelRunner workers, Slurm jobs) can work on one study; each stops once the
study holds ``n_trials`` finished trials, and a study that already holds them runs no more. Its name
carries a digest of the base configuration, the space and the objective, so that a changed setting starts
a new study instead of mixing in trials of the old one, while a raised ``n_trials`` extends it.

This module knows nothing of Kedro; optuna is imported only when a study runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tlkedro.tl.config import TrainConfig

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from tlkedro.tl.training import FitResult

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
    "none": "NopPruner",
}
JOURNAL_PREFIX = "journal:"
# Trials that count towards n_trials; failed ones do not (a failure stops the study's caller anyway).
_FINISHED = ("COMPLETE", "PRUNED")


class Distribution(BaseModel):
    """One dimension of a search space: ``{choice: [...]}``, ``{uniform: [a, b]}`` or ``{log_uniform: [a, b]}``."""

    model_config = ConfigDict(extra="forbid")

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in ("choice", "uniform", "log_uniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of choice, uniform, log_uniform (got {given or 'none'})"
            )
        if self.log_uniform is not None and min(self.log_uniform) <= 0:
            raise ValueError(f"log_uniform bounds must be > 0, got {list(self.log_uniform)}")
        return self

    def extremes(self) -> list[Any]:
        """Every choice, or both bounds: the values whose configurations the plan validates."""
        return list(self.choice or self.uniform or self.log_uniform)  # type: ignore[arg-type]

    def sample(self, rng: random.Random) -> Any:
        """A random draw (``kind: random`` sweeps)."""
        if self.choice is not None:
            return rng.choice(self.choice)
        if self.uniform is not None:
            return rng.uniform(*self.uniform)
        low, high = self.log_uniform  # type: ignore[misc]
        return math.exp(rng.uniform(math.log(low), math.log(high)))

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """The trial's value, drawn by the study's sampler."""
        if self.choice is not None:
            return trial.suggest_categorical(name, self.choice)
        if self.uniform is not None:
            return trial.suggest_float(name, *self.uniform)
        return trial.suggest_float(name, *self.log_uniform, log=True)  # type: ignore[misc]


class OptunaComponent(BaseModel):
    """A sampler or pruner by its short name (``tpe``, ``median``), with its constructor's kwargs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kwargs: dict[str, Any] = {}


class StudySpec(BaseModel):
    """How a study searches: the ``study`` mapping of a ``kind: optuna`` sweep.

    Attributes:
        n_trials: Finished (complete or pruned) trials the study ends with, over all its processes.
        metric: The validation metric that values a trial and that the pruner watches (``val/loss``,
            ``val/auroc``); a column of ``fit``'s history.
        direction: ``minimize`` or ``maximize`` the metric.
        sampler: One of :data:`SAMPLERS`; without a ``seed`` kwarg it is seeded with the base
            configuration's seed, so that a study is reproducible.
        pruner: One of :data:`PRUNERS` (``none``: no pruning).
        storage: ``journal:<file>`` or an RDB URL (``sqlite:///<file>``); ``None``: the caller's default.
    """

    model_config = ConfigDict(extra="forbid")

    n_trials: int = Field(ge=1)
    metric: str = "val/loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: OptunaComponent = OptunaComponent(name="tpe")
    pruner: OptunaComponent = OptunaComponent(name="median")
    storage: str | None = None

    @model_validator(mode="after")
    def _known(self) -> StudySpec:
        if not self.metric.startswith("val/"):
            raise ValueError(
                f"metric must be a validation metric (val/...), got {self.metric!r}: a study valued "
                "on the test split would report an optimistic test result"
            )
        for field, names in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
            if (name := getattr(self, field).name) not in names:
                raise ValueError(f"unknown {field} {name!r}; known: {', '.join(names)}")
        return self

    def create_sampler(self, default_seed: int) -> optuna.samplers.BaseSampler:
        """The sampler; ``TypeError``/``ValueError`` for kwargs its constructor refuses."""
        import optuna

        kwargs = dict(self.sampler.kwargs)
        cls = getattr(optuna.samplers, SAMPLERS[self.sampler.name])
        kwargs.setdefault("seed", default_seed)
        return cls(**kwargs)

    def create_pruner(self) -> optuna.pruners.BasePruner:
        """The pruner; ``TypeError``/``ValueError`` for kwargs its constructor refuses."""
        import optuna

        return getattr(optuna.pruners, PRUNERS[self.pruner.name])(**self.pruner.kwargs)


def open_storage(url: str) -> optuna.storages.BaseStorage | str:
    """The study's storage: a journal file for ``journal:<path>``, else the RDB URL itself.

    The folders of a file-based storage are created. A journal file is the choice for several processes on
    a shared (network) file system, where SQLite's locking is unreliable.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def study_name(
    prefix: str, base: TrainConfig, space: Mapping[str, Distribution], spec: StudySpec
) -> str:
    """``<prefix>-<digest>``: the digest covers what makes trials comparable, not ``n_trials``."""
    identity = {
        "base": base.model_dump(mode="json"),
        "space": {k: v.model_dump(mode="json") for k, v in space.items()},
        "spec": spec.model_dump(mode="json", exclude={"n_trials", "storage"}),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


def kept_value(history: pd.DataFrame, metric: str) -> float:
    """``metric`` at the epoch of the lowest validation loss: the epoch whose model ``fit`` keeps.

    Raises:
        ValueError: If the history has no such column.
    """
    if metric not in history.columns:
        known = ", ".join(c for c in history.columns if c.startswith("val/"))
        raise ValueError(f"study metric {metric!r} is not in the training history; it has {known}")
    return float(history.loc[history["val/loss"].idxmin(), metric])


def run_study(
    space: Mapping[str, Distribution],
    spec: StudySpec,
    base: TrainConfig,
    make_config: Callable[[dict[str, Any]], TrainConfig],
    images: np.ndarray,
    labels: pd.DataFrame,
    *,
    storage: str,
    name: str,
    source: dict | None = None,
    unlabelled: np.ndarray | None = None,
) -> optuna.Study:
    """Create or load the study ``name`` in ``storage`` and run trials until it holds ``spec.n_trials``.

    Args:
        space: ``{dotted key: Distribution}``.
        spec: The study's settings.
        base: The configuration every trial starts from (its seed seeds the sampler by default).
        make_config: The validated configuration of a point ``{dotted key: value}`` (the caller merges
            and validates it as it does any variant).
        images, labels, source, unlabelled: As for :func:`tlkedro.tl.training.fit`; every trial trains
            on the same subjects.
        storage: ``journal:<file>`` or an RDB URL.
        name: The study's name (:func:`study_name`).

    Returns:
        The study, with at least one complete trial.

    Raises:
        ValueError: If every trial was pruned. A trial that fails re-raises its error.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback

    from tlkedro.tl.training import fit

    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        sampler=spec.create_sampler(base.seed),
        pruner=spec.create_pruner(),
        direction=spec.direction,
        load_if_exists=True,
    )
    finished = tuple(getattr(TrialState, state) for state in _FINISHED)

    def objective(trial: optuna.Trial) -> float:
        point = {key: dist.suggest(trial, key) for key, dist in space.items()}
        config = make_config(point)
        pruning = PyTorchLightningPruningCallback(trial, monitor=spec.metric)
        result: FitResult = fit(
            config, images, labels, source=source, unlabelled=unlabelled, callbacks=[pruning]
        )
        return kept_value(result.history, spec.metric)

    remaining = spec.n_trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining > 0:
        # Other processes on the same study count too: each stops once n_trials have finished.
        study.optimize(
            objective,
            n_trials=remaining,
            callbacks=[MaxTrialsCallback(spec.n_trials, states=finished)],
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ValueError(
            f"study {name!r}: all {spec.n_trials} trials were pruned; loosen the pruner "
            f"({spec.pruner.name}) or raise n_trials"
        )
    return study


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: ``trial``, ``state``, ``value``, ``best_value`` (the best complete value so far,
    in trial order), ``epochs`` (validations reported), ``duration_s``, ``params.<key>`` per dimension and
    ``intermediate`` (the metric per epoch, as JSON ``{epoch: value}``)."""
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    rows, best = [], math.inf
    for trial in sorted(study.trials, key=lambda t: t.number):
        complete = trial.state.name == "COMPLETE"
        if complete:
            best = min(best, sign * trial.value)
        duration = trial.duration.total_seconds() if trial.duration is not None else math.nan
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "value": float(trial.value) if complete else math.nan,
                "best_value": sign * best if math.isfinite(best) else math.nan,
                "epochs": len(trial.intermediate_values),
                "duration_s": duration,
                **{f"params.{key}": value for key, value in trial.params.items()},
                "intermediate": json.dumps(
                    {str(k): float(v) for k, v in sorted(trial.intermediate_values.items())}
                ),
            }
        )
    return pd.DataFrame(rows)


def best_point(trials: pd.DataFrame, direction: str) -> tuple[int, dict[str, Any]]:
    """The best complete trial's number and its point ``{dotted key: value}``."""
    complete = trials.loc[trials["state"] == "COMPLETE"]
    row = complete.loc[
        complete["value"].idxmin() if direction == "minimize" else complete["value"].idxmax()
    ]
    params = {
        column.removeprefix("params."): _plain(row[column])
        for column in trials.columns
        if column.startswith("params.")
    }
    return int(row["trial"]), params


def _plain(value: Any) -> Any:
    """A NumPy scalar from a table cell as the Python value a configuration expects."""
    return value.item() if isinstance(value, np.generic) else value


def plot_studies(studies: Mapping[str, pd.DataFrame], metrics: Mapping[str, str]) -> Figure:
    """The optimisation history of each study: each trial's value, pruned trials at their last reported
    value, and the best value so far.

    Drawn from the trials table rather than with ``optuna.visualization``, which needs the live study; the
    catalog keeps the table.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(studies), figsize=(5 * len(studies), 3.5), squeeze=False, layout="constrained"
    )
    for ax, (name, trials) in zip(axes[0], studies.items(), strict=True):
        complete = trials.loc[trials["state"] == "COMPLETE"]
        pruned = trials.loc[trials["state"] == "PRUNED"]
        last = [_last_reported(text) for text in pruned["intermediate"]]
        ax.plot(complete["trial"], complete["value"], "o", label="complete")
        ax.plot(pruned["trial"], last, "x", color="grey", label="pruned (last value)")
        ax.step(trials["trial"], trials["best_value"], where="post", color="black", label="best")
        ax.set(title=name, xlabel="trial", ylabel=metrics[name])
        ax.legend(fontsize="small")
    return fig


def _last_reported(intermediate: str) -> float:
    values = json.loads(intermediate)
    return float(values[max(values, key=int)]) if values else math.nan


def study_markdown(
    studies: Mapping[str, pd.DataFrame],
    metrics: Mapping[str, str],
    directions: Mapping[str, str],
) -> str:
    """The report's section: per tuned variant, its trials (complete, pruned) and its best trial's point."""
    from tlkedro.tl.reports import markdown_table

    rows = []
    for name, trials in studies.items():
        number, point = best_point(trials, directions[name])
        states = trials["state"].value_counts()
        rows.append(
            {
                "variant": name,
                "trials": len(trials),
                "complete": int(states.get("COMPLETE", 0)),
                "pruned": int(states.get("PRUNED", 0)),
                "metric": metrics[name],
                "best trial": number,
                "best value": float(trials.loc[trials["trial"] == number, "value"].iloc[0]),
                "best point": ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
                ),
            }
        )
    return "\n".join(
        [
            "## Hyperparameter search",
            "",
            "Each tuned variant is its study's best trial, trained again and evaluated like the others; "
            "trials are valued on the validation subjects only (plot: `<pipeline>_tuning.png`).",
            "",
            markdown_table(pd.DataFrame(rows)),
        ]
    )
