from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tlkedro.deploy.config import (
    DeployConfig,
    Resources,
    ResourcesConfig,
    format_slurm_time,
    parse_memory,
    parse_time,
)

PROJECT_DEPLOY_YML = Path(__file__).parents[2] / "conf" / "base" / "deploy.yml"


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        (512, 512),
        ("512", 512),
        ("512M", 512),
        ("4G", 4096),
        ("4Gi", 4096),
        ("4gb", 4096),
        ("1T", 1024**2),
        ("2048K", 2),
    ],
)
def test_memory_sizes_parse_to_mib(value, mib):
    assert parse_memory(value) == mib


@pytest.mark.parametrize("value", ["4 GB of RAM", "", "-1G", "0", "1K", True])
def test_memory_that_is_no_size_is_refused(value):
    with pytest.raises(ValueError, match="memory must"):
        parse_memory(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 1800),
        ("30", 1800),
        ("30:15", 1815),
        ("02:00:00", 7200),
        ("1-00", 86400),
        ("1-02:30", 95400),
        ("1-02:30:05", 95405),
    ],
)
def test_time_limits_parse_like_slurm(value, seconds):
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", ["two hours", "1:2:3:4", "0", 0, False])
def test_invalid_time_limits_are_refused(value):
    with pytest.raises(ValueError, match="time must"):
        parse_time(value)


def test_slurm_time_format_round_trips():
    assert format_slurm_time(95405) == "1-02:30:05"
    assert parse_time(format_slurm_time(95405)) == 95405


def test_overrides_change_only_their_keys_globs_first_then_the_exact_name():
    config = ResourcesConfig.model_validate(
        {
            "default": {"cpus": 2, "memory": "8G", "time": "01:00:00"},
            # The exact name is listed first but still applies after the glob.
            "groups": {"finetune.full": {"cpus": 16}, "finetune.*": {"cpus": 4, "gpus": 1}},
        }
    )

    assert config.for_group("finetune.full") == Resources(
        cpus=16, memory="8G", gpus=1, time="01:00:00"
    )
    assert config.for_group("finetune.linear_probe").cpus == 4
    assert config.for_group("make_data") == config.default


def test_a_time_override_is_not_read_twice():
    config = ResourcesConfig.model_validate({"default": {"time": 10}, "groups": {"v": {"cpus": 2}}})

    assert config.for_group("v").time == 600


def test_a_bad_override_names_its_group_and_key():
    expected = r"resources.groups\['finetune.\*'\]\.gpu: Extra inputs"
    with pytest.raises(ValidationError, match=expected):
        ResourcesConfig.model_validate({"groups": {"finetune.*": {"gpu": 1}}})


def test_unknown_keys_and_bad_sbatch_options_are_refused():
    with pytest.raises(ValidationError, match="slurm_options"):
        DeployConfig.model_validate({"resources": {"default": {"slurm_options": []}}})
    with pytest.raises(ValidationError, match="must start with '-'"):
        Resources(sbatch_options=["qos=short"])


def test_the_projects_deploy_yml_is_valid():
    config = DeployConfig.model_validate(yaml.safe_load(PROJECT_DEPLOY_YML.read_text()))

    # GPUs per environment: test_environments.py.
    assert config.resources.for_group("finetune.full").cpus == 4
    assert config.resources.for_group("ingestion").cpus == 2
    assert config.argo.volumes[0].name == "data"
