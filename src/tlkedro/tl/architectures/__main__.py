"""``python -m tlkedro.tl.architectures``: the registered architectures with their stages.

Each architecture is built with its default arguments on the ``meta`` device (shapes without weights), so
the listing takes seconds and no memory.
"""

from __future__ import annotations

import re
from itertools import groupby

import torch

from tlkedro.tl.analysis.complexity import count_parameters
from tlkedro.tl.architectures import create_architecture, list_architectures

_INDEXED = re.compile(r"^(.*)\.(\d+)$")


def compact_stages(stages: tuple[str, ...]) -> str:
    """Stage names with runs of indexed siblings shortened: ``blocks.0, ..., blocks.11`` -> ``blocks.0-11``."""

    def container(stage: str) -> str | None:
        match = _INDEXED.match(stage)
        return match.group(1) if match else None

    parts = []
    for prefix, run in groupby(stages, key=container):
        run = list(run)
        if prefix is None or len(run) < 3:
            parts.extend(run)
        else:
            parts.append(f"{run[0]}-{_INDEXED.match(run[-1]).group(2)}")
    return ", ".join(parts)


def main() -> None:
    """Print one row per registered architecture: name, spatial dims, parameters, stages."""
    rows = []
    for name in list_architectures():
        with torch.device("meta"):
            model = create_architecture(name)
        total, _ = count_parameters(model)
        rows.append(
            (
                name,
                f"{model.spatial_dims}D",
                f"{total / 1e6:.1f}M",
                compact_stages(model.stage_names),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for *cells, stages in rows:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        print(*padded, stages, sep="  ")  # noqa: T201  (the command's output)


if __name__ == "__main__":
    main()
