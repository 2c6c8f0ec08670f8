"""Wall time of the four finetune variants with ParallelRunner (2 workers) against SequentialRunner.

Writes a copy of the project's configuration into a work folder (the package is installed), with an
environment ``benchmark``: the tiny one with more slices per subject (``--slices``) and epochs
(``--epochs``) than its smoke-test defaults, so that training rather than start-up dominates a variant.
Makes the cohort and the pretrained model once (``kedro run --env benchmark`` of ``data`` then
``pretrain``), then times ``kedro run --env benchmark --pipelines finetune``, ``--repeats`` times each,
in alternating order, through the real CLI:

- ``sequential``: the SequentialRunner, torch with its default threads (one per core);
- ``sequential-passive``: the same with ``OMP_WAIT_POLICY=passive`` (waiting OpenMP threads sleep
  instead of spinning, which matters on a machine whose cores other processes use);
- ``sequential-1t``: the SequentialRunner with ``OMP_NUM_THREADS=1``, each training single-threaded as
  in the workers, which isolates the gain of running side by side;
- ``parallel``: ``--runner ParallelRunner --runner-params max_workers=2`` (one thread per worker).

ParallelRunner's test metrics are checked to equal those of ``sequential-1t``; their largest difference
from those of ``sequential`` is printed (sums split over another number of threads round differently,
and on a few test subjects a rank-based metric such as AUPRC can move by a step).

Reported per run and as medians: the command's wall time; Kedro's own "Pipeline execution completed in
..." (the runner's time: nodes, dataset I/O and, for ParallelRunner, starting its workers; not the
interpreter's start-up, imports, pipeline building and catalog creation, the same for all); and the CPU
time of the command's process tree. The ratios are sequential / parallel. The machine's load average
before each run is printed too: other processes on the same cores distort wall times, and multi-threaded
torch suffers most (an OpenMP thread waits, spinning, for a sibling that another process preempted).

Usage::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/parallel_runner.py --repeats 3
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import json
import os
import re
import resource
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
# name: (options of kedro run, environment)
RUNNERS = {
    "sequential": ([], {}),
    # GNU OpenMP's threads spin while they wait for each other; on a busy machine they wait for
    # preempted siblings for whole time slices. Passive waiting sleeps instead.
    "sequential-passive": ([], {"OMP_WAIT_POLICY": "passive"}),
    # Each training single-threaded, as in the workers: the speed-up of running side by side alone.
    "sequential-1t": ([], {"OMP_NUM_THREADS": "1"}),
    "parallel": (["--runner", "ParallelRunner", "--runner-params", "max_workers=2"], {}),
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


def kedro(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``kedro *args`` in ``project`` with ``env`` added to the environment; wall time and log."""
    start = time.perf_counter()
    log = finish(kedro_process(project, *args, env=env))
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
    parser.add_argument(
        "--baselines",
        nargs="+",
        choices=[name for name in RUNNERS if name != "parallel"],
        default=[name for name in RUNNERS if name != "parallel"],
        help="sequential runs to compare ParallelRunner with (default: all three)",
    )
    args = parser.parse_args()
    runners = {name: RUNNERS[name] for name in [*args.baselines, "parallel"]}

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

        runs: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
        metrics: dict[str, dict] = {}
        print(f"{'runner':<18} {'load':>5} {'wall s':>7} {'execution s':>12} {'CPU s':>7}")
        for repeat in range(args.repeats):
            # Alternate the order, so that a drift in the machine's load affects every runner alike.
            order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
            for name in order:
                options, env = runners[name]
                load = os.getloadavg()[0]
                cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
                seconds, log = kedro(project, *common, "--pipelines", "finetune", *options, env=env)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                run = {
                    "wall": seconds,
                    "execution": float(_EXECUTION.search(log).group(1)),
                    # The kedro process and its workers (waited for by it, so counted in its children).
                    "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
                }
                runs[name].append(run)
                metrics[name] = finetune_test_metrics(project)
                print(
                    f"{name:<18} {load:>5.2f} {run['wall']:>7.1f} {run['execution']:>12.1f} "
                    f"{run['cpu']:>7.1f}"
                )

    # Sums split over another number of threads round differently: equal only with equal threads.
    if "sequential-1t" in metrics and metrics["parallel"] != metrics["sequential-1t"]:
        raise SystemExit(
            "the test metrics of ParallelRunner and a one-thread sequential run differ"
        )
    largest = max(
        abs(value - metrics["parallel"][variant][key])
        for name in args.baselines
        for variant, values in metrics[name].items()
        for key, value in values.items()
    )
    median = {
        name: {
            key: statistics.median(run[key] for run in rs) for key in ("wall", "execution", "cpu")
        }
        for name, rs in runs.items()
    }
    checked = (
        "ParallelRunner's test metrics equal those of the one-thread sequential run; "
        if "sequential-1t" in metrics
        else ""
    )
    print(
        f"\n{len(VARIANTS)} finetune variants, {args.epochs} epochs, {args.slices} slices/subject, "
        f"{os.cpu_count()} CPUs, medians of {args.repeats} runs; {checked}largest difference of "
        f"ParallelRunner's test metrics from the sequential runs' {largest:.2g}"
    )
    for baseline in args.baselines:
        for key in ("wall", "execution"):
            print(
                f"{key:<9} {baseline:<18} {median[baseline][key]:6.1f} s / parallel "
                f"{median['parallel'][key]:6.1f} s = {median[baseline][key] / median['parallel'][key]:.2f}x"
            )
    print("CPU s: " + ", ".join(f"{name} {values['cpu']:.1f}" for name, values in median.items()))


if __name__ == "__main__":
    main()
