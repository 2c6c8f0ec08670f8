"""The reports' analysis sections: energy per training phase, SVCCA with a suggested cutoff, saliency maps.

Their nodes run on an in-memory catalog with tiny models (cbr_tiny on 32x32 slices); the pipeline's
structure is checked on plans with and without cross-validation and with the analyses on and off.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from tlkedro.pipelines.reporting import create_pipeline
from tlkedro.pipelines.reporting.analysis import (
    EnergyParams,
    SaliencyParams,
    analysis_nodes,
    compute_saliency,
)
from tlkedro.plan import Fold, PlanError, build_plan
from tlkedro.tl.analysis.energy import training_energy
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import make_checkpoint
from tlkedro.variants import deep_merge

pytestmark = pytest.mark.usefixtures("single_thread")

ARCHITECTURE = {
    "name": "cbr_tiny",
    "kwargs": {"img_size": 32, "width_factors": {f"layer{i}": 0.125 for i in range(1, 5)}},
}
TRAINING = {"architecture": ARCHITECTURE, "objective": {}, "evaluate_on": ["test"]}
PARAMETERS = {
    "pretrain": {
        **TRAINING,
        "target": "age",
        "task": "regression",
        "objective": {"name": "mse"},
        "variants": {"default": {}},
    },
    "finetune": {
        **TRAINING,
        "target": "sex",
        "task": "classification",
        "objective": {"name": "cross_entropy"},
        "init_from": "pretrain.default",
        "variants": {
            "scratch": {"init_from": None, "strategy": {"name": "scratch"}},
            "full": {},
            "moved": {},  # its checkpoint (below) keeps the source's layer1-2 only
        },
    },
    "reporting": {
        "primary_metric": {"pretrain": "test/mae", "finetune": "test/auroc"},
        "energy": {"n_cores": 2, "memory_gb": 0.0, "pue": 1.0, "carbon_intensity_g_per_kwh": 500},
        "analysis": {
            "svcca": {"max_samples": 1024, "max_images": 48},
            "saliency": {"layer": "layer2", "n_subjects": 4, "max_images": 24},
        },
    },
}
CROSS_VALIDATED = deep_merge(
    PARAMETERS,
    {
        "cross_validation": {"split": "finetune", "folds": 3},
        "pretrain": {"train_on": "finetune", "evaluate_on": []},
        "finetune": {"evaluate_on": []},
    },
)


def _model(num_outputs: int, seed: int, architecture: dict = ARCHITECTURE) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_architecture(
        architecture["name"], num_outputs=num_outputs, **architecture["kwargs"]
    )


def _checkpoints(architecture: dict = ARCHITECTURE) -> dict[str, dict]:
    """A source regression model; ``full`` shares its whole encoder, ``moved`` only its stages up to layer2."""
    source = _model(1, 0, architecture)
    models = {"pretrain.default": source}
    for name, shared in (("full", 4), ("moved", 2)):
        model = _model(2, 1, architecture)
        stages = list(model.stage_names)  # a stem (a ResNet's conv1, bn1, ...) goes with layer1
        for stage in stages[: stages.index(f"layer{shared}") + 1]:
            model.encoder.get_submodule(stage).load_state_dict(
                source.encoder.get_submodule(stage).state_dict()
            )
        models[f"finetune.{name}"] = model
    models["finetune.scratch"] = _model(2, 2, architecture)
    return {f"{name}.model": make_checkpoint(m, {}) for name, m in models.items()}


def _split(n: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame(
        {
            "subject_id": [f"sub-{i:02d}" for i in range(n)],
            "age": rng.uniform(45, 80, n),
            "sex": np.arange(n) % 2,
        }
    )
    return rng.normal(size=(n, 1, 32, 32)).astype(np.float32), labels


def _predictions(labels: pd.DataFrame, target: str, split: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": labels["subject_id"],
            "split": split,
            "target": labels[target],
            "prediction": 1 - labels[target] if target == "sex" else labels[target] + 1.0,
        }
    )


def _run(name: str, strategy: str, seconds: float) -> dict:
    """A run's record, history (2 epochs) and training summary (``seconds`` in its one phase)."""
    return {
        f"{name}.config": {"config": {"strategy": {"name": strategy, "kwargs": {}}}},
        f"{name}.history": pd.DataFrame({"epoch": [0, 1], "trainable_params": [100, 100]}),
        f"{name}.training_summary": {"train_seconds/train": seconds},
    }


def _inputs(images: np.ndarray | None = None, architecture: dict = ARCHITECTURE) -> dict:
    split_images, labels = _split(48, 0)
    images = split_images if images is None else images
    data = {"test_images": images, "test_labels": labels, **_checkpoints(architecture)}
    for name, target in (
        ("pretrain.default", "age"),
        *((f"finetune.{v}", "sex") for v in ("scratch", "full", "moved")),
    ):
        data[f"{name}.predictions_test"] = _predictions(labels, target, "test")
    seconds = {
        "pretrain.default": 36.0,
        "finetune.scratch": 18.0,
        "finetune.full": 7.2,
        "finetune.moved": 3.6,
    }
    for name, value in seconds.items():
        data.update(_run(name, "scratch" if "scratch" in name else "full", value))
    return data


def _outputs(nodes: list, inputs: dict) -> dict:
    catalog = DataCatalog()
    for name, value in inputs.items():
        catalog[name] = value
    pipeline = Pipeline(nodes)
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in pipeline.outputs()}


@pytest.fixture(scope="module")
def outputs(single_thread) -> dict:
    plan = build_plan(PARAMETERS)
    return _outputs(analysis_nodes(plan, PARAMETERS["reporting"]), _inputs())


def test_energy_per_phase_is_summed_per_variant_with_its_emissions(outputs):
    table = outputs["finetune_energy"]
    assert list(table["run"]) == ["finetune.scratch", "finetune.full", "finetune.moved"]
    power = EnergyParams.model_validate(PARAMETERS["reporting"]["energy"])
    assert power.watts() == pytest.approx(24.0)  # 2 cores x 12 W, no memory, PUE 1
    expected = training_energy(
        {"name": "full"},
        pd.DataFrame({"epoch": [0, 1], "trainable_params": [100, 100]}),
        {"train_seconds/train": 7.2},
        power,
    )
    full = table[table["variant"] == "finetune.full"].reset_index(drop=True)
    pd.testing.assert_frame_equal(full[expected.columns], expected)
    assert full.loc[0, "energy_kwh"] == pytest.approx(7.2 / 3600 * 24 / 1000)
    assert full.loc[0, "emissions_kg"] == pytest.approx(full.loc[0, "energy_kwh"] * 0.5)
    # 7.2 s at 24 W is 0.048 Wh, 0.024 g CO2e at 500 g/kWh
    assert "| finetune.full | 1 | 2 | 7.2 | 0.048 | 0.024 |" in outputs["finetune_energy_markdown"]
    assert "| pretrain.default | 1 | 2 | 36 | 0.24 | 0.12 |" in outputs["pretrain_energy_markdown"]


def test_svcca_compares_each_finetune_variant_with_its_source_and_suggests_a_cutoff(outputs):
    table = outputs["finetune_svcca"]
    assert set(table["variant"]) == {"finetune.full", "finetune.moved"}  # scratch has no source
    assert set(table["source"]) == {"pretrain.default.model"}
    similarity = table.pivot(index="variant", columns="stage", values="similarity")
    assert similarity.loc["finetune.full"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert similarity.loc["finetune.moved", ["layer1", "layer2"]].to_numpy() == pytest.approx(
        1.0, abs=1e-6
    )
    assert (similarity.loc["finetune.moved", ["layer3", "layer4"]] < 0.95).all()
    text = outputs["finetune_svcca_markdown"]
    assert "| finetune.moved | layer2 |" in text
    assert "| finetune.full | layer4 |" in text  # similarity never falls: keep every stage
    assert isinstance(outputs["finetune_svcca_plot"], Figure)


def test_saliency_overlays_alternate_classes_and_mean_maps_say_what_they_rest_on(outputs):
    assert isinstance(outputs["finetune_saliency_plot"], Figure)
    assert isinstance(outputs["finetune_saliency_mean_plot"], Figure)
    # Four subjects, one row each; the mean maps over 24 of the 48 images, 12 of each class.
    assert len(outputs["finetune_saliency_plot"].axes) == 4
    text = outputs["finetune_saliency_markdown"]
    assert "`finetune.scratch`" in text  # the evaluation's reference variant by default
    assert "- scratch: sex 0 (12 images, 12 subjects)" in text
    assert "- scratch: sex 1 (12 images, 12 subjects)" in text
    assert "- default: r with age (24 images, 24 subjects)" in outputs["pretrain_saliency_markdown"]


def test_saliency_result_holds_titled_subjects_and_a_signed_map_for_regression() -> None:
    images, labels = _split(20, 3)
    checkpoint = _checkpoints()["pretrain.default.model"]
    predictions = _predictions(labels, "age", "test").iloc[:-1]  # the last subject unpredicted
    result = compute_saliency(
        checkpoint,
        images,
        labels,
        predictions,
        variant="pretrain.default",
        fold=None,
        task="regression",
        target="age",
        params=SaliencyParams(layer="layer2", n_subjects=3, max_images=20),
    )
    ranked = labels.sort_values("age")["subject_id"].tolist()
    chosen = [ranked[0], ranked[10], ranked[-1]]  # evenly spaced ranks 0, 9.5 -> 10, 19
    assert [title.split(":")[0] for title in result["titles"]] == [f"default {s}" for s in chosen]
    assert result["maps"].shape == (3, 32, 32) and result["images"].shape == (3, 1, 32, 32)
    [correlation] = result["mean_maps"].values()
    assert result["signed"] and correlation.min() < 0 < correlation.max()
    unpredicted = labels["subject_id"].iloc[-1]
    assert all("pred" in t for t in result["titles"] if unpredicted not in t)


def test_a_grad_cam_layer_the_model_lacks_is_named_with_its_stages() -> None:
    images, labels = _split(8, 4)
    with pytest.raises(ValueError, match=r"saliency.layer 'layer9'.*'layer1', 'layer2'"):
        compute_saliency(
            _checkpoints()["finetune.full.model"],
            images,
            labels,
            _predictions(labels, "sex", "t"),
            variant="finetune.full",
            fold=None,
            task="classification",
            target="sex",
            params=SaliencyParams(layer="layer9"),
        )


def test_a_cross_validated_variant_is_analysed_on_its_first_fold_and_its_energy_sums_the_folds():
    plan = build_plan(CROSS_VALIDATED)
    nodes = {n.name: n for n in analysis_nodes(plan, CROSS_VALIDATED["reporting"])}
    assert nodes["compute_svcca_finetune.full"].inputs == [
        "pretrain.default.fold_0.model",
        "finetune.full.fold_0.model",
        "finetune_images",
        "finetune_labels",
        "folds",
    ]
    assert nodes["compute_saliency_finetune.scratch"].inputs == [
        "finetune.scratch.fold_0.model",
        "finetune_images",
        "finetune_labels",
        "finetune.scratch.fold_0.predictions_cv",
        "folds",
    ]
    energy = nodes["report_finetune_energy"]
    runs = [f"finetune.{v}.fold_{i}" for v in ("scratch", "full", "moved") for i in range(3)]
    assert energy.inputs == [
        f"{r}.{k}" for r in runs for k in ("config", "history", "training_summary")
    ]

    images, labels = _split(48, 0)
    folds = pd.DataFrame(
        {"repeat": 0, "fold": np.arange(48) % 3, "subject_id": labels["subject_id"]}
    )
    data = {"finetune_images": images, "finetune_labels": labels, "folds": folds}
    checkpoints = _checkpoints()
    data["pretrain.default.fold_0.model"] = checkpoints["pretrain.default.model"]
    data["finetune.full.fold_0.model"] = checkpoints["finetune.full.model"]
    for i in range(3):
        data.update(_run(f"finetune.full.fold_{i}", "full", 10.0 * (i + 1)))
    table = nodes["compute_svcca_finetune.full"].run(
        {name: data[name] for name in nodes["compute_svcca_finetune.full"].inputs}
    )["finetune.full.svcca"]
    # The 16 held-out images of fold 0, ceil(1024 / 16) = 64 positions each at layer1 (16x16).
    assert table.set_index("stage").loc["layer1", "samples"] == 16 * 64
    for variant in ("scratch", "moved"):
        for i in range(3):
            data.update(_run(f"finetune.{variant}.fold_{i}", "full", 1.0))
    markdown = energy.run({name: data[name] for name in energy.inputs})["finetune_energy_markdown"]
    power = EnergyParams.model_validate(CROSS_VALIDATED["reporting"]["energy"])
    # Three folds of 2 epochs, 10 + 20 + 30 s
    assert f"| finetune.full | 3 | 6 | 60 | {power.kwh(60.0) * 1000:.4g} |" in markdown


def test_the_reports_join_the_sections_of_the_analyses_that_are_on():
    on = create_pipeline(build_plan(PARAMETERS), PARAMETERS["reporting"])
    reports = {n.name: n for n in on.nodes if n.name.startswith("write_")}
    assert reports["write_finetune_report"].inputs == [
        "finetune_comparison_markdown",
        "finetune_evaluation_markdown",
        "finetune_head_size_markdown",
        "finetune_classes_markdown",  # classification: per-class metrics, confusion matrices
        "finetune_energy_markdown",
        "finetune_svcca_markdown",
        "finetune_saliency_markdown",
    ]
    assert reports["write_pretrain_report"].inputs[-2:] == [
        "pretrain_energy_markdown",
        "pretrain_saliency_markdown",
    ]
    assert {"finetune_svcca", "finetune_svcca_plot", "pretrain_saliency_plot"} <= on.all_outputs()

    off = deep_merge(
        PARAMETERS["reporting"],
        {"analysis": {"svcca": {"enabled": False}, "saliency": {"enabled": False}}},
    )
    pipeline = create_pipeline(build_plan(PARAMETERS), off)
    names = {n.name for n in pipeline.nodes}
    assert not {n for n in names if "svcca" in n or "saliency" in n}
    assert {
        "report_pretrain_energy",
        "report_finetune_energy",
    } <= names  # energy is always reported
    [finetune_report] = [n for n in pipeline.nodes if n.name == "write_finetune_report"]
    assert finetune_report.inputs[-1] == "finetune_energy_markdown"


def test_saliency_variants_from_the_parameters_and_bad_parameters_name_their_key():
    chosen = deep_merge(
        PARAMETERS["reporting"],
        {"analysis": {"saliency": {"variants": ["finetune.full", "finetune.moved"]}}},
    )
    nodes = {n.name: n for n in analysis_nodes(build_plan(PARAMETERS), chosen)}
    assert nodes["report_finetune_saliency"].inputs == [
        "finetune.full.saliency",
        "finetune.moved.saliency",
    ]
    assert "report_pretrain_saliency" not in nodes

    bad = [
        ({"saliency": {"variants": ["finetune.nope"]}}, r"finetune.nope.*finetune.full"),
        ({"saliency": {"method": "occlusion"}}, r"reporting.analysis.saliency.method"),
        ({"svcca": {"rule": "threshold"}}, r"reporting.analysis.svcca: .*needs `threshold`"),
        ({"svcca": {"max_images": 0}}, r"reporting.analysis.svcca.max_images"),
    ]
    for analysis, message in bad:
        with pytest.raises(PlanError, match=message):
            analysis_nodes(
                build_plan(PARAMETERS), deep_merge(PARAMETERS["reporting"], {"analysis": analysis})
            )
    with pytest.raises(PlanError, match=r"reporting.energy.pue"):
        analysis_nodes(build_plan(PARAMETERS), {"energy": {"pue": 0.5}})


def test_held_out_rows_of_a_fold_are_those_of_its_subjects() -> None:
    images, labels = _split(12, 5)
    folds = pd.DataFrame(
        {"repeat": 0, "fold": np.arange(12) % 3, "subject_id": labels["subject_id"]}
    )
    result = compute_saliency(
        _checkpoints()["finetune.full.model"],
        images,
        labels,
        _predictions(labels, "sex", "cv"),
        folds,
        variant="finetune.full",
        fold=Fold(0, 1, "fold_1"),
        task="classification",
        target="sex",
        params=SaliencyParams(layer="layer2", n_subjects=4),
    )
    held_out = {f"sub-{i:02d}" for i in range(1, 12, 3)}
    assert {title.split(" ")[1].rstrip(":") for title in result["titles"]} == held_out
    assert sum(int(name.split("(")[1].split()[0]) for name in result["mean_maps"]) == 4


def test_by_default_only_variants_evaluated_on_a_split_are_explained():
    parameters = deep_merge(
        PARAMETERS,
        {
            "pretrain": {"evaluate_on": []},
            "finetune": {"variants": {"scratch": {"evaluate_on": []}}},
        },
    )
    nodes = {n.name: n for n in analysis_nodes(build_plan(parameters), parameters["reporting"])}
    assert "report_pretrain_saliency" not in nodes
    assert nodes["report_finetune_saliency"].inputs == [
        "finetune.full.saliency"
    ]  # scratch has no split
    named = deep_merge(
        parameters["reporting"], {"analysis": {"saliency": {"variants": ["pretrain.default"]}}}
    )
    with pytest.raises(PlanError, match="pretrain.default is evaluated on no split"):
        analysis_nodes(build_plan(parameters), named)


def test_series_get_svcca_per_1d_stage_and_saliency_per_roi_and_time(single_thread) -> None:
    """ROI time series, (N, ROIs, T), through the same analysis nodes with a 1D ResNet."""
    rois, length = 6, 32
    architecture = {
        "name": "resnet10_1d",
        "kwargs": {
            "in_channels": rois,
            "img_size": [length],
            "width_factors": {f"layer{i}": 0.125 for i in range(1, 5)},
        },
    }
    parameters = deep_merge(
        PARAMETERS,
        {
            "pretrain": {"architecture": architecture},
            "finetune": {"architecture": architecture},
            "reporting": {
                "analysis": {"saliency": {"method": "integrated_gradients", "layer": None}}
            },
        },
    )
    series = np.random.default_rng(5).normal(size=(48, rois, length)).astype(np.float32)
    outputs = _outputs(
        analysis_nodes(build_plan(parameters), parameters["reporting"]),
        _inputs(series, architecture),
    )
    svcca = outputs["finetune_svcca"].set_index(["variant", "stage"])["similarity"]
    stages = ["conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert list(outputs["finetune_svcca"]["stage"].unique()) == stages
    assert svcca["finetune.full"].to_numpy() == pytest.approx(1.0)  # the source's whole encoder
    assert svcca["finetune.moved", "layer4"] < 0.99  # reinitialised after layer2
    overlay = outputs["finetune_saliency_plot"]
    assert len(overlay.axes) == 4 and overlay.axes[0].get_ylabel() == "ROI"
    assert overlay.axes[0].get_images()[1].get_array().shape == (rois, length)
    text = outputs["finetune_saliency_markdown"]
    assert "`integrated_gradients` maps" in text and "Per ROI (mean scaled saliency" in text
    assert len(re.findall(r"^\| ROI \d \|", text, flags=re.M)) == rois
    assert "Per ROI (mean correlation over time" in outputs["pretrain_saliency_markdown"]
    bars = [a for a in outputs["finetune_saliency_mean_plot"].axes if a.patches]
    assert len(bars) == 2 and all(len(b.patches) == rois for b in bars)  # one per class
    with pytest.raises(ValueError, match="no ROI axis"):
        compute_saliency(
            _checkpoints(architecture)["finetune.full.model"],
            series[:4],
            _split(4, 0)[1],
            _predictions(_split(4, 0)[1], "sex", "test"),
            variant="finetune.full",
            fold=None,
            task="classification",
            target="sex",
            params=SaliencyParams(layer="layer2"),
        )
