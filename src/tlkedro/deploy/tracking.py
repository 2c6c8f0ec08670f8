"""Optional MLflow tracking of pipeline runs: one run per ``kedro run``, one nested run per variant.

Off unless ``TLKEDRO_TRACKING=1``: then nothing is imported or written. On, every ``kedro run``
(locally, in a Slurm job or an Argo task, which inherit the variable) logs to ``MLFLOW_TRACKING_URI``,
by default the SQLite store ``mlflow.db`` in the project folder, under the experiment
``MLFLOW_EXPERIMENT_NAME`` (default ``tlkedro-<env>``):

- the run: the flattened parameters, the reports, comparison and evaluation tables and plots as
  artifacts, and the tag ``tlkedro.command``, the ``kedro run`` command line that reproduces it,
  ``--namespaces`` and ``--params`` included;
- a nested run per variant (``finetune.full``): its resolved configuration as parameters, its history as
  per-epoch metrics (step = epoch; a fold's or a DAPT stage's prefixed ``fold_0/``, ``adapt/``), its
  evaluation metrics (every number of ``metrics_<split>``), the report's estimate of the primary metric
  with its interval and its paired difference to the reference (``evaluation/<metric>``,
  ``evaluation/<metric>_low`` ...), and its model checkpoint as an artifact;
- for a tuned variant (``kind: optuna`` sweeps), a run per trial nested in the variant's: the trial's
  point as parameters, its value and its validation metric per epoch, its state as a tag.

A new experiment in a ``sqlite:///`` store keeps its artifacts in ``mlartifacts/`` beside the database
file, not in MLflow's default ``./mlruns`` of whatever folder the run started in.

MLflow's client (from ``mlflow-skinny``, which installs with the lock's pyarrow) is used with explicit
run ids rather than kedro-mlflow's hook: kedro-mlflow requires the full ``mlflow`` wheel (pyarrow<26),
keeps a single active run (no run per variant), and its command tag drops ``--namespaces`` and
``--params``. Where kedro-mlflow is installed, ``settings.py`` disables its own hook
(``DISABLE_HOOKS_FOR_PLUGINS``): registered through its entry point, it would otherwise track every run,
into ``./mlruns``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node

logger = logging.getLogger(__name__)

SWITCH = "TLKEDRO_TRACKING"
COMMAND_TAG = "tlkedro.command"
VARIANT_TAG = "tlkedro.variant"
TRIAL_TAG = "tlkedro.trial"
ARTIFACTS_FOLDER = "mlartifacts"
# MLflow refuses longer parameter values and batches of more entries.
_PARAM_VALUE_MAX = 6000
_BATCH_MAX = 100
# The namespace parts that name a variant (``finetune.full``; DAPT: ``dapt.<variant>``), as in
# ``kedro slurm --depth 2``.
_VARIANT_DEPTH = 2
_RUNNER = re.compile(r"[A-Za-z_]\w*Runner\b")


def tracking_enabled() -> bool:
    """Whether ``TLKEDRO_TRACKING`` turns tracking on (``1``, ``true``, ``on``, ``yes``)."""
    return os.environ.get(SWITCH, "").strip().lower() in {"1", "true", "on", "yes"}


def default_tracking_uri(project_path: Path) -> str:
    """The SQLite store in the project folder, used when ``MLFLOW_TRACKING_URI`` is unset."""
    return f"sqlite:///{Path(project_path).resolve() / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts/`` beside a ``sqlite:///`` store's file;
    ``None`` (the tracking server's choice) for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / ARTIFACTS_FOLDER).as_uri()


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """The leaves of nested mappings and lists as ``("a.b.0", value)`` pairs."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(tree, list | tuple) and any(isinstance(v, Mapping | list) for v in tree):
        for index, value in enumerate(tree):
            yield from flatten(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), tree


def numbers(tree: Any) -> dict[str, float]:
    """The numeric leaves of ``tree`` (booleans and NaN excluded), flattened."""
    return {key: float(value) for key, value in flatten(tree) if _is_number(value)}


def reproduce_command(run_params: Mapping[str, Any]) -> str:
    """The ``kedro run`` command line that repeats a run, from Kedro's ``run_params``.

    Unlike kedro-mlflow's ``kedro_command`` tag it keeps ``--namespaces`` and ``--params`` (given as
    dotted keys, so that a nested override reads as it was typed).
    """
    args = ["kedro", "run"]
    if run_params.get("env"):
        args += ["--env", run_params["env"]]
    for option, key in (
        ("--pipelines", "pipeline_names"),
        ("--namespaces", "namespaces"),
        ("--nodes", "node_names"),
        ("--tags", "tags"),
        ("--from-nodes", "from_nodes"),
        ("--to-nodes", "to_nodes"),
        ("--from-inputs", "from_inputs"),
        ("--to-outputs", "to_outputs"),
    ):
        if values := run_params.get(key):
            args += [option, ",".join(values)]
    # Kedro records the runner instance's str(), "<kedro.runner....ParallelRunner object at 0x...>".
    runner = _RUNNER.findall(str(run_params.get("runner") or ""))
    if runner and runner[-1] != "SequentialRunner":
        args += ["--runner", runner[-1]]
    if run_params.get("only_missing_outputs"):
        args.append("--only-missing-outputs")
    if params := run_params.get("runtime_params"):
        args += ["--params", ",".join(f"{key}={value}" for key, value in flatten(params))]
    return shlex.join(args)


def variant_of(name: str) -> tuple[str, str] | None:
    """``("finetune.full", "metrics_test")`` for ``finetune.full.metrics_test``; ``None`` if no variant."""
    parts = name.split(".")
    if len(parts) <= _VARIANT_DEPTH:
        return None
    return ".".join(parts[:_VARIANT_DEPTH]), ".".join(parts[_VARIANT_DEPTH:])


def variants(pipeline: Pipeline) -> list[str]:
    """The variants whose nodes the pipeline runs, each as its namespace cut to two parts."""
    names = {
        ".".join(node.namespace.split(".")[:_VARIANT_DEPTH])
        for node in pipeline.nodes
        if node.namespace and len(node.namespace.split(".")) >= _VARIANT_DEPTH
    }
    return sorted(names)


class TrackingHook:
    """Logs each ``kedro run`` to MLflow when ``TLKEDRO_TRACKING`` is set; see the module docstring."""

    def __init__(self) -> None:
        self._client: Any = None
        self._experiment_id: str | None = None
        self._run_id: str | None = None
        self._variant_runs: dict[str, str] = {}

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        if not tracking_enabled():
            return
        # MLflow 3 sends usage telemetry unless told not to; on an offline cluster node the attempt
        # (a DNS lookup that never answers) holds the process at exit for minutes.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(
            run_params["project_path"]
        )
        self._client = MlflowClient(tracking_uri=uri)
        name = (
            os.environ.get("MLFLOW_EXPERIMENT_NAME")
            or f"tlkedro-{run_params.get('env') or 'local'}"
        )
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self._client.create_experiment(name, artifact_location=artifact_location(uri))
        )
        self._experiment_id = experiment_id
        command = reproduce_command(run_params)
        run = self._client.create_run(
            experiment_id,
            run_name=",".join(run_params.get("pipeline_names") or ["__default__"]),
            tags={COMMAND_TAG: command, "tlkedro.kedro_run_id": str(run_params.get("run_id"))},
        )
        self._run_id = run.info.run_id
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        self._log_params(self._run_id, parameters)
        # Created up front, so that logging a node's outputs never has to create a run.
        self._variant_runs = {
            variant: self._client.create_run(
                experiment_id,
                run_name=variant,
                tags={
                    "mlflow.parentRunId": self._run_id,
                    VARIANT_TAG: variant,
                    COMMAND_TAG: f"{command} --namespaces {shlex.quote(variant)}"
                    if not run_params.get("namespaces")
                    else command,
                },
            ).info.run_id
            for variant in variants(pipeline)
        }
        logger.info("MLflow run %s in %s (experiment %s)", self._run_id, uri, name)

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        if self._run_id is None:
            return
        for name, data in outputs.items():
            split = variant_of(name)
            if split is not None and split[0] in self._variant_runs:
                self._log_variant_output(self._variant_runs[split[0]], split[1], data)
            elif split is None:
                self._log_artifact(self._run_id, name, data)
                if name.endswith("_evaluation") and hasattr(data, "columns"):
                    self._log_evaluation(data)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end("FINISHED")

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._end("FAILED")

    def _end(self, status: str) -> None:
        if self._run_id is None:
            return
        for run_id in self._variant_runs.values():
            self._client.set_terminated(run_id, status)
        self._client.set_terminated(self._run_id, status)
        self._run_id, self._variant_runs = None, {}

    def _log_params(self, run_id: str, tree: Any) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)[:_PARAM_VALUE_MAX]) for key, value in flatten(tree) if key]
        for start in range(0, len(params), _BATCH_MAX):
            self._client.log_batch(run_id, params=params[start : start + _BATCH_MAX])

    def _log_metrics(self, run_id: str, metrics: list[Any]) -> None:
        for start in range(0, len(metrics), _BATCH_MAX * 10):
            self._client.log_batch(run_id, metrics=metrics[start : start + _BATCH_MAX * 10])

    def _log_variant_output(self, run_id: str, leaf: str, data: Any) -> None:
        """One output of a variant: ``leaf`` is its name in the variant (``history``), or in one of its
        folds or stages (``fold_0.history``, ``adapt.history``), whose name then prefixes the metrics."""
        import pandas as pd
        from mlflow.entities import Metric

        part, _, kind = leaf.rpartition(".")
        prefix = f"{part.replace('.', '/')}/" if part else ""
        if kind == "config":
            self._log_params(run_id, {part: data} if part else data)
        elif kind == "history" and isinstance(data, pd.DataFrame):
            self._log_metrics(run_id, _history_metrics(data, prefix))
        elif kind.startswith("metrics_") and isinstance(data, Mapping):
            # Named as in metrics.json ("test/auroc"); keys without their split get it prefixed.
            split = kind.removeprefix("metrics_")
            metrics = [
                Metric(prefix + (k if k.startswith(f"{split}/") else f"{split}/{k}"), v, 0, 0)
                for k, v in numbers(data).items()
            ]
            self._log_metrics(run_id, metrics)
        elif kind == "model" and isinstance(data, Mapping):
            self._log_checkpoint(run_id, data, f"model/{part}".rstrip("/"))
        elif kind == "study" and isinstance(data, pd.DataFrame):
            self._log_trials(run_id, data)
        elif kind in ("metrics", "training_summary", "complexity"):
            self._client.log_dict(run_id, _plain(data), f"{leaf}.json")

    def _log_trials(self, variant_run: str, trials: Any) -> None:
        """Each trial of a tuned variant's study as a run nested in the variant's run."""
        from mlflow.entities import Metric

        for trial in trials.to_dict("records"):
            run = self._client.create_run(
                self._experiment_id,
                run_name=f"trial_{trial['trial']}",
                tags={
                    "mlflow.parentRunId": variant_run,
                    TRIAL_TAG: str(trial["trial"]),
                    "optuna.state": trial["state"],
                },
            )
            run_id = run.info.run_id
            self._log_params(
                run_id,
                {k.removeprefix("params."): v for k, v in trial.items() if k.startswith("params.")},
            )
            intermediate = json.loads(trial["intermediate"])
            metrics = [Metric("intermediate", float(v), 0, int(k)) for k, v in intermediate.items()]
            if _is_number(trial["value"]):
                metrics.append(Metric("value", float(trial["value"]), 0, 0))
            self._log_metrics(run_id, metrics)
            self._client.set_terminated(
                run_id, "FINISHED" if trial["state"] in ("COMPLETE", "PRUNED") else "FAILED"
            )

    def _log_evaluation(self, table: Any) -> None:
        """The report's estimates with intervals (``reporting``'s ``<pipeline>_evaluation``) onto the
        runs of the variants they describe."""
        from mlflow.entities import Metric

        columns = ("estimate", "low", "high", "difference", "difference_low", "difference_high")
        for row in table.to_dict("records"):
            run_id = self._variant_runs.get(str(row.get("model")))
            if run_id is None:  # a baseline, or a variant this run does not track
                continue
            metric = f"evaluation/{row['metric']}"
            names = {c: metric if c == "estimate" else f"{metric}_{c}" for c in columns}
            metrics = [
                Metric(names[c], float(row[c]), 0, 0) for c in columns if _is_number(row.get(c))
            ]
            if _is_number(row.get("n_subjects")):
                metrics.append(Metric("evaluation/n_subjects", float(row["n_subjects"]), 0, 0))
            self._log_metrics(run_id, metrics)

    def _log_checkpoint(
        self, run_id: str, checkpoint: Mapping[str, Any], artifact_path: str
    ) -> None:
        import torch

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.pt"
            torch.save(dict(checkpoint), path)
            self._client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def _log_artifact(self, run_id: str, name: str, data: Any) -> None:
        import pandas as pd

        if hasattr(data, "savefig"):  # a matplotlib figure
            self._client.log_figure(run_id, data, f"{name}.png")
        elif isinstance(data, str) and name.endswith("_report"):
            self._client.log_text(run_id, data, f"{name}.md")
        elif isinstance(data, pd.DataFrame) and name.endswith(("_comparison", "_evaluation")):
            self._client.log_text(run_id, data.to_csv(index=False), f"{name}.csv")


def _history_metrics(history: Any, prefix: str) -> list[Any]:
    """Every number of a history as a metric per epoch (step = epoch)."""
    from mlflow.entities import Metric

    return [
        Metric(f"{prefix}{column}", float(value), 0, int(step))
        for step, row in zip(_epochs(history), history.to_dict("records"), strict=True)
        for column, value in row.items()
        if column != "epoch" and _is_number(value)
    ]


def _epochs(history: Any) -> list[int]:
    if "epoch" in history.columns:
        return [int(e) for e in history["epoch"]]
    return list(range(len(history)))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _plain(data: Any) -> Any:
    """``data`` with non-JSON leaves as strings, for ``log_dict``."""
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_plain(v) for v in data]
    if data is None or isinstance(data, bool | int | float | str):
        return data
    return str(data)
