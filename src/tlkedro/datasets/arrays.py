"""``NumpyArrayDataset``: a ``.npy`` array, memory-mapped read-only on load, streamed on save."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from tlkedro.imaging.extraction import LazyArrayStack


class NumpyArrayDataset(AbstractDataset[np.ndarray | LazyArrayStack, np.ndarray]):
    """A NumPy array in a local ``.npy`` file.

    ``load()`` memory-maps the file read-only (``np.load(mmap_mode="r")``), so a training set larger than
    RAM is paged in as batches touch it. ``save()`` takes an array or a :class:`LazyArrayStack`; a stack's
    recipes are evaluated in a process pool and their rows appended to the file as they arrive, so memory
    stays bounded by a few items whatever the array's size. Either way the data go to a hidden temporary
    file beside the target, renamed over it with ``os.replace`` only once complete: a failed or
    interrupted save never leaves a partial ``.npy`` (a killed process may leave the hidden
    ``.<name>.<id>.part`` file, never the target).

    The rows are written with ordinary sequential writes rather than through ``open_memmap``: pages of a
    writable memory map count towards the writer's resident memory until the kernel flushes them, which
    would grow with the array.

    Example catalog entry::

        pretrain_images:
          type: tlkedro.datasets.NumpyArrayDataset
          filepath: data/05_model_input/pretrain/images.npy

    Args:
        filepath: Path of the ``.npy`` file (local filesystem: memory mapping needs one).
        metadata: Free-form metadata, ignored by Kedro.
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> np.ndarray:
        """The array, memory-mapped read-only."""
        return np.load(self._filepath, mmap_mode="r", allow_pickle=False)

    def save(self, data: np.ndarray | LazyArrayStack) -> None:
        """Write ``data`` atomically; a ``LazyArrayStack`` is evaluated and streamed row block by block."""
        if not isinstance(data, np.ndarray | LazyArrayStack):
            raise DatasetError(
                f"{self._filepath}: NumpyArrayDataset saves a numpy array or a LazyArrayStack, "
                f"got {type(data).__name__}"
            )
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        partial = self._filepath.with_name(f".{self._filepath.name}.{uuid.uuid4().hex}.part")
        try:
            with partial.open("xb") as stream:
                if isinstance(data, np.ndarray):
                    np.save(stream, data, allow_pickle=False)
                else:
                    _write_stack(stream, data)
            os.replace(partial, self._filepath)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _write_stack(stream: Any, stack: LazyArrayStack) -> None:
    descr = np.lib.format.dtype_to_descr(np.dtype(stack.dtype))
    np.lib.format.write_array_header_1_0(
        stream, {"descr": descr, "fortran_order": False, "shape": stack.shape}
    )
    # LazyArrayStack checks every block's shape, so the rows written match the header.
    for block in stack:
        stream.write(np.ascontiguousarray(block).data)
