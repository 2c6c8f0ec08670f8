import functools
import os

import pytest

from tlkedro.parallel import MIN_ITEMS_FOR_POOL, imap_ordered, resolve_workers, run_recipes


def _square(x: int) -> int:
    return x * x


def _pid_and_value(x: int) -> tuple[int, int]:
    return os.getpid(), x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("item 3 is bad")
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_input_order(workers):
    assert list(imap_ordered(_square, range(100), workers=workers)) == [x * x for x in range(100)]


def test_two_workers_use_other_processes():
    pids = {pid for pid, _ in imap_ordered(_pid_and_value, range(MIN_ITEMS_FOR_POOL), workers=2)}
    assert os.getpid() not in pids


def test_small_inputs_run_in_this_process():
    pids = {
        pid for pid, _ in imap_ordered(_pid_and_value, range(MIN_ITEMS_FOR_POOL - 1), workers=2)
    }
    assert pids == {os.getpid()}


def test_recipes_are_evaluated_lazily_from_a_generator():
    n = MIN_ITEMS_FOR_POOL
    recipes = (functools.partial(_square, x) for x in range(n))
    assert list(run_recipes(recipes, workers=2, total=n)) == [x * x for x in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_errors_propagate(workers):
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(imap_ordered(_fail_on_three, range(MIN_ITEMS_FOR_POOL), workers=workers))


def test_resolve_workers_defaults_to_available_cores():
    assert resolve_workers(None) >= 1
    assert resolve_workers(3) == 3
