"""Input sizes, stage paths and stage widths: the shape arithmetic the architecture families share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from tlkedro.imaging.extraction import SliceConfig, VolumeConfig

# The model input that preprocessing writes by default (its series length, slice size and volume grid),
# so that a model built without ``img_size`` fits the default data. The series length is
# TimeseriesInputConfig().length, written out: importing the ingestion modules here would cost seconds.
DEFAULT_IMG_SIZE = {1: (128,), 2: SliceConfig().size, 3: VolumeConfig().shape}


def spatial_size(img_size: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
    """``img_size`` as a tuple of ``spatial_dims`` ints (an int is repeated).

    ``None`` gives the project's default model input (``DEFAULT_IMG_SIZE``).

    Raises:
        ValueError: If ``spatial_dims`` is not 2 or 3, or ``img_size`` has another number of entries.
    """
    if spatial_dims not in DEFAULT_IMG_SIZE:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    size = DEFAULT_IMG_SIZE[spatial_dims] if img_size is None else img_size
    if isinstance(size, int):
        return (size,) * spatial_dims
    size = tuple(int(s) for s in size)
    if len(size) != spatial_dims:
        raise ValueError(
            f"img_size {size} should have {spatial_dims} entries for a {spatial_dims}D model"
        )
    return size


def stage_paths(encoder: nn.Module, spec: Sequence[str]) -> tuple[str, ...]:
    """Expand a stage spec: ``"blocks*"`` stands for the children of ``blocks`` (``blocks.0``, ...)."""
    paths: list[str] = []
    for item in spec:
        if item.endswith("*"):
            container = item[:-1]
            paths.extend(
                f"{container}.{child}"
                for child, _ in encoder.get_submodule(container).named_children()
            )
        else:
            paths.append(item)
    return tuple(paths)


def scale_widths(
    widths: Mapping[str, int], width_factors: Mapping[str, float] | None, stages: Sequence[str]
) -> dict[str, int]:
    """Channels per stage after applying ``width_factors``.

    Args:
        widths: Channels of each stage that has a width of its own, in order.
        width_factors: ``stage -> factor``; a factor for a stage whose width follows another stage's
            (a BatchNorm, activation or pooling stage) changes nothing.
        stages: All stage names of the architecture, which are the valid keys.

    Raises:
        ValueError: If a key is not a stage or a factor is not positive.
    """
    factors = dict(width_factors or {})
    unknown = sorted(set(factors) - set(stages))
    if unknown:
        raise ValueError(
            f"width_factors names unknown stages {unknown}; the stages are {', '.join(stages)}"
        )
    bad = {stage: f for stage, f in factors.items() if not f > 0}
    if bad:
        raise ValueError(f"width_factors must be positive, got {bad}")
    return {
        stage: max(1, round(width * factors.get(stage, 1.0))) for stage, width in widths.items()
    }
