"""The project's own deploy configuration and catalog, per environment (conf/<env>/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from tlkedro import settings
from tlkedro.deploy.config import DeployConfig

CONF = Path(__file__).parents[2] / "conf"
pytestmark = pytest.mark.filterwarnings("ignore:register_new_resolver")
ENVIRONMENTS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "base")
TRAINING_GROUPS = ["pretrain.default", "finetune.full", "dapt.supervised"]
OTHER_GROUPS = ["ingest_scans", "build_pretrain_arrays", "compare_finetune_variants"]


def _loader(env: str) -> OmegaConfigLoader:
    return OmegaConfigLoader(conf_source=str(CONF), env=env, **settings.CONFIG_LOADER_ARGS)


def _gpus(env: str) -> dict[str, int]:
    config = DeployConfig.model_validate(_loader(env)["deploy"])
    return {g: config.resources.for_group(g).gpus for g in TRAINING_GROUPS + OTHER_GROUPS}


def test_the_environments_under_test_include_the_cpu_and_cloud_ones():
    assert {"tiny", "cloud"} <= set(ENVIRONMENTS)


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if e != "cloud"])
def test_cpu_environments_request_no_gpu(env):
    assert set(_gpus(env).values()) == {0}


def test_the_cloud_environment_requests_gpus_for_training_only():
    gpus = _gpus("cloud")
    assert {g: gpus[g] for g in TRAINING_GROUPS} == dict.fromkeys(TRAINING_GROUPS, 1)
    assert {g: gpus[g] for g in OTHER_GROUPS} == dict.fromkeys(OTHER_GROUPS, 0)


def _derived_filepaths(env: str) -> dict[str, str]:
    """Every catalog entry (factory patterns included) except the raw layer, with its filepath."""
    catalog = _loader(env)["catalog"]
    return {
        name: entry["filepath"]
        for name, entry in catalog.items()
        if not name.startswith("_") and "filepath" in entry and "/01_raw/" not in entry["filepath"]
    }


def test_in_the_cloud_everything_derived_is_in_the_bucket_and_locally_under_data():
    local, cloud = _derived_filepaths("local"), _derived_filepaths("cloud")
    root = _loader("cloud")["globals"]["data_root"]

    assert root.startswith("s3://")
    assert local.keys() == cloud.keys() and len(cloud) > 20
    for name, path in local.items():
        assert path.startswith("data/"), name
        assert cloud[name] == root + path.removeprefix("data"), name
