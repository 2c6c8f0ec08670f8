"""End-to-end runs through the real ``kedro`` CLI: cohort -> report on the tiny environment (conf/tiny)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
FINETUNE_VARIANTS = ["scratch", "full", "linear_probe", "freeze_layer3_1"]

pytestmark = pytest.mark.slow


def kedro(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    result = subprocess.run(
        [KEDRO, *args], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, (
        f"kedro {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def copy_project(root: Path) -> Path:
    """A project at ``root`` (made if missing) with this project's configuration and no data.

    The package itself is installed, so the copy needs only ``conf/``, an empty ``conf/local`` and
    ``pyproject.toml``, and the source folder Kedro insists on.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    return root


def output(project: Path, pipeline: str, variant: str, name: str) -> Path:
    return project / "data" / "07_model_output" / pipeline / variant / name


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's configuration (the package is installed) after a full tiny run."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    result = kedro(root, "run", "--env", "tiny")
    (root / "run.log").write_text(result.stdout + result.stderr)
    return root


def test_default_pipeline_goes_from_cohort_to_report(project):
    manifest = pd.read_parquet(project / "data/02_intermediate/manifest.parquet")
    assert len(manifest) == 48
    assert pd.read_parquet(project / "data/02_intermediate/quarantine.parquet").empty
    [report] = (project / "data/08_reporting/finetune_report.md").glob("*/finetune_report.md")
    assert f"Report finetune_report: {report}" in (project / "run.log").read_text()
    text = report.read_text()
    for variant in FINETUNE_VARIANTS:
        assert f"| finetune.{variant} |" in text
    [comparison] = (project / "data/08_reporting/finetune_comparison.csv").glob("*/*.csv")
    table = pd.read_csv(comparison)
    assert set(table["variant"]) == {f"finetune.{v}" for v in FINETUNE_VARIANTS}
    assert {"test/auroc", "external/auroc", "trainable_params", "macs_per_image"} <= set(
        table.columns
    )
    probe = table.set_index("variant").loc["finetune.linear_probe"]
    assert probe["trainable_params"] < probe["total_params"]


def test_each_run_records_its_configuration_and_provenance(project):
    record = json.loads(output(project, "finetune", "linear_probe", "config.json").read_text())
    assert record["config"]["strategy"]["name"] == "linear_probe"
    assert record["config"]["optimizer"]["lr"] == pytest.approx(1e-3)  # the variant's override
    assert record["config"]["seed"] == 42
    assert record["provenance"]["packages"]["torch"]
    assert record["provenance"]["git_revision"]


def test_params_on_the_command_line_reach_every_variant_that_does_not_override_them(project):
    nodes = ",".join(f"finetune.{v}.record_run" for v in ("full", "linear_probe"))
    kedro(
        project,
        "run",
        "--env",
        "tiny",
        "--pipelines",
        "finetune",
        "--nodes",
        nodes,
        "--params",
        "finetune.optimizer.lr=1e-4,finetune.variants.linear_probe.optimizer.weight_decay=0.5",
    )
    full = json.loads(output(project, "finetune", "full", "config.json").read_text())["config"]
    probe = json.loads(output(project, "finetune", "linear_probe", "config.json").read_text())[
        "config"
    ]
    assert full["optimizer"]["lr"] == pytest.approx(1e-4)
    assert probe["optimizer"]["lr"] == pytest.approx(1e-3)  # its own override wins
    assert probe["optimizer"]["weight_decay"] == pytest.approx(0.5)


def test_same_configuration_and_seed_give_the_same_metrics(project):
    before = json.loads(output(project, "finetune", "full", "metrics_test.json").read_text())
    kedro(project, "run", "--env", "tiny", "--namespaces", "finetune.full")
    after = json.loads(output(project, "finetune", "full", "metrics_test.json").read_text())
    assert after == before


def test_only_missing_outputs_skips_finished_variants(project):
    output(project, "finetune", "scratch", "metrics.json").unlink()
    result = kedro(
        project, "run", "--env", "tiny", "--pipelines", "finetune", "--only-missing-outputs"
    )
    log = result.stdout + result.stderr
    assert "Completed node: finetune.scratch.summarise" in log
    assert "Completed node: finetune.full.train" not in log
    assert output(project, "finetune", "scratch", "metrics.json").exists()


def _latest(project: Path, name: str) -> Path:
    [path] = (project / "data/08_reporting" / name).glob(f"*/{name}")
    return path


def test_reports_hold_energy_svcca_and_saliency(project):
    for pipeline, variants in (("pretrain", ["default"]), ("finetune", FINETUNE_VARIANTS)):
        energy = pd.read_csv(_latest(project, f"{pipeline}_energy.csv"))
        assert list(energy["variant"]) == [f"{pipeline}.{v}" for v in variants]  # one phase each
        assert (energy["energy_kwh"] > 0).all() and (energy["emissions_kg"] > 0).all()
        text = _latest(project, f"{pipeline}_report.md").read_text()
        assert "## Energy and emissions of training" in text and "## Saliency maps" in text
        assert all(f"| {pipeline}.{v} | 1 | 1 |" in text for v in variants)  # one run, one epoch
        assert f"`{pipeline}_saliency_plot`" in text
        for plot in ("saliency", "saliency_mean"):
            assert _latest(project, f"{pipeline}_{plot}.png").stat().st_size > 0

    svcca = pd.read_csv(_latest(project, "finetune_svcca.csv"))
    assert set(svcca["variant"]) == {f"finetune.{v}" for v in FINETUNE_VARIANTS if v != "scratch"}
    assert output(project, "finetune", "full", "svcca.parquet").exists()
    probe = svcca[(svcca["variant"] == "finetune.linear_probe") & svcca["similarity"].notna()]
    assert len(probe) >= 4 and probe["similarity"].to_numpy() == pytest.approx(1.0, abs=1e-4)
    # 10 test slices of 32x32: resnet18's layer3 (2x2) and layer4 (1x1) have too few positions.
    assert (
        "No cutoff suggested for `finetune.full`"
        in _latest(project, "finetune_report.md").read_text()
    )
    assert _latest(project, "finetune_svcca.png").stat().st_size > 0


STATUS_ROW = re.compile(r"^(\S+) +(fresh|stale|missing)\b", re.MULTILINE)


def _versions(project: Path, name: str) -> int:
    return len(list((project / "data/08_reporting" / name).glob(f"*/{name}")))


def test_a_changed_parameter_re_runs_exactly_the_variants_it_affects_and_the_reports(project):
    lr = "finetune.optimizer.lr=0.01"
    status = kedro(project, "tlkedro", "status", "--env", "tiny", "--params", lr).stdout
    rows = dict(STATUS_ROW.findall(status))
    inheriting = ["scratch", "full", "freeze_layer3_1"]  # linear_probe sets its own lr
    assert {v: rows[f"finetune.{v}"] for v in [*inheriting, "linear_probe"]} == {
        **dict.fromkeys(inheriting, "stale"),
        "linear_probe": "fresh",
    }
    assert rows["pretrain.default"] == rows["preprocessing"] == "fresh"
    assert rows["reporting"] == "stale"
    reports = {
        name: _versions(project, name) for name in ("finetune_report.md", "pretrain_report.md")
    }

    result = kedro(project, "run", "--env", "tiny", "--only-missing-outputs", "--params", lr)

    completed = set(re.findall(r"Completed node: (\S+)", result.stdout + result.stderr))
    trained = {n.removesuffix(".train") for n in completed if n.endswith(".train")}
    assert trained == {f"finetune.{v}" for v in inheriting}
    assert not any(n.startswith(("pretrain.", "finetune.linear_probe")) for n in completed)
    assert _versions(project, "finetune_report.md") == reports["finetune_report.md"] + 1
    assert _versions(project, "pretrain_report.md") == reports["pretrain_report.md"]
    config = json.loads(output(project, "finetune", "full", "config.json").read_text())["config"]
    assert config["optimizer"]["lr"] == pytest.approx(0.01)
    after = kedro(project, "tlkedro", "status", "--env", "tiny", "--params", lr).stdout
    assert set(dict(STATUS_ROW.findall(after)).values()) == {"fresh"}
