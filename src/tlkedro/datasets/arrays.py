"""``NumpyArrayDataset``: a ``.npy`` array, memory-mapped read-only on load, streamed on save."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path

from tlkedro.datasets.atomic import atomic_write, is_local, remove_partial_files
from tlkedro.imaging.extraction import LazyArrayStack


class NumpyArrayDataset(AbstractDataset[np.ndarray | LazyArrayStack, np.ndarray]):
    """A NumPy array in a ``.npy`` file, local or on any fsspec filesystem (``s3://bucket/images.npy``).

    ``load()`` of a local file memory-maps it read-only (``np.load(mmap_mode="r")``), so a training set
    larger than RAM is paged in as batches touch it; a file on an object store cannot be mapped and is
    read into memory. ``save()`` takes an array or a :class:`LazyArrayStack`; a stack's recipes are
    evaluated in a process pool and their rows written as they arrive, so memory stays bounded by a few
    items whatever the array's size. Saves are atomic
    (:func:`tlkedro.datasets.atomic.atomic_write`): a failed or interrupted save never leaves a partial
    ``.npy`` (a killed process may leave a hidden ``.<name>.<id>.part`` file, never the target).

    The rows are written with ordinary sequential writes rather than through ``open_memmap``: pages of a
    writable memory map count towards the writer's resident memory until the kernel flushes them, which
    would grow with the array.

    Example catalog entry::

        pretrain_images:
          type: tlkedro.datasets.NumpyArrayDataset
          filepath: data/05_model_input/pretrain/images.npy

    Args:
        filepath: Path or fsspec URL of the ``.npy`` file.
        credentials: Passed to the fsspec filesystem (e.g. ``key``/``secret`` for ``s3fs``).
        fs_args: Further arguments of the fsspec filesystem.
        metadata: Free-form metadata, ignored by Kedro.
    """

    def __init__(
        self,
        *,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._protocol, path = get_protocol_and_path(filepath)
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(self._protocol, **(credentials or {}), **(fs_args or {}))
        self.metadata = metadata

    def load(self) -> np.ndarray:
        """The array: memory-mapped read-only if local, else read into memory."""
        path = get_filepath_str(self._filepath, self._protocol)
        if is_local(self._fs):
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with self._fs.open(path, "rb") as stream:
            return np.load(stream, allow_pickle=False)

    def save(self, data: np.ndarray | LazyArrayStack) -> None:
        """Write ``data`` atomically; a ``LazyArrayStack`` is evaluated and streamed row block by block."""
        if not isinstance(data, np.ndarray | LazyArrayStack):
            raise DatasetError(
                f"{self._filepath}: NumpyArrayDataset saves a numpy array or a LazyArrayStack, "
                f"got {type(data).__name__}"
            )
        path = get_filepath_str(self._filepath, self._protocol)
        with atomic_write(self._fs, path, "wb") as stream:
            if isinstance(data, np.ndarray):
                np.save(stream, data, allow_pickle=False)
            else:
                _write_stack(stream, data)
        self._fs.invalidate_cache(path)

    def remove_partial_saves(self) -> list[str]:
        """Remove the temporary files of interrupted saves (see :mod:`tlkedro.datasets.atomic`)."""
        return remove_partial_files(self._fs, self._filepath.as_posix(), versioned=False)

    def _exists(self) -> bool:
        return self._fs.isfile(get_filepath_str(self._filepath, self._protocol))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}


def _write_stack(stream: Any, stack: LazyArrayStack) -> None:
    descr = np.lib.format.dtype_to_descr(np.dtype(stack.dtype))
    np.lib.format.write_array_header_1_0(
        stream, {"descr": descr, "fortran_order": False, "shape": stack.shape}
    )
    # LazyArrayStack checks every block's shape, so the rows written match the header.
    for block in stack:
        stream.write(np.ascontiguousarray(block).data)
