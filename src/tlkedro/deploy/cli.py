"""``kedro slurm``, ``kedro argo`` and ``kedro tlkedro status``, Kedro project commands (entry point
group ``kedro.project_commands``).

They work in any Kedro project of the environment that has tlkedro installed: they read the
project's pipelines, its catalog, its completion records (:mod:`tlkedro.freshness`; a project records
them with ``tlkedro.hooks.FreshnessHook`` in its settings) and its ``deploy`` configuration
(``conf/<env>/deploy*.yml``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import click
from kedro.config import MissingConfigException
from kedro.framework.cli.utils import _split_params, env_option
from kedro.framework.context import KedroContext
from kedro.framework.session import KedroSession
from kedro.framework.startup import ProjectMetadata
from kedro.io import CatalogProtocol, DatasetError
from kedro.pipeline import Pipeline
from pydantic import ValidationError

from tlkedro.deploy import argo as argo_render
from tlkedro.deploy import slurm as slurm_jobs
from tlkedro.deploy.config import DeployConfig
from tlkedro.deploy.grouping import (
    NodeGroup,
    RunOptions,
    ephemeral_crossings,
    group_pipeline,
    group_status,
    needs_run,
    pipeline_homes,
)
from tlkedro.freshness import (
    Freshness,
    Graph,
    NodeStatus,
    RecordStore,
    data_root,
    is_ephemeral,
    raw_parameters,
    records_url,
)

DEPLOY_CONFIG_PATTERNS = ["deploy*", "deploy*/**"]


@dataclass(frozen=True)
class _Deployment:
    project_path: Path
    config: DeployConfig
    catalog: CatalogProtocol
    groups: list[NodeGroup]
    options: RunOptions
    freshness: Freshness
    pipeline: Pipeline

    def statuses(self) -> dict[str, NodeStatus]:
        """Every node's freshness (reads the catalog's outputs and the completion records)."""
        with _catalog_errors():
            return self.freshness.assess(self.pipeline)

    def outside_problems(self) -> list[str]:
        """Inputs from outside the deployed pipeline that are not fresh (see ``Freshness``)."""
        with _catalog_errors():
            return self.freshness.outside_problems(self.pipeline)


def _params_callback(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, Any]:
    # Keep the string as typed for the jobs' `kedro run`, and Kedro's parse of it for the catalog.
    return value, _split_params(ctx, param, value)


def _load_context(
    metadata: ProjectMetadata, env: str | None, params: dict[str, Any]
) -> KedroContext:
    with KedroSession.create(
        project_path=metadata.project_path, env=env, runtime_params=params
    ) as session:
        return session.load_context()


def _deploy_config(context: KedroContext) -> DeployConfig:
    loader = context.config_loader
    # Projects whose settings.py lacks the "deploy" key still get their deploy*.yml read.
    loader.config_patterns.setdefault("deploy", DEPLOY_CONFIG_PATTERNS)
    try:
        raw = loader["deploy"]
    except MissingConfigException:
        raw = {}
    try:
        return DeployConfig.model_validate(raw)
    except ValidationError as error:
        raise click.ClickException(f"Invalid deploy configuration (conf/*/deploy*.yml):\n{error}")


@contextmanager
def _catalog_errors() -> Iterator[None]:
    # A dataset entry that cannot be built would fail every job: say so before submitting any.
    try:
        yield
    except DatasetError as error:
        raise click.ClickException(f"The catalog cannot build a dataset: {error}")


def _deployment(
    metadata: ProjectMetadata,
    env: str | None,
    pipeline: str | None,
    params: tuple[str, dict[str, Any]],
    group_by: str,
    depth: int,
) -> _Deployment:
    from kedro.framework.project import pipelines

    raw_params, parsed_params = params
    context = _load_context(metadata, env, parsed_params)
    name = pipeline or "__default__"
    if name not in pipelines:
        raise click.BadParameter(
            f"no pipeline named {name!r}; registered: {', '.join(sorted(pipelines))}",
            param_hint="--pipeline",
        )
    homes = pipeline_homes(pipelines) if group_by == "pipeline" else None
    try:
        groups = group_pipeline(
            pipelines[name],
            by="node" if group_by == "node" else "namespace",
            depth=depth,
            homes=homes,
        )
    except ValueError as error:
        raise click.ClickException(str(error))
    catalog = context.catalog
    with _catalog_errors():
        crossings = ephemeral_crossings(groups, partial(is_ephemeral, catalog))
    for crossing in crossings:
        click.secho(f"Warning: {crossing}", err=True, fg="yellow")
    store = RecordStore(records_url(metadata.project_path, data_root(context.config_loader)))
    return _Deployment(
        project_path=Path(metadata.project_path),
        config=_deploy_config(context),
        catalog=catalog,
        groups=groups,
        options=RunOptions(env=env, pipeline=pipeline, params=raw_params or None),
        freshness=Freshness(
            Graph.of_project(pipelines[name]),
            catalog,
            store,
            raw_parameters(context.config_loader),
        ),
        pipeline=pipelines[name],
    )


def _pipeline_options(
    group_by: str = "namespace",
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add the options that choose what to deploy and how to split it into groups."""
    options = (
        click.option(
            "--pipeline",
            "-p",
            default=None,
            help="Registered pipeline; `__default__` when not given.",
        ),
        env_option,
        click.option(
            "--params",
            default="",
            callback=_params_callback,
            help="Extra parameters, as for `kedro run --params`; every job repeats them.",
        ),
        click.option(
            "--group-by",
            type=click.Choice(["namespace", "pipeline", "node"]),
            default=group_by,
            show_default=True,
            help="namespace: one group per namespace (a variant), and one per node in no "
            "namespace; pipeline: the same, but nodes in no namespace grouped by the "
            "registered pipeline holding them (ingestion, reporting); node: one group "
            "per node.",
        ),
        click.option(
            "--depth",
            type=click.IntRange(min=1),
            default=2,
            show_default=True,
            help="Leading parts of a namespace that name a group: 2 gives one group per "
            "`finetune.<variant>`, 1 one group for all of `finetune`.",
        ),
    )

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.group(name="tlkedro-deploy")
def commands() -> None:
    """Deployment commands of tlkedro."""


@commands.group()
def slurm() -> None:
    """Run the pipeline on Slurm: one batch job per node group, chained by dependencies."""


@slurm.command()
@_pipeline_options()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print each group's freshness, the batch scripts and sbatch commands; write and submit "
    "nothing.",
)
@click.option(
    "--all",
    "submit_all",
    is_flag=True,
    help="Submit every group, also the fresh ones.",
)
@click.pass_obj
def submit(
    metadata: ProjectMetadata,
    pipeline: str | None,
    env: str | None,
    params: tuple[str, dict[str, Any]],
    group_by: str,
    depth: int,
    dry_run: bool,
    submit_all: bool,
) -> None:
    """Submit one job per group, each after the jobs whose outputs it loads.

    Fresh groups (their outputs recorded as finished with the current fingerprint, and nothing
    upstream re-made; `kedro tlkedro status`) are skipped unless --all is given, so submitting
    again runs only what is stale or missing, and whatever depends on it. Scripts, logs and exit
    codes go to a new folder under `slurm.logs_dir` (default logs/slurm/<timestamp>/).
    """
    deployment = _deployment(metadata, env, pipeline, params, group_by, depth)
    config = deployment.config
    if problems := deployment.outside_problems():
        raise click.ClickException(
            "The pipeline would build on results outside it that are not fresh:\n"
            + "\n".join(f"  {p}" for p in problems)
            + "\nSubmit the pipeline that makes them too (`kedro tlkedro status` lists them)."
        )
    statuses = deployment.statuses()
    to_submit = {g.name for g in deployment.groups if submit_all or needs_run(g, statuses)}
    folder = slurm_jobs.new_submission_folder(deployment.project_path / config.slurm.logs_dir)
    planned = slurm_jobs.plan_jobs(
        deployment.groups,
        config.resources.for_group,
        deployment.options,
        config.slurm,
        folder=folder,
        project_path=deployment.project_path,
        python=sys.executable,
        to_submit=to_submit,
    )
    if dry_run:
        for group, entry in zip(deployment.groups, planned, strict=True):
            state, reason = group_status(group, statuses)
            click.echo(f"# {group.name}: {state}" + (f" ({reason})" if reason else ""))
            _echo_dry_run(entry)
        return
    try:
        submission = slurm_jobs.submit(planned, folder)
    except slurm_jobs.SlurmError as error:
        raise click.ClickException(str(error))
    for job in submission.jobs:
        click.echo(f"{job.group}: {_submitted(job)}")
    click.echo(f"Submission folder: {folder}\nFollow it with: kedro slurm status {folder}")
    if (refused := submission.refused) is not None:
        queued = sum(job.job_id is not None for job in submission.jobs)
        raise click.ClickException(
            f"sbatch refused group '{refused.group}': {refused.refused}\n"
            f"The {queued} job(s) queued before it keep running (kedro slurm cancel {folder} "
            "stops them); once the cause is fixed, submitting again runs what is missing."
        )


def _submitted(job: slurm_jobs.Job) -> str:
    if job.job_id is not None:
        return f"job {job.job_id}" + (
            f" after {', '.join(job.dependencies)}" if job.dependencies else ""
        )
    if job.skipped:
        return "skipped: fresh"
    if job.refused is not None:
        return f"FAILED (not submitted): sbatch refused it: {job.refused}"
    return "not submitted: sbatch refused an earlier job"


def _echo_dry_run(entry: slurm_jobs.PlannedJob) -> None:
    if entry.submit:
        ids = [f"<job id of {d}>" for d in entry.job.dependencies]
        click.echo("# " + " ".join(slurm_jobs.sbatch_args(entry.job, ids)))
    else:
        click.echo(f"# not submitted, fresh: {entry.job.script}")
    click.echo(entry.script)


def _submission_folder(metadata: ProjectMetadata, env: str | None, folder: Path | None) -> Path:
    if folder is not None:
        return folder
    config = _deploy_config(_load_context(metadata, env, {}))
    try:
        return slurm_jobs.latest_submission(Path(metadata.project_path) / config.slurm.logs_dir)
    except slurm_jobs.SlurmError as error:
        raise click.ClickException(str(error))


_folder_argument = click.argument(
    "folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)


@slurm.command()
@_folder_argument
@env_option(
    help="Environment whose `slurm.logs_dir` holds the submissions (when FOLDER is not given)."
)
@click.option("--wait", is_flag=True, help="Poll until every job has ended.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between polls with --wait.",
)
@click.pass_obj
def status(
    metadata: ProjectMetadata, folder: Path | None, env: str | None, wait: bool, interval: float
) -> None:
    """Show the state of each group of a submission (FOLDER, or the latest one).

    Exits with status 1 when a group failed or was cancelled; a failed group's detail names its
    log.
    """
    try:
        submission = slurm_jobs.Submission.load(_submission_folder(metadata, env, folder))
        statuses = slurm_jobs.status(submission)
        while wait and not all(s.finished for s in statuses):
            time.sleep(interval)
            statuses = slurm_jobs.status(submission)
    except slurm_jobs.SlurmError as error:
        raise click.ClickException(str(error))
    width = max((len(s.job.group) for s in statuses), default=0)
    for s in statuses:
        click.echo(
            f"{s.job.group:<{width}}  {s.job.job_id or '-':>8}  {s.state.value:<9}  "
            f"{s.detail}".rstrip()
        )
    if any(s.state in (slurm_jobs.State.FAILED, slurm_jobs.State.CANCELLED) for s in statuses):
        sys.exit(1)


@slurm.command()
@_folder_argument
@env_option(
    help="Environment whose `slurm.logs_dir` holds the submissions (when FOLDER is not given)."
)
@click.pass_obj
def cancel(metadata: ProjectMetadata, folder: Path | None, env: str | None) -> None:
    """Cancel the jobs of a submission (FOLDER, or the latest one) that have not ended."""
    try:
        submission = slurm_jobs.Submission.load(_submission_folder(metadata, env, folder))
        cancelled = slurm_jobs.cancel(submission)
    except slurm_jobs.SlurmError as error:
        raise click.ClickException(str(error))
    click.echo(f"Cancelled: {', '.join(cancelled)}" if cancelled else "No job left to cancel.")


@commands.group()
def argo() -> None:
    """Run the pipeline on Argo Workflows: one container task per node group."""


@argo.command()
@_pipeline_options()
@click.option(
    "--only-missing-outputs",
    is_flag=True,
    help="Each task runs `kedro run --only-missing-outputs`: it re-makes what is stale or missing "
    "and reuses what is fresh, so resubmitting the workflow after a change re-computes only what the "
    "change affects.",
)
@click.option(
    "--image",
    default=None,
    help="Container image of the tasks; overrides `argo.image` of deploy.yml.",
)
# A file rather than stdout: Kedro's default logging writes to stdout and would mix into it.
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default="argo-workflow.yaml",
    show_default=True,
    help="File the manifest is written to.",
)
@click.pass_obj
def render(
    metadata: ProjectMetadata,
    pipeline: str | None,
    env: str | None,
    params: tuple[str, dict[str, Any]],
    group_by: str,
    depth: int,
    only_missing_outputs: bool,
    image: str | None,
    output: Path,
) -> None:
    """Render the Argo Workflow manifest; submit it with `argo submit`."""
    deployment = _deployment(metadata, env, pipeline, params, group_by, depth)
    workflow = argo_render.build_workflow(
        deployment.groups,
        deployment.config.resources.for_group,
        replace(deployment.options, only_missing_outputs=only_missing_outputs),
        deployment.config.argo,
        image=image,
    )
    output.write_text(workflow.to_yaml())
    click.echo(f"Wrote {output}; submit it with: argo submit {output}")


@commands.group(name="tlkedro")
def tlkedro_commands() -> None:
    """tlkedro's own commands."""


@tlkedro_commands.command(name="status")
@_pipeline_options(group_by="pipeline")
@click.option("--nodes", "show_nodes", is_flag=True, help="Also list each node that is not fresh.")
@click.pass_obj
def freshness_status(
    metadata: ProjectMetadata,
    pipeline: str | None,
    env: str | None,
    params: tuple[str, dict[str, Any]],
    group_by: str,
    depth: int,
    show_nodes: bool,
) -> None:
    """Show what is fresh, stale or missing, per variant, before anything runs or is submitted.

    fresh: every node's outputs exist and were recorded as finished with the fingerprint they would
    have now (configuration, parameters, inputs, tlkedro version), nothing upstream re-made since.
    stale: made with another fingerprint, or from inputs re-made since, or downstream of a node that
    is re-made. missing: an output is absent, or there is no completion record (a run that did not
    finish). `kedro run --only-missing-outputs` and `kedro slurm submit`, with the same --env and
    --params, re-make exactly the groups that are not fresh.
    """
    deployment = _deployment(metadata, env, pipeline, params, group_by, depth)
    statuses = deployment.statuses()
    width = max((len(g.name) for g in deployment.groups), default=0)
    to_run = 0
    for group in deployment.groups:
        state, reason = group_status(group, statuses)
        to_run += needs_run(group, statuses)
        click.echo(f"{group.name:<{width}}  {state:<7}  {reason}".rstrip())
        if show_nodes:
            for name in group.nodes:
                if (status := statuses[name]).dirty:
                    click.echo(f"  {name}: {status.state}, {status.reason}")
    for problem in deployment.outside_problems():
        click.secho(f"Warning: not fresh outside the pipeline: {problem}", err=True, fg="yellow")
    click.echo(f"{to_run} of {len(deployment.groups)} group(s) to run.")
