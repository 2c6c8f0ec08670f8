"""Deployment configuration (``conf/<env>/deploy.yml``), validated once into typed models.

Resources are given once for every group under ``resources.default`` and overridden per group
(a variant such as ``finetune.full``, or a glob such as ``pretrain.*``) under ``resources.groups``.
Slurm and Argo read the same resources; the keys that only one scheduler understands say so.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

_MEMORY = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_MIB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_memory(value: int | str) -> int:
    """Parse a memory size into MiB.

    Args:
        value: MiB as an integer, or a string with a binary unit as Slurm writes them
            (``"512M"``, ``"4G"``, ``"4Gi"``, ``"1T"``); a bare number means MiB, as in Slurm.

    Returns:
        The size in MiB, at least 1.

    Raises:
        ValueError: If the value is not a size.
    """
    if isinstance(value, bool):
        raise ValueError(f"memory must be a size such as 4G or 512M, got {value!r}")
    if isinstance(value, int):
        mib = value
    else:
        match = _MEMORY.match(str(value))
        if not match:
            raise ValueError(f"memory must be a size such as 4G or 512M, got {value!r}")
        mib = int(int(match.group(1)) * _MIB_PER_UNIT[match.group(2).upper()])
    if mib < 1:
        raise ValueError(f"memory must be at least 1M, got {value!r}")
    return mib


def parse_time(value: int | str) -> int:
    """Parse a Slurm time limit into seconds.

    Args:
        value: Minutes as an integer, or a string in one of Slurm's forms: ``"MM"``, ``"MM:SS"``,
            ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``, ``"D-HH:MM:SS"``.

    Returns:
        The limit in seconds, at least 1.

    Raises:
        ValueError: If the value is not a time limit.
    """
    if isinstance(value, bool):
        raise ValueError(f"time must be minutes or [D-]HH:MM:SS, got {value!r}")
    if isinstance(value, int):
        seconds = value * 60
    else:
        match = _TIME.match(str(value).strip())
        if not match:
            raise ValueError(f"time must be minutes or [D-]HH:MM:SS, got {value!r}")
        days, first, second, third = match.groups()
        parts = [int(p) for p in (first, second, third) if p is not None]
        if days is not None:
            # With a day count Slurm reads the fields as hours[:minutes[:seconds]].
            hours, minutes, secs = (parts + [0, 0])[:3]
            seconds = ((int(days) * 24 + hours) * 60 + minutes) * 60 + secs
        elif len(parts) == 1:
            seconds = parts[0] * 60
        elif len(parts) == 2:
            seconds = parts[0] * 60 + parts[1]
        else:
            seconds = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    if seconds < 1:
        raise ValueError(f"time must be positive, got {value!r}")
    return seconds


def format_slurm_time(seconds: int) -> str:
    """Format seconds as Slurm's ``D-HH:MM:SS``.

    Args:
        seconds: A positive duration.

    Returns:
        The duration in the form ``sbatch --time`` accepts.
    """
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


MiB = Annotated[int, BeforeValidator(parse_memory)]
Seconds = Annotated[int, BeforeValidator(parse_time)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one group (one job or one Argo task) asks for.

    Attributes:
        cpus: CPU cores (``--cpus-per-task``; the Kubernetes CPU request).
        memory: Memory in MiB, given as ``4G``, ``512M`` or MiB (``--mem``; the memory request).
        gpus: GPUs (``--gres=gpu:N``; in Argo a request and limit of ``argo.gpu_resource``).
        time: Time limit, minutes or ``[D-]HH:MM:SS`` (``--time``; Argo's
            ``activeDeadlineSeconds``).
        partition: Slurm only: ``--partition``; the cluster's default when unset.
        account: Slurm only: ``--account``; the user's default when unset.
        sbatch_options: Slurm only: extra ``#SBATCH`` options, e.g. ``["--qos=short"]``.
    """

    cpus: int = Field(1, ge=1)
    memory: MiB = 2048
    gpus: int = Field(0, ge=0)
    time: Seconds = 3600
    partition: str | None = None
    account: str | None = None
    sbatch_options: list[str] = []

    @field_validator("sbatch_options")
    @classmethod
    def _options_are_long_options(cls, options: list[str]) -> list[str]:
        for option in options:
            if not option.startswith("-"):
                raise ValueError(f"each sbatch option must start with '-', got {option!r}")
        return options


class ResourcesConfig(_Strict):
    """Default resources and per-group overrides.

    Attributes:
        default: Resources of every group.
        groups: Overrides keyed by group name or glob (``finetune.*``); only the keys given are
            changed. Every matching glob applies in file order, then the exact name.
    """

    default: Resources = Resources()
    groups: dict[str, dict[str, Any]] = {}

    @field_validator("groups")
    @classmethod
    def _overrides_are_resources(
        cls, groups: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        for pattern, override in groups.items():
            try:
                Resources.model_validate(override)
            except ValidationError as error:
                problems = "; ".join(
                    f"resources.groups[{pattern!r}].{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in error.errors()
                )
                raise ValueError(problems) from None
        return groups

    def for_group(self, name: str) -> Resources:
        """Resolve the resources of one group.

        Args:
            name: The group's name, e.g. ``finetune.full`` or a node name.

        Returns:
            The default resources with every matching override applied.
        """
        matching = [p for p in self.groups if p != name and fnmatch.fnmatchcase(name, p)]
        if name in self.groups:
            matching.append(name)
        resolved = self.default
        for pattern in matching:
            override = Resources.model_validate(self.groups[pattern])
            resolved = resolved.model_copy(
                update={key: getattr(override, key) for key in override.model_fields_set}
            )
        return resolved


class SlurmConfig(_Strict):
    """Slurm settings shared by every job of a submission.

    Attributes:
        job_prefix: Prefix of each job's name (``<prefix>-<group>``).
        setup: Shell lines run before ``kedro run`` in every job, e.g. ``module load cuda``.
        logs_dir: Folder, relative to the project, holding one sub-folder per submission.
    """

    job_prefix: str = "kedro"
    setup: list[str] = []
    logs_dir: str = "logs/slurm"


class Volume(_Strict):
    """A persistent volume claim mounted into every Argo task.

    Attributes:
        name: Volume name inside the pod.
        claim_name: Name of an existing PersistentVolumeClaim.
        mount_path: Where the volume appears in the container.
    """

    name: str
    claim_name: str
    mount_path: str


class ArgoConfig(_Strict):
    """Settings of the rendered Argo Workflow.

    Attributes:
        image: Container image holding the project (see the project's Dockerfile).
        image_pull_policy: Kubernetes ``imagePullPolicy``.
        namespace: Kubernetes namespace of the Workflow.
        service_account: Service account the pods run as; the namespace's default when unset.
        generate_name: Prefix of the Workflow's generated name.
        retries: How many times Argo retries a failed task.
        gpu_resource: Extended resource name GPUs are requested under.
        volumes: Volumes mounted into every task; the catalog's ``data/`` must be one of them
            unless the catalog writes to object storage (``conf/cloud``: ``s3://`` paths).
        env_from_secrets: Kubernetes Secrets whose keys become environment variables of every
            task, e.g. ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL_S3`` for
            the object store, or ``MLFLOW_TRACKING_URI``.
        fs_group: Group id the pods give mounted volumes, so that the image's non-root user
            (uid and gid 1000 in the Dockerfile) can write them; ``None`` leaves them as they are.
        command: The command that starts Kedro inside the image.
    """

    image: str = "tlkedro:latest"
    image_pull_policy: str = "IfNotPresent"
    namespace: str | None = None
    service_account: str | None = None
    generate_name: str = "kedro-"
    retries: int = Field(0, ge=0)
    gpu_resource: str = "nvidia.com/gpu"
    volumes: list[Volume] = []
    env_from_secrets: list[str] = []
    fs_group: int | None = 1000
    command: list[str] = ["kedro"]


class DeployConfig(_Strict):
    """The whole ``deploy`` configuration.

    Attributes:
        resources: Resources per group, shared by Slurm and Argo.
        slurm: Slurm-only settings.
        argo: Argo-only settings.
    """

    resources: ResourcesConfig = ResourcesConfig()
    slurm: SlurmConfig = SlurmConfig()
    argo: ArgoConfig = ArgoConfig()
