"""The segment pipeline and its plan, run on an in-memory DataCatalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from tlkedro.pipelines.pretrain import create_pipeline as create_pretrain_pipeline
from tlkedro.pipelines.segment import create_pipeline
from tlkedro.plan import PlanError, build_plan, segment_variants

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = ["background", "dark", "bright"]
PRETRAIN = {
    "seed": 0,
    "target": "age",
    "task": "regression",
    "architecture": {"name": "cbr_tiny"},
    "objective": {"name": "mse"},
    "trainer": {"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False},
    "evaluate_on": [],
    "variants": {"default": {}},
}
SEGMENT = {
    "seed": 0,
    "init_from": "pretrain.default",
    "class_names": CLASSES,
    "architecture": {"name": "cbr_tiny"},
    "decoder_channels": 8,
    "strategy": {"name": "full"},
    "trainer": {
        "max_epochs": 1,
        "batch_size": 8,
        "enable_progress_bar": False,
        "keep_epoch": "last",
    },
    "variants": {
        "scratch": {"init_from": None, "strategy": {"name": "scratch"}},
        "full": {},
        "decoder_only": {"strategy": {"name": "linear_probe"}, "evaluate_on": []},
        "small_scratch": {"init_from": None, "strategy": {"name": "scratch"}, "train_size": 4},
        "small_full": {"train_size": 4},
    },
}


class KeptMemoryDataset(MemoryDataset):
    """A memory dataset the runner does not release, so the test reads every output afterwards."""

    def _release(self) -> None:
        pass


def _split(n: int, seed: int, slices: int = 2) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.normal(size=(n * slices, 1, 8, 8)))
    images = torch.nn.functional.interpolate(noise, size=(32, 32), mode="bilinear").numpy()
    masks = np.digitize(images, np.quantile(images, [1 / 3, 2 / 3])).astype(np.uint8)
    labels = pd.DataFrame(
        {
            "subject_id": [f"{seed}-{i // slices}" for i in range(n * slices)],
            "age": np.repeat(rng.uniform(45, 80, n), slices),
            "sex": np.repeat(rng.integers(0, 2, n), slices),
            "site": "11025",
            "slice": np.tile(np.arange(slices), n),
        }
    )
    return images.astype(np.float16), masks, labels


@pytest.fixture(scope="module")
def run() -> dict:
    catalog = DataCatalog()
    for split, n, seed in (("pretrain", 12, 0), ("finetune", 10, 1), ("test", 5, 2)):
        catalog[f"{split}_images"], catalog[f"{split}_masks"], catalog[f"{split}_labels"] = _split(
            n, seed
        )
    parameters = {"pretrain": PRETRAIN, "segment": SEGMENT}
    plan = build_plan(parameters)
    variants = segment_variants(parameters, plan)
    pipeline = create_pretrain_pipeline(plan) + create_pipeline(variants)
    outputs = sorted(pipeline.all_outputs())
    for name in outputs:
        catalog[name] = KeptMemoryDataset()
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in outputs}


def test_every_variant_is_trained_evaluated_and_compared_with_scratch_of_its_size(run) -> None:
    comparison = run["segment_comparison"]
    evaluated = [v for v in SEGMENT["variants"] if v != "decoder_only"]  # evaluate_on: []
    assert comparison["variant"].tolist() == [f"segment.{v}" for v in evaluated]
    row = comparison.set_index("variant")
    assert row.loc["segment.full", "baseline"] == "segment.scratch"
    assert row.loc["segment.small_full", "baseline"] == "segment.small_scratch"
    assert row.loc["segment.scratch", "baseline"] == ""
    assert (row["dice_mean_low"] <= row["dice_mean"]).all() and (row["n_subjects"] == 5).all()
    assert "| segment.full | full | all | 5 |" in run["segment_report"]
    assert "| segment.small_full | full | 4 | 5 |" in run["segment_report"]
    assert run["segment_report"].count("| baseline |") == 2  # scratch and small_scratch
    assert isinstance(run["segment_masks_plot"], Figure)


def test_per_subject_table_and_masks_of_the_test_split(run) -> None:
    table = run["segment.full.subject_metrics_test"]
    assert list(table.columns) == ["subject_id", "dice_dark", "dice_bright", "dice_mean", "hd95"]
    assert len(table) == 5 and table["dice_mean"].between(0, 1).all()
    assert run["segment.full.masks_test"].shape == (10, 1, 32, 32)
    metrics = run["segment.full.metrics_test"]
    assert metrics["test/dice_mean"] == pytest.approx(table["dice_mean"].mean())


def test_train_size_and_transfer_reach_the_model(run) -> None:
    assert run["segment.small_full.training_summary"]["n_train_subjects"] == 4
    assert len(run["segment.small_full.model"]["meta"]["train_subjects"]) == 3  # 1 for validation
    trained = run["segment.decoder_only.model"]["state_dict"]
    pretrained = run["pretrain.default.model"]["state_dict"]
    summary = run["segment.decoder_only.training_summary"]
    assert summary["strategy"] == "linear_probe" and summary["frozen_params"] > 0
    encoder = [k for k in trained if k.startswith("encoder.")]
    assert encoder and all(torch.equal(trained[k], pretrained[k]) for k in encoder)


def test_the_plan_names_an_invalid_key_and_an_unknown_source() -> None:
    plan = build_plan({"pretrain": PRETRAIN})
    bad = {**SEGMENT, "variants": {"x": {"optimizer": {"lr": -1}}}}
    with pytest.raises(PlanError, match=r"segment\.x.*\n  segment\.optimizer\.lr"):
        segment_variants({"segment": bad}, plan)
    with pytest.raises(PlanError, match="init_from names 'pretrain.nope'"):
        segment_variants({"segment": {**SEGMENT, "init_from": "pretrain.nope"}}, plan)
    with pytest.raises(PlanError, match="evaluate_on names split 'tset'"):
        segment_variants({"segment": {**SEGMENT, "evaluate_on": ["tset"]}}, plan)
    assert segment_variants({}, plan) == {}
