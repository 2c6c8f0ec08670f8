"""The commands as a user runs them: the real ``kedro`` CLI in the toy project."""

from __future__ import annotations

import json
import re

import pytest
from hera.workflows import Workflow

from tests.deploy.conftest import run_kedro
from tlkedro.deploy.argo import ENTRYPOINT

pytestmark = pytest.mark.slow


def test_the_commands_are_kedro_project_plugins(toy_template):
    result = run_kedro(toy_template, "--help")

    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+argo\s", result.stdout, re.MULTILINE)
    assert re.search(r"^\s+slurm\s", result.stdout, re.MULTILINE)


def test_a_dry_run_prints_every_script_and_submits_nothing(toy_project):
    result = run_kedro(
        toy_project,
        "slurm",
        "submit",
        "--dry-run",
        "--env",
        "local",
        "--params",
        "train.large.fail=true",
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("#!/bin/bash") == 4
    assert "-m kedro run --env local --params train.large.fail=true --namespaces train.large" in out
    assert "-m kedro run --env local --params train.large.fail=true --nodes make_data" in out
    assert "--dependency=afterok:<job id of train.large>:<job id of train.small>" in out
    assert "#SBATCH --mem=400M" in out  # the exact-name override of the toy's deploy.yml
    assert not (toy_project / "logs").exists()


def test_argo_render_writes_a_workflow_for_the_chosen_pipeline(toy_project):
    result = run_kedro(
        toy_project,
        "argo",
        "render",
        "--pipeline",
        "variants",
        "--image",
        "toy:dev",
        "--output",
        "wf.yaml",
    )

    assert result.returncode == 0, result.stderr
    manifest = Workflow.from_file(toy_project / "wf.yaml").to_dict()
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    assert set(templates) == {ENTRYPOINT, "train-small", "train-large"}
    assert templates["train-small"]["container"]["image"] == "toy:dev"
    assert templates["train-small"]["container"]["args"] == [
        "run",
        "--pipelines",
        "variants",
        "--namespaces",
        "train.small",
    ]
    assert templates["train-small"]["retryStrategy"] == {"limit": 2}


def test_nodes_in_no_namespace_can_be_grouped_by_registered_pipeline(toy_project):
    result = run_kedro(toy_project, "argo", "render", "--group-by", "pipeline")

    assert result.returncode == 0, result.stderr
    manifest = Workflow.from_file(toy_project / "argo-workflow.yaml").to_dict()
    dag = next(t for t in manifest["spec"]["templates"] if t["name"] == ENTRYPOINT)["dag"]
    assert {t["name"]: set(t.get("dependencies", [])) for t in dag["tasks"]} == {
        "data": set(),
        "train-small": {"data"},
        "train-large": {"data"},
        "reporting": {"train-small", "train-large"},
    }


def test_memory_datasets_crossing_groups_are_warned_about(toy_project):
    catalog = toy_project / "conf" / "base" / "catalog.yml"
    catalog.write_text(catalog.read_text().split('"train.{variant}.score"')[0])

    result = run_kedro(toy_project, "argo", "render")

    assert result.returncode == 0, result.stderr
    assert (
        "Warning: 'train.small.score' is a MemoryDataset produced by group 'train.small' "
        "and loaded by group 'compare'"
    ) in result.stderr
    assert (toy_project / "argo-workflow.yaml").is_file()


def test_invalid_configuration_and_unknown_pipelines_are_reported(toy_project):
    (toy_project / "conf" / "local" / "deploy.yml").write_text(
        "resources:\n  groups:\n    train.small: {gpu: 1}\n"
    )

    result = run_kedro(toy_project, "argo", "render")

    assert result.returncode == 1
    assert "Invalid deploy configuration" in result.stderr
    assert "resources.groups['train.small'].gpu: Extra inputs are not permitted" in result.stderr

    result = run_kedro(toy_project, "slurm", "submit", "--dry-run", "--pipeline", "nope")

    assert result.returncode == 2
    assert "no pipeline named 'nope'; registered: __default__, data, reporting, variants" in (
        result.stderr
    )


STATUS_ROW = re.compile(r"^(\S+) +(fresh|stale|missing)\b *(.*)$", re.MULTILINE)


def _status(project, *args: str) -> tuple[dict[str, tuple[str, str]], str]:
    result = run_kedro(project, "tlkedro", "status", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {m[1]: (m[2], m[3]) for m in STATUS_ROW.finditer(result.stdout)}
    return rows, result.stdout


def test_status_shows_what_is_fresh_stale_or_missing_and_runs_re_make_just_that(toy_project):
    rows, out = _status(toy_project)
    assert {group: row[0] for group, row in rows.items()} == dict.fromkeys(
        ["data", "train.small", "train.large", "reporting"], "missing"
    )
    assert "4 of 4 group(s) to run." in out
    assert run_kedro(toy_project, "run").returncode == 0

    rows, out = _status(toy_project, "--params", "train.large.scale=3")
    assert rows == {
        "data": ("fresh", ""),
        "train.small": ("fresh", ""),
        "train.large": ("stale", "train.large.score: input train.large.model changed"),
        "reporting": ("stale", "compare: input train.large.score changed"),
    }
    assert "2 of 4 group(s) to run." in out

    dry = run_kedro(toy_project, "slurm", "submit", "--dry-run", "--params", "train.large.scale=3")
    assert dry.returncode == 0, dry.stderr
    assert "# train.large: stale (train.large.score: input train.large.model changed)" in dry.stdout
    assert "# not submitted, fresh: " in dry.stdout and "-m kedro run" in dry.stdout
    assert dry.stdout.count("#SBATCH --job-name") == 4  # every script is printed
    assert dry.stdout.count("# sbatch ") == 2  # train.large and compare are submitted

    rerun = run_kedro(
        toy_project, "run", "--only-missing-outputs", "--params", "train.large.scale=3"
    )
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log
    assert "Completed node: train.large.score" in log and "Completed node: compare" in log
    ran = set(re.findall(r"Completed node: (\S+)", log))
    assert ran == {"train.large.train", "train.large.score", "compare"}, log
    assert json.loads((toy_project / "data" / "report.json").read_text())["best"] == 18
    rows, out = _status(toy_project, "--params", "train.large.scale=3")
    assert {row[0] for row in rows.values()} == {"fresh"} and "0 of 4 group(s) to run." in out
