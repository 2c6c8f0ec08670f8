"""Freshness: fingerprints, completion records and FreshnessHook on in-process Kedro runs of the toy
pipeline of tests/freshness_toy.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kedro.io import MemoryDataset
from pydantic import BaseModel

from tests.freshness_toy import ALL, run, statuses, toy_catalog, toy_pipeline
from tlkedro.freshness import (
    Freshness,
    FreshnessError,
    Graph,
    RecordStore,
    State,
    describe_change,
)

pytestmark = pytest.mark.filterwarnings("ignore:One or more dataset names contain")


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A folder where the whole toy pipeline ran once."""
    assert run(tmp_path, toy_catalog(tmp_path)) == ALL
    return tmp_path


def test_a_finished_run_is_fresh_and_reused(finished):
    assert {s.state for s in statuses(finished, toy_catalog(finished)).values()} == {State.FRESH}
    assert run(finished, toy_catalog(finished), only_missing=True) == []


def test_a_changed_parameter_re_makes_its_variant_and_what_depends_on_it(finished):
    catalog = toy_catalog(finished, lr_a=0.2)

    status = statuses(finished, catalog)
    assert status["train.a.score"].state is State.STALE
    assert status["train.a.score"].reason == "input train.a.model changed"
    assert status["train.b.score"].state is State.FRESH and not status["train.b.score"].dirty
    assert status["report"].state is State.STALE and status["report"].dirty

    assert run(finished, catalog, only_missing=True) == [
        "report",
        "train.a.score",
        "train.a.train",
    ]
    assert json.loads((finished / "train.a.score.json").read_text()) == {
        "score": pytest.approx(2.4)
    }
    assert {s.state for s in statuses(finished, catalog).values()} == {State.FRESH}


def test_an_upstream_change_reaches_every_variant(finished):
    catalog = toy_catalog(finished, offset=1)

    assert statuses(finished, catalog)["prepare"].reason == "params:prepare.offset: 0 -> 1"
    assert run(finished, catalog, only_missing=True) == ALL


def test_a_crashed_run_s_outputs_are_not_taken_as_finished(finished, monkeypatch):
    catalog = toy_catalog(finished)
    history = catalog.get("train.b.history")

    def killed(data: Any) -> None:
        raise KeyboardInterrupt("killed during the save of history")

    monkeypatch.setattr(history, "save", killed)
    # The same configuration, so the outputs left behind have the current fingerprint: only the
    # missing completion record tells that `history` is the old run's.
    with pytest.raises(KeyboardInterrupt):
        run(finished, catalog, pipeline=toy_pipeline().only_nodes_with_namespaces(["train.b"]))
    monkeypatch.undo()

    catalog = toy_catalog(finished)
    assert catalog.exists("train.b.score") and catalog.exists("train.b.history")
    status = statuses(finished, catalog)
    assert status["train.b.score"].state is State.MISSING
    assert status["train.b.score"].reason.startswith("no completion record")
    assert status["report"].dirty
    assert run(finished, catalog, only_missing=True) == ["report", "train.b.score", "train.b.train"]


def test_a_re_made_input_makes_its_consumers_stale(finished):
    # Re-running a variant on purpose (no --only-missing-outputs) gives the same fingerprint, yet the
    # report read the scores of an earlier run.
    run(
        finished,
        toy_catalog(finished),
        pipeline=toy_pipeline().only_nodes_with_namespaces(["train.b"]),
    )

    status = statuses(finished, toy_catalog(finished))
    assert status["train.b.score"].state is State.FRESH
    assert status["report"].state is State.STALE
    assert status["report"].reason == "train.b.score was re-made (by train.b.score) after it"
    assert run(finished, toy_catalog(finished), only_missing=True) == ["report"]


def test_a_run_building_on_stale_results_outside_it_stops_naming_them(finished, caplog):
    catalog = toy_catalog(finished, lr_a=0.2)
    reporting = toy_pipeline().only_nodes("report")

    with pytest.raises(FreshnessError, match=r"train\.a\.score \(loaded by report\) comes from "):
        run(finished, catalog, only_missing=True, pipeline=reporting)
    assert run(finished, catalog, pipeline=reporting) == [
        "report"
    ]  # asked for: run, with a warning
    assert "Input not fresh, so neither will this run's results be" in caplog.text
    assert statuses(finished, catalog)["report"].state is State.STALE


def test_the_record_names_the_fingerprint_and_its_parts(finished):
    record = RecordStore(str(finished / "freshness")).read("train.a.train")

    assert record["parts"]["bound"] == {"options": {"scale": 2.0}}
    assert record["parts"]["parameters"] == {"params:train.a.lr": {"lr": 0.1}}
    assert record["parts"]["function"] == "tests.freshness_toy:train"
    assert set(record["parts"]["inputs"]) == {"data"}
    assert record["parts"]["version"]["tlkedro"]
    assert (
        record["inputs_made"]["data"]
        == RecordStore(str(finished / "freshness")).read("prepare")["made"]
    )


def test_changes_are_described_by_their_keys():
    old = {"bound": {"config": {"optimizer": {"lr": 0.001}}}, "inputs": {"images": "a"}}
    new = {"bound": {"config": {"optimizer": {"lr": 0.01}}}, "inputs": {"images": "b"}}

    assert describe_change(old, new) == "config.optimizer.lr: 0.001 -> 0.01; input images changed"


class _PrepareOptions(BaseModel):
    offset: float


def test_parameters_are_fingerprinted_from_the_raw_tree_whether_kedro_typed_them_or_not(finished):
    # Kedro hands a node its parameters as the model its annotation names only when the run's
    # pipelines hold that node, so the same parameter is a model in one run and a dict in another.
    typed = toy_catalog(finished)
    typed["params:prepare"] = MemoryDataset(_PrepareOptions(offset=0))
    raw = {"prepare": {"offset": 0}, "train": {"a": {"lr": {"lr": 0.1}}, "b": {"lr": {"lr": 0.5}}}}
    store = RecordStore(str(finished / "freshness"))
    [prepare] = toy_pipeline().only_nodes("prepare").nodes

    def fingerprint(catalog, parameters=None):
        return Freshness(Graph([toy_pipeline()]), catalog, store, parameters).fingerprint(prepare)[
            0
        ]

    assert fingerprint(typed) != fingerprint(toy_catalog(finished))
    assert fingerprint(typed, raw) == fingerprint(toy_catalog(finished), raw)
    assert fingerprint(typed, raw) == store.read("prepare")["fingerprint"]
    with pytest.raises(FreshnessError, match="loads params:prepare, which the parameters lack"):
        fingerprint(typed, {"train": raw["train"]})
