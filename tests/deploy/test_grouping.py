from __future__ import annotations

import warnings
from functools import partial

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro_datasets.json import JSONDataset

from tests import freshness_toy as toy_freshness
from tests.freshness_toy import statuses
from tlkedro.deploy.grouping import (
    RunOptions,
    ephemeral_crossings,
    group_pipeline,
    group_status,
    needs_run,
    pipeline_homes,
)
from tlkedro.freshness import NodeStatus, State, is_ephemeral


def identity(x):
    return x


def test_each_variant_is_one_group_after_its_upstream(toy_pipeline):
    groups = group_pipeline(toy_pipeline)

    by_name = {g.name: g for g in groups}
    assert [g.name for g in groups][0] == "make_data"
    assert [g.name for g in groups][-1] == "compare"
    assert set(by_name) == {"make_data", "train.small", "train.large", "compare"}
    assert by_name["train.small"].nodes == ("train.small.train", "train.small.score")
    assert by_name["train.small"].dependencies == ("make_data",)
    assert set(by_name["compare"].dependencies) == {"train.small", "train.large"}
    assert by_name["train.small"].inputs == {"raw"}
    assert by_name["train.small"].outputs == {"train.small.model", "train.small.score"}


def test_namespaced_groups_run_by_namespace_others_by_node_names(toy_pipeline):
    by_name = {g.name: g for g in group_pipeline(toy_pipeline)}

    assert by_name["train.large"].selector() == ["--namespaces", "train.large"]
    assert by_name["make_data"].selector() == ["--nodes", "make_data"]


def test_depth_one_matches_kedros_namespace_grouping(toy_pipeline):
    ours = {g.name: g for g in group_pipeline(toy_pipeline, depth=1)}
    kedros = {g.name: g for g in toy_pipeline.group_nodes_by("namespace")}

    assert ours.keys() == kedros.keys() == {"make_data", "train", "compare"}
    for name, group in kedros.items():
        assert set(ours[name].nodes) == set(group.nodes)
        assert set(ours[name].dependencies) == set(group.dependencies)
    assert ours["train"].selector() == ["--namespaces", "train"]


def test_grouping_by_node_gives_one_group_per_node(toy_pipeline):
    ours = {g.name: g for g in group_pipeline(toy_pipeline, by="node")}
    kedros = {g.name: g for g in toy_pipeline.group_nodes_by(None)}

    assert ours.keys() == kedros.keys()
    for name, group in kedros.items():
        assert set(ours[name].dependencies) == set(group.dependencies)
    assert ours["train.small.score"].selector() == ["--nodes", "train.small.score"]


def test_a_namespace_that_would_select_its_sub_namespaces_is_run_by_node_names():
    pipeline = Pipeline(
        [
            Node(identity, "a", "b", name="prepare", namespace="train"),
            Node(identity, "b", "c", name="fit", namespace="train.small"),
        ]
    )

    by_name = {g.name: g for g in group_pipeline(pipeline, depth=2)}

    # `--namespaces train` would also run train.small.fit.
    assert by_name["train"].selector() == ["--nodes", "train.prepare"]
    assert by_name["train.small"].selector() == ["--namespaces", "train.small"]


def test_groups_depending_on_each_other_in_a_cycle_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Kedro warns that the namespace is interrupted
        pipeline = Pipeline(
            [
                Node(identity, "a", "x", name="first", namespace="ns"),
                Node(identity, "x", "y", name="between"),
                Node(identity, "y", "z", name="second", namespace="ns"),
            ]
        )

    with pytest.raises(ValueError, match=r"cycle .*group by node"):
        group_pipeline(pipeline)
    assert len(group_pipeline(pipeline, by="node")) == 3


def test_a_node_named_like_a_namespace_is_refused():
    pipeline = Pipeline(
        [
            Node(identity, "a", "b", name="fit", namespace="train"),
            Node(identity, "b", "c", name="train"),
        ]
    )

    with pytest.raises(ValueError, match=r"\['train'\] are both a namespace and a node"):
        group_pipeline(pipeline, depth=1)


@pytest.mark.parametrize(
    ("by", "depth", "message"),
    [
        ("variant", 2, "group_by must be 'namespace' or 'node'"),
        ("namespace", 0, "depth must be at least 1"),
    ],
)
def test_invalid_grouping_options_are_refused(toy_pipeline, by, depth, message):
    with pytest.raises(ValueError, match=message):
        group_pipeline(toy_pipeline, by=by, depth=depth)


def test_run_args_repeat_the_submitting_options():
    pipeline = Pipeline([Node(identity, "a", "b", name="fit", namespace="train.small")])
    (group,) = group_pipeline(pipeline)

    options = RunOptions(env="cluster", pipeline="training", params="lr=0.1,epochs=2")

    assert options.run_args(group) == [
        "run",
        "--env",
        "cluster",
        "--pipelines",
        "training",
        "--params",
        "lr=0.1,epochs=2",
        "--namespaces",
        "train.small",
    ]
    assert RunOptions().run_args(group) == ["run", "--namespaces", "train.small"]
    # Argo tasks rendered with --only-missing-outputs reuse what is fresh (docs/freshness.md).
    assert RunOptions(only_missing_outputs=True).run_args(group) == [
        "run",
        "--only-missing-outputs",
        "--namespaces",
        "train.small",
    ]


def test_memory_datasets_crossing_groups_are_found(toy_pipeline, tmp_path):
    catalog = DataCatalog(
        {
            "raw": JSONDataset(filepath=str(tmp_path / "raw.json")),
            "train.large.score": MemoryDataset(),
        }
    )
    groups = group_pipeline(toy_pipeline)

    crossings = ephemeral_crossings(groups, partial(is_ephemeral, catalog))

    # The score of train.small is not in the catalog (a MemoryDataset at run time), the one of
    # train.large is a declared MemoryDataset; the in-group model never crosses.
    assert [(c.dataset, c.producer, c.consumer) for c in crossings] == [
        ("train.large.score", "train.large", "compare"),
        ("train.small.score", "train.small", "compare"),
    ]
    assert "Give 'train.large.score' a persisted catalog entry" in str(crossings[0])


@pytest.mark.filterwarnings("ignore:One or more dataset names contain")
def test_a_group_needs_to_run_until_it_is_fresh(tmp_path):
    pipeline = toy_freshness.toy_pipeline()
    groups = {g.name: g for g in group_pipeline(pipeline)}
    catalog = toy_freshness.toy_catalog(tmp_path)
    assert {name for name, g in groups.items() if needs_run(g, statuses(tmp_path, catalog))} == set(
        groups
    )
    toy_freshness.run(tmp_path, catalog)

    assert not any(needs_run(g, statuses(tmp_path, catalog)) for g in groups.values())
    changed = statuses(tmp_path, toy_freshness.toy_catalog(tmp_path, lr_a=0.2))
    assert {name: group_status(g, changed)[0] for name, g in groups.items()} == {
        "prepare": State.FRESH,
        "train.a": State.STALE,
        "train.b": State.FRESH,
        "report": State.STALE,
    }
    assert group_status(groups["report"], changed)[1] == "report: input train.a.score changed"
    (tmp_path / "train.b.history.json").unlink()
    gone = statuses(tmp_path, catalog)
    assert group_status(groups["train.b"], gone) == (
        State.MISSING,
        "train.b.score: no train.b.history",
    )


def test_a_group_that_persists_nothing_always_needs_to_run():
    pipeline = Pipeline([Node(identity, "raw", "model", name="fit", namespace="v")])
    (group,) = group_pipeline(pipeline)
    fresh = {"v.fit": NodeStatus("v.fit", State.FRESH, "", persisted=False, dirty=False)}

    assert group_status(group, fresh)[0] is State.MISSING
    assert needs_run(group, fresh)


def test_nodes_in_no_namespace_can_be_grouped_by_their_registered_pipeline():
    ingest = Pipeline(
        [
            Node(identity, "raw", "manifest", name="ingest"),
            Node(identity, "manifest", "clean", name="check"),
        ]
    )
    variants = Pipeline(
        [Node(identity, "clean", "model", name="fit")], namespace="train.a", inputs={"clean"}
    )
    report = Pipeline(
        [
            Node(identity, "train.a.model", "table", name="tabulate"),
            Node(identity, "table", "plot", name="plot"),
        ]
    )
    registered = {
        "ingestion": ingest,
        "training": ingest + variants,
        "reporting": report,
        "__default__": ingest + variants + report,
    }

    homes = pipeline_homes(registered)
    groups = group_pipeline(registered["__default__"], homes=homes)

    # `check` is in `ingestion` and in the larger `training`: the smaller pipeline wins.
    assert homes == {
        "ingest": "ingestion",
        "check": "ingestion",
        "tabulate": "reporting",
        "plot": "reporting",
    }
    assert [(g.name, g.dependencies) for g in groups] == [
        ("ingestion", ()),
        ("train.a", ("ingestion",)),
        ("reporting", ("train.a",)),
    ]
    assert groups[0].selector() == ["--nodes", "ingest,check"]
