"""Expand a pipeline's ``variants`` and ``sweeps`` parameters into named configuration overrides.

A pipeline's parameter section (``pretrain:``, ``finetune:``) holds a base configuration plus

```yaml
variants:                 # named overrides of the base; `name: null` removes a variant (e.g. in an env)
  linear_probe: {strategy: {name: linear_probe}}
sweeps:                   # generated variants, named <sweep>_<index>
  lr:
    kind: grid            # every combination
    overrides: {strategy: {name: full}}       # shared by every point (optional)
    grid: {optimizer.lr: [1.0e-3, 1.0e-4], seed: [1, 2, 3]}
  lr_random:
    kind: random          # `count` points drawn with `seed`
    count: 4
    seed: 0
    space:
      optimizer.lr: {log_uniform: [1.0e-5, 1.0e-2]}
      trainer.batch_size: {choice: [16, 32]}
  tuned:
    kind: optuna          # one variant, `tuned`: the best trial of an Optuna study (tlkedro.tl.tuning)
    space: {optimizer.lr: {log_uniform: [1.0e-5, 1.0e-2]}}
    study: {n_trials: 20, metric: val/loss, sampler: {name: tpe}, pruner: {name: median}}
```

Keys in ``grid``/``space`` are dotted paths into the configuration. This module knows nothing of Kedro:
the pipeline registry turns each variant into a namespaced copy of the pipeline's template.
"""

from __future__ import annotations

import copy
import itertools
import random
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tlkedro.tl.tuning import Distribution, StudySpec

PIPELINE_KEYS = ("variants", "sweeps")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Sweep(BaseModel):
    """A generated family of variants; an ``optuna`` sweep is one variant, found by a study."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["grid", "random", "optuna"]
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(default_factory=dict)
    count: int = Field(default=0, ge=0)
    seed: int = 0
    study: StudySpec | None = None

    @model_validator(mode="after")
    def _matches_kind(self) -> Sweep:
        if self.kind == "grid" and (not self.grid or self.space or self.study):
            raise ValueError("a grid sweep needs `grid` (and no `space` or `study`)")
        if self.kind == "random" and (not self.space or self.grid or self.count < 1 or self.study):
            raise ValueError(
                "a random sweep needs `space` and `count` >= 1 (and no `grid` or `study`)"
            )
        if self.kind == "optuna" and (
            not self.space or self.study is None or self.grid or self.count
        ):
            raise ValueError(
                "an optuna sweep needs `space` and `study` (with `n_trials`), and no `grid` or "
                "`count` (the study's `n_trials` and `sampler.kwargs.seed` take their place)"
            )
        return self

    def named_points(self, sweep_name: str) -> dict[str, dict[str, Any]]:
        """``{variant name: point}``: ``<sweep>_<index>`` per point; ``optuna``: ``{<sweep>: {}}``."""
        if self.kind == "optuna":
            return {sweep_name: {}}
        points = self.points()
        width = len(str(len(points) - 1))
        return {f"{sweep_name}_{index:0{width}d}": point for index, point in enumerate(points)}

    def points(self) -> list[dict[str, Any]]:
        """The dotted-key assignments of each grid or random point, in a stable order."""
        if self.kind == "grid":
            keys = list(self.grid)
            return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]
        rng = random.Random(self.seed)
        return [
            {key: dist.sample(rng) for key, dist in self.space.items()} for _ in range(self.count)
        ]


def set_dotted(config: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``config["a"]["b"] = value`` for ``dotted_key="a.b"``, creating levels as needed."""
    *parents, leaf = dotted_key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted_key!r}: {part!r} is not a mapping")
    node[leaf] = value


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` applied recursively (mappings merge, other values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def base_config(section: Mapping[str, Any]) -> dict[str, Any]:
    """The section without its ``variants``/``sweeps`` keys: what every variant inherits."""
    return {k: copy.deepcopy(v) for k, v in section.items() if k not in PIPELINE_KEYS}


def sweep_overrides(sweep: Sweep, point: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides of one sweep point: the sweep's shared overrides plus the point's values."""
    overrides = copy.deepcopy(sweep.overrides)
    for dotted_key, value in point.items():
        set_dotted(overrides, dotted_key, value)
    return overrides


def _sweeps(section: Mapping[str, Any], pipeline: str) -> dict[str, Sweep]:
    sweeps = {}
    for sweep_name, spec in (section.get("sweeps") or {}).items():
        try:
            sweeps[sweep_name] = Sweep.model_validate(spec)
        except ValueError as error:
            raise ValueError(f"{pipeline}.sweeps.{sweep_name}: {error}") from None
    return sweeps


def optuna_sweeps(section: Mapping[str, Any], pipeline: str) -> dict[str, Sweep]:
    """The ``kind: optuna`` sweeps of a section by name, which is also their variant's name."""
    return {name: s for name, s in _sweeps(section, pipeline).items() if s.kind == "optuna"}


def expand_variants(section: Mapping[str, Any], pipeline: str) -> dict[str, dict[str, Any]]:
    """Map every variant name of a pipeline's parameter section to its overrides of the base.

    Args:
        section: The pipeline's parameters (e.g. the ``finetune:`` mapping).
        pipeline: The section's name, for error messages.

    Returns:
        ``{name: overrides}``: declared variants first, then sweep points named ``<sweep>_<index>``; an
        ``optuna`` sweep gives one variant named ``<sweep>`` with the sweep's shared overrides (its
        study picks the rest when it runs).

    Raises:
        ValueError: For a variant name that cannot be a namespace, a name clash, or a malformed sweep.
    """
    variants: dict[str, dict[str, Any]] = {}
    for name, overrides in (section.get("variants") or {}).items():
        if overrides is None:  # `linear_probe: null` in an environment removes a base variant
            continue
        variants[name] = dict(overrides)
    for sweep_name, sweep in _sweeps(section, pipeline).items():
        for name, point in sweep.named_points(sweep_name).items():
            if name in variants:
                raise ValueError(
                    f"{pipeline}: sweep {sweep_name!r} generates {name!r}, which is already a variant"
                )
            variants[name] = sweep_overrides(sweep, point)
    for name in variants:
        if not _NAME.match(name):
            raise ValueError(
                f"{pipeline}: variant name {name!r} must be a Python identifier "
                "(letters, digits, underscores), since it becomes a Kedro namespace"
            )
    if not variants:
        raise ValueError(f"{pipeline}: declare at least one entry under `{pipeline}.variants`")
    return variants
