"""``kedro slurm`` against a real Slurm controller on localhost, running the toy project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import run_kedro

pytestmark = pytest.mark.slow
STATUS_ROW = re.compile(
    r"^(\S+) +(\d+|-) +(SKIPPED|PENDING|RUNNING|COMPLETED|FAILED|CANCELLED) *(.*)$", re.MULTILINE
)


def _submit(project: Path, cluster, *args: str) -> Path:
    result = run_kedro(project, "slurm", "submit", *args, env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return _folder(result.stdout)


def _folder(stdout: str) -> Path:
    return Path(re.search(r"^Submission folder: (.+)$", stdout, re.MULTILINE).group(1))


def _wait(project: Path, cluster, *folder: str) -> tuple[int, dict[str, list[str]]]:
    result = run_kedro(
        project, "slurm", "status", *folder, "--wait", "--interval", "0.5", env=cluster.env
    )
    # Kedro's own log lines share stdout with the table: keep the rows, `group job state detail`.
    rows = {m[1]: [m[2], m[3], m[4]] for m in STATUS_ROW.finditer(result.stdout)}
    return result.returncode, rows


def _read(project: Path, relative: str) -> dict:
    return json.loads((project / "data" / relative).read_text())


@pytest.fixture(scope="module")
def finished(slurm_cluster, toy_template, tmp_path_factory):
    """The toy project after a whole submission ran: its folder, statuses and outputs."""
    project = Path(shutil.copytree(toy_template, tmp_path_factory.mktemp("run") / "toy"))
    folder = _submit(project, slurm_cluster)
    code, rows = _wait(project, slurm_cluster, str(folder))
    outputs = {
        name: _read(project, name)
        for name in ("raw.json", "small/score.json", "large/score.json", "report.json")
    }
    return project, folder, code, rows, outputs


def test_every_group_completes_as_a_slurm_job(finished):
    _, folder, code, rows, _ = finished

    assert code == 0
    assert {group: row[1] for group, row in rows.items()} == {
        "make_data": "COMPLETED",
        "train.large": "COMPLETED",
        "train.small": "COMPLETED",
        "compare": "COMPLETED",
    }
    assert sorted(p.suffix for p in folder.iterdir()) == sorted(
        [".json"] + [".sbatch", ".log", ".exit"] * 4
    )


def test_jobs_ran_in_the_pipelines_dependency_order(finished):
    _, _, _, _, outputs = finished
    raw, small, large, report = outputs.values()

    # Each variant read the upstream job's output, and compare read both variants' outputs.
    assert small["raw_t"] == large["raw_t"] == raw["t"]
    assert report["inputs_t"] == [small["t"], large["t"]]
    assert raw["t"] < min(small["t"], large["t"]) and max(small["t"], large["t"]) < report["t"]
    assert report["best"] == 12


def test_resubmitting_submits_only_groups_that_are_not_fresh_and_their_dependents(
    finished, slurm_cluster
):
    project, *_ = finished
    (project / "data" / "small" / "score.json").unlink()

    _submit(project, slurm_cluster)
    code, rows = _wait(project, slurm_cluster)  # no folder: the latest submission

    assert code == 0
    assert {group: row[1] for group, row in rows.items()} == {
        "make_data": "SKIPPED",
        "train.large": "SKIPPED",
        "train.small": "COMPLETED",
        "compare": "COMPLETED",  # it reads the re-made score (tlkedro.freshness)
    }
    assert _read(project, "small/score.json")["score"] == 6


def test_a_failed_job_names_its_log_and_its_dependents_are_cancelled(toy_project, slurm_cluster):
    folder = _submit(toy_project, slurm_cluster, "--params", "train.large.fail=true")

    code, rows = _wait(toy_project, slurm_cluster, str(folder))

    assert code == 1
    state = {group: row[1] for group, row in rows.items()}
    assert state == {
        "make_data": "COMPLETED",
        "train.large": "FAILED",
        "train.small": "COMPLETED",
        "compare": "CANCELLED",
    }
    log = Path(re.search(r"log: (\S+)", rows["train.large"][2]).group(1))
    assert "asked to fail" in log.read_text()
    assert rows["compare"][2] == "dependency train.large did not succeed"
    # Slurm itself removed the dependent job (--kill-on-invalid-dep), it did not wait forever.
    compare_id = rows["compare"][0]
    queue = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--jobs={compare_id}", "--format=%T|%r"],
        env=slurm_cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert queue.stdout.strip() == "CANCELLED|DependencyNeverSatisfied"


def test_a_project_whose_path_has_spaces_and_quotes_runs(slurm_cluster, toy_template, tmp_path):
    project = Path(shutil.copytree(toy_template, tmp_path / "my lab's #1 project" / "toy"))

    folder = _submit(project, slurm_cluster)
    code, rows = _wait(project, slurm_cluster, str(folder))

    assert code == 0
    assert {row[1] for row in rows.values()} == {"COMPLETED"}
    assert _read(project, "report.json")["best"] == 12
    assert (folder / "01-make_data.log").is_file()  # sbatch took the quoted --output as one path


def test_a_refused_submission_is_reported_failed_with_a_non_zero_exit(toy_project, slurm_cluster):
    deploy = toy_project / "conf" / "local" / "deploy.yml"
    deploy.parent.mkdir(parents=True, exist_ok=True)
    deploy.write_text('resources:\n  groups:\n    "train.*":\n      partition: no-such-partition\n')

    result = run_kedro(toy_project, "slurm", "submit", env=slurm_cluster.env)

    assert result.returncode == 1
    assert re.search(
        r"^train\.\w+: FAILED \(not submitted\): sbatch refused it: ", result.stdout, re.M
    )
    assert "sbatch refused group 'train." in result.stderr
    code, rows = _wait(toy_project, slurm_cluster, str(_folder(result.stdout)))
    assert code == 1
    states = {group: row[1] for group, row in rows.items()}
    assert "SKIPPED" not in states.values()
    assert states["make_data"] == "COMPLETED"
    assert sorted(states[g] for g in ("train.small", "train.large", "compare")) == [
        "CANCELLED",
        "CANCELLED",
        "FAILED",
    ]
