"""Wall time of the four finetune variants with ParallelRunner (2 workers) against SequentialRunner.

Writes a copy of the project's configuration into a work folder (the package is installed), with an
environment ``benchmark``: the tiny one with more slices per subject (``--slices``) and epochs
(``--epochs``) than its smoke-test defaults, so that training rather than start-up dominates a variant.
Makes the cohort and the pretrained model once (``kedro run --env benchmark`` of ``data`` then
``pretrain``), then times ``kedro run --env benchmark --pipelines finetune`` alternately with the
SequentialRunner and with ``--runner ParallelRunner --runner-params max_workers=2``, ``--repeats`` times
each, through the real CLI. Both runners' test metrics are checked to be equal.

Reported per runner (medians over the repeats): the command's wall time, and Kedro's own "Pipeline
execution completed in ..." (the runner's time: nodes, dataset I/O and, for ParallelRunner, starting its
workers; not the interpreter's start-up, imports, pipeline building and catalog creation, which are the
same for both). The ratios are sequential / parallel. The machine's load average before each run is
printed too: other processes on the same cores distort both times.

Usage::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/parallel_runner.py --repeats 3
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tlkedro.variants import deep_merge

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
ENV = "benchmark"
VARIANTS = ("scratch", "full", "linear_probe", "freeze_layer3_1")
RUNNERS = {
    "sequential": [],
    "parallel": ["--runner", "ParallelRunner", "--runner-params", "max_workers=2"],
}
_EXECUTION = re.compile(r"Pipeline execution completed\s+successfully in ([0-9.]+) sec")


def kedro_process(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``kedro *args`` in ``project``, its output (stdout and stderr) in a pipe."""
    return subprocess.Popen(
        [KEDRO, *args],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    """Wait for a ``kedro_process``; its log, or an error with the end of it."""
    log = process.communicate()[0]
    if process.returncode:
        raise RuntimeError(f"{' '.join(process.args)} failed:\n{log[-4000:]}")
    return log


def kedro(project: Path, *args: str) -> tuple[float, str]:
    """Run ``kedro *args`` in ``project``; its wall time and its log."""
    start = time.perf_counter()
    log = finish(kedro_process(project, *args))
    return time.perf_counter() - start, log


def make_project(root: Path, parameters: dict) -> Path:
    """A project folder with the repository's configuration and an environment ``benchmark``.

    ``benchmark`` is the tiny environment with ``parameters`` merged into it (an environment of its own,
    since Kedro layers one environment over ``base``, and lists cannot be given with ``--params``).
    """
    project = root / "project"
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    tiny = yaml.safe_load((PROJECT / "conf" / "tiny" / "parameters.yml").read_text())
    (project / "conf" / ENV).mkdir()
    (project / "conf" / ENV / "parameters.yml").write_text(
        yaml.safe_dump(deep_merge(tiny, parameters))
    )
    shutil.copy(PROJECT / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()  # Kedro insists on the source folder; the package itself is installed
    return project


def finetune_test_metrics(project: Path) -> dict[str, dict]:
    folder = project / "data" / "07_model_output" / "finetune"
    return {v: json.loads((folder / v / "metrics_test.json").read_text()) for v in VARIANTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per runner")
    parser.add_argument("--epochs", type=int, default=3, help="finetune.trainer.max_epochs")
    parser.add_argument("--slices", type=int, default=8, help="central axial slices per subject")
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temp dir)")
    args = parser.parse_args()

    parameters = {
        "preprocessing": {"slices": {"selection": "k_central", "k": args.slices}},
        "finetune": {
            "trainer": {"max_epochs": args.epochs, "early_stopping_patience": args.epochs}
        },
    }
    common = ["run", "--env", ENV]
    with tempfile.TemporaryDirectory(prefix="tlkedro-bench-") as temporary:
        project = make_project(args.workdir or Path(temporary), parameters)
        for pipeline in ("data", "pretrain"):
            seconds, _ = kedro(project, *common, "--pipelines", pipeline)
            print(f"prepared {pipeline} in {seconds:.1f} s")

        walls: dict[str, list[float]] = {name: [] for name in RUNNERS}
        executions: dict[str, list[float]] = {name: [] for name in RUNNERS}
        metrics: dict[str, dict] = {}
        print(f"{'runner':<11} {'load':>5} {'wall s':>7} {'execution s':>12}")
        for repeat in range(args.repeats):
            # Alternate which runner goes first, so that a drift in the machine's load affects both.
            order = list(RUNNERS) if repeat % 2 == 0 else list(reversed(RUNNERS))
            for name in order:
                load = os.getloadavg()[0]
                seconds, log = kedro(project, *common, "--pipelines", "finetune", *RUNNERS[name])
                execution = float(_EXECUTION.search(log).group(1))
                walls[name].append(seconds)
                executions[name].append(execution)
                metrics[name] = finetune_test_metrics(project)
                print(f"{name:<11} {load:>5.2f} {seconds:>7.1f} {execution:>12.1f}")

    if metrics["parallel"] != metrics["sequential"]:
        raise SystemExit("the runners' test metrics differ")
    wall = {name: statistics.median(times) for name, times in walls.items()}
    execution = {name: statistics.median(times) for name, times in executions.items()}
    print(
        f"\n{len(VARIANTS)} finetune variants, {args.epochs} epochs, {args.slices} slices/subject, "
        f"{os.cpu_count()} CPUs; test metrics equal between the runners"
    )
    print(
        f"median wall      sequential {wall['sequential']:.1f} s, parallel {wall['parallel']:.1f} s, "
        f"ratio {wall['sequential'] / wall['parallel']:.2f}x"
    )
    print(
        f"median execution sequential {execution['sequential']:.1f} s, parallel "
        f"{execution['parallel']:.1f} s, ratio {execution['sequential'] / execution['parallel']:.2f}x"
    )


if __name__ == "__main__":
    main()
