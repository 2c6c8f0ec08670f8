"""The training template and its variants, run on an in-memory DataCatalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset

from tlkedro.datasets import TorchCheckpointDataset
from tlkedro.pipelines.cross_validation import create_pipeline as create_folds_pipeline
from tlkedro.pipelines.finetune import create_pipeline as create_finetune_pipeline
from tlkedro.pipelines.pretrain import create_pipeline as create_pretrain_pipeline
from tlkedro.plan import build_plan
from tlkedro.tl.analysis.svcca import auto_cut_at, suggest_cutoff
from tlkedro.tl.checkpoint import build_model

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


def _catalog() -> DataCatalog:
    catalog = DataCatalog()
    for split, n, seed in (("pretrain", 32, 0), ("finetune", 24, 1), ("test", 16, 2)):
        catalog[f"{split}_images"], catalog[f"{split}_labels"] = _split(n, seed)
    return catalog


PRETRAIN = {
    **BASE,
    "target": "age",
    "task": "regression",
    "objective": {"name": "mse"},
    "strategy": {"name": "scratch"},
    "variants": {"default": {}},
}


def test_variants_are_namespaced_copies_sharing_the_model_inputs():
    section = {
        **BASE,
        "init_from": "pretrain.default",
        "variants": {"full": {}, "scratch": {"init_from": None, "strategy": {"name": "scratch"}}},
        "sweeps": {"lr": {"kind": "grid", "grid": {"optimizer.lr": [0.1, 0.01]}}},
    }
    pipeline = create_finetune_pipeline(build_plan({"pretrain": PRETRAIN, "finetune": section}))
    namespaces = {node.namespace for node in pipeline.nodes}
    assert namespaces == {"finetune.full", "finetune.scratch", "finetune.lr_0", "finetune.lr_1"}
    assert "pretrain.default.model" in pipeline.inputs()
    assert {"finetune_images", "finetune_labels", "test_images", "test_labels"} <= pipeline.inputs()
    scratch_train = next(n for n in pipeline.nodes if n.name == "finetune.scratch.train")
    assert "pretrain.default.model" not in scratch_train.inputs
    # The configuration is bound into the nodes by the plan: no node reads parameters at run time.
    assert not any(i.startswith("params:") for i in pipeline.inputs())


def test_pretrain_then_finetune_variants_run_on_an_in_memory_catalog(tmp_path):
    finetune = {
        **BASE,
        "init_from": "pretrain.default",
        "variants": {"full": {}, "linear_probe": {"strategy": {"name": "linear_probe"}}},
    }
    runtime = {"checkpoint_dir": str(tmp_path / "checkpoints")}
    plan = build_plan({"pretrain": PRETRAIN, "finetune": finetune, "runtime": runtime})
    catalog = _catalog()
    pipeline = create_pretrain_pipeline(plan) + create_finetune_pipeline(plan)

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


def test_an_auto_cut_variant_trains_truncated_where_its_probe_moves_away(tmp_path):
    finetune = {
        **BASE,
        "init_from": "pretrain.default",
        "variants": {
            "full": {},
            "ttl": {"strategy": {"name": "truncated", "kwargs": {"cut_at": "auto"}}},
        },
    }
    runtime = {"checkpoint_dir": str(tmp_path / "checkpoints")}
    plan = build_plan({"pretrain": PRETRAIN, "finetune": finetune, "runtime": runtime})
    pipeline = create_pretrain_pipeline(plan) + create_finetune_pipeline(plan)
    choose = next(n for n in pipeline.nodes if n.name == "finetune.ttl.choose_cut_at")
    assert {"pretrain.default.model", "finetune.full.model", "finetune_images"} <= set(
        choose.inputs
    )
    assert "test_images" not in choose.inputs  # the cut is chosen without the test split
    catalog = _catalog()
    for name in ("pretrain.default.model", "finetune.full.model", "finetune.ttl.model"):
        catalog[name] = TorchCheckpointDataset(filepath=str(tmp_path / f"{name}.pt"))
    for name in ("finetune.ttl.config", "finetune.ttl.auto_cut", "finetune.ttl.metrics"):
        catalog[name] = JSONDataset(filepath=str(tmp_path / f"{name}.json"))

    SequentialRunner().run(pipeline, catalog)

    record, chosen = catalog.load("finetune.ttl.config"), catalog.load("finetune.ttl.auto_cut")
    assert record["auto_cut"] == chosen and chosen["probe"] == "finetune.full"
    # The cut point follows the rule on the recorded profile, which is the probe's against the source.
    profile = pd.DataFrame(chosen["profile"])
    assert chosen["cut_at"] == suggest_cutoff(profile, "largest_drop")
    source, full = (
        build_model(catalog.load(f"{name}.model")) for name in ("pretrain.default", "finetune.full")
    )
    images, _ = _split(24, 1)
    expected, table = auto_cut_at(source, full, images)
    assert chosen["cut_at"] == expected
    assert profile["similarity"].to_numpy() == pytest.approx(table["similarity"].to_numpy())
    # ... and the variant trained truncated there.
    model = catalog.load("finetune.ttl.model")
    assert model["config"]["cut_at"] == chosen["cut_at"] and record["config"]["strategy"]["kwargs"]
    kept = build_model(model).stage_names
    assert kept[-1] == chosen["cut_at"] and len(kept) <= len(full.stage_names)
    assert catalog.load("finetune.ttl.metrics")["cut_at"] == chosen["cut_at"]


def test_cross_validated_variants_train_once_per_fold_and_pool_the_held_out_predictions(tmp_path):
    pretrain = {**PRETRAIN, "train_on": "finetune"}
    finetune = {
        **BASE,
        "init_from": "pretrain.default",
        "evaluate_on": [],
        "variants": {"full": {}, "small": {"train_size": 8}},
    }
    parameters = {
        "pretrain": pretrain,
        "finetune": finetune,
        "cross_validation": {"split": "finetune", "folds": 3, "seed": 0},
        "runtime": {"checkpoint_dir": str(tmp_path / "checkpoints")},
    }
    plan = build_plan(parameters)
    pipeline = (
        create_folds_pipeline(plan)
        + create_pretrain_pipeline(plan)
        + create_finetune_pipeline(plan)
    )
    nodes = {node.name: node for node in pipeline.nodes}
    # Each fold starts from the source model of the same fold: its held-out subjects were never seen.
    assert "pretrain.default.fold_1.model" in nodes["finetune.full.fold_1.train"].inputs
    catalog = _catalog()
    catalog["finetune.small.fold_0.model"] = TorchCheckpointDataset(
        filepath=str(tmp_path / "small.pt")
    )
    catalog["folds"] = ParquetDataset(filepath=str(tmp_path / "folds.parquet"))
    SequentialRunner().run(pipeline, catalog)

    folds = catalog.load("folds")
    assert sorted(folds["fold"].value_counts()) == [8, 8, 8]
    pooled = catalog.load("finetune.full.predictions_cv")
    # Every subject of the cross-validated split is predicted once, by the model that did not see it.
    assert sorted(pooled["subject_id"]) == sorted(folds["subject_id"])
    held_out = folds.set_index("subject_id").loc[pooled["subject_id"], "fold"].to_numpy()
    assert (pooled["fold"].to_numpy() == held_out).all()
    record = catalog.load("finetune.full.metrics")
    assert record["folds"] == 3 and record["cv/auroc_folds"] == 3
    assert record["cv/auroc_std"] >= 0
    # train_size takes a subset of the fold's 16 training subjects.
    small = catalog.load("finetune.small.fold_0.model")["meta"]["train_subjects"]
    assert len(small) == 8
    assert set(small) <= set(folds.loc[folds["fold"] != 0, "subject_id"])


def test_an_invalid_variant_is_named_with_its_key_before_anything_runs():
    with pytest.raises(ValueError, match=r"(?s)finetune\.x.*finetune\.variants\.x.*optimizer\.lr"):
        build_plan({"finetune": {**BASE, "variants": {"x": {"optimizer": {"lr": -1}}}}})
    with pytest.raises(ValueError, match=r"init_from names 'pretrain.other'"):
        build_plan(
            {
                "pretrain": PRETRAIN,
                "finetune": {**BASE, "init_from": "pretrain.other", "variants": {"x": {}}},
            }
        )


def test_a_weights_file_as_source_is_loaded_into_the_encoder_and_reported(tmp_path):
    from tlkedro.tl.architectures import create_architecture
    from tlkedro.tl.checkpoint import make_checkpoint

    published = create_architecture("cbr_tiny", in_channels=1, img_size=[32, 32], num_outputs=5)
    weights = tmp_path / "published.pt"
    torch.save(make_checkpoint(published, {}), weights)
    finetune = {
        **BASE,
        "strategy": {"name": "linear_probe"},
        "init_from": {"file": str(weights), "format": "tlkedro"},
        "variants": {"probe": {}},
    }
    plan = build_plan({"finetune": finetune, "runtime": {"checkpoint_dir": str(tmp_path / "c")}})
    pipeline = create_finetune_pipeline(plan)
    train = next(n for n in pipeline.nodes if n.name == "finetune.probe.train")
    assert not any(i.endswith(".model") for i in train.inputs)  # no upstream variant to wait for
    catalog = _catalog()
    catalog["finetune.probe.model"] = TorchCheckpointDataset(filepath=str(tmp_path / "probe.pt"))
    SequentialRunner().run(pipeline, catalog)

    tuned = catalog.load("finetune.probe.model")
    report = tuned["meta"]["source_weights"]
    assert report["matched_fraction"] == 1.0 and report["sha256"]
    source = published.state_dict()
    # A linear probe trains the head only: the encoder is the file's.
    assert all(
        torch.equal(source[k], tuned["state_dict"][k]) for k in source if k.startswith("encoder.")
    )


def test_a_weights_file_that_does_not_fit_stops_with_its_report(tmp_path):
    from tlkedro.pipelines.training.nodes import weights_file_source
    from tlkedro.plan import validate_variant
    from tlkedro.tl.weights import WeightsMismatchError

    weights = tmp_path / "unrelated.pt"
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(2, 3)}}, weights)
    config = validate_variant(
        "finetune",
        "x",
        BASE,
        {"init_from": {"file": str(weights), "format": "lightning"}},
        where="finetune.variants.x",
        default_train_on="finetune",
    )
    images = np.zeros((4, 1, 32, 32), dtype=np.float32)
    with pytest.raises((WeightsMismatchError, ValueError), match="unrelated.pt"):
        weights_file_source(config.init_from, config, images)


@pytest.mark.slow
def test_an_optuna_sweep_tunes_a_variant_that_is_evaluated_and_reported(tmp_path):
    from tlkedro.pipelines.reporting import create_pipeline as create_reporting_pipeline

    finetune = {
        **BASE,
        "strategy": {"name": "scratch"},
        "trainer": {**BASE["trainer"], "max_epochs": 3},
        "variants": {"scratch": {}},
        "sweeps": {
            "tuned": {
                "kind": "optuna",
                "space": {"optimizer.lr": {"log_uniform": [1e-6, 1e-1]}},
                "study": {
                    "n_trials": 3,
                    "sampler": {"name": "random"},
                    "pruner": {"name": "median", "kwargs": {"n_startup_trials": 1}},
                },
            }
        },
    }
    parameters = {"finetune": finetune, "runtime": {"checkpoint_dir": str(tmp_path / "c")}}
    plan = build_plan(parameters)
    reporting = {"primary_metric": {"finetune": "test/auroc"}}
    report = create_reporting_pipeline(plan, reporting).only_nodes("report_finetune_studies")
    pipeline = create_finetune_pipeline(plan) + report
    names = {node.name for node in pipeline.nodes}
    assert "finetune.tuned.tune" in names and "finetune.tuned.train" not in names
    catalog = _catalog()
    # Persist what the test reads back but the runner would release from memory once consumed.
    catalog["finetune.tuned.study"] = ParquetDataset(filepath=str(tmp_path / "study.parquet"))
    for name in ("config", "metrics"):
        catalog[f"finetune.tuned.{name}"] = JSONDataset(filepath=str(tmp_path / f"{name}.json"))
    catalog["finetune_tuning_markdown"] = MemoryDataset()
    SequentialRunner().run(pipeline, catalog)

    trials = catalog.load("finetune.tuned.study")
    assert len(trials) == 3 and "PRUNED" in set(trials["state"])
    best = trials.loc[trials["value"].idxmin()]
    record = catalog.load("finetune.tuned.metrics")
    # The variant is the best trial trained again: the same configuration, data and seed give the
    # same model, so its kept validation loss is the trial's value; it is tested like any variant.
    assert record["val/loss"] == pytest.approx(best["value"], rel=1e-5)
    assert record["lr"] == pytest.approx(best["params.optimizer.lr"])
    assert record["tuning/best_trial"] == best["trial"] and record["tuning/trials_pruned"] >= 1
    assert 0.0 <= record["test/auroc"] <= 1.0
    config = catalog.load("finetune.tuned.config")["config"]
    assert config["optimizer"]["lr"] == pytest.approx(best["params.optimizer.lr"])
    assert "finetune.tuned" in catalog.load("finetune_tuning_markdown")
    # The study stays in its storage beside the checkpoints, for a rerun or another worker to load.
    assert (tmp_path / "c" / "optuna" / "finetune.tuned.journal").exists()


def test_a_self_supervised_source_trains_without_labels_and_fine_tunes_like_any_other(tmp_path):
    """pretrain.simclr reads no label of its split (they are all missing here) and trains on the test
    split's images too (`unlabelled_from`); finetune.full starts from its encoder."""
    simclr = {"objective": {"name": "simclr"}, "evaluate_on": [], "unlabelled_from": "test"}
    pretrain = {**PRETRAIN, "variants": {"simclr": simclr}}
    finetune = {**BASE, "init_from": "pretrain.simclr", "variants": {"full": {}}}
    runtime = {"checkpoint_dir": str(tmp_path / "checkpoints")}
    plan = build_plan({"pretrain": pretrain, "finetune": finetune, "runtime": runtime})
    catalog = _catalog()
    catalog["pretrain_labels"] = catalog.load("pretrain_labels").assign(age=np.nan, sex=np.nan)
    catalog["pretrain.simclr.model"] = TorchCheckpointDataset(filepath=str(tmp_path / "ssl.pt"))

    SequentialRunner().run(create_pretrain_pipeline(plan) + create_finetune_pipeline(plan), catalog)

    source = catalog.load("pretrain.simclr.model")
    assert source["meta"]["target"] is None and source["meta"]["objective"]["name"] == "simclr"
    record = catalog.load("pretrain.simclr.metrics")
    assert record["val/loss"] == pytest.approx(record["best_val_loss"])
    assert not any(key.startswith("test/") for key in record)
    assert 0.0 <= catalog.load("finetune.full.metrics")["test/auroc"] <= 1.0
