"""Optuna studies over training runs (tlkedro.tl.tuning), on a tiny 32x32 cohort."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest

from tlkedro.plan import VariantConfig
from tlkedro.tl.tuning import (
    Distribution,
    StudySpec,
    best_point,
    kept_value,
    plot_studies,
    run_study,
    study_markdown,
    study_name,
    trials_table,
)
from tlkedro.variants import Sweep, deep_merge, sweep_overrides

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("single_thread")

BASE = VariantConfig.model_validate(
    {
        "seed": 3,
        "target": "sex",
        "task": "classification",
        "train_on": "finetune",
        "architecture": {"name": "cbr_tiny", "kwargs": {"img_size": 32}},
        "objective": {"name": "cross_entropy"},
        "strategy": {"name": "scratch"},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": {"max_epochs": 3, "batch_size": 8, "enable_progress_bar": False},
        "data": {"val_fraction": 0.25},
    }
)
# Seeded so that trial 0 learns and trials 1 and 2 fall behind its validation loss and are pruned.
SWEEP = Sweep.model_validate(
    {
        "kind": "optuna",
        "space": {"optimizer.lr": {"log_uniform": [1e-6, 1e-1]}},
        "study": {
            "n_trials": 3,
            "sampler": {"name": "random"},
            "pruner": {"name": "median", "kwargs": {"n_startup_trials": 1}},
        },
    }
)


def _cohort(n: int = 24, seed: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "sex": rng.integers(0, 2, n)})
    images = rng.normal(size=(n, 1, 32, 32)).astype(np.float32)
    images[labels["sex"].to_numpy() == 1, :, 8:24, 8:24] += 1.5  # a learnable signal
    return images, labels


def _make_config(point):
    return VariantConfig.model_validate(
        deep_merge(BASE.model_dump(mode="json"), sweep_overrides(SWEEP, point))
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The 3-trial study, in an RDB (SQLite) storage."""
    storage = f"sqlite:///{tmp_path_factory.mktemp('study') / 'optuna.db'}"
    images, labels = _cohort()
    found = run_study(
        SWEEP.space, SWEEP.study, BASE, _make_config, images, labels, storage=storage, name="s"
    )
    return found, storage


@pytest.mark.slow  # trains the 3-trial study (about 20 s on an idle core)
def test_a_study_prunes_trials_behind_the_median_and_values_the_kept_epoch(study):
    found, _ = study
    trials = trials_table(found)
    assert list(trials["trial"]) == [0, 1, 2]
    assert list(trials["state"]) == ["COMPLETE", "PRUNED", "PRUNED"]
    for row in trials.to_dict("records"):
        per_epoch = {int(k): v for k, v in json.loads(row["intermediate"]).items()}
        assert row["epochs"] == len(per_epoch)
        if row["state"] == "COMPLETE":
            # val/loss at the kept epoch is the lowest val/loss: the value of the model fit keeps.
            assert row["epochs"] == 3 and row["value"] == pytest.approx(min(per_epoch.values()))
        else:  # stopped before its last epoch, with no value
            assert row["epochs"] < 3 and np.isnan(row["value"])
    assert (trials["best_value"] == trials.loc[0, "value"]).all()
    low, high = SWEEP.space["optimizer.lr"].log_uniform
    assert trials["params.optimizer.lr"].between(low, high).all()
    assert best_point(trials, "minimize") == (
        0,
        {"optimizer.lr": trials.loc[0, "params.optimizer.lr"]},
    )


@pytest.mark.slow  # trains the 3-trial study (about 20 s on an idle core)
def test_a_study_resumes_from_its_storage_and_stops_at_n_trials_over_all_processes(study):
    found, storage = study
    images, labels = _cohort()
    again = run_study(
        SWEEP.space, SWEEP.study, BASE, _make_config, images, labels, storage=storage, name="s"
    )
    # Another process (or a rerun) on the same study finds it finished and trains nothing.
    assert len(again.trials) == 3
    assert [t.params for t in again.trials] == [t.params for t in found.trials]


@pytest.mark.slow  # trains the 3-trial study (about 20 s on an idle core)
def test_a_journal_storage_holds_a_study_that_a_raised_n_trials_extends(tmp_path):
    images, labels = _cohort(16)
    spec = SWEEP.study.model_copy(update={"n_trials": 1})
    storage = f"journal:{tmp_path / 'sub' / 'study.journal'}"
    one = run_study(
        SWEEP.space, spec, BASE, _make_config, images, labels, storage=storage, name="j"
    )
    assert len(one.trials) == 1 and (tmp_path / "sub" / "study.journal").exists()
    more = spec.model_copy(update={"n_trials": 2})
    two = run_study(
        SWEEP.space, more, BASE, _make_config, images, labels, storage=storage, name="j"
    )
    assert [t.number for t in two.trials] == [0, 1]
    assert two.trials[0].params == one.trials[0].params


def test_the_study_name_changes_with_what_makes_trials_comparable_but_not_with_n_trials():
    name = study_name("finetune.tuned", BASE, SWEEP.space, SWEEP.study)
    assert name.startswith("finetune.tuned-")
    more = SWEEP.study.model_copy(update={"n_trials": 50})
    assert study_name("finetune.tuned", BASE, SWEEP.space, more) == name
    other_base = BASE.model_copy(update={"seed": 4})
    assert study_name("finetune.tuned", other_base, SWEEP.space, SWEEP.study) != name
    other_space = {"optimizer.lr": Distribution(choice=[1e-3])}
    assert study_name("finetune.tuned", BASE, other_space, SWEEP.study) != name
    maximise = SWEEP.study.model_copy(update={"direction": "maximize", "metric": "val/auroc"})
    assert study_name("finetune.tuned", BASE, SWEEP.space, maximise) != name


def test_each_dimension_suggests_within_its_distribution():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert Distribution(choice=[16, 32]).suggest(trial, "b") in (16, 32)
    assert 0.1 <= Distribution(uniform=(0.1, 0.2)).suggest(trial, "u") <= 0.2
    assert 1e-5 <= Distribution(log_uniform=(1e-5, 1e-2)).suggest(trial, "l") <= 1e-2
    assert trial.distributions["l"].log and not trial.distributions["u"].log


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"n_trials": 0}, "greater than or equal to 1"),
        ({"n_trials": 2, "metric": "test/auroc"}, "validation metric"),
        ({"n_trials": 2, "sampler": {"name": "grid"}}, "unknown sampler 'grid'"),
        ({"n_trials": 2, "pruner": {"name": "median", "extra": 1}}, "extra"),
    ],
)
def test_a_bad_study_is_refused_with_its_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        StudySpec.model_validate(spec)


def test_a_missing_metric_is_named():
    history = pd.DataFrame({"epoch": [0], "val/loss": [0.5], "val/auroc": [0.6]})
    assert kept_value(history, "val/auroc") == 0.6
    with pytest.raises(
        ValueError, match=r"'val/mae' is not in the training history; it has val/loss, val/auroc"
    ):
        kept_value(history, "val/mae")


@pytest.mark.slow  # trains the 3-trial study (about 20 s on an idle core)
def test_the_report_plots_and_tabulates_each_study(study):
    trials = trials_table(study[0])
    figure = plot_studies({"finetune.tuned": trials}, {"finetune.tuned": "val/loss"})
    (ax,) = figure.axes
    complete, pruned, best = ax.lines
    assert list(complete.get_xdata()) == [0] and list(pruned.get_xdata()) == [1, 2]
    last = [
        json.loads(t)[str(e - 1)] for t, e in zip(trials["intermediate"][1:], trials["epochs"][1:])
    ]
    assert list(pruned.get_ydata()) == pytest.approx(last)
    markdown = study_markdown(
        {"finetune.tuned": trials}, {"finetune.tuned": "val/loss"}, {"finetune.tuned": "minimize"}
    )
    lr = trials.loc[0, "params.optimizer.lr"]
    assert (
        f"| finetune.tuned | 3 | 1 | 2 | val/loss | 0 | {trials.loc[0, 'value']:.4g} | optimizer.lr={lr:.4g} |"
        in markdown
    )
