"""The reporting pipeline: TruncatedTL's cutoff search (stage 1 picks a stage, stage 2 is a runnable sweep),
and the evaluation report's nodes (baselines, intervals, verdicts, flags)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tlkedro.imaging.folds import assign_folds
from tlkedro.pipelines.finetune import create_pipeline as create_finetune_pipeline
from tlkedro.pipelines.reporting import create_pipeline
from tlkedro.pipelines.reporting.nodes import (
    EvaluationParams,
    compute_cross_validated_baselines,
    compute_split_baselines,
    plot_training_size_curve,
    report_evaluation,
)
from tlkedro.plan import build_plan
from tlkedro.tl import reports
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
    return reports.comparison_table(rows)


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
            "strategy": {"name": "truncated", "kwargs": {"cut_at": "layer3.0"}},
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


# The evaluation report's nodes ------------------------------------------------------------------------


def _cohort(n: int = 36, seed: int = 0):
    """32x32 slices (two per subject) whose brightness grows with age; sex follows age loosely."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    ids = [f"sub-{i:03d}" for i in range(n)]
    images = rng.normal(0, 0.3, (2 * n, 1, 32, 32)).astype(np.float32)
    images[:, :, :16] += np.repeat(age, 2)[:, None, None, None] / 30
    labels = pd.DataFrame(
        {
            "subject_id": np.repeat(ids, 2),
            "age": np.repeat(age, 2),
            "sex": np.repeat((age + rng.normal(0, 10, n) > 50).astype(int), 2),
        }
    )
    subjects = labels.drop_duplicates("subject_id")
    return images, labels, assign_folds(subjects, k=3, repeats=1, seed=0)


def test_evaluation_parameters_of_conf_base_are_valid():
    conf = yaml.safe_load(Path("conf/base/parameters_reporting.yml").read_text())
    params = EvaluationParams.model_validate(conf["reporting"]["evaluation"])
    assert params.reference == "scratch" and params.baselines == ["trivial", "linear", "covariate"]
    with pytest.raises(ValueError, match="n_resample"):
        EvaluationParams.model_validate({"n_resample": 10})


def test_cross_validated_evaluation_report_puts_baselines_beside_variants(caplog):
    images, labels, folds = _cohort()
    params = {"n_resamples": 200, "baselines": ["trivial", "linear", "covariate"]}
    with caplog.at_level(logging.WARNING):
        baselines = compute_cross_validated_baselines(
            images, labels, folds, task="regression", target="age", evaluation_params=params
        )
    assert "covariate baseline skipped" in caplog.text  # the labels have no head_scale
    assert sorted(baselines["model"].unique()) == ["baseline.linear", "baseline.trivial"]
    linear = baselines[baselines["model"] == "baseline.linear"].drop(columns="model")
    scratch = linear.assign(prediction=linear["prediction"] + 1.0)
    constant = linear.assign(prediction=0.0)
    table, markdown = report_evaluation(
        baselines,
        scratch,
        constant,
        names=["finetune.scratch", "finetune.constant"],
        task="regression",
        target="age",
        evaluation_params=params,
        title="Age, 3-fold cross-validation",
    )
    assert list(table["model"]) == [
        "finetune.scratch",
        "finetune.constant",
        "baseline.trivial",
        "baseline.linear",
    ]
    assert (table["n_subjects"] == 36).all() and (table["folds"] == 3).all()
    rows = table.set_index("model")
    assert rows.loc["finetune.constant", "verdict"] == "worse than finetune.scratch"
    assert rows.loc["baseline.linear", "verdict"] == "better than finetune.scratch"
    assert "| finetune.constant | variant | 36 |" in markdown
    assert "| baseline.trivial | baseline | 36 |" in markdown
    flags = markdown.split("### Flags")[1]
    assert "finetune.constant does not beat the trivial baseline baseline.trivial" in flags
    assert "finetune.constant has an MAE of" in flags
    assert "Every metric rests on 36 subjects (fewer than 30)" not in flags
    assert "finetune.constant has an MAE of" in caplog.text


def test_split_baselines_on_a_classification_task():
    images, labels, _ = _cohort(40)
    train = labels["subject_id"] < "sub-028"
    test = ~train
    baselines = compute_split_baselines(
        images[train.to_numpy()],
        labels[train],
        images[test.to_numpy()],
        labels[test],
        task="classification",
        target="sex",
        evaluation_params={"baselines": ["trivial", "linear"], "n_resamples": 100},
    )
    assert set(baselines["model"]) == {"baseline.trivial", "baseline.linear"}
    assert (baselines.groupby("model").size() == 12).all()
    trivial = baselines[baselines["model"] == "baseline.trivial"]
    assert trivial["probability"].nunique() == 1
    table, markdown = report_evaluation(
        baselines,
        names=[],
        task="classification",
        target="sex",
        evaluation_params={"n_resamples": 100, "reference": None},
        title="Sex",
    )
    assert list(table["metric"].unique()) == ["auroc"]
    prefixed, _ = report_evaluation(
        baselines,
        names=[],
        task="classification",
        target="sex",
        evaluation_params={"n_resamples": 100, "reference": None},
        title="Sex",
        metric="test/balanced_accuracy",
    )
    assert list(prefixed["metric"].unique()) == ["balanced_accuracy"]
    assert "rests on 12 subjects (fewer than 30)" in markdown
    assert "difference to" not in markdown  # no reference


def _size_ablation(cross_validation: dict | None = None) -> dict:
    """The finetune variants of a data-size ablation: full and scratch at 6 and 12 subjects, and both
    on every training subject (no train_size)."""
    sizes = {"grid": {"train_size": [6, 12]}}
    finetune = {
        **FINETUNE,
        "variants": {"full": {}, "scratch": {"init_from": None, "strategy": {"name": "scratch"}}},
        "sweeps": {
            "size_full": {"kind": "grid", "overrides": {"group": "size_full"}, **sizes},
            "size_scratch": {
                "kind": "grid",
                "overrides": {"init_from": None, "strategy": {"name": "scratch"}},
                **sizes,
            },
        },
    }
    parameters = {**PARAMETERS, "finetune": finetune}
    if cross_validation:
        parameters |= {"cross_validation": cross_validation}
        parameters["pretrain"] = {**PARAMETERS["pretrain"], "train_on": "pretrain"}
        finetune["train_on"] = cross_validation["split"]
    parameters["reporting"] = {**PARAMETERS["reporting"], "cutoff_search": None}
    return parameters


def _training_size_node(parameters: dict):
    plan = build_plan(parameters)
    pipeline = create_pipeline(plan, {**parameters["reporting"], "cutoff_search": None})
    [node] = [n for n in pipeline.nodes if n.name == "plot_finetune_training_size"]
    return node


def _evaluation_of(models: dict[str, float]) -> pd.DataFrame:
    """An evaluation table with the given estimates, each with an interval of +-0.05."""
    return pd.DataFrame(
        {
            "model": list(models),
            "kind": "variant",
            "metric": "auroc",
            "estimate": list(models.values()),
            "low": [v - 0.05 for v in models.values()],
            "high": [v + 0.05 for v in models.values()],
            "confidence": 0.95,
        }
    )


def test_training_size_plot_closes_each_strategy_line_with_its_full_size_variant():
    node = _training_size_node(_size_ablation())
    names = ["full", "scratch", "size_full_0", "size_full_1", "size_scratch_0", "size_scratch_1"]
    # Every compared variant's record gives its real size, the full-size ones included.
    assert node.inputs == ["finetune_evaluation", *(f"finetune.{n}.metrics" for n in names)]
    lines = node.func.keywords["lines"]
    assert {lines[f"finetune.{n}"] for n in names} == {"full", "scratch"}
    assert lines["finetune.full"] == lines["finetune.size_full_1"] == "full"
    assert lines["finetune.scratch"] == lines["finetune.size_scratch_0"] == "scratch"
    sizes = {"full": 30, "scratch": 30, "size_full_0": 6, "size_full_1": 12}
    sizes |= {"size_scratch_0": 6, "size_scratch_1": 12}
    estimates = {"full": 0.8, "scratch": 0.7, "size_full_0": 0.6, "size_full_1": 0.7}
    estimates |= {"size_scratch_0": 0.5, "size_scratch_1": 0.55}
    inputs = {"finetune_evaluation": _evaluation_of({f"finetune.{n}": estimates[n] for n in names})}
    inputs |= {f"finetune.{n}.metrics": {"n_train_subjects": sizes[n]} for n in names}
    figure = node.run(inputs)["finetune_training_size_plot"]
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "scratch"]
    points = {
        label: sorted(zip(c.lines[0].get_xdata(), c.lines[0].get_ydata()))
        for label, c in zip(["full", "scratch"], ax.containers)
    }
    assert points == {
        "full": [(6, 0.6), (12, 0.7), (30, 0.8)],
        "scratch": [(6, 0.5), (12, 0.55), (30, 0.7)],
    }
    assert all(c.lines[0].get_marker() == "o" for c in ax.containers)


def test_training_size_plot_puts_cross_validated_variants_at_their_mean_fold_size():
    cv = {"split": "finetune", "folds": 3}
    node = _training_size_node(_size_ablation(cv))
    folds = [f"fold_{i}" for i in range(3)]
    assert node.inputs[:4] == [
        "finetune_evaluation",
        *(f"finetune.full.{f}.metrics" for f in folds),
    ]
    names = ["full", "scratch", "size_full_0", "size_full_1", "size_scratch_0", "size_scratch_1"]
    fold_sizes = {"full": [24, 24, 23], "scratch": [24, 24, 23]}
    fold_sizes |= {n: [6, 6, 6] for n in names if n.endswith("_0")}
    fold_sizes |= {n: [12, 12, 12] for n in names if n.endswith("_1")}
    inputs = {"finetune_evaluation": _evaluation_of({f"finetune.{n}": 0.7 for n in names})}
    inputs |= {
        f"finetune.{n}.{fold}.metrics": {"n_train_subjects": size}
        for n in names
        for fold, size in zip(folds, fold_sizes[n])
    }
    ax = node.run(inputs)["finetune_training_size_plot"].axes[0]
    assert sorted(ax.containers[0].lines[0].get_xdata()) == pytest.approx([6, 12, 71 / 3])


def test_training_size_node_needs_the_training_subject_count():
    table = _evaluation_of({"finetune.full": 0.7, "finetune.size_full_0": 0.6})
    figure = plot_training_size_curve(
        table,
        {"n_train_subjects": 40},
        {"n_train_subjects": 10},
        models=["finetune.full", "finetune.size_full_0"],
        lines={"finetune.full": "full", "finetune.size_full_0": "full"},
    )
    [container] = figure.axes[0].containers
    assert sorted(container.lines[0].get_xdata()) == [10, 40]
    with pytest.raises(ValueError, match=r"\['finetune.full'\] lack n_train_subjects: re-run"):
        plot_training_size_curve(
            table, {"seed": 1}, models=["finetune.full"], lines={"finetune.full": "full"}
        )


def test_no_training_size_plot_without_a_train_size_variant():
    pipeline = create_reporting_pipeline(PARAMETERS)
    assert not [n for n in pipeline.nodes if n.name == "plot_finetune_training_size"]


def test_the_reference_can_differ_per_training_pipeline() -> None:
    from tlkedro.pipelines.reporting.nodes import for_pipeline

    evaluation = {"reference": {"pretrain": "baseline.linear", "finetune": "scratch"}, "seed": 1}
    assert for_pipeline(evaluation, "pretrain") == {"reference": "baseline.linear", "seed": 1}
    assert for_pipeline(evaluation, "finetune")["reference"] == "scratch"
    assert for_pipeline({"reference": "scratch"}, "pretrain") == {"reference": "scratch"}
    # A baseline as the reference: every variant is compared with it on the same subjects.
    per_pipeline = {"reference": {"pretrain": "scratch", "finetune": "baseline.linear"}}
    reporting = {**PARAMETERS["reporting"], "evaluation": per_pipeline}
    pipeline = create_pipeline(build_plan(PARAMETERS), reporting)
    [node] = [n for n in pipeline.nodes if n.name == "evaluate_finetune_variants"]
    assert node.func.keywords["evaluation_params"]["reference"] == "baseline.linear"


def test_every_variant_evaluated_on_external_is_reported_per_held_out_site():
    finetune = {**FINETUNE, "evaluate_on": ["test", "external"], "sweeps": {}}
    finetune["variants"] = {"full": {}, "probe": {"evaluate_on": ["test"]}}
    parameters = {**PARAMETERS, "finetune": finetune}
    parameters["reporting"] = {**PARAMETERS["reporting"], "cutoff_search": None}
    pipeline = create_reporting_pipeline(parameters)
    [node] = [n for n in pipeline.nodes if n.name == "evaluate_finetune_external_sites"]
    assert node.inputs == ["external_labels", "finetune.full.predictions_external"]
    [report] = [n for n in pipeline.nodes if n.name == "write_finetune_report"]
    assert "finetune_external_sites_markdown" in report.inputs
    rng = np.random.default_rng(0)
    ids = [f"s{i:02d}" for i in range(24)]
    target = np.tile([0, 1], 12)
    labels = pd.DataFrame({"subject_id": np.repeat(ids, 2), "site": np.repeat(["A", "B"], 24)})
    predictions = pd.DataFrame(
        {
            "subject_id": ids,
            "target": target,
            "prediction": target,
            "probability": rng.uniform(size=24),
        }
    )
    outputs = node.run(
        {"external_labels": labels, "finetune.full.predictions_external": predictions}
    )
    table = outputs["finetune_external_sites"]
    assert list(zip(table["site"], table["n_subjects"])) == [("A", 12), ("B", 12)]
    assert set(table["metric"]) == {"auroc"}
    assert "## finetune: sex per held-out site" in outputs["finetune_external_sites_markdown"]
    # A pipeline whose variants skip `external` has no such node.
    pretrain_nodes = [n.name for n in pipeline.nodes if n.name.startswith("evaluate_pretrain")]
    assert "evaluate_pretrain_external_sites" not in pretrain_nodes


def test_the_head_size_section_knows_each_variants_covariates() -> None:
    finetune = {**FINETUNE, "variants": {"full_head_scale": {"covariates": ["head_scale"]}}}
    pipeline = create_reporting_pipeline({**PARAMETERS, "finetune": finetune})
    [node] = [n for n in pipeline.nodes if n.name == "report_finetune_head_size"]
    assert node.inputs == ["finetune_labels", "finetune_evaluation", "finetune_images"]
    [report] = [n for n in pipeline.nodes if n.name == "write_finetune_report"]
    assert "finetune_head_size_markdown" in report.inputs
    labels = pd.DataFrame({"subject_id": ["a", "b"], "head_scale": [0.6, 0.7]})
    table = pd.DataFrame(
        {
            "model": ["finetune.full_0", "finetune.full_head_scale", "baseline.covariate"],
            "metric": "auroc",
            "estimate": [0.6, 0.8, 0.77],
            "low": 0.5,
            "high": 0.9,
            "confidence": 0.95,
        }
    )
    inputs = {"finetune_labels": labels, "finetune_evaluation": table}
    slices = np.zeros((2, 1, 8, 8), dtype=np.float32)
    markdown = node.run({**inputs, "finetune_images": slices})["finetune_head_size_markdown"]
    assert "| finetune.full_0 | **controlled** |" in markdown
    assert "| finetune.full_head_scale | **not controlled** |" in markdown
    assert "| baseline.covariate | the only input |" in markdown
    # ROI time series (N, ROIs, T) have no head: the section says so instead of "unknown" rows.
    series = np.zeros((2, 8, 32), dtype=np.float32)
    markdown = node.run({**inputs, "finetune_images": series})["finetune_head_size_markdown"]
    assert markdown.startswith("### Head size\n\nNot applicable: the inputs are ROI time series")
    assert "**controlled**" not in markdown and "baseline.covariate" not in markdown
