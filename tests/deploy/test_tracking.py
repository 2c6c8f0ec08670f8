"""MLflow tracking (tlkedro.deploy.tracking), read back from a real SQLite store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from tests.deploy.conftest import run_kedro
from tlkedro.deploy.tracking import (
    COMMAND_TAG,
    SWITCH,
    TrackingHook,
    reproduce_command,
    variant_of,
)


def test_the_command_keeps_namespaces_and_params_as_typed():
    run_params = {
        "env": "tiny",
        "pipeline_names": ["finetune"],
        "namespaces": ["finetune.full", "finetune.scratch"],
        "runner": "<kedro.runner.parallel_runner.ParallelRunner object at 0x7f27a4f22110>",
        "only_missing_outputs": True,
        "runtime_params": {"finetune": {"optimizer": {"lr": 0.01}}, "seed": 3},
    }
    assert reproduce_command(run_params) == (
        "kedro run --env tiny --pipelines finetune --namespaces finetune.full,finetune.scratch "
        "--runner ParallelRunner --only-missing-outputs --params finetune.optimizer.lr=0.01,seed=3"
    )
    assert reproduce_command({"runner": "SequentialRunner"}) == "kedro run"


def test_variant_outputs_are_told_from_the_runs_own():
    assert variant_of("finetune.full.metrics_test") == ("finetune.full", "metrics_test")
    assert variant_of("dapt.supervised.adapt.history") == ("dapt.supervised", "adapt.history")
    assert variant_of("finetune_report") is None


def _identity(x):
    return x


@pytest.fixture
def mlflow_client(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(SWITCH, "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "test")
    return mlflow.MlflowClient(tracking_uri=uri)


def test_a_run_logs_its_variants_as_nested_runs(mlflow_client, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    pipeline = Pipeline(
        [
            Node(_identity, "a", "b", name="train", namespace="finetune.full"),
            Node(_identity, "a", "d", name="tune", namespace="finetune.tuned"),
            Node(_identity, "b", "c"),
        ]
    )
    catalog = DataCatalog({"parameters": MemoryDataset({"finetune": {"optimizer": {"lr": 0.1}}})})
    hook = TrackingHook()
    hook.before_pipeline_run(
        run_params={"project_path": str(tmp_path), "env": "tiny", "namespaces": None},
        pipeline=pipeline,
        catalog=catalog,
    )
    figure = plt.figure()
    plt.plot([1, 2], marker="o")
    hook.after_node_run(
        node=pipeline.nodes[0],
        outputs={
            "finetune.full.config": {"optimizer": {"lr": 0.1}, "seed": 7},
            "finetune.full.history": pd.DataFrame(
                {"epoch": [0, 1], "train/loss": [1.0, 0.5], "val/loss": [1.2, float("nan")]}
            ),
            "finetune.full.metrics_test": {
                "test/accuracy": 0.75,
                "auroc": {"value": 0.8, "low": 0.7, "high": 0.9},
            },
            "finetune.full.model": {"state_dict": {"w": torch.ones(2)}, "meta": {}},
            "finetune.full.fold_0.history": pd.DataFrame({"epoch": [0], "val/loss": [0.9]}),
            "finetune.tuned.study": pd.DataFrame(
                {
                    "trial": [0, 1],
                    "state": ["COMPLETE", "PRUNED"],
                    "value": [0.4, float("nan")],
                    "params.optimizer.lr": [1e-3, 1e-1],
                    "intermediate": ['{"0": 0.6, "1": 0.4}', '{"0": 2.5}'],
                }
            ),
            "finetune_evaluation": pd.DataFrame(
                {
                    "model": ["finetune.full", "baseline:trivial"],
                    "metric": ["auroc", "auroc"],
                    "n_subjects": [16, 16],
                    "estimate": [0.8, 0.5],
                    "low": [0.6, 0.5],
                    "high": [0.95, 0.5],
                    "difference": [float("nan"), float("nan")],
                }
            ),
            "finetune_report": "# Report\n",
            "finetune_learning_curves": figure,
        },
    )
    hook.after_pipeline_run()

    (experiment,) = [e for e in mlflow_client.search_experiments() if e.name == "test"]
    # Artifacts beside the store, not in ./mlruns of the working directory.
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    runs = {r.info.run_name: r for r in mlflow_client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"__default__", "finetune.full", "finetune.tuned", "trial_0", "trial_1"}
    parent, child = runs["__default__"], runs["finetune.full"]
    assert parent.info.status == child.info.status == "FINISHED"
    assert parent.data.params == {"finetune.optimizer.lr": "0.1"}
    assert parent.data.tags[COMMAND_TAG] == "kedro run --env tiny"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags[COMMAND_TAG] == "kedro run --env tiny --namespaces finetune.full"
    assert child.data.params == {"optimizer.lr": "0.1", "seed": "7"}
    history = mlflow_client.get_metric_history(child.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    assert [m.step for m in mlflow_client.get_metric_history(child.info.run_id, "val/loss")] == [0]
    assert child.data.metrics["test/accuracy"] == 0.75
    assert child.data.metrics["test/auroc.low"] == 0.7
    assert child.data.metrics["test/auroc.high"] == 0.9
    assert child.data.metrics["fold_0/val/loss"] == 0.9
    # The report's interval lands on the variant it describes; the baseline has no run.
    assert child.data.metrics["evaluation/auroc"] == 0.8
    assert child.data.metrics["evaluation/auroc_low"] == 0.6
    assert child.data.metrics["evaluation/auroc_high"] == 0.95
    assert child.data.metrics["evaluation/n_subjects"] == 16
    assert "evaluation/auroc_difference" not in child.data.metrics
    # Each trial of a study is a run nested in its variant's run.
    tuned = runs["finetune.tuned"]
    for name, state in (("trial_0", "COMPLETE"), ("trial_1", "PRUNED")):
        trial = runs[name]
        assert trial.data.tags["mlflow.parentRunId"] == tuned.info.run_id
        assert trial.data.tags["optuna.state"] == state
    assert runs["trial_0"].data.params == {"optimizer.lr": "0.001"}
    assert runs["trial_0"].data.metrics["value"] == 0.4
    assert "value" not in runs["trial_1"].data.metrics
    steps = mlflow_client.get_metric_history(runs["trial_0"].info.run_id, "intermediate")
    assert [(m.step, m.value) for m in steps] == [(0, 0.6), (1, 0.4)]
    assert [a.path for a in mlflow_client.list_artifacts(child.info.run_id, "model")] == [
        "model/model.pt"
    ]
    assert {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)} == {
        "finetune_evaluation.csv",
        "finetune_learning_curves.png",
        "finetune_report.md",
    }


def test_a_failed_run_is_marked_failed(mlflow_client, tmp_path):
    hook = TrackingHook()
    hook.before_pipeline_run(
        run_params={"project_path": str(tmp_path)}, pipeline=Pipeline([]), catalog=DataCatalog()
    )
    hook.on_pipeline_error()
    (run,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED"


# What tlkedro's settings.py needs: the hook, and kedro-mlflow's own hook off where it is installed
# (on by default, it would track every run, into ./mlruns).
TRACKED_SETTINGS = """\
from tlkedro.deploy.tracking import TrackingHook
HOOKS = (TrackingHook(),)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")  # its metadata spells it with "_"
"""


@pytest.mark.slow
def test_kedro_run_is_tracked_only_when_switched_on(toy_template, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    project = Path(shutil.copytree(toy_template, tmp_path / "toy"))
    (project / "src" / "toyproj" / "settings.py").write_text(TRACKED_SETTINGS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", SWITCH))}
    args = ("run", "--namespaces", "train.small", "--params", "train.small.scale=3")

    off = run_kedro(project, "run", env=env)  # also makes raw.json, which train.small loads
    assert off.returncode == 0, off.stderr
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()

    on = run_kedro(project, *args, env={**env, SWITCH: "1"})
    assert on.returncode == 0, on.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tlkedro-local")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"__default__", "train.small"}
    command = "kedro run --namespaces train.small --params train.small.scale=3"
    assert runs["__default__"].data.tags[COMMAND_TAG] == command
    assert runs["__default__"].data.params["train.small.scale"] == "3"
