"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker (and the `kedro` processes it starts) gets its share of cores.

    With torch's default of one thread per core in every worker, the workers would oversubscribe the
    cores, and spin-waiting intra-op threads make that several times slower than running one by one.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most slow tests first, the others in their order.

    `make test` hands pytest-xdist whole files in collection order (``--no-loadscope-reorder``), so the
    end-to-end files (minutes each) start at once and the fast files fill the workers around them,
    instead of the longest work starting last.
    """
    slow: dict[str, int] = {}
    for item in items:
        file = item.nodeid.split("::", 1)[0]
        slow[file] = slow.get(file, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.nodeid.split("::", 1)[0]])  # stable within a file


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for the tests of a module (restored after them).

    Results then do not depend on the number of cores, and tiny inputs gain nothing from intra-op
    threads, whose spin-waiting makes them several times slower on a shared machine. Use it with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
