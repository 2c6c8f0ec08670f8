"""The dapt pipeline: its structure, built from parameters, and a tiny run through the real ``kedro`` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.test_end_to_end import PROJECT, kedro
from tlkedro.pipeline_registry import load_parameters
from tlkedro.pipelines.dapt import create_pipeline
from tlkedro.pipelines.finetune import create_pipeline as create_finetune_pipeline
from tlkedro.plan import build_plan

STRATEGIES = ["full", "partial", "hybrid", "simplified"]
VARIANTS = [
    f"{strategy}_{seed}" for strategy in STRATEGIES for seed in range(3)
]  # three seeds each
TINY_VARIANTS = [f"{strategy}_0" for strategy in STRATEGIES]


@pytest.fixture(scope="module")
def parameters() -> dict:
    return load_parameters()


def test_each_variant_adapts_the_generic_model_then_fine_tunes_the_adapted_one(
    parameters: dict,
) -> None:
    pipeline = create_pipeline(build_plan(parameters))
    assert {n.namespace for n in pipeline.nodes} == {
        *(f"dapt.{v}{stage}" for v in VARIANTS for stage in ("", ".adapt", ".finetune")),
        None,  # the comparison across variants
    }
    assert {
        "pretrain.default.model",
        "external_images",
        "finetune_labels",
        "test_images",
    } <= pipeline.inputs()
    nodes = {node.name: node for node in pipeline.nodes}
    assert nodes["dapt.hybrid_0.adapt.train"].inputs == [
        "external_images",
        "external_labels",
        "pretrain.default.model",
    ]
    assert "dapt.hybrid_0.adapt.model" in nodes["dapt.hybrid_0.finetune.train"].inputs
    assert {
        "dapt.hybrid_0.finetune.evaluate_test",
        "dapt.hybrid_0.finetune.evaluate_external",
    } <= nodes.keys()
    assert nodes["dapt.hybrid_0.evaluate_downstream"].inputs[0] == "dapt.hybrid_0.adapt.model"
    assert nodes["compare_dapt_variants"].inputs == [f"dapt.{v}.metrics" for v in VARIANTS]


def test_a_seed_sweep_seeds_every_stage_and_a_wrong_key_names_the_variant(
    parameters: dict, tmp_path
) -> None:
    section = {
        **parameters["dapt"],
        "variants": {},
        "sweeps": {
            "hybrid": {"kind": "grid", "overrides": {"group": "hybrid"}, "grid": {"seed": [1, 2]}}
        },
    }
    plan = build_plan({"pretrain": parameters["pretrain"], "dapt": section})
    pipeline = create_pipeline(plan)
    record = next(n for n in pipeline.nodes if n.name == "dapt.hybrid_1.finetune.record_run")
    config = record.run({})["dapt.hybrid_1.finetune.config"]["config"]
    assert (config["seed"], config["group"], config["init_from"]) == (
        2,
        "hybrid",
        "dapt.hybrid_1.adapt",
    )
    assert plan.dapt["hybrid_1"].downstream.seed == 2
    with pytest.raises(ValueError, match=r"(?s)dapt\.oops.*adpt.*Extra inputs"):
        build_plan(
            {
                "pretrain": parameters["pretrain"],
                "dapt": {**section, "sweeps": {}, "variants": {"oops": {"adpt": {}}}},
            }
        )


def test_the_old_split_keys_of_dapt_still_work_with_a_warning(parameters: dict) -> None:
    section = {**parameters["dapt"], "adapt_on": "finetune"}
    section["adapt"] = {k: v for k, v in section["adapt"].items() if k != "train_on"}
    with pytest.warns(FutureWarning, match=r"dapt\.adapt_on.*dapt\.adapt\.train_on"):
        plan = build_plan({"pretrain": parameters["pretrain"], "dapt": section})
    assert plan.dapt["hybrid_0"].adapt.config.train_on == "finetune"


def test_unlabelled_from_hands_a_split_s_images_to_the_template_s_train_node(
    parameters: dict,
) -> None:
    section = {
        **parameters["finetune"],
        "variants": {"dann": {"unlabelled_from": "external"}},
        "sweeps": {},
    }
    train = next(
        n
        for n in create_finetune_pipeline(
            build_plan({"pretrain": parameters["pretrain"], "finetune": section})
        ).nodes
        if n.name == "finetune.dann.train"
    )
    assert "external_images" in train.inputs and "external_labels" not in train.inputs


@pytest.mark.slow
def test_kedro_run_dapt_on_the_tiny_cohort(tmp_path: Path) -> None:
    shutil.copytree(PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    (
        tmp_path / "src"
    ).mkdir()  # Kedro insists on the source folder; the package itself is installed
    kedro(tmp_path, "run", "--env", "tiny", "--pipelines", "data,pretrain,dapt")

    output = tmp_path / "data" / "07_model_output" / "dapt"
    phases = pd.read_csv(output / "hybrid_0" / "phases.csv")
    adapt = phases[phases["stage"] == "adapt"]
    assert adapt["phase"].tolist() == ["warmup", "partial", "full"]
    assert adapt["epochs"].tolist() == [1, 1, 1]
    assert adapt["trainable_params"].is_monotonic_increasing and (phases["energy_kwh"] > 0).all()
    downstream = pd.read_csv(output / "simplified_0" / "downstream.csv")
    assert set(downstream["split"]) == {"test", "external", "dip"}
    assert set(downstream["hidden_layers"]) == {"64-32", "512-256-256-128"}
    record = json.loads((output / "simplified_0" / "metrics.json").read_text())
    assert record["strategy"] == "dapt_simplified" and record["init_from"] == "pretrain.default"
    assert {
        "finetune/test/auroc",
        "finetune/dip/auroc",
        "mlp_64_32/dip/auroc",
        "adapt/energy_kwh",
    } <= set(record)
    simplified = json.loads((output / "simplified_0" / "adapt" / "config.json").read_text())
    assert simplified["config"]["strategy"]["kwargs"]["cut_at"] == "layer2"
    [comparison] = (tmp_path / "data" / "08_reporting" / "dapt_comparison.csv").glob("*/*.csv")
    table = pd.read_csv(comparison)
    assert set(table["variant"]) == {f"dapt.{v}" for v in TINY_VARIANTS}
    assert set(table["group"]) == set(STRATEGIES)
