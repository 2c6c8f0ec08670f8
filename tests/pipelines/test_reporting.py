"""The reporting pipeline's TruncatedTL cutoff search: stage 1 picks a stage, stage 2 is a runnable sweep."""

from __future__ import annotations

import pandas as pd
import pytest

from tlkedro import reporting
from tlkedro.pipelines.finetune import create_pipeline as create_finetune_pipeline
from tlkedro.pipelines.reporting import create_pipeline
from tlkedro.plan import build_plan
from tlkedro.variants import deep_merge

SEEDS = {"seed": [1, 2]}
FINETUNE = {
    "target": "sex",
    "task": "classification",
    "init_from": "pretrain.default",
    "architecture": {"name": "resnet18", "kwargs": {}},
    "objective": {"name": "cross_entropy"},
    "strategy": {"name": "full"},
    "optimizer": {"lr": 3e-4},
    "evaluate_on": ["test"],
    "variants": None,
    "sweeps": {
        "full": {"kind": "grid", "overrides": {"group": "full"}, "grid": SEEDS},
        **{
            f"ttl_{cutoff}": {
                "kind": "grid",
                "overrides": {
                    "strategy": {"name": "truncated", "kwargs": {"cutoff": cutoff}},
                    "optimizer": {"lr": 1e-3},
                    "group": f"ttl_{cutoff}",
                },
                "grid": SEEDS,
            }
            for cutoff in ("layer2", "layer3")
        },
    },
}
PARAMETERS = {
    "pretrain": {
        "target": "age",
        "task": "regression",
        "architecture": {"name": "resnet18"},
        "objective": {"name": "mse"},
        "variants": {"default": {}},
    },
    "finetune": FINETUNE,
    "reporting": {
        "primary_metric": {"pretrain": "test/mae", "finetune": "test/auroc"},
        "cutoff_search": {"metric": "val/auprc", "reference_group": "full"},
    },
}


def create_reporting_pipeline(parameters: dict):
    return create_pipeline(build_plan(parameters), parameters["reporting"])


def _comparison(scores: dict[str, list[float]]) -> pd.DataFrame:
    """A finetune comparison table: two seeds per group, with the given validation AUPRCs."""
    rows = [
        {
            "variant": f"finetune.{group}_{seed - 1}",
            "group": group,
            "seed": seed,
            "total_params": 1000,
            "cpu_latency_ms": 2.0,
            "test/auroc": 0.7,
            "val/auprc": score,
        }
        for group, values in scores.items()
        for seed, score in enumerate(values, 1)
    ]
    return reporting.comparison_table(rows)


def _plan(parameters: dict, comparison: pd.DataFrame) -> tuple[dict, str]:
    [node] = [
        n for n in create_reporting_pipeline(parameters).nodes if n.name == "plan_cutoff_search"
    ]
    assert node.inputs == ["finetune_comparison"]
    return node.run({"finetune_comparison": comparison}).values()


def test_stage_one_winner_gives_a_stage_two_sweep_kedro_can_run():
    stage1 = _comparison({"full": [0.7, 0.7], "ttl_layer2": [0.6, 0.7], "ttl_layer3": [0.8, 0.75]})
    config, report = _plan(PARAMETERS, stage1)

    sweeps = config["run"]["params"]["finetune"]["sweeps"]
    # Around layer3 the candidates are layer3.0, layer3 and layer4.0; stage 1 has run layer3 itself.
    assert list(sweeps) == ["ttl2_layer3_0", "ttl2_layer4_0"]
    assert sweeps["ttl2_layer3_0"] == {
        "kind": "grid",
        "overrides": {
            "strategy": {"name": "truncated", "kwargs": {"cutoff": "layer3.0"}},
            "optimizer": {"lr": 1e-3},
            "group": "ttl2_layer3_0",
        },  # the winner's settings
        "grid": {"seed": [1, 2]},
    }
    assert "Best stage: `layer3`" in report and "Not run yet: `layer3.0`, `layer4.0`" in report

    # Passed to `kedro run --config`, the params merge into the finetune section and `from_nodes` picks
    # exactly the new variants and the reports that follow them.
    merged = deep_merge(PARAMETERS, {"finetune": {"sweeps": sweeps}})
    everything = create_finetune_pipeline(build_plan(merged)) + create_reporting_pipeline(merged)
    selected = everything.from_nodes(*config["run"]["from_nodes"].split(","))
    namespaces = {node.namespace for node in selected.nodes}
    assert namespaces == {None, *(f"finetune.{s}_{i}" for s in sweeps for i in range(2))}
    assert "plan_cutoff_search" in {node.name for node in selected.nodes}


def test_after_stage_two_the_report_names_the_best_cutoff_and_the_plan_stays():
    scores = {"full": [0.7, 0.7], "ttl_layer2": [0.6, 0.7], "ttl_layer3": [0.8, 0.75]}
    first, _ = _plan(PARAMETERS, _comparison(scores))
    merged = deep_merge(PARAMETERS, first["run"]["params"])
    both = _comparison({**scores, "ttl2_layer3_0": [0.9, 0.85], "ttl2_layer4_0": [0.5, 0.5]})

    second, report = _plan(merged, both)

    assert second == first  # stage 2 ranks around the stage-1 winner, so the plan is reproducible
    assert "Not run yet" not in report
    assert "Best cutoff so far: `layer3.0` (val/auprc 0.875 ± 0.035 over 2 seeds)" in report


def test_cutoff_search_is_built_only_when_asked_for_and_needs_truncated_variants():
    plain = deep_merge(PARAMETERS, {"reporting": {"cutoff_search": None}})
    assert "plan_cutoff_search" not in {n.name for n in create_reporting_pipeline(plain).nodes}
    untruncated = {
        **PARAMETERS,
        "finetune": {**FINETUNE, "sweeps": {"full": FINETUNE["sweeps"]["full"]}},
    }
    with pytest.raises(ValueError, match="strategy `truncated`"):
        create_reporting_pipeline(untruncated)
    with pytest.raises(ValueError, match="metrc"):
        create_reporting_pipeline(
            deep_merge(PARAMETERS, {"reporting": {"cutoff_search": {"metrc": "x"}}})
        )
