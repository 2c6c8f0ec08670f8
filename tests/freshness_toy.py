"""A toy pipeline for the freshness tests (tests/test_freshness.py, tests/deploy), run in-process.

It has the project's shape: ``prepare`` (no namespace) feeds two variants of one template,
``train.a`` and ``train.b`` (``train`` hands an in-memory model to ``score``, which persists its score and
history), and ``report`` reads both scores. Each run goes through Kedro's SequentialRunner with the
hook registered, as ``kedro run`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from pydantic import BaseModel

from tlkedro.datasets.atomic import JSONDataset
from tlkedro.freshness import Freshness, Graph, NodeStatus, RecordStore
from tlkedro.hooks import FreshnessHook
from tlkedro.pipelines import bind


class Options(BaseModel):
    scale: float


def prepare(options: dict) -> dict:
    return {"values": [1, 2, 3], "offset": options["offset"]}


def train(data: dict, params: dict, *, options: Options) -> dict:
    return {"weight": sum(data["values"]) * params["lr"] * options.scale + data["offset"]}


def score(model: dict) -> tuple[dict, list]:
    return {"score": model["weight"]}, [model["weight"]]


def report(a: dict, b: dict) -> dict:
    return {"best": max(a["score"], b["score"])}


def toy_pipeline() -> Pipeline:
    template = Pipeline(
        [
            Node(
                bind(train, options=Options(scale=2)), ["data", "params:lr"], "model", name="train"
            ),
            Node(score, "model", ["score", "history"], name="score"),
        ]
    )
    variants = [Pipeline(template, namespace=f"train.{v}", inputs={"data"}) for v in ("a", "b")]
    return Pipeline(
        [
            Node(prepare, "params:prepare", "data", name="prepare"),
            *variants,
            Node(report, ["train.a.score", "train.b.score"], "report", name="report"),
        ]
    )


def toy_catalog(root: Path, lr_a: float = 0.1, offset: int = 0) -> DataCatalog:
    persisted = ["data", "report", *(f"train.{v}.{k}" for v in "ab" for k in ("score", "history"))]
    catalog = DataCatalog(
        {name: JSONDataset(filepath=str(root / f"{name}.json")) for name in persisted}
    )
    catalog["params:prepare"] = MemoryDataset({"offset": offset})
    catalog["params:train.a.lr"] = MemoryDataset({"lr": lr_a})
    catalog["params:train.b.lr"] = MemoryDataset({"lr": 0.5})
    return catalog


class _Ran:
    """Collects the names of the nodes a run ran."""

    def __init__(self) -> None:
        self.nodes: list[str] = []

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self.nodes.append(node.name)


def run(
    root: Path,
    catalog: DataCatalog,
    *,
    only_missing: bool = False,
    pipeline: Pipeline | None = None,
) -> list[str]:
    """Run (part of) the toy pipeline as a Kedro session does; returns the nodes that ran."""
    pipeline = pipeline or toy_pipeline()
    ran, hooks = _Ran(), _create_hook_manager()
    hooks.register(FreshnessHook(records=str(root / "freshness"), pipelines=[toy_pipeline()]))
    hooks.register(ran)
    params: dict[str, Any] = {"run_id": "test", "only_missing_outputs": only_missing}
    hooks.hook.before_pipeline_run(run_params=params, pipeline=pipeline, catalog=catalog)
    try:
        SequentialRunner().run(pipeline, catalog, hooks, "test", only_missing_outputs=only_missing)
    except Exception as error:
        hooks.hook.on_pipeline_error(
            error=error, run_params=params, pipeline=pipeline, catalog=catalog
        )
        raise
    hooks.hook.after_pipeline_run(
        run_params=params, run_result={}, pipeline=pipeline, catalog=catalog
    )
    return sorted(ran.nodes)


def statuses(root: Path, catalog: DataCatalog) -> dict[str, NodeStatus]:
    freshness = Freshness(Graph([toy_pipeline()]), catalog, RecordStore(str(root / "freshness")))
    return freshness.assess(toy_pipeline())


ALL = sorted(["prepare", "report", *(f"train.{v}.{n}" for v in "ab" for n in ("train", "score"))])
