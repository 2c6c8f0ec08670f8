from __future__ import annotations

import pytest
import yaml
from hera.workflows import Workflow
from kedro.pipeline import Node, Pipeline

from tlkedro.deploy.argo import ENTRYPOINT, build_workflow, task_names
from tlkedro.deploy.config import ArgoConfig, ResourcesConfig
from tlkedro.deploy.grouping import RunOptions, group_pipeline

RESOURCES = ResourcesConfig.model_validate(
    {
        "default": {"cpus": 2, "memory": "1G", "time": "00:30:00"},
        "groups": {"train.*": {"gpus": 1, "memory": "4G"}},
    }
)
ARGO = ArgoConfig(
    image="registry.example/toy:abc",
    namespace="ml",
    retries=3,
    gpu_resource="amd.com/gpu",
    volumes=[{"name": "data", "claim_name": "toy-data", "mount_path": "/project/data"}],
)


def identity(x):
    return x


@pytest.fixture(scope="module")
def workflow(toy_pipeline) -> Workflow:
    return build_workflow(
        group_pipeline(toy_pipeline), RESOURCES.for_group, RunOptions(env="cloud"), ARGO
    )


def _templates(manifest: dict) -> dict[str, dict]:
    return {t["name"]: t for t in manifest["spec"]["templates"]}


def test_the_dag_has_one_task_per_group_with_the_pipelines_dependencies(workflow, toy_pipeline):
    manifest = workflow.to_dict()
    dag = _templates(manifest)[ENTRYPOINT]["dag"]
    tasks = {t["name"]: set(t.get("dependencies", [])) for t in dag["tasks"]}
    groups = group_pipeline(toy_pipeline)
    names = task_names(groups)

    assert manifest["spec"]["entrypoint"] == ENTRYPOINT
    assert tasks == {names[g.name]: {names[d] for d in g.dependencies} for g in groups}
    assert tasks == {
        "make-data": set(),
        "train-small": {"make-data"},
        "train-large": {"make-data"},
        "compare": {"train-small", "train-large"},
    }


def test_each_task_runs_its_group_in_the_image(workflow):
    templates = _templates(workflow.to_dict())

    assert templates["train-small"]["container"]["image"] == "registry.example/toy:abc"
    assert templates["train-small"]["container"]["command"] == ["kedro"]
    assert templates["train-small"]["container"]["args"] == [
        "run",
        "--env",
        "cloud",
        "--namespaces",
        "train.small",
    ]
    assert templates["compare"]["container"]["args"][-2:] == ["--nodes", "compare"]


def test_resources_gpus_retries_and_time_limits_come_from_configuration(workflow):
    templates = _templates(workflow.to_dict())
    train = templates["train-large"]
    compare = templates["compare"]

    assert train["container"]["resources"]["requests"] == {
        "cpu": "2",
        "memory": "4096Mi",
        "amd.com/gpu": "1",
    }
    assert train["container"]["resources"]["limits"] == {"memory": "4096Mi", "amd.com/gpu": "1"}
    assert "amd.com/gpu" not in compare["container"]["resources"]["requests"]
    assert train["retryStrategy"] == {"limit": 3}
    assert compare["activeDeadlineSeconds"] == 1800


def test_every_task_mounts_the_data_volume(workflow):
    manifest = workflow.to_dict()

    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["securityContext"] == {"fsGroup": 1000}
    assert manifest["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "toy-data"}}
    ]
    for name, template in _templates(manifest).items():
        if name != ENTRYPOINT:
            assert template["container"]["volumeMounts"] == [
                {"name": "data", "mountPath": "/project/data"}
            ]


def test_the_yaml_round_trips_through_hera(workflow):
    text = workflow.to_yaml()

    assert Workflow.from_yaml(text).to_dict() == workflow.to_dict()
    assert yaml.safe_load(text) == workflow.to_dict()


def test_an_image_given_on_the_command_line_wins(toy_pipeline):
    workflow = build_workflow(
        group_pipeline(toy_pipeline), RESOURCES.for_group, RunOptions(), ARGO, image="toy:dev"
    )

    images = {
        t["container"]["image"] for t in workflow.to_dict()["spec"]["templates"] if "container" in t
    }
    assert images == {"toy:dev"}


def test_task_names_are_dns_labels_and_distinct():
    pipeline = Pipeline(
        [
            Node(identity, "a", "b", name="Fit_Model", namespace="train.small"),
            Node(identity, "b", "c", name="x", namespace="train_small"),
            Node(identity, "c", "d", name=ENTRYPOINT),
        ]
    )

    names = task_names(group_pipeline(pipeline))

    assert names == {
        "train.small": "train-small",
        "train_small": "train-small-2",
        ENTRYPOINT: f"{ENTRYPOINT}-2",
    }
