"""Atomic saves for every dataset the project writes, kedro-datasets' built-in ones included.

A save never leaves a truncated target that a later ``exists()`` (``--only-missing-outputs``, ``kedro
slurm status``) would take for a finished output:

- On a local filesystem the data go to a hidden ``.<name>.<random>.part`` file in the target's folder,
  which is flushed to disk and renamed over the target with ``os.replace`` (atomic within a folder). A
  killed process can leave the ``.part`` file, never a partial target; :func:`remove_partial_files`
  (called by :class:`AtomicOutputsHook` at the start of every run) removes such leftovers.
- On any other fsspec filesystem (``s3://``, ``gs://``, ``memory://``) the file is opened with
  ``autocommit=False`` and committed only once written completely; an object store publishes an object
  only when its upload completes, so no temporary object is needed and none is left behind.

kedro-datasets writes through ``self._fs.open(path, mode)``; :class:`AtomicSaveMixin` wraps the
dataset's filesystem so that opening for writing goes through :func:`atomic_write`. Subclassing each
built-in class with the mixin keeps kedro-datasets' loading, options, versioning and previews unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as _MatplotlibDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset
from kedro_datasets.text import TextDataset as _TextDataset
from kedro_datasets.yaml import YAMLDataset as _YAMLDataset

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".part"
_TEXT_OPEN_ARGS = ("encoding", "errors", "newline")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local filesystem, where saves go through a renamed temporary file."""
    return isinstance(fs, LocalFileSystem)


def partial_path(path: str) -> str:
    """A fresh hidden temporary name beside ``path``; it matches no dataset's glob or version folder."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_write(
    fs: fsspec.AbstractFileSystem, path: str, mode: str = "wb", **open_args: Any
) -> Iterator[IO[Any]]:
    """Open ``path`` on ``fs`` for writing so that it appears only complete, or not at all.

    Args:
        fs: The filesystem (``fsspec.filesystem(protocol)``).
        path: The target, as ``fs`` names it (``fs._strip_protocol`` is applied).
        mode: ``"w"``/``"wb"`` (``"t"`` allowed); appending cannot be made atomic and is refused.
        open_args: Further arguments of ``open`` (``encoding``, ``newline``, fsspec options).

    Yields:
        The open file. If the ``with`` block raises, nothing is written and the exception propagates.
    """
    if "w" not in mode or any(flag in mode for flag in "ax+"):
        raise ValueError(
            f"{path}: atomic_write writes whole files (mode 'w' or 'wb'), not {mode!r}"
        )
    path = fs._strip_protocol(path)
    text_args = {key: open_args.pop(key) for key in _TEXT_OPEN_ARGS if key in open_args}
    local = is_local(fs)
    if local:
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
        written = partial_path(path)
    else:
        written = path
        open_args["autocommit"] = False
    handle = fs.open(written, "wb", **open_args)
    try:
        stream = handle if "b" in mode else io.TextIOWrapper(handle, **text_args)
        yield stream
        stream.flush()
        if local:
            # Durable before it is visible: after a power cut the target is the old or the new file.
            os.fsync(handle.fileno())
            handle.close()
            os.replace(written, path)
        else:
            handle.close()
            handle.commit()
    except BaseException:
        if local:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(written)
        else:
            handle.discard()
        raise


def remove_partial_files(fs: fsspec.AbstractFileSystem, path: str, *, versioned: bool) -> list[str]:
    """Remove the temporary files that killed saves of ``path`` left behind; returns their paths.

    Only local filesystems have any (see the module's docstring). For a versioned dataset ``path`` is
    its base path: the leftovers lie in version folders (``<path>/<version>/.<name>.*.part``), and a
    version folder they leave empty is removed too, so it cannot be mistaken for a version.
    """
    if not is_local(fs):
        return []
    path = fs._strip_protocol(path)
    folder, name = posixpath.split(path)
    pattern = f".{name}.*{PARTIAL_SUFFIX}"
    if versioned:
        pattern = posixpath.join(path, "*", pattern)
    else:
        pattern = posixpath.join(folder, pattern)
    removed = []
    for leftover in fs.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
            removed.append(leftover)
        if versioned:
            with contextlib.suppress(OSError):  # not empty: a finished save is in it
                os.rmdir(posixpath.dirname(leftover))
    for leftover in removed:
        logger.info("Removed %s, left by an interrupted save", leftover)
    return removed


class _AtomicWriteFileSystem:
    """An fsspec filesystem whose ``open`` for writing goes through :func:`atomic_write`.

    Everything else is the wrapped filesystem's. The write handle is a context manager only (every
    kedro-datasets ``save`` uses ``with``); closing it outside a ``with`` block cannot commit it.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.wrapped = fs

    def open(self, path: str, mode: str = "rb", **open_args: Any) -> Any:
        if "w" in mode:
            return atomic_write(self.wrapped, path, mode, **open_args)
        return self.wrapped.open(path, mode, **open_args)

    def __getattr__(self, name: str) -> Any:
        # Looked up on the instance's dict, so that unpickling (no ``wrapped`` yet) cannot recurse.
        try:
            wrapped = self.__dict__["wrapped"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(wrapped, name)


class AtomicSaveMixin:
    """Makes a kedro-datasets dataset's saves atomic; put it first among the bases.

    The dataset's filesystem ``self._fs`` (set by kedro-datasets' ``__init__``) is wrapped on
    assignment, so every ``self._fs.open(..., "w"/"wb")`` in ``save`` writes atomically.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Kedro records a dataset's arguments (``to_config``) by wrapping ``cls.__init__``: give it the
        # base's own ``__init__``, not the base's wrapper, whose signature is ``(*args, **kwargs)``.
        if "__init__" not in cls.__dict__:
            cls.__init__ = inspect.unwrap(cls.__init__)  # type: ignore[method-assign]
        super().__init_subclass__(**kwargs)

    @property
    def _fs(self) -> Any:
        return self.__dict__["_atomic_fs"]

    @_fs.setter
    def _fs(self, fs: Any) -> None:
        if not isinstance(fs, _AtomicWriteFileSystem):
            fs = _AtomicWriteFileSystem(fs)
        self.__dict__["_atomic_fs"] = fs

    def remove_partial_saves(self) -> list[str]:
        """Remove the temporary files of interrupted saves of this dataset (see :func:`atomic_write`)."""
        filepath = self._filepath.as_posix()  # type: ignore[attr-defined]
        versioned = getattr(self, "_version", None) is not None
        return remove_partial_files(self._fs.wrapped, filepath, versioned=versioned)


class CSVDataset(AtomicSaveMixin, _CSVDataset):
    """``pandas.CSVDataset`` whose saves are atomic (:mod:`tlkedro.datasets.atomic`)."""


class ParquetDataset(AtomicSaveMixin, _ParquetDataset):
    """``pandas.ParquetDataset`` whose saves are atomic (:mod:`tlkedro.datasets.atomic`)."""


class JSONDataset(AtomicSaveMixin, _JSONDataset):
    """``json.JSONDataset`` whose saves are atomic (:mod:`tlkedro.datasets.atomic`)."""


class YAMLDataset(AtomicSaveMixin, _YAMLDataset):
    """``yaml.YAMLDataset`` whose saves are atomic (:mod:`tlkedro.datasets.atomic`)."""


class TextDataset(AtomicSaveMixin, _TextDataset):
    """``text.TextDataset`` whose saves are atomic (:mod:`tlkedro.datasets.atomic`)."""


class MatplotlibDataset(AtomicSaveMixin, _MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` whose saves are atomic (:mod:`tlkedro.datasets.atomic`).

    One figure per file; a list or dict of figures is saved file by file, each atomically.
    """
