"""Render a Kedro pipeline as an Argo Workflow: a DAG with one container task per node group.

Built from Hera's typed models, so an invalid field fails here rather than in the cluster. Every
task runs ``kedro run --namespaces <group>`` (or ``--nodes``) in the project's image. Tasks run in
separate pods: datasets exchanged between groups must be persisted on a mounted volume or in
object storage (``conf/cloud``), never MemoryDatasets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from hera.workflows import DAG, Container, RetryStrategy, Task, Workflow
from hera.workflows import Resources as HeraResources
from hera.workflows import models as m

from tlkedro.deploy.config import ArgoConfig, Resources
from tlkedro.deploy.grouping import NodeGroup, RunOptions

ENTRYPOINT = "kedro-pipeline"
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_DNS_LABEL_MAX = 63


def task_names(groups: Sequence[NodeGroup]) -> dict[str, str]:
    """Give each group a distinct name Argo accepts (a DNS label: ``a-z``, ``0-9``, ``-``).

    Args:
        groups: The groups.

    Returns:
        ``{group name: task name}``, e.g. ``finetune.full`` -> ``finetune-full``.
    """
    names: dict[str, str] = {}
    taken = {ENTRYPOINT}
    for group in groups:
        base = _NOT_DNS.sub("-", group.name.lower()).strip("-")[:_DNS_LABEL_MAX] or "group"
        name, suffix = base, 2
        while name in taken:
            tail = f"-{suffix}"
            name = base[: _DNS_LABEL_MAX - len(tail)] + tail
            suffix += 1
        taken.add(name)
        names[group.name] = name
    return names


def _container(
    name: str,
    group: NodeGroup,
    resources: Resources,
    options: RunOptions,
    config: ArgoConfig,
    image: str,
) -> Container:
    memory = f"{resources.memory}Mi"
    return Container(
        name=name,
        image=image,
        image_pull_policy=config.image_pull_policy,
        command=config.command,
        args=options.run_args(group),
        # Memory limit = request mirrors Slurm's --mem; no CPU limit, so a task is throttled
        # never killed for a burst.
        resources=HeraResources(
            cpu_request=resources.cpus,
            memory_request=memory,
            memory_limit=memory,
            gpus=resources.gpus or None,
            gpu_flag=config.gpu_resource,
        ),
        active_deadline_seconds=resources.time,
        retry_strategy=RetryStrategy(limit=config.retries) if config.retries else None,
        volume_mounts=[m.VolumeMount(name=v.name, mount_path=v.mount_path) for v in config.volumes]
        or None,
        env_from=[
            m.EnvFromSource(secret_ref=m.SecretEnvSource(name=secret))
            for secret in config.env_from_secrets
        ]
        or None,
    )


def build_workflow(
    groups: Sequence[NodeGroup],
    resources_for: Callable[[str], Resources],
    options: RunOptions,
    config: ArgoConfig,
    image: str | None = None,
) -> Workflow:
    """Build the Argo Workflow that runs the groups as a DAG.

    Args:
        groups: The groups, dependencies first.
        resources_for: Resolves a group's resources by name.
        options: The options every ``kedro run`` repeats (``env``, ``pipeline``, ``params``).
        config: Argo settings: image, namespace, retries, volumes, GPU resource name.
        image: Overrides ``config.image``, e.g. with a tag built for this commit.

    Returns:
        The Workflow; ``to_yaml()`` gives the manifest for ``argo submit``.
    """
    names = task_names(groups)
    templates: list[Container | DAG] = [
        _container(names[g.name], g, resources_for(g.name), options, config, image or config.image)
        for g in groups
    ]
    tasks = [
        Task(
            name=names[g.name],
            template=names[g.name],
            dependencies=[names[d] for d in g.dependencies] or None,
        )
        for g in groups
    ]
    templates.insert(0, DAG(name=ENTRYPOINT, tasks=tasks))
    return Workflow(
        generate_name=config.generate_name,
        namespace=config.namespace,
        service_account_name=config.service_account,
        security_context=(
            m.PodSecurityContext(fs_group=config.fs_group) if config.fs_group is not None else None
        ),
        entrypoint=ENTRYPOINT,
        templates=templates,
        volumes=[
            m.Volume(
                name=v.name,
                persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
                    claim_name=v.claim_name
                ),
            )
            for v in config.volumes
        ]
        or None,
    )
