"""Slurm scripts, submission and states without a cluster; test_slurm_cluster.py uses a real one."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tests import freshness_toy as toy_freshness
from tlkedro.deploy.config import Resources, SlurmConfig
from tlkedro.deploy.grouping import RunOptions, group_pipeline, needs_run
from tlkedro.deploy.slurm import (
    Job,
    SlurmError,
    State,
    Submission,
    cancel,
    group_states,
    latest_submission,
    plan_jobs,
    query_queue,
    render_script,
    sbatch_quote,
    submit,
)


class FakeSlurm:
    """Answers sbatch, squeue and scancel like Slurm does, and records the calls."""

    def __init__(self, queue: str = "", refuse: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.queue = queue
        self.refuse = refuse

    def __call__(self, args):
        self.calls.append(list(args))
        if args[0] == "sbatch":
            if self.refuse and self.refuse in args[-1]:
                return subprocess.CompletedProcess(args, 1, "", "error: invalid partition")
            job_id = 100 + sum(c[0] == "sbatch" for c in self.calls)
            return subprocess.CompletedProcess(args, 0, f"{job_id};cluster\n", "")
        if args[0] == "squeue":
            return subprocess.CompletedProcess(args, 0, self.queue, "")
        return subprocess.CompletedProcess(args, 0, "", "")


@pytest.fixture
def groups(toy_pipeline):
    return group_pipeline(toy_pipeline)


def _plan(groups, folder, to_submit=None, config=SlurmConfig()):
    return plan_jobs(
        groups,
        lambda name: Resources(),
        RunOptions(),
        config,
        folder=folder,
        project_path=Path("/project"),
        python="/venv/bin/python",
        to_submit={g.name for g in groups} if to_submit is None else to_submit,
    )


def test_the_script_asks_for_the_groups_resources_and_runs_its_namespace(groups, tmp_path):
    resources = Resources(
        cpus=4,
        memory="16G",
        gpus=2,
        time="1-00:00:00",
        partition="gpu",
        account="lab",
        sbatch_options=["--qos=short"],
    )
    variant = next(g for g in groups if g.name == "train.large")

    script = render_script(
        variant,
        resources,
        RunOptions(env="cluster", params="train.large.fail=true"),
        SlurmConfig(job_prefix="tl"),
        project_path=Path("/my project"),
        python="/venv/bin/python",
        log=tmp_path / "g.log",
        exit_file=tmp_path / "g.exit",
    )

    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        '#SBATCH --job-name="tl-train.large"',
        f'#SBATCH --output="{tmp_path / "g.log"}"',
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16384M",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --gres=gpu:2",
        '#SBATCH --partition="gpu"',
        '#SBATCH --account="lab"',
        "#SBATCH --qos=short",
    ]
    assert "  cd '/my project'\n" in script
    assert (
        "/venv/bin/python -m kedro run --env cluster --params train.large.fail=true "
        "--namespaces train.large"
    ) in script


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("/my project/logs/01-a.log", '"/my project/logs/01-a.log"'),
        ('/it\'s "x"/#1/a\\b', '"/it\'s \\"x\\"/\\#1/a\\\\b"'),
    ],
)
def test_sbatch_values_are_quoted_as_sbatch_parses_them(value, quoted):
    assert sbatch_quote(value) == quoted
    assert _parse_like_sbatch(quoted) == value


def _parse_like_sbatch(argument: str) -> str:
    """One argument of an #SBATCH line as Slurm's sbatch (src/sbatch/opt.c, _get_argument) reads it."""
    out, escape, quote = [], False, ""
    for char in argument:
        if escape:
            escape = False
        elif char == "\\":
            escape = True
            continue
        elif quote:
            if char == quote:
                quote = ""
                continue
        elif char in "\"'":
            quote = char
            continue
        elif char == "#":
            break
        out.append(char)
    assert not quote, "unmatched quote"
    return "".join(out)


def test_percent_signs_in_the_log_path_are_not_filename_patterns(groups, tmp_path):
    script = render_script(
        groups[0],
        Resources(),
        RunOptions(),
        SlurmConfig(),
        project_path=tmp_path,
        python="python",
        log=Path("/logs/100%/%j.log"),
        exit_file=tmp_path / "e",
    )
    assert '#SBATCH --output="/logs/100%%/%%j.log"' in script


def test_a_cpu_job_asks_for_no_gpu_partition_or_account(groups, tmp_path):
    script = render_script(
        groups[0],
        Resources(),
        RunOptions(),
        SlurmConfig(),
        project_path=tmp_path,
        python="python",
        log=tmp_path / "l",
        exit_file=tmp_path / "e",
    )

    assert "--gres" not in script and "--partition" not in script and "--account" not in script


def _fake_python(tmp_path: Path, exit_code: int) -> str:
    """A stand-in for the interpreter that records its arguments and exits with ``exit_code``."""
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/bash\necho "$@" > {shlex.quote(str(tmp_path))}/args\nexit {exit_code}\n'
    )
    python.chmod(0o755)
    return str(python)


@pytest.mark.parametrize(
    ("setup", "python_exit", "expected"),
    [
        ([], 0, "0"),
        ([], 3, "3"),
        (["false"], 0, "1"),
    ],
)
def test_the_script_records_its_exit_code(groups, tmp_path, setup, python_exit, expected):
    tmp_path = tmp_path / "my project's 100% #1"  # every path of the script is quoted
    tmp_path.mkdir()
    exit_file = tmp_path / "g.exit"
    script = tmp_path / "g.sbatch"
    script.write_text(
        render_script(
            groups[0],
            Resources(),
            RunOptions(),
            SlurmConfig(setup=setup),
            project_path=tmp_path,
            python=_fake_python(tmp_path, python_exit),
            log=tmp_path / "g.log",
            exit_file=exit_file,
        )
    )

    result = subprocess.run(["bash", str(script)], check=False)

    assert result.returncode == int(expected)
    assert exit_file.read_text().strip() == expected
    # A failing setup line stops the job before kedro runs.
    assert (tmp_path / "args").exists() == (setup == [])


def test_jobs_are_chained_by_afterok_on_the_ids_slurm_gave(groups, tmp_path):
    fake = FakeSlurm()

    submission = submit(_plan(groups, tmp_path / "sub"), tmp_path / "sub", run=fake)

    ids = {j.group: j.job_id for j in submission.jobs}
    sbatch = {call[-1]: call for call in fake.calls}
    compare = next(j for j in submission.jobs if j.group == "compare")
    assert "--kill-on-invalid-dep=yes" in sbatch[str(compare.script)]
    dependency = next(a for a in sbatch[str(compare.script)] if a.startswith("--dependency="))
    assert set(dependency.removeprefix("--dependency=afterok:").split(":")) == {
        ids["train.small"],
        ids["train.large"],
    }
    assert all(j.script.is_file() for j in submission.jobs)
    assert Submission.load(tmp_path / "sub") == submission


def test_groups_not_to_submit_are_recorded_but_not_waited_for(groups, tmp_path):
    fake = FakeSlurm()
    to_submit = {"train.small", "compare"}

    submission = submit(_plan(groups, tmp_path / "s", to_submit), tmp_path / "s", run=fake)

    assert [c[-1] for c in fake.calls] == [
        str(j.script) for j in submission.jobs if j.group in to_submit
    ]
    compare = next(j for j in submission.jobs if j.group == "compare")
    assert compare.dependencies == ["train.small"]
    assert next(j for j in submission.jobs if j.group == "make_data").job_id is None


@pytest.mark.filterwarnings("ignore:One or more dataset names contain")
def test_a_stale_group_and_its_dependents_are_planned_to_run_the_fresh_ones_skipped(tmp_path):
    # What `kedro slurm submit` does: submit the groups that are not fresh (tests/test_freshness.py).
    catalog = toy_freshness.toy_catalog(tmp_path / "data")
    toy_freshness.run(tmp_path / "data", catalog)
    groups = group_pipeline(toy_freshness.toy_pipeline())
    changed = toy_freshness.statuses(
        tmp_path / "data", toy_freshness.toy_catalog(tmp_path / "data", lr_a=0.2)
    )

    planned = _plan(groups, tmp_path / "s", {g.name for g in groups if needs_run(g, changed)})
    fake = FakeSlurm()
    submission = submit(planned, tmp_path / "s", run=fake)

    assert {j.group: j.skipped for j in submission.jobs} == {
        "prepare": True,
        "train.a": False,
        "train.b": True,
        "report": False,
    }
    assert [c[-1] for c in fake.calls] == [str(j.script) for j in submission.jobs if not j.skipped]
    assert next(j for j in submission.jobs if j.group == "report").dependencies == ["train.a"]
    states = {s.job.group: s.state for s in group_states(submission, {})}
    assert states["train.b"] is State.SKIPPED


def test_a_refused_job_stops_the_submission_and_keeps_the_queued_ones(groups, tmp_path):
    fake = FakeSlurm(refuse="02-")

    submission = submit(_plan(groups, tmp_path / "s"), tmp_path / "s", run=fake)

    saved = Submission.load(tmp_path / "s")
    assert saved == submission
    assert [(j.job_id is not None, j.refused) for j in saved.jobs] == [
        (True, None),
        (False, "error: invalid partition"),
        (False, None),
        (False, None),
    ]
    assert saved.refused == saved.jobs[1]
    statuses = group_states(saved, {saved.jobs[0].job_id: ("RUNNING", "None")})
    assert [s.state for s in statuses] == [
        State.RUNNING,
        State.FAILED,
        State.CANCELLED,
        State.CANCELLED,
    ]
    assert statuses[1].detail == "not submitted: sbatch refused it: error: invalid partition"
    assert statuses[2].detail == "not submitted: sbatch refused an earlier job"


def _job(tmp_path: Path, group: str, job_id: str | None, dependencies=()) -> Job:
    return Job(
        group=group,
        job_id=job_id,
        skipped=job_id is None,
        dependencies=list(dependencies),
        script=tmp_path / f"{group}.sbatch",
        log=tmp_path / f"{group}.log",
        exit_file=tmp_path / f"{group}.exit",
    )


def test_states_combine_exit_files_the_queue_and_dependencies(tmp_path):
    jobs = [
        _job(tmp_path, "done", "1"),
        _job(tmp_path, "broke", "2"),
        _job(tmp_path, "queued", "3"),
        _job(tmp_path, "busy", "4"),
        _job(tmp_path, "after_broke", "5", ["broke"]),
        _job(tmp_path, "killed", "6"),
        _job(tmp_path, "vanished", "7"),
        _job(tmp_path, "had_outputs", None),
    ]
    (tmp_path / "done.exit").write_text("0\n")
    (tmp_path / "broke.exit").write_text("1\n")
    (tmp_path / "killed.log").write_text("slurmstepd: error: *** JOB 6 CANCELLED DUE TO TIME LIMIT")
    queue = {
        "3": ("PENDING", "Dependency"),
        "4": ("RUNNING", "None"),
        "5": ("CANCELLED", "DependencyNeverSatisfied"),
        "6": ("TIMEOUT", "TimeLimit"),
    }

    statuses = group_states(Submission(folder=tmp_path, created="now", jobs=jobs), queue)

    got = {s.job.group: (s.state, s.detail) for s in statuses}
    assert got["done"] == (State.COMPLETED, "")
    assert got["broke"] == (State.FAILED, f"exit code 1, log: {tmp_path / 'broke.log'}")
    assert got["queued"] == (State.PENDING, "Dependency")
    assert got["busy"][0] == State.RUNNING
    assert got["after_broke"] == (State.CANCELLED, "dependency broke did not succeed")
    assert got["killed"][0] == State.FAILED
    assert "Slurm state TIMEOUT without an exit code" in got["killed"][1]
    assert str(tmp_path / "killed.log") in got["killed"][1]
    assert got["vanished"] == (State.CANCELLED, "never started (not in queue)")
    assert got["had_outputs"][0] == State.SKIPPED
    assert [s.finished for s in statuses] == [True, True, False, False, True, True, True, True]


def test_the_queue_is_read_from_squeue_including_ended_jobs():
    fake = FakeSlurm(queue="3|PENDING|Dependency\n4|FAILED|NonZeroExitCode\n")

    assert query_queue(["3", "4"], run=fake) == {
        "3": ("PENDING", "Dependency"),
        "4": ("FAILED", "NonZeroExitCode"),
    }
    assert "--states=all" in fake.calls[0] and "--jobs=3,4" in fake.calls[0]


def test_jobs_the_controller_forgot_are_not_an_error_but_other_failures_are():
    def forgot(args):
        return subprocess.CompletedProcess(args, 1, "", "slurm_load_jobs error: Invalid job id")

    def down(args):
        return subprocess.CompletedProcess(args, 1, "", "Unable to contact slurm controller")

    assert query_queue(["9"], run=forgot) == {}
    with pytest.raises(SlurmError, match="squeue failed: Unable to contact"):
        query_queue(["9"], run=down)


def test_cancel_stops_only_the_jobs_that_have_not_ended(tmp_path):
    jobs = [_job(tmp_path, "done", "1"), _job(tmp_path, "queued", "2"), _job(tmp_path, "busy", "3")]
    (tmp_path / "done.exit").write_text("0\n")
    fake = FakeSlurm(queue="2|PENDING|Priority\n3|RUNNING|None\n")

    cancelled = cancel(Submission(folder=tmp_path, created="now", jobs=jobs), run=fake)

    assert cancelled == ["queued", "busy"]
    assert fake.calls[-1] == ["scancel", "2", "3"]


def test_the_latest_submission_is_the_newest_folder_with_a_manifest(tmp_path):
    for name in ("20250101-000000-000001", "20250102-000000-000001"):
        (tmp_path / name).mkdir()
        Submission(folder=tmp_path / name, created=name, jobs=[]).save()
    (tmp_path / "20250103-000000-000001").mkdir()  # no manifest: not a submission

    assert latest_submission(tmp_path) == tmp_path / "20250102-000000-000001"
    with pytest.raises(SlurmError, match="run 'kedro slurm submit' first"):
        latest_submission(tmp_path / "nothing")
