"""The dataset kinds the catalog writes, and a script that gets killed halfway through saving one.

``python interrupted_save.py KIND PATH VERSIONED READY`` saves generation 2 of KIND's data to PATH; its
first write to a file writes half of its bytes, flushes them, creates READY and blocks, so that the test
can SIGKILL the process in the middle of a save (tests/datasets/test_atomic.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset


def _frame(generation: int) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(50), "loss": [generation / (1 + i) for i in range(50)]})


def _figure(generation: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    plt.plot(range(generation + 2), marker="o")
    return figure


def _checkpoint(generation: int) -> dict[str, Any]:
    import torch

    return {"state_dict": {"w": torch.full((64, 64), float(generation))}, "meta": {"g": generation}}


@dataclass(frozen=True)
class Kind:
    """One dataset type of the catalog: its class path and generation ``g`` of data to save."""

    type: str
    data: Callable[[int], Any]


KINDS: dict[str, Kind] = {
    "csv": Kind("tlkedro.datasets.atomic.CSVDataset", _frame),
    "parquet": Kind("tlkedro.datasets.atomic.ParquetDataset", _frame),
    "json": Kind(
        "tlkedro.datasets.atomic.JSONDataset", lambda g: {"auroc": g, "rows": list(range(500))}
    ),
    "yaml": Kind(
        "tlkedro.datasets.atomic.YAMLDataset", lambda g: {"sweep": g, "rows": list(range(500))}
    ),
    "md": Kind("tlkedro.datasets.atomic.TextDataset", lambda g: f"# Report {g}\n" + "row\n" * 500),
    "png": Kind("tlkedro.datasets.atomic.MatplotlibDataset", _figure),
    "npy": Kind(
        "tlkedro.datasets.NumpyArrayDataset", lambda g: np.full((256, 8), g, dtype=np.float32)
    ),
    "pt": Kind("tlkedro.datasets.TorchCheckpointDataset", _checkpoint),
}


def make(kind: str, path: str, versioned: bool) -> AbstractDataset:
    """The dataset of ``kind`` at ``path``, built from a catalog entry as Kedro builds it."""
    config: dict[str, Any] = {"type": KINDS[kind].type, "filepath": path, "versioned": versioned}
    return AbstractDataset.from_config(kind, config)


def _block_in_first_write(ready: Path) -> None:
    """Make the first write to a file opened for writing stop halfway and block until killed."""
    from fsspec.implementations.local import LocalFileOpener

    def write(self: LocalFileOpener, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.f.write(view[: max(1, len(view) // 2)])
        self.f.flush()
        ready.touch()
        while True:
            time.sleep(1)

    LocalFileOpener.write = write  # type: ignore[method-assign]


if __name__ == "__main__":
    kind, path, versioned, ready = sys.argv[1:]
    dataset = make(kind, path, versioned == "1")
    data = KINDS[kind].data(2)
    _block_in_first_write(Path(ready))
    dataset.save(data)
    sys.exit("the save returned: it should have blocked")
