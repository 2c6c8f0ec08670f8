"""What a run needs to be reproduced: package versions, git revision, interpreter and platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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
