"""Run a Kedro pipeline on Slurm: one batch job per node group, chained by ``afterok`` dependencies.

A submission is a folder (``logs/slurm/<timestamp>/``) with one ``.sbatch`` script per group, the
job's log (``.log``), a file holding the exit code of its ``kedro run`` (``.exit``, written by the
script itself, since ``sacct`` needs a Slurm database that many clusters do not expose), and
``submission.json`` tying groups to job ids. ``status`` reads the live state from ``squeue`` and
the final one from the exit files.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel

from tlkedro.deploy.config import Resources, SlurmConfig, format_slurm_time
from tlkedro.deploy.grouping import NodeGroup, RunOptions

MANIFEST = "submission.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# squeue states of jobs that have not ended yet.
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "RESIZING"}

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class SlurmError(RuntimeError):
    """A Slurm command failed."""


def run_command(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command and capture its output.

    Args:
        args: The command and its arguments.

    Returns:
        The finished process, whatever its exit status.

    Raises:
        SlurmError: If the command is not installed.
    """
    try:
        return subprocess.run(list(args), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SlurmError(
            f"'{args[0]}' was not found: run this on a machine with the Slurm client installed."
        ) from None


class Job(BaseModel):
    """One group of a submission.

    Attributes:
        group: The group's name.
        job_id: Slurm's job id; ``None`` when the group was not submitted.
        skipped: Whether it was left out on purpose, because it was fresh (its outputs finished
            with the current fingerprint; :mod:`tlkedro.freshness`).
        refused: ``sbatch``'s error message when it refused the job; ``None`` otherwise.
        dependencies: Groups of this submission the job waits for (``afterok``).
        script: Path of the batch script.
        log: Path of the job's stdout and stderr.
        exit_file: Path of the file the script writes its ``kedro run`` exit code to.
    """

    group: str
    job_id: str | None
    skipped: bool = False
    refused: str | None = None
    dependencies: list[str]
    script: Path
    log: Path
    exit_file: Path


class Submission(BaseModel):
    """What ``kedro slurm submit`` submitted, saved as ``submission.json``.

    Attributes:
        folder: The submission's folder.
        created: When it was submitted (ISO 8601).
        jobs: One entry per group, dependencies first.
    """

    folder: Path
    created: str
    jobs: list[Job]

    @property
    def refused(self) -> Job | None:
        """The job ``sbatch`` refused, which stopped the submission; ``None`` if none was."""
        return next((job for job in self.jobs if job.refused is not None), None)

    def save(self) -> None:
        """Write the manifest into the submission's folder."""
        (self.folder / MANIFEST).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path) -> Submission:
        """Read a submission's manifest.

        Args:
            folder: The submission's folder.

        Returns:
            The submission.

        Raises:
            SlurmError: If the folder holds no manifest.
        """
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise SlurmError(f"{folder} is not a submission folder: it has no {MANIFEST}.")
        return cls.model_validate_json(path.read_text())


@dataclass(frozen=True)
class PlannedJob:
    """A group's batch script before submission.

    Attributes:
        job: The manifest entry, without a job id yet.
        script: The batch script's text.
    """

    job: Job
    script: str

    @property
    def submit(self) -> bool:
        """Whether to submit it (false when it is fresh)."""
        return not self.job.skipped


def new_submission_folder(logs_dir: Path) -> Path:
    """Name a fresh folder for a submission, e.g. ``logs/slurm/20250101-120000-000001``.

    Args:
        logs_dir: The folder holding all submissions.

    Returns:
        A path that does not exist yet; not created.
    """
    return Path(logs_dir) / datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def latest_submission(logs_dir: Path) -> Path:
    """Find the most recent submission.

    Args:
        logs_dir: The folder holding all submissions.

    Returns:
        The newest folder in ``logs_dir`` that has a manifest.

    Raises:
        SlurmError: If there is none.
    """
    folders = sorted(p.parent for p in Path(logs_dir).glob(f"*/{MANIFEST}"))
    if not folders:
        raise SlurmError(f"No submission found in {logs_dir}: run 'kedro slurm submit' first.")
    return folders[-1]


def sbatch_quote(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line, which sbatch parses itself, not the shell.

    Every sbatch groups words in double quotes and takes a backslash as an escape; single quotes
    mean nothing to older ones (so ``shlex.quote`` would not do), and older ones end the line at a
    ``#`` even inside quotes, so ``\\``, ``"`` and ``#`` are escaped.
    """
    escaped = "".join("\\" + c if c in '\\"#' else c for c in value)
    return f'"{escaped}"'


def _literal_filename(path: str) -> str:
    """``path`` as an sbatch filename pattern that means just itself.

    sbatch replaces ``%j``, ``%x``... in ``--output``; ``%%`` is a literal ``%``, and a path with a
    backslash has no replacements at all, so it is left as it is.
    """
    return path if "\\" in path else path.replace("%", "%%")


def render_script(
    group: NodeGroup,
    resources: Resources,
    options: RunOptions,
    config: SlurmConfig,
    *,
    project_path: Path,
    python: str,
    log: Path,
    exit_file: Path,
) -> str:
    """Write the batch script that runs one group.

    Args:
        group: The group to run.
        resources: The group's resolved resources.
        options: The submitting command's ``env``, ``pipeline`` and ``params``.
        config: Slurm settings (job name prefix, setup lines).
        project_path: Root of the Kedro project; the job runs there.
        python: The Python interpreter that has the project installed.
        log: Where Slurm writes the job's output.
        exit_file: Where the script writes the exit code of ``kedro run``.

    Returns:
        The script's text.
    """
    directives = [
        f"--job-name={sbatch_quote(f'{config.job_prefix}-{group.name}')}",
        f"--output={sbatch_quote(_literal_filename(str(log)))}",
        f"--cpus-per-task={resources.cpus}",
        f"--mem={resources.memory}M",
        f"--time={format_slurm_time(resources.time)}",
    ]
    if resources.gpus:
        directives.append(f"--gres=gpu:{resources.gpus}")
    if resources.partition:
        directives.append(f"--partition={sbatch_quote(resources.partition)}")
    if resources.account:
        directives.append(f"--account={sbatch_quote(resources.account)}")
    # Written by the user in #SBATCH syntax already (deploy.yml), so passed on as they are.
    directives += resources.sbatch_options
    run = shlex.join([python, "-m", "kedro", *options.run_args(group)])
    tmp = exit_file.with_name(exit_file.name + ".tmp")
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        f"# Kedro group '{group.name}': {', '.join(group.nodes)}",
        "# A subshell, so a failing setup line or run still reaches the exit-code file below.",
        "(",
        "  set -e",
        *(f"  {line}" for line in config.setup),
        f"  cd {shlex.quote(str(project_path))}",
        f"  {run}",
        ")",
        "status=$?",
        f'echo "$status" > {shlex.quote(str(tmp))} && mv {shlex.quote(str(tmp))} '
        f"{shlex.quote(str(exit_file))}",
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def plan_jobs(
    groups: Sequence[NodeGroup],
    resources_for: Callable[[str], Resources],
    options: RunOptions,
    config: SlurmConfig,
    *,
    folder: Path,
    project_path: Path,
    python: str,
    to_submit: set[str],
) -> list[PlannedJob]:
    """Write one script per group, without touching the disk.

    Args:
        groups: The groups, dependencies first.
        resources_for: Resolves a group's resources by name.
        options: The options every ``kedro run`` repeats.
        config: Slurm settings.
        folder: The submission's folder.
        project_path: Root of the Kedro project.
        python: The Python interpreter that has the project installed.
        to_submit: Names of the groups to submit; the others are recorded as skipped.

    Returns:
        One planned job per group, in the order of ``groups``.
    """
    planned = []
    for index, group in enumerate(groups, start=1):
        stem = f"{index:02d}-{_UNSAFE.sub('_', group.name)}"
        job = Job(
            group=group.name,
            job_id=None,
            skipped=group.name not in to_submit,
            dependencies=[d for d in group.dependencies if d in to_submit],
            script=folder / f"{stem}.sbatch",
            log=folder / f"{stem}.log",
            exit_file=folder / f"{stem}.exit",
        )
        script = render_script(
            group,
            resources_for(group.name),
            options,
            config,
            project_path=project_path,
            python=python,
            log=job.log,
            exit_file=job.exit_file,
        )
        planned.append(PlannedJob(job=job, script=script))
    return planned


def sbatch_args(job: Job, dependency_ids: Sequence[str]) -> list[str]:
    """The ``sbatch`` command that submits one job.

    Args:
        job: The job to submit.
        dependency_ids: Job ids (or placeholders, for a dry run) it waits for.

    Returns:
        The command line; dependents of a failed job are cancelled by Slurm
        (``--kill-on-invalid-dep=yes``) instead of waiting forever.
    """
    args = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
    if dependency_ids:
        args.append("--dependency=afterok:" + ":".join(dependency_ids))
    return [*args, str(job.script)]


def submit(planned: Sequence[PlannedJob], folder: Path, run: Runner = run_command) -> Submission:
    """Write the scripts and submit the jobs, dependencies first.

    The manifest is saved after every ``sbatch``. If ``sbatch`` refuses a job, the submission
    stops there: the refused job records sbatch's message (``status`` shows it FAILED), the jobs
    after it stay unsubmitted (CANCELLED), and the jobs already queued are kept, so that
    ``kedro slurm cancel`` still finds them.

    Args:
        planned: Jobs from :func:`plan_jobs`.
        folder: The submission's folder; created here, must not exist.
        run: Runs a command (replaced in tests).

    Returns:
        The submission, with job ids; :attr:`Submission.refused` tells whether it stopped early.
    """
    folder.mkdir(parents=True)
    submission = Submission(
        folder=folder, created=datetime.now().isoformat(), jobs=[p.job for p in planned]
    )
    ids: dict[str, str] = {}
    for entry in planned:
        entry.job.script.write_text(entry.script)
        if not entry.submit:
            continue
        result = run(sbatch_args(entry.job, [ids[d] for d in entry.job.dependencies]))
        if result.returncode != 0:
            entry.job.refused = result.stderr.strip() or f"exit status {result.returncode}"
            break
        # --parsable prints "<id>" or "<id>;<cluster>".
        ids[entry.job.group] = entry.job.job_id = result.stdout.strip().split(";")[0]
        submission.save()
    submission.save()
    return submission


class State(StrEnum):
    """A group's state, as ``status`` shows it."""

    SKIPPED = "SKIPPED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class GroupStatus:
    """The state of one group of a submission.

    Attributes:
        job: The group's manifest entry.
        state: Its state.
        detail: Why: the queue's reason, the exit code and log, or the failed dependency.
    """

    job: Job
    state: State
    detail: str

    @property
    def finished(self) -> bool:
        """Whether the group will not change state any more."""
        return self.state not in (State.PENDING, State.RUNNING)


def query_queue(job_ids: Sequence[str], run: Runner = run_command) -> dict[str, tuple[str, str]]:
    """Ask ``squeue`` for the jobs the controller still knows, ended ones included.

    Args:
        job_ids: The jobs to ask for.
        run: Runs a command (replaced in tests).

    Returns:
        ``{job_id: (state, reason)}`` for the jobs ``squeue`` lists; jobs that ended longer ago
        than the controller's ``MinJobAge`` are absent.

    Raises:
        SlurmError: If ``squeue`` fails for another reason than unknown job ids.
    """
    if not job_ids:
        return {}
    result = run(
        ["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(job_ids), "--format=%i|%T|%r"]
    )
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return {}
        raise SlurmError(f"squeue failed: {result.stderr.strip()}")
    queue = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = line.strip().split("|", 2)
        queue[job_id] = (state, reason)
    return queue


def group_states(submission: Submission, queue: dict[str, tuple[str, str]]) -> list[GroupStatus]:
    """Combine the queue and the exit files into each group's state.

    Args:
        submission: The submission.
        queue: ``squeue``'s view, from :func:`query_queue`.

    Returns:
        One status per group, in submission order.
    """
    statuses: dict[str, GroupStatus] = {}
    for job in submission.jobs:
        statuses[job.group] = _group_state(job, queue, statuses)
    return list(statuses.values())


def _group_state(
    job: Job, queue: dict[str, tuple[str, str]], earlier: dict[str, GroupStatus]
) -> GroupStatus:
    if job.skipped:
        return GroupStatus(job, State.SKIPPED, "fresh at submission")
    if job.refused is not None:
        return GroupStatus(job, State.FAILED, f"not submitted: sbatch refused it: {job.refused}")
    if job.job_id is None:
        return GroupStatus(job, State.CANCELLED, "not submitted: sbatch refused an earlier job")
    if job.exit_file.is_file():
        code = job.exit_file.read_text().strip()
        if code == "0":
            return GroupStatus(job, State.COMPLETED, "")
        return GroupStatus(job, State.FAILED, f"exit code {code}, log: {job.log}")
    state, reason = queue.get(job.job_id, ("", ""))
    if state in _QUEUED:
        return GroupStatus(job, State.PENDING, reason)
    if state in _RUNNING:
        return GroupStatus(job, State.RUNNING, f"log: {job.log}")
    broken = [d for d in job.dependencies if earlier[d].state in (State.FAILED, State.CANCELLED)]
    if broken:
        return GroupStatus(job, State.CANCELLED, f"dependency {', '.join(broken)} did not succeed")
    if job.log.is_file():
        ended = f"Slurm state {state}" if state else "ended"
        return GroupStatus(
            job,
            State.FAILED,
            f"{ended} without an exit code (time limit, memory or scancel), log: {job.log}",
        )
    return GroupStatus(job, State.CANCELLED, f"never started ({state or 'not in queue'})")


def cancel(submission: Submission, run: Runner = run_command) -> list[str]:
    """Cancel the jobs of a submission that have not ended.

    Args:
        submission: The submission.
        run: Runs a command (replaced in tests).

    Returns:
        Names of the groups whose jobs were cancelled.

    Raises:
        SlurmError: If ``scancel`` fails.
    """
    statuses = group_states(submission, query_queue(_job_ids(submission), run))
    live = [s.job for s in statuses if not s.finished]
    if live:
        result = run(["scancel", *(j.job_id for j in live if j.job_id)])
        if result.returncode != 0:
            raise SlurmError(f"scancel failed: {result.stderr.strip()}")
    return [j.group for j in live]


def status(submission: Submission, run: Runner = run_command) -> list[GroupStatus]:
    """The current state of every group of a submission.

    Args:
        submission: The submission.
        run: Runs a command (replaced in tests).

    Returns:
        One status per group, in submission order.
    """
    return group_states(submission, query_queue(_job_ids(submission), run))


def _job_ids(submission: Submission) -> list[str]:
    return [j.job_id for j in submission.jobs if j.job_id]
