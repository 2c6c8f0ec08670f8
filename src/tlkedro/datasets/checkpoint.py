"""``TorchCheckpointDataset``: a model checkpoint (``tlkedro.tl.checkpoint``) saved with ``torch.save``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractVersionedDataset, DatasetError, Version


class TorchCheckpointDataset(AbstractVersionedDataset[dict[str, Any], dict[str, Any]]):
    """A checkpoint dict (``{"config", "state_dict", "meta"}``) in one local ``torch.save`` file.

    Loading uses ``torch.load(weights_only=True)``, so a checkpoint file cannot run code; it must hold
    only tensors and plain types (``tlkedro.tl.checkpoint.make_checkpoint`` ensures that). Saving writes a
    hidden temporary file next to the target and renames it into place, so an interrupted save never
    leaves a truncated checkpoint. Supports ``versioned: true``.

    Example catalog entry::

        "finetune.{variant}.model":
          type: tlkedro.datasets.TorchCheckpointDataset
          filepath: data/06_models/finetune/{variant}/model.pt
          versioned: true

    Args:
        filepath: Path of the ``.pt`` file.
        version: Kedro's load and save versions (set by the catalog for ``versioned: true``).
        metadata: Free-form metadata, ignored by Kedro (e.g. for kedro-viz).
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        """The checkpoint, with its tensors on the CPU."""
        return torch.load(Path(self._get_load_path()), map_location="cpu", weights_only=True)

    def save(self, data: dict[str, Any]) -> None:
        """Write ``data`` atomically (temporary file, then ``os.replace``)."""
        if not isinstance(data, dict):
            raise DatasetError(
                f"{self._filepath}: expected a checkpoint dict, got {type(data).__name__}"
            )
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part"
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(data, stream)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
