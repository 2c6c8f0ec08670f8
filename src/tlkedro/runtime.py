"""Thread settings of processes that share the cores with others: pool workers, ParallelRunner workers.

A process that trains or preprocesses side by side with others should not start one intra-op thread per
core (torch's default): ``k`` such processes on ``k`` cores would run ``k * k`` threads, which fight for
the cores and run slower than ``k`` single-threaded processes. ``TLKEDRO_THREADS_PER_WORKER`` sets the
threads of each ParallelRunner worker (default 1; see docs/deployment.md).

Thread counts reach a process two ways: ``torch.set_num_threads`` in a process that has loaded torch, and
``OMP_NUM_THREADS`` (and its MKL and OpenBLAS twins) in the environment of a process that loads torch,
NumPy's BLAS or OpenMP later, e.g. a worker started with the ``spawn`` or ``forkserver`` method. torch is
imported only where it is already loaded, so that processes that never need it do not pay seconds for it.
"""

from __future__ import annotations

import os
import sys

#: Intra-op threads of each ParallelRunner worker.
THREADS_PER_WORKER = "TLKEDRO_THREADS_PER_WORKER"

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_worker() -> int:
    """The intra-op threads of a ParallelRunner worker: ``TLKEDRO_THREADS_PER_WORKER``, default 1.

    Raises:
        ValueError: If the variable is set to anything but a positive integer.
    """
    value = os.environ.get(THREADS_PER_WORKER, "1")
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_PER_WORKER} must be a positive integer; got {value!r}")
    return int(value)


def set_thread_environment(threads: int) -> dict[str, str | None]:
    """Set the thread variables that libraries read when they load, for processes started from now on.

    Returns:
        The previous values (``None`` where unset), for ``restore_environment``.
    """
    previous = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, str(threads)))
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    """Undo ``set_thread_environment``."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def limit_threads(threads: int) -> None:
    """Run this process, and the processes it starts, with ``threads`` intra-op threads."""
    set_thread_environment(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
