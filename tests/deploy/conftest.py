"""Fixtures of the deployment tests: the toy Kedro project, its pipeline, a real Slurm cluster."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from kedro.pipeline import Pipeline

from tests.datasets.s3_server import s3_bucket, s3_endpoint  # noqa: F401
from tests.deploy.slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed
from tests.deploy.toy_project import PACKAGE, write_project

KEDRO = str(Path(sys.executable).with_name("kedro"))


@pytest.fixture(scope="session")
def toy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy project, written once; tests that write into a project use ``toy_project``."""
    return write_project(tmp_path_factory.mktemp("toy-template"))


@pytest.fixture
def toy_project(toy_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the toy project: its own data and logs, so job outputs never mix."""
    return Path(shutil.copytree(toy_template, tmp_path / "toy"))


@pytest.fixture(scope="session")
def toy_pipeline(toy_template: Path) -> Pipeline:
    """The toy project's ``__default__`` pipeline, imported without configuring Kedro."""
    sys.path.insert(0, str(toy_template / "src"))
    try:
        registry = importlib.import_module(f"{PACKAGE}.pipeline_registry")
        with warnings.catch_warnings():
            # Kedro discourages dots in dataset names, yet a reporting node reads variants' outputs.
            warnings.filterwarnings("ignore", "One or more dataset names contain '.'")
            return registry.register_pipelines()["__default__"]
    finally:
        sys.path.remove(str(toy_template / "src"))


def run_kedro(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real ``kedro`` CLI in a project, as a user would.

    Args:
        project: The project's root.
        *args: Arguments after ``kedro``.
        env: The environment; the current one when not given.
        timeout: Seconds before the command is killed.

    Returns:
        The finished process, whatever its exit status.
    """
    environment = {**(env or os.environ), "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    return subprocess.run(
        [KEDRO, *args],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node Slurm cluster on localhost, for the whole session; skipped only where Slurm
    cannot be installed."""
    try:
        ensure_installed()
    except SlurmUnavailable as reason:
        pytest.skip(f"no Slurm: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
