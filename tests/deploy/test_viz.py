"""`make viz ENV=<env>` shows the pipelines that `kedro run --env <env>` runs."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Prints the namespaces of every registered pipeline, as kedro-viz loads it with the given flags or as
# a `kedro run` session builds it.
_NAMESPACES = """
import json, sys
from pathlib import Path
from kedro.framework.startup import bootstrap_project
mode, env, include_hooks = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
project = Path.cwd()
if mode == "viz":
    from kedro_viz.integrations.kedro.data_loader import load_data
    _, pipelines, *_ = load_data(project, env=env, include_hooks=include_hooks, package_name="tlkedro")
else:
    from kedro.framework.session import KedroSession
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        session.load_context()
        from kedro.framework.project import pipelines
print(json.dumps({name: sorted({n.namespace for n in p.nodes if n.namespace}) for name, p in pipelines.items()}))
"""


def _viz_command(env: str) -> list[str]:
    result = subprocess.run(
        ["make", "-n", "viz", f"ENV={env}", "VENV=/venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if "kedro viz run" in line)
    return shlex.split(line)


def test_make_viz_passes_the_environment_and_the_hooks():
    command = _viz_command("tiny")
    assert command[:3] == ["/venv/bin/kedro", "viz", "run"]
    assert command[command.index("--env") + 1] == "tiny"
    assert "--include-hooks" in command
    assert _viz_command("base")[_viz_command("base").index("--env") + 1] == "base"


def _namespaces(mode: str, env: str, include_hooks: bool) -> dict[str, list[str]]:
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [sys.executable, "-c", _NAMESPACES, mode, env, "1" if include_hooks else "0"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_kedro_viz_with_the_makefiles_flags_draws_the_environments_variants():
    command = _viz_command("tiny")
    env = command[command.index("--env") + 1]

    drawn = _namespaces("viz", env, "--include-hooks" in command)

    assert drawn == _namespaces("run", "tiny", True)
    assert drawn != _namespaces("viz", env, False)  # what the flag fixes: base's variants
