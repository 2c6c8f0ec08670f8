"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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
