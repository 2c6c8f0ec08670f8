"""Project hooks."""

from __future__ import annotations

import logging
import os
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, CatalogProtocol, SharedMemoryDataCatalog
from kedro.pipeline import Pipeline

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
