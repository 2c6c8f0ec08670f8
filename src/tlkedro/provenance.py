"""What a run needs to be reproduced: package versions, git revision, interpreter and platform; and the
canonical digest that fingerprints a result by everything it was made from (no Kedro)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel

TRACKED_PACKAGES = (
    "tlkedro",
    "kedro",
    "kedro-datasets",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "monai",
    "timm",
    "nibabel",
    "numpy",
    "pandas",
    "scikit-learn",
    "pydantic",
)


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed version of each package ("not installed" where absent)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(path: Path | None = None) -> str:
    """``git describe``-style revision of the working tree, ``-dirty`` when it has local changes."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=path or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return result.stdout.strip()


def run_record() -> dict[str, object]:
    """Everything besides config and seed that decides a run's result."""
    return {
        "packages": package_versions(),
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, in a form that does not depend on the process that built it.

    Pydantic models become their JSON dump, dataclasses their fields, mappings sorted dictionaries,
    sequences and sets lists; any other object its ``repr``, which for an object without a stable one
    (``<... at 0x7f...>``) changes from run to run, so a fingerprint over it errs on the side of stale.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return value.as_posix()
    return repr(value)


def fingerprint(payload: Any) -> str:
    """The digest of ``payload`` (made :func:`jsonable`): 16 hex digits of the SHA-256 of its sorted JSON.

    The scheme of the normalised scans' fingerprints (``SpatialNormalisationConfig.fingerprint``), used
    for whole node results by :mod:`tlkedro.freshness`.
    """
    text = json.dumps(jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
