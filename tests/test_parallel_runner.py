"""``kedro run --runner ParallelRunner``: variants side by side, one torch thread per worker.

The CLI tests build on the end-to-end tests' project (a full tiny run with the SequentialRunner), run two
finetune variants again with ParallelRunner and compare.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, SharedMemoryDataCatalog

from tests import test_end_to_end as end_to_end
from tests.test_end_to_end import kedro, output
from tlkedro.hooks import ParallelWorkerHook
from tlkedro.runtime import THREADS_PER_WORKER, threads_per_worker

VARIANTS = ("full", "linear_probe")

project = end_to_end.project  # a fixture: the project after a full tiny run
_WORKER_LOG = re.compile(r"ParallelRunner worker (\d+): (\d+) torch thread")


def results(project: Path, variant: str) -> dict:
    """What a variant's run decides: its metrics on every split and its training history."""
    return {
        "test": json.loads(output(project, "finetune", variant, "metrics_test.json").read_text()),
        "external": json.loads(
            output(project, "finetune", variant, "metrics_external.json").read_text()
        ),
        "history": pd.read_csv(output(project, "finetune", variant, "history.csv")),
    }


@pytest.mark.slow
def test_parallel_runner_gives_the_sequential_results_with_one_thread_per_worker(
    project, monkeypatch
):
    namespaces = ",".join(f"finetune.{variant}" for variant in VARIANTS)
    default_threads = {variant: results(project, variant) for variant in VARIANTS}
    # Sums split over another number of threads round differently: the exact comparison is with a
    # sequential run of as many threads as each worker has.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    kedro(project, "run", "--env", "tiny", "--namespaces", namespaces)
    monkeypatch.delenv("OMP_NUM_THREADS")
    sequential = {variant: results(project, variant) for variant in VARIANTS}
    for variant in VARIANTS:
        output(project, "finetune", variant, "metrics_test.json").unlink()

    run = kedro(
        project,
        "run",
        "--env",
        "tiny",
        "--runner",
        "ParallelRunner",
        "--runner-params",
        "max_workers=2",
        "--namespaces",
        namespaces,
    )

    for variant in VARIANTS:
        parallel = results(project, variant)
        assert parallel["test"] == sequential[variant]["test"]
        assert parallel["external"] == sequential[variant]["external"]
        pd.testing.assert_frame_equal(parallel["history"], sequential[variant]["history"])
        # Rank-based metrics on a handful of test subjects may move by a step; the loss moves a little.
        assert parallel["test"]["test/cross_entropy"] == pytest.approx(
            default_threads[variant]["test"]["test/cross_entropy"], rel=1e-4
        )
    workers = _WORKER_LOG.findall(run.stdout + run.stderr)
    assert workers and {threads for _, threads in workers} == {"1"}


@pytest.mark.slow
def test_threads_per_worker_is_set_by_the_environment(project, monkeypatch):
    monkeypatch.setenv(THREADS_PER_WORKER, "2")
    run = kedro(
        project,
        "run",
        "--env",
        "tiny",
        "--runner",
        "ParallelRunner",
        "--nodes",
        "finetune.full.record_run",
    )
    assert {threads for _, threads in _WORKER_LOG.findall(run.stdout + run.stderr)} == {"2"}


def test_threads_per_worker_defaults_to_one_and_takes_only_positive_integers(monkeypatch):
    monkeypatch.delenv(THREADS_PER_WORKER, raising=False)
    assert threads_per_worker() == 1
    monkeypatch.setenv(THREADS_PER_WORKER, "3")
    assert threads_per_worker() == 3
    for wrong in ("0", "two", "-1", ""):
        monkeypatch.setenv(THREADS_PER_WORKER, wrong)
        with pytest.raises(ValueError, match=THREADS_PER_WORKER):
            threads_per_worker()


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_hook_limits_the_workers_of_parallel_runs_only_and_restores_the_environment(
    monkeypatch, torch_threads
):
    monkeypatch.setenv(THREADS_PER_WORKER, "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    hook = ParallelWorkerHook()

    hook.before_pipeline_run(catalog=DataCatalog())  # a SequentialRunner or ThreadRunner run
    hook.before_node_run()
    assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == 1
    hook.after_pipeline_run()

    hook.before_pipeline_run(catalog=SharedMemoryDataCatalog())
    # Read by workers that import torch afresh (spawn, forkserver); forked ones run before_node_run.
    assert os.environ["OMP_NUM_THREADS"] == "3"
    hook.before_node_run()
    assert torch.get_num_threads() == 3
    hook.on_pipeline_error()
    assert "OMP_NUM_THREADS" not in os.environ
