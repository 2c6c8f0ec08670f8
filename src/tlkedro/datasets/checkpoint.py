"""``TorchCheckpointDataset``: a model checkpoint (``tlkedro.tl.checkpoint``) saved with ``torch.save``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import get_filepath_str, get_protocol_and_path

from tlkedro.datasets.atomic import atomic_write, remove_partial_files


class TorchCheckpointDataset(AbstractVersionedDataset[dict[str, Any], dict[str, Any]]):
    """A checkpoint dict (``{"config", "state_dict", "meta"}``) in one ``torch.save`` file.

    Loading uses ``torch.load(weights_only=True)``, so a checkpoint file cannot run code; it must hold
    only tensors and plain types (``tlkedro.tl.checkpoint.make_checkpoint`` ensures that). Saves are
    atomic (:func:`tlkedro.datasets.atomic.atomic_write`): an interrupted save never leaves a truncated
    checkpoint. The file may be local or on any fsspec filesystem (``s3://bucket/model.pt``). Supports
    ``versioned: true``.

    Example catalog entry::

        "finetune.{variant}.model":
          type: tlkedro.datasets.TorchCheckpointDataset
          filepath: data/06_models/finetune/{variant}/model.pt
          versioned: true

    Args:
        filepath: Path or fsspec URL of the ``.pt`` file.
        version: Kedro's load and save versions (set by the catalog for ``versioned: true``).
        credentials: Passed to the fsspec filesystem (e.g. ``key``/``secret`` for ``s3fs``).
        fs_args: Further arguments of the fsspec filesystem.
        metadata: Free-form metadata, ignored by Kedro (e.g. for kedro-viz).
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        """The checkpoint, with its tensors on the CPU."""
        path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(path, "rb") as stream:
            return torch.load(stream, map_location="cpu", weights_only=True)

    def save(self, data: dict[str, Any]) -> None:
        """Write ``data`` atomically."""
        if not isinstance(data, dict):
            raise DatasetError(
                f"{self._filepath}: expected a checkpoint dict, got {type(data).__name__}"
            )
        path = get_filepath_str(self._get_save_path(), self._protocol)
        with atomic_write(self._fs, path, "wb") as stream:
            torch.save(data, stream)
        self._fs.invalidate_cache(path)

    def remove_partial_saves(self) -> list[str]:
        """Remove the temporary files of interrupted saves (see :mod:`tlkedro.datasets.atomic`)."""
        return remove_partial_files(
            self._fs, self._filepath.as_posix(), versioned=self._version is not None
        )

    def _exists(self) -> bool:
        try:
            path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:  # versioned, and no version saved yet
            return False
        return self._fs.isfile(path)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "protocol": self._protocol,
            "version": self._version,
        }
