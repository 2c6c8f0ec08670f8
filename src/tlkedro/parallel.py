"""Streaming, parallel evaluation of per-item work with a progress bar.

Nodes that produce thousands of volumes or slices return *recipes* (picklable zero-argument callables,
usually ``functools.partial`` of a module-level function) instead of the data itself; the catalog's
datasets evaluate them here, a bounded number at a time, so memory does not grow with the cohort.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from tqdm.auto import tqdm

from tlkedro.runtime import limit_threads

T = TypeVar("T")
R = TypeVar("R")

#: Below this many items a process pool costs more than it saves: each worker imports numpy, nibabel and
#: often torch and MONAI first, which takes seconds.
MIN_ITEMS_FOR_POOL = 64


def resolve_workers(workers: int | None) -> int:
    """``None`` or ``0`` means one worker per available core."""
    if workers:
        return max(1, int(workers))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _call(recipe: Callable[[], R]) -> R:
    return recipe()


def _init_worker() -> None:
    # Each worker is one of several processes sharing the cores: intra-op threads would oversubscribe.
    limit_threads(1)


def imap_ordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = None,
    desc: str | None = None,
    total: int | None = None,
    max_in_flight: int | None = None,
    min_items_for_pool: int = MIN_ITEMS_FOR_POOL,
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in input order, computed in a process pool.

    At most ``max_in_flight`` (default: 2 per worker) results are pending at once, so a slow consumer
    (e.g. writing to disk) keeps memory bounded. With one worker everything runs in this process, which
    keeps tracebacks simple and avoids the pool's start-up cost for tiny inputs.

    Args:
        fn: A picklable function (module level) applied to each item.
        items: The inputs; consumed lazily.
        workers: Number of processes; ``None`` uses every available core.
        desc: Progress-bar label; ``None`` hides the bar.
        total: Number of items, for the progress bar when ``items`` has no ``len``.
        max_in_flight: Bound on submitted but not yet yielded items.
        min_items_for_pool: Fewer items than this run in this process (lower it for costly items).
    """
    n_workers = resolve_workers(workers)
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if total is not None and total < min_items_for_pool:
        n_workers = 1
    bar = tqdm(total=total, desc=desc, disable=desc is None, unit="item", dynamic_ncols=True)
    try:
        if n_workers == 1:
            for item in items:
                result = fn(item)
                bar.update()
                yield result
            return
        limit = max_in_flight or 2 * n_workers
        # forkserver: torch and OpenMP state in a forked child can deadlock.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker) as pool:
            pending: dict[int, Future[R]] = {}
            done: dict[int, R] = {}
            next_out = 0
            iterator = enumerate(items)
            exhausted = False
            while True:
                while not exhausted and len(pending) + len(done) < limit:
                    try:
                        index, item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[index] = pool.submit(fn, item)
                if not pending and not done:
                    break
                if next_out not in done:
                    finished, _ = wait(pending.values(), return_when=FIRST_COMPLETED)
                    for index in [i for i, f in pending.items() if f in finished]:
                        done[index] = pending.pop(index).result()
                while next_out in done:
                    bar.update()
                    yield done.pop(next_out)
                    next_out += 1
    finally:
        bar.close()


def run_recipes(
    recipes: Iterable[Callable[[], Any]],
    *,
    workers: int | None = None,
    desc: str | None = None,
    total: int | None = None,
    min_items_for_pool: int = MIN_ITEMS_FOR_POOL,
) -> Iterator[Any]:
    """Evaluate zero-argument recipes in parallel, yielding results in order."""
    return imap_ordered(
        _call,
        recipes,
        workers=workers,
        desc=desc,
        total=total,
        min_items_for_pool=min_items_for_pool,
    )
