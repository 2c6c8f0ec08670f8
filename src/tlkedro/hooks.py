"""Project hooks."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, CatalogProtocol, SharedMemoryDataCatalog
from kedro.pipeline import Node, Pipeline

from tlkedro.runtime import (
    limit_threads,
    restore_environment,
    set_thread_environment,
    threads_per_worker,
)

logger = logging.getLogger(__name__)


class PipelineParametersHook:
    """Hands the run's configuration to the pipeline registry.

    The training pipelines are built from the parameters (one namespace per variant), so the registry
    must see the same configuration as the run: the ``--env`` environment and the ``--params``
    overrides. Kedro creates the context before it first asks for the pipelines.
    """

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        # Imported here: the registry imports torch, which settings.py (read by every kedro command,
        # `kedro --help` included) should not pay for.
        from tlkedro.pipeline_registry import use_config_loader

        use_config_loader(context.config_loader)


class ReportLocationHook:
    """Says where the reports of a run are, since versioned datasets hide them one folder deeper."""

    @hook_impl
    def after_pipeline_run(self, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        for name in sorted(pipeline.all_outputs()):
            if name.endswith("_report"):
                dataset = catalog.get(name)
                # The latest version is the one this run has just written.
                path = (
                    dataset._get_load_path()
                    if isinstance(dataset, AbstractVersionedDataset)
                    else dataset
                )
                logger.info("Report %s: %s", name, path)


class ParallelWorkerHook:
    """Gives each ParallelRunner worker ``TLKEDRO_THREADS_PER_WORKER`` intra-op threads (default 1).

    ParallelRunner runs the nodes in worker processes, by default as many as there are cores; with
    torch's default of one thread per core in each, they would oversubscribe the cores. Kedro hands a
    ``SharedMemoryDataCatalog`` to ParallelRunner runs (``run_params["runner"]`` is only the runner's
    repr), which is how this hook tells them apart.

    The state set in ``before_pipeline_run`` reaches the workers two ways. Workers started by ``fork``
    (Kedro's default on Linux) are copies of this process: Kedro registers the project's hooks in each,
    and ``before_node_run`` sets torch's threads there (the parent runs no node). Workers started by
    ``spawn`` or ``forkserver`` (``KEDRO_MP_CONTEXT``) import torch afresh and read ``OMP_NUM_THREADS``,
    set here before the pool starts and restored when the run ends.
    """

    def __init__(self) -> None:
        self._threads: int | None = None
        self._environment: dict[str, str | None] = {}
        self._limited_pid: int | None = None

    @hook_impl
    def before_pipeline_run(self, catalog: CatalogProtocol) -> None:
        if isinstance(catalog, SharedMemoryDataCatalog):
            self._threads = threads_per_worker()
            self._environment = set_thread_environment(self._threads)

    @hook_impl
    def before_node_run(self) -> None:
        if self._threads is not None and self._limited_pid != os.getpid():
            limit_threads(self._threads)
            self._limited_pid = os.getpid()
            logger.info("ParallelRunner worker %d: %d torch thread(s)", os.getpid(), self._threads)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end_run()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._end_run()

    def _end_run(self) -> None:
        if self._threads is not None:
            restore_environment(self._environment)
            self._threads = None


class AtomicOutputsHook:
    """Removes the leftovers of interrupted saves of a run's outputs before the run starts.

    Only the outputs of the pipeline about to run are cleaned: another process (a Slurm job of another
    group) may be writing the other datasets right now.
    """

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        for name in sorted(pipeline.all_outputs()):
            dataset = catalog.get(name)
            # The project's atomic datasets (tlkedro.datasets.atomic) have it; duck-typed so that
            # settings.py, read by every kedro command, does not import the datasets' libraries.
            cleaner = getattr(dataset, "remove_partial_saves", None)
            if cleaner is not None:
                cleaner()


# Where a ParallelRunner worker started by `spawn`/`forkserver` finds the run's recorder: such workers
# register fresh hook instances, which saw no `before_pipeline_run`.
_RECORDER_ENV = "TLKEDRO_FRESHNESS_RECORDER"


class _RemadeThisRun:
    """Stands in for a stale output's ``exists()`` while Kedro chooses the nodes to run.

    ``kedro run --only-missing-outputs`` re-runs a node only if one of its persisted outputs does not
    exist (``catalog.exists`` -> ``dataset.exists()``), and Kedro offers no other way to add a node to
    that choice. A stale output is not deleted: it answers "absent" to this run only. A module-level
    class, so that the dataset still pickles for ParallelRunner.
    """

    def __call__(self) -> bool:
        return False


class FreshnessHook:
    """Reuses a node's outputs only while they are fresh (:mod:`tlkedro.freshness`, docs/freshness.md).

    - Every node's completion record is removed when it starts and written once all its outputs are
      saved, with their fingerprint: outputs without a record (a killed run) are not finished.
    - ``kedro run --only-missing-outputs`` re-makes every node that is stale or unfinished, and every
      node downstream of one, besides those with a missing output; it stops before running anything,
      naming them, when the run would build on stale results of nodes outside it.
    - Any other run logs a warning for each input it takes from such nodes.

    Args:
        records: Folder (or fsspec URL) of the records; by default ``<data_root>/freshness``.
        pipelines: Where the producers of a run's inputs are looked up besides the run's pipeline; by
            default the project's registered pipelines.
    """

    def __init__(self, records: str | None = None, pipelines: list[Pipeline] | None = None) -> None:
        self._records = records
        self._pipelines = pipelines
        self._recorder: Any = None
        self._saved: dict[str, set[str]] = {}
        self._invalidated: list[Any] = []
        self._environment: dict[str, str | None] = {}
        self._config_loader: Any = None

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        from tlkedro.freshness import data_root, records_url

        self._config_loader = context.config_loader
        if self._records is None:
            self._records = records_url(context.project_path, data_root(context.config_loader))

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        from tlkedro.freshness import (
            Freshness,
            FreshnessError,
            Graph,
            RecordStore,
            raw_parameters,
            records_url,
        )

        graph = (
            Graph([pipeline, *self._pipelines])
            if self._pipelines is not None
            else Graph.of_project(pipeline)
        )
        freshness = Freshness(
            graph,
            catalog,
            RecordStore(self._records or records_url(".", None)),
            None if self._config_loader is None else raw_parameters(self._config_loader),
        )
        problems = freshness.outside_problems(pipeline)
        if run_params.get("only_missing_outputs"):
            if problems:
                raise FreshnessError(
                    "This run would build on results that are not fresh and that it does not re-make:\n"
                    + "\n".join(f"  {p}" for p in problems)
                    + "\nRun their pipeline first (`kedro tlkedro status` lists what is stale)."
                )
            self._invalidate(freshness, pipeline, catalog)
        for problem in problems:
            logger.warning("Input not fresh, so neither will this run's results be: %s", problem)
        self._recorder = freshness.recorder(pipeline, run_params.get("run_id"))
        if isinstance(catalog, SharedMemoryDataCatalog):
            self._export_recorder()

    def _invalidate(self, freshness: Any, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        from tlkedro.freshness import is_ephemeral

        remade = []
        for node in pipeline.nodes:
            status = freshness.status(node)
            if not (status.dirty and status.persisted):
                continue
            remade.append(f"  {node.name}: {status.state}, {status.reason}")
            for output in node.outputs:
                dataset = None if is_ephemeral(catalog, output) else catalog.get(output)
                if dataset is not None and "exists" not in vars(dataset):
                    vars(dataset)["exists"] = _RemadeThisRun()
                    self._invalidated.append(dataset)
        if remade:
            logger.info(
                "Re-making %d node(s) that are not fresh:\n%s", len(remade), "\n".join(remade)
            )

    def _export_recorder(self) -> None:
        import multiprocessing
        import tempfile

        if multiprocessing.get_start_method() == "fork":
            return  # forked workers are copies of this process, recorder included
        handle, path = tempfile.mkstemp(prefix="tlkedro-freshness-", suffix=".json")
        with os.fdopen(handle, "w") as stream:
            stream.write(self._recorder.to_json())
        self._environment = {_RECORDER_ENV: os.environ.get(_RECORDER_ENV)}
        os.environ[_RECORDER_ENV] = path

    def _current_recorder(self) -> Any:
        if self._recorder is None and (path := os.environ.get(_RECORDER_ENV)):
            from tlkedro.freshness import RunRecorder

            with open(path) as stream:
                self._recorder = RunRecorder.from_json(stream.read())
        return self._recorder

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        recorder = self._current_recorder()
        if recorder is not None:
            recorder.started(node.name)
            self._saved[node.name] = set()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        if not node.outputs:
            self._finished(node)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Node) -> None:
        saved = self._saved.get(node.name)
        if saved is not None:
            saved.add(dataset_name)
            if saved >= set(node.outputs):
                self._finished(node)

    def _finished(self, node: Node) -> None:
        self._saved.pop(node.name, None)
        if (recorder := self._current_recorder()) is not None:
            recorder.finished(node.name)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end_run()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._end_run()

    def _end_run(self) -> None:
        for dataset in self._invalidated:
            vars(dataset).pop("exists", None)
        self._invalidated.clear()
        if self._environment:  # the recorder was exported to spawned workers
            with contextlib.suppress(OSError):
                os.unlink(os.environ[_RECORDER_ENV])
            restore_environment(self._environment)
        self._environment = {}
        self._recorder = None
        self._saved.clear()
