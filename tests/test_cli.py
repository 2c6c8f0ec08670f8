"""The project's ``kedro run``: a configuration error is one message naming the key, with the traceback
behind ``--verbose``; bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from kedro.framework.cli.project import run as kedro_run

from tests.test_end_to_end import copy_project
from tlkedro.cli import _RunCommand, run
from tlkedro.errors import ConfigurationError, MissingFileError
from tlkedro.plan import PlanError
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.registry import UnknownComponentError
from tlkedro.tl.weights import load_source_weights

KEDRO = str(Path(sys.executable).with_name("kedro"))


def _command(error: Exception) -> click.Command:
    def fail() -> None:
        raise error

    return _RunCommand(name="run", callback=fail, params=[run.params[-1]])


def test_the_run_command_prints_a_configuration_error_as_its_message_alone():
    error = PlanError("Invalid parameters for variant 'finetune.x':\n  finetune.optimizer.lr: > 0")
    result = CliRunner().invoke(_command(error), [])
    assert result.exit_code == 1
    assert result.output.splitlines()[:3] == [
        "Error: PlanError: Invalid parameters for variant 'finetune.x':",
        "  finetune.optimizer.lr: > 0",
        "Run `kedro run --verbose ...` for the full traceback.",
    ]
    verbose = CliRunner().invoke(_command(error), ["--verbose"])
    # Raised as it is, traceback and all.
    assert verbose.exit_code == 1 and verbose.exception is error
    bug = RuntimeError("a bug")
    assert CliRunner().invoke(_command(bug), []).exception is bug


def test_the_project_run_has_every_option_of_kedros_and_verbose():
    assert [p.name for p in run.params] == [*(p.name for p in kedro_run.params), "verbose"]
    assert run.callback is kedro_run.callback


def test_unknown_names_and_missing_weights_files_are_configuration_errors(tmp_path):
    with pytest.raises(UnknownComponentError, match="resnet19") as unknown:
        create_architecture("resnet19")
    assert isinstance(unknown.value, ConfigurationError)
    torch.manual_seed(0)
    model = create_architecture("resnet18", in_channels=1, img_size=[32, 32])
    with pytest.raises(MissingFileError, match=r"missing\.pt' does not exist .*init_from\.file"):
        load_source_weights(model, tmp_path / "missing.pt", "timm")
    assert issubclass(MissingFileError, FileNotFoundError)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's configuration (the package is installed), no data."""
    return copy_project(tmp_path_factory.mktemp("project"))


def _run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    return subprocess.run(
        [KEDRO, "run", "--env", "tiny", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _short_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) < 15, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


@pytest.mark.slow
def test_a_bad_parameter_stops_kedro_run_with_one_message_and_verbose_shows_the_traceback(project):
    stderr = _short_error(_run(project, "--params", "finetune.optimizer.lr=-1"))
    assert "finetune.optimizer.lr: Input should be greater than 0" in stderr
    assert "--verbose" in stderr
    verbose = _run(project, "--verbose", "--params", "finetune.optimizer.lr=-1")
    assert verbose.returncode != 0
    assert "Traceback" in verbose.stderr and "PlanError" in verbose.stderr


@pytest.mark.slow
def test_an_unknown_name_and_a_missing_data_folder_name_the_key_and_the_fix(project):
    stderr = _short_error(_run(project, "--params", "finetune.strategy.name=fulll"))
    assert "finetune.strategy" in stderr and "full" in stderr
    stderr = _short_error(
        _run(project, "--pipelines", "ingestion", "--params", "ingestion.source=raw")
    )
    assert "raw_images" in stderr and "does not exist" in stderr
    assert "Fix: check that dataset's entry in conf/<env>/catalog*.yml" in stderr
