"""The training template and its variants, run on an in-memory DataCatalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from tlkedro.datasets import TorchCheckpointDataset
from tlkedro.pipelines.finetune import create_pipeline as create_finetune_pipeline
from tlkedro.pipelines.pretrain import create_pipeline as create_pretrain_pipeline
from tlkedro.pipelines.training.nodes import resolve_config

BASE = {
    "seed": 3,
    "target": "sex",
    "task": "classification",
    "architecture": {"name": "cbr_tiny", "kwargs": {"img_size": 32}},
    "objective": {"name": "cross_entropy"},
    "strategy": {"name": "full"},
    "optimizer": {"name": "adam", "lr": 1e-3},
    "trainer": {"max_epochs": 1, "batch_size": 8, "enable_progress_bar": False},
    "data": {"val_fraction": 0.25},
    "evaluate_on": ["test"],
}


pytestmark = pytest.mark.usefixtures("single_thread")


def _split(n: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame(
        {
            "subject_id": [f"{seed}-{i}" for i in range(n)],
            "age": rng.uniform(45, 80, n),
            "sex": rng.integers(0, 2, n),
            "site": "11025",
            "slice": 0,
        }
    )
    images = rng.normal(size=(n, 1, 32, 32)).astype(np.float16)
    images[labels["sex"].to_numpy() == 1, :, 8:24, 8:24] += 1.5  # a learnable signal
    return images, labels


def _catalog(parameters: dict, tmp_path) -> DataCatalog:
    catalog = DataCatalog()
    for split, n, seed in (("pretrain", 32, 0), ("finetune", 24, 1), ("test", 16, 2)):
        catalog[f"{split}_images"], catalog[f"{split}_labels"] = _split(n, seed)

    def add(key: str, value) -> None:  # as KedroContext does: every nested key is a parameter too
        catalog[f"params:{key}"] = value
        if isinstance(value, dict):
            for child, child_value in value.items():
                add(f"{key}.{child}", child_value)

    for section, values in parameters.items():
        add(section, values)
    catalog["params:runtime"] = {"checkpoint_dir": str(tmp_path / "checkpoints")}
    return catalog


def test_variants_are_namespaced_copies_sharing_the_model_inputs():
    section = {
        **BASE,
        "init_from": "pretrain.default",
        "variants": {"full": {}, "scratch": {"init_from": None, "strategy": {"name": "scratch"}}},
        "sweeps": {"lr": {"kind": "grid", "grid": {"optimizer.lr": [0.1, 0.01]}}},
    }
    pipeline = create_finetune_pipeline({"finetune": section})
    namespaces = {node.namespace for node in pipeline.nodes}
    assert namespaces == {"finetune.full", "finetune.scratch", "finetune.lr_0", "finetune.lr_1"}
    assert "pretrain.default.model" in pipeline.inputs()
    assert {"finetune_images", "finetune_labels", "test_images", "test_labels"} <= pipeline.inputs()
    scratch_train = next(n for n in pipeline.nodes if n.name == "finetune.scratch.train")
    assert "pretrain.default.model" not in scratch_train.inputs
    assert "params:finetune.variants.full" in pipeline.inputs()
    assert not any(i.startswith("params:finetune.variants.lr_") for i in pipeline.inputs())


def test_pretrain_then_finetune_variants_run_on_an_in_memory_catalog(tmp_path):
    pretrain = {
        **BASE,
        "target": "age",
        "task": "regression",
        "objective": {"name": "mse"},
        "strategy": {"name": "scratch"},
        "variants": {"default": {}},
    }
    finetune = {
        **BASE,
        "init_from": "pretrain.default",
        "variants": {"full": {}, "linear_probe": {"strategy": {"name": "linear_probe"}}},
    }
    parameters = {"pretrain": pretrain, "finetune": finetune}
    catalog = _catalog(parameters, tmp_path)
    pipeline = create_pretrain_pipeline(parameters) + create_finetune_pipeline(parameters)

    # Persist what the test reads back but the runner would release from memory once consumed.
    for name in ("pretrain.default.model", "finetune.linear_probe.model"):
        catalog[name] = TorchCheckpointDataset(filepath=str(tmp_path / f"{name}.pt"))
    catalog["pretrain.default.config"] = JSONDataset(filepath=str(tmp_path / "config.json"))

    SequentialRunner().run(pipeline, catalog)

    full, probe = (
        catalog.load("finetune.full.metrics"),
        catalog.load("finetune.linear_probe.metrics"),
    )
    assert 0.0 <= full["test/auroc"] <= 1.0
    # The validation metrics are those of the kept (lowest validation loss) epoch.
    assert full["val/loss"] == pytest.approx(full["best_val_loss"])
    assert 0.0 <= full["val/auprc"] <= 1.0
    assert probe["trainable_params"] < full["trainable_params"] == full["total_params"]
    source = catalog.load("pretrain.default.model")["state_dict"]
    tuned = catalog.load("finetune.linear_probe.model")["state_dict"]
    encoder_keys = [k for k in source if k.startswith("encoder.") and source[k].is_floating_point()]
    assert encoder_keys and all(torch.equal(source[k], tuned[k]) for k in encoder_keys)
    predictions = catalog.load("finetune.full.predictions_test")
    assert len(predictions) == 16 and set(predictions["split"]) == {"test"}
    assert catalog.load("pretrain.default.config")["config"]["target"] == "age"


def test_resolve_config_merges_overrides_and_names_the_variant_in_errors():
    run = resolve_config(
        {**BASE, "variants": {}},
        {"optimizer": {"lr": 0.5}},
        {"checkpoint_dir": "ckpt"},
        namespace="finetune.x",
        wired_source=None,
    )
    assert run["config"]["optimizer"] == {**run["config"]["optimizer"], "name": "adam", "lr": 0.5}
    assert run["workdir"] == "ckpt/finetune.x"
    with pytest.raises(ValueError, match=r"(?s)finetune.x.*optimizer.lr"):
        resolve_config(
            BASE,
            {"optimizer": {"lr": -1}},
            {"checkpoint_dir": "c"},
            namespace="finetune.x",
            wired_source=None,
        )
    with pytest.raises(ValueError, match="init_from"):
        resolve_config(
            BASE,
            {"init_from": "pretrain.other"},
            {"checkpoint_dir": "c"},
            namespace="finetune.x",
            wired_source=None,
        )
