"""Argo's object-store set-up: tasks that share nothing but an S3 bucket (a local moto server)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fsspec
import pytest
import yaml
from hera.workflows import Workflow

from tests.deploy.conftest import run_kedro
from tlkedro.deploy.argo import ENTRYPOINT

pytestmark = pytest.mark.slow


def _in_dependency_order(dag: list[dict]) -> list[str]:
    done: list[str] = []
    while len(done) < len(dag):
        done += [
            t["name"]
            for t in dag
            if t["name"] not in done and set(t.get("dependencies", [])) <= set(done)
        ]
    return done


def test_tasks_exchange_their_data_through_the_bucket_only(toy_template, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/toy"
    project = Path(shutil.copytree(toy_template, tmp_path / "render"))
    (project / "conf" / "cloud" / "globals.yml").write_text(f"data_root: {root}\n")

    rendered = run_kedro(project, "argo", "render", "-e", "cloud", "-o", "wf.yaml")
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    text = (project / "wf.yaml").read_text()
    manifest = yaml.safe_load(text)
    assert Workflow.from_yaml(text).to_dict() == manifest
    assert "volumes" not in manifest["spec"]
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    for name, template in templates.items():
        if name != ENTRYPOINT:
            assert "volumeMounts" not in template["container"]
            assert template["container"]["envFrom"] == [{"secretRef": {"name": "toy-object-store"}}]

    # Each task in a pod of its own: a fresh copy of the project, with no data/ in common.
    for name in _in_dependency_order(templates[ENTRYPOINT]["dag"]["tasks"]):
        pod = Path(shutil.copytree(project, tmp_path / "pods" / name))
        container = templates[name]["container"]
        result = run_kedro(pod, *container["args"], env=dict(os.environ))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert not (pod / "data").exists() or not any((pod / "data").rglob("*.json"))

    fs = fsspec.filesystem("s3")
    report = json.loads(fs.cat_file(f"{root}/report.json"))
    assert report["best"] == 12
    data, records = [], []
    for path in fs.find(root):
        relative = path.split("/toy/", 1)[1]
        (records if relative.startswith("freshness/") else data).append(relative)
    assert sorted(data) == ["large/score.json", "raw.json", "report.json", "small/score.json"]
    # The tasks share their completion records through the bucket too: one per node that ran.
    nodes = [
        "compare",
        "make_data",
        *(f"train.{v}.{n}" for v in ("large", "small") for n in ("score", "train")),
    ]
    assert sorted(records) == [f"freshness/{n}.json" for n in nodes]
