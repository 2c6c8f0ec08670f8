"""Never reuse a stale result: fingerprints and completion records of node results.

Every node that finishes leaves a **completion record**: a JSON file per node,
``<data_root>/freshness/<node name>.json``, written atomically after the last of the node's outputs was
saved, and removed when the node starts. It holds the node's **fingerprint**, the digest of its parts
(:func:`tlkedro.provenance.fingerprint`, the scheme of the normalised scans' sidecars):

- the node: its name, function, outputs, and the arguments bound into it (a variant's whole
  ``VariantConfig``, its fold, ...);
- the values of the parameters it loads (``params:...``);
- the fingerprint of each dataset it loads: for a dataset a node makes, that node's fingerprint (so a
  fingerprint covers everything upstream: the source model a variant starts from, the model-input
  arrays and the preprocessing and ingestion that made them); for a dataset no node makes (raw data),
  its content as far as it can be told cheaply (a dataset's own ``fingerprint()``, such as
  :meth:`tlkedro.datasets.NiftiCollectionDataset.fingerprint`, else its file's size and modification
  time);
- tlkedro's version.

A node's outputs are **fresh** when they all exist and its record holds the fingerprint the node would
have now, and no input was re-made since (each record names the records of the inputs it read).
Otherwise they are **missing** (an output is absent, or there is no record: the node has never finished
since it last started, e.g. a killed run) or **stale** (another fingerprint: the reason names what
changed). A node downstream of one that is not fresh must be re-made too. :class:`Freshness` decides
it before anything runs; :class:`RunRecorder` writes the records while a run goes on. The hook that
joins them to Kedro is :class:`tlkedro.hooks.FreshnessHook`; docs/freshness.md tells the rules.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import fsspec
from kedro.config import MissingConfigException
from kedro.io import AbstractVersionedDataset, CatalogProtocol, DatasetError
from kedro.pipeline import Node, Pipeline

from tlkedro import __version__
from tlkedro.provenance import fingerprint, jsonable

logger = logging.getLogger(__name__)

RECORDS_FOLDER = "freshness"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# How many changed keys a stale node's reason lists.
_REASON_KEYS = 3


class State(StrEnum):
    """What a node's persisted outputs are worth now."""

    FRESH = "fresh"
    STALE = "stale"
    MISSING = "missing"


class FreshnessError(RuntimeError):
    """A run would build on stale or missing results that it does not re-make itself."""


def is_parameter(dataset: str) -> bool:
    return dataset == "parameters" or dataset.startswith("params:")


def is_ephemeral(catalog: CatalogProtocol, dataset: str) -> bool:
    """Whether a dataset lives only in the memory of the process that ran its producer.

    True for datasets the catalog does not define (Kedro makes them MemoryDatasets) and for datasets
    marked ephemeral (``MemoryDataset``, ``SharedMemoryDataset``).
    """
    if dataset not in catalog:
        return True
    return bool(getattr(catalog.get(dataset), "_EPHEMERAL", False))


def data_root(config_loader: Any) -> str | None:
    """The environment's ``data_root`` (``globals.yml``), under which the catalog keeps derived data."""
    try:
        return (config_loader["globals"] or {}).get("data_root")
    except MissingConfigException:
        return None


def raw_parameters(config_loader: Any) -> dict[str, Any]:
    """The environment's parameters with the run's ``--params``, before Kedro types any of them."""
    try:
        return dict(config_loader["parameters"] or {})
    except MissingConfigException:
        return {}


def records_url(project_path: str | os.PathLike[str], data_root: str | None) -> str:
    """Where the completion records live: ``<data_root>/freshness``, beside the data they describe.

    Args:
        project_path: The project's root; a relative ``data_root`` is taken from there.
        data_root: The ``data_root`` of the environment's ``globals.yml`` (an fsspec URL on an object
            store, so that Argo tasks share their records); ``None`` for ``data``.
    """
    root = data_root or "data"
    if "://" not in root and not os.path.isabs(root):
        root = os.path.join(os.fspath(project_path), root)
    return f"{root.rstrip('/')}/{RECORDS_FOLDER}"


def _unwrap(node: Node) -> tuple[Any, dict[str, Any]]:
    """The function under a node's ``functools.partial`` layers, and the arguments bound into it."""
    func, bound = node.func, {}
    while isinstance(func, functools.partial):
        bound = {**func.keywords, **bound}
        if func.args:
            bound.setdefault("*args", func.args)
        func = func.func
    return func, bound


def parameter_value(parameters: Mapping[str, Any], name: str) -> Any:
    """The raw value of a parameter input: ``parameters`` is the whole tree, ``params:a.b`` a branch."""
    value: Any = parameters
    if name != "parameters":
        for key in name.removeprefix("params:").split("."):
            if not isinstance(value, Mapping) or key not in value:
                raise KeyError(name)
            value = value[key]
    return value


def own_parts(
    node: Node, catalog: CatalogProtocol, parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parts of a node's fingerprint besides its inputs' fingerprints.

    Args:
        node: The node.
        catalog: The run's catalog, whose parameter datasets are read when ``parameters`` is ``None``.
        parameters: The raw parameter tree (:class:`Freshness`).
    """
    func, bound = _unwrap(node)
    values = {}
    for name in sorted(filter(is_parameter, node.inputs)):
        try:
            if parameters is not None:
                values[name] = parameter_value(parameters, name)
            elif (dataset := catalog.get(name)) is not None:
                values[name] = dataset.load()  # not `catalog.load`, which logs every load
            else:
                raise KeyError(name)
        except KeyError:
            raise FreshnessError(
                f"Node {node.name} loads {name}, which the parameters lack"
            ) from None
    return jsonable(
        {
            "node": node.name,
            "function": f"{func.__module__}:{func.__qualname__}",
            "bound": bound,
            "parameters": values,
            "outputs": sorted(node.outputs),
            "version": {"tlkedro": __version__},
        }
    )


def content_signature(catalog: CatalogProtocol, dataset: str) -> str:
    """What a dataset that no node makes (raw data) holds now, as far as can be told cheaply.

    A dataset's own ``fingerprint()`` where it has one; else, for a file dataset (kedro-datasets'
    ``_fs`` and ``_filepath``), the file's size and modification time (or ETag on an object store);
    else its description.
    """
    if dataset not in catalog:
        return "memory"
    ds = catalog.get(dataset)
    own = getattr(ds, "fingerprint", None)
    if callable(own):
        return str(own())
    fs, path = getattr(ds, "_fs", None), getattr(ds, "_filepath", None)
    if fs is None or path is None:
        return fingerprint(str(ds))
    try:
        if isinstance(ds, AbstractVersionedDataset):
            path = ds._get_load_path()
        info = fs.info(str(path))
    except (DatasetError, FileNotFoundError):
        return "absent"
    return fingerprint({k: info.get(k) for k in ("name", "size", "mtime", "LastModified", "ETag")})


class Graph:
    """Which node makes each dataset, over a run's pipeline and every registered one.

    A run's pipeline is usually a part of the project's (``--namespaces``, ``--pipelines``): the
    producers of its inputs are found in the others.
    """

    def __init__(self, pipelines: Iterable[Pipeline]) -> None:
        self.producers: dict[str, Node] = {}
        for pipeline in pipelines:
            for node in pipeline.nodes:
                for output in node.outputs:
                    self.producers.setdefault(output, node)

    @classmethod
    def of_project(cls, pipeline: Pipeline) -> Graph:
        """``pipeline`` first, then the project's registered pipelines (a Kedro session must be loaded)."""
        from kedro.framework.project import pipelines

        return cls([pipeline, *(pipelines[name] for name in sorted(pipelines))])

    def sources(self, node: Node) -> dict[str, Node | None]:
        """``{dataset: the node that makes it, or None}`` for every non-parameter input of ``node``."""
        return {ds: self.producers.get(ds) for ds in sorted(node.inputs) if not is_parameter(ds)}


class RecordStore:
    """The completion records, one JSON file per node, on any fsspec filesystem."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs, self._root = fsspec.core.url_to_fs(url)

    def path(self, node: str) -> str:
        name = _UNSAFE.sub("_", node)
        if name != node:  # Kedro's default names hold brackets and spaces: keep them apart
            name = f"{name[:80]}-{fingerprint(node)[:8]}"
        return f"{self._root}/{name}.json"

    def read(self, node: str) -> dict[str, Any] | None:
        """The node's record; ``None`` when it has none (or an unreadable one, which is logged)."""
        path = self.path(node)
        try:
            with self._fs.open(path, "rb") as handle:
                record = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("Completion record %s is unreadable (%s): taken as missing", path, error)
            return None
        return record if isinstance(record, dict) and record.get("node") == node else None

    def write(self, record: Mapping[str, Any]) -> None:
        """Write a node's record atomically (a temporary file and a rename, or a committed upload)."""
        # Imported here: it imports kedro-datasets and pandas, which `kedro --help` should not pay for.
        from tlkedro.datasets.atomic import atomic_write

        path = self.path(record["node"])
        with atomic_write(self._fs, path, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
        self._fs.invalidate_cache(path)

    def remove(self, node: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self.path(node))
        self._fs.invalidate_cache(self.path(node))


@dataclass(frozen=True)
class NodeStatus:
    """A node's freshness.

    Attributes:
        node: The node's name.
        state: Of its own persisted outputs; ``fresh`` for a node that persists nothing.
        reason: Why it is not fresh, or why it must be re-made all the same; ``""`` otherwise.
        persisted: Whether it has a persisted output (else it runs whenever a consumer runs).
        dirty: Whether it must be re-made: not fresh, or downstream of a node that must be.
    """

    node: str
    state: State
    reason: str
    persisted: bool
    dirty: bool


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: tree}


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between a record's parts and the current ones, e.g. ``config.optimizer.lr: ...``."""
    before, after = _flatten(dict(old)), _flatten(dict(new))
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key, "<unset>") == after.get(key, "<unset>"):
            continue
        if key.startswith("inputs."):
            changes.append(f"input {key.removeprefix('inputs.')} changed")
        else:
            shown = key.removeprefix("bound.").removeprefix("parameters.")
            changes.append(f"{shown}: {before.get(key, '<unset>')} -> {after.get(key, '<unset>')}")
    if not changes:
        return "fingerprint changed"
    more = f" (and {len(changes) - _REASON_KEYS} more)" if len(changes) > _REASON_KEYS else ""
    return "; ".join(changes[:_REASON_KEYS]) + more


class Freshness:
    """The freshness of a project's nodes, decided from the catalog and the completion records.

    Args:
        graph: The producers of the datasets.
        catalog: The run's catalog (its parameters are those of ``--env`` and ``--params``).
        store: The completion records.
        parameters: The raw parameter tree, ``--params`` included (``config_loader["parameters"]``),
            from which a node's parameter inputs are fingerprinted; ``None`` reads them from the
            catalog. Kedro turns parameters into the typed objects their nodes' annotations name only
            for the pipelines a run validates, so the catalog's values of one node's parameters depend
            on which pipelines a run holds; the raw tree does not.
    """

    def __init__(
        self,
        graph: Graph,
        catalog: CatalogProtocol,
        store: RecordStore,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph, self.catalog, self.store = graph, catalog, store
        self.parameters = parameters
        self._parts: dict[str, dict[str, Any]] = {}
        self._fingerprints: dict[str, tuple[str, dict[str, Any]]] = {}
        self._records: dict[str, dict[str, Any] | None] = {}
        self._statuses: dict[str, NodeStatus] = {}

    def record(self, node: str) -> dict[str, Any] | None:
        if node not in self._records:
            self._records[node] = self.store.read(node)
        return self._records[node]

    def own_parts(self, node: Node) -> dict[str, Any]:
        if node.name not in self._parts:
            self._parts[node.name] = own_parts(node, self.catalog, self.parameters)
        return self._parts[node.name]

    def fingerprint(self, node: Node) -> tuple[str, dict[str, Any]]:
        """The fingerprint the node's results would have if it ran now, and its parts."""
        if node.name not in self._fingerprints:
            inputs = {
                ds: self.fingerprint(producer)[0]
                if producer is not None
                else content_signature(self.catalog, ds)
                for ds, producer in self.graph.sources(node).items()
            }
            parts = {**self.own_parts(node), "inputs": inputs}
            self._fingerprints[node.name] = (fingerprint(parts), parts)
        return self._fingerprints[node.name]

    def status(self, node: Node) -> NodeStatus:
        if node.name not in self._statuses:
            persisted = [o for o in node.outputs if not is_ephemeral(self.catalog, o)]
            state, reason = self._own_state(node, persisted) if persisted else (State.FRESH, "")
            upstream = [
                p.name for p in self.graph.sources(node).values() if p and self.status(p).dirty
            ]
            if state is State.FRESH and upstream:
                reason = f"upstream {upstream[0]} is re-made"
            self._statuses[node.name] = NodeStatus(
                node.name,
                state,
                reason,
                bool(persisted),
                state is not State.FRESH or bool(upstream),
            )
        return self._statuses[node.name]

    def _own_state(self, node: Node, persisted: list[str]) -> tuple[State, str]:
        missing = [o for o in persisted if not self.catalog.exists(o)]
        if missing:
            return State.MISSING, f"no {missing[0]}"
        record = self.record(node.name)
        if record is None:
            return State.MISSING, (
                "no completion record: its outputs are from a run that did not finish (or that "
                "recorded none)"
            )
        current, parts = self.fingerprint(node)
        if record.get("fingerprint") != current:
            return State.STALE, describe_change(record.get("parts") or {}, parts)
        for ds, producer in self.graph.sources(node).items():
            upstream = self.record(producer.name) if producer is not None else None
            if upstream is not None and upstream.get("made") != record.get("inputs_made", {}).get(
                ds
            ):
                return State.STALE, f"{ds} was re-made (by {producer.name}) after it"
        return State.FRESH, ""

    def assess(self, pipeline: Pipeline) -> dict[str, NodeStatus]:
        """``{node name: status}`` for the pipeline's nodes, in its order."""
        return {node.name: self.status(node) for node in pipeline.nodes}

    def outside_problems(self, pipeline: Pipeline) -> list[str]:
        """Inputs of ``pipeline`` made by nodes outside it that must be re-made first, one line each."""
        inside = {node.name for node in pipeline.nodes}
        problems: dict[str, str] = {}
        for node in pipeline.nodes:
            for ds, producer in self.graph.sources(node).items():
                if producer is None or producer.name in inside or producer.name in problems:
                    continue
                status = self.status(producer)
                if status.dirty:
                    problems[producer.name] = (
                        f"{ds} (loaded by {node.name}) comes from {producer.name}, which is not "
                        f"part of this run and is {status.state}: {status.reason}"
                    )
        return list(problems.values())

    def recorder(self, pipeline: Pipeline, run_id: str | None) -> RunRecorder:
        """What a run of ``pipeline`` needs to write its nodes' records (JSON-able: see :class:`RunRecorder`)."""
        nodes = {}
        for node in pipeline.nodes:
            inputs = {
                ds: {"producer": producer.name}
                if producer is not None
                else {"content": content_signature(self.catalog, ds)}
                for ds, producer in self.graph.sources(node).items()
            }
            nodes[node.name] = {"parts": self.own_parts(node), "inputs": inputs}
        return RunRecorder(self.store.url, run_id, nodes)


@dataclass
class RunRecorder:
    """Removes a node's record when it starts, and writes it once all its outputs are saved.

    The fingerprint recorded is made of the records of the inputs the node read (so a node run on a
    stale input is recorded as what it is: stale), read when it starts. Plain data, so that a
    ParallelRunner worker started by ``spawn`` gets it as JSON (:meth:`to_json`).

    Attributes:
        store_url: The records' folder.
        run_id: Kedro's id of the run, kept in each record.
        nodes: Per node: ``parts`` (:func:`own_parts`) and per input dataset ``{"producer": node}``
            or ``{"content": signature}``.
    """

    store_url: str
    run_id: str | None
    nodes: dict[str, dict[str, Any]]
    _started: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def store(self) -> RecordStore:
        return RecordStore(self.store_url)

    def started(self, node: str) -> None:
        """The node starts: its old record goes, and what it reads is noted."""
        if node not in self.nodes:
            return
        self.store.remove(node)
        inputs, made = {}, {}
        for ds, source in self.nodes[node]["inputs"].items():
            if "producer" in source:
                upstream = self.store.read(source["producer"]) or {}
                inputs[ds] = upstream.get("fingerprint", "unrecorded")
                made[ds] = upstream.get("made")
            else:
                inputs[ds] = source["content"]
        self._started[node] = {"inputs": inputs, "inputs_made": made}

    def finished(self, node: str) -> None:
        """Every output of the node is saved: write its record."""
        started = self._started.pop(node, None)
        if started is None:
            return
        parts = {**self.nodes[node]["parts"], "inputs": started["inputs"]}
        self.store.write(
            {
                "node": node,
                "fingerprint": fingerprint(parts),
                "parts": parts,
                "made": uuid.uuid4().hex,
                "inputs_made": started["inputs_made"],
                "run_id": self.run_id,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )

    def to_json(self) -> str:
        return json.dumps({"store_url": self.store_url, "run_id": self.run_id, "nodes": self.nodes})

    @classmethod
    def from_json(cls, text: str) -> RunRecorder:
        return cls(**json.loads(text))
