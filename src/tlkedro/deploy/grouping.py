"""Group a Kedro pipeline's nodes into jobs, and the ``kedro run`` that runs one group.

A group is what one Slurm job or one Argo task runs. Grouped by namespace, a variant
(``finetune.full``: the namespace cut to ``depth`` parts) is one group; nodes in no namespace
(ingestion, preprocessing, reporting) are one group each, as in Kedro's own
``Pipeline.group_nodes_by``, or one group per registered pipeline holding them. Grouped by node,
every node is a group. A group depends on the groups whose outputs it loads, so a job starts only
after the jobs producing its inputs have succeeded.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from kedro.pipeline import Pipeline

from tlkedro.freshness import NodeStatus, State

GroupBy = Literal["namespace", "node"]


@dataclass(frozen=True)
class NodeGroup:
    """Nodes that run together in one job.

    Attributes:
        name: The namespace (``finetune.full``) or, for a node in no namespace, the node's name.
        nodes: Names of its nodes, in the pipeline's topological order.
        dependencies: Names of the groups whose outputs it loads.
        inputs: Datasets it loads that it does not produce (parameters excluded).
        outputs: Datasets it produces.
        namespace: The namespace when ``kedro run --namespaces`` selects exactly these nodes;
            ``None`` when the group must be selected by node names.
    """

    name: str
    nodes: tuple[str, ...]
    dependencies: tuple[str, ...]
    inputs: frozenset[str]
    outputs: frozenset[str]
    namespace: str | None

    def selector(self) -> list[str]:
        """The ``kedro run`` options that select this group's nodes.

        Returns:
            ``["--namespaces", namespace]`` or ``["--nodes", "a,b"]``.
        """
        if self.namespace is not None:
            return ["--namespaces", self.namespace]
        return ["--nodes", ",".join(self.nodes)]


@dataclass(frozen=True)
class RunOptions:
    """The options of the submitting command that every job's ``kedro run`` repeats.

    Attributes:
        env: Kedro configuration environment, ``None`` for Kedro's default.
        pipeline: Registered pipeline name, ``None`` for ``__default__``.
        params: The ``--params`` string exactly as given, ``None`` when not given.
        only_missing_outputs: Whether each run skips the nodes whose outputs are fresh
            (``--only-missing-outputs``, which tlkedro's ``FreshnessHook`` makes re-make stale ones).
    """

    env: str | None = None
    pipeline: str | None = None
    params: str | None = None
    only_missing_outputs: bool = False

    def run_args(self, group: NodeGroup) -> list[str]:
        """Arguments after ``kedro`` that run one group.

        Args:
            group: The group to run.

        Returns:
            E.g. ``["run", "--env", "prod", "--namespaces", "finetune.full"]``.
        """
        args = ["run"]
        if self.env:
            args += ["--env", self.env]
        if self.pipeline:
            args += ["--pipelines", self.pipeline]
        if self.params:
            args += ["--params", self.params]
        if self.only_missing_outputs:
            args.append("--only-missing-outputs")
        return args + group.selector()


@dataclass(frozen=True)
class Crossing:
    """An ephemeral dataset that one group produces and another loads.

    Attributes:
        dataset: The dataset's name.
        producer: The group that saves it.
        consumer: The group that loads it.
    """

    dataset: str
    producer: str
    consumer: str

    def __str__(self) -> str:
        return (
            f"'{self.dataset}' is a MemoryDataset produced by group '{self.producer}' and loaded "
            f"by group '{self.consumer}': jobs do not share memory, so '{self.consumer}' will fail "
            f"to load it. Give '{self.dataset}' a persisted catalog entry."
        )


def _is_parameter(dataset: str) -> bool:
    return dataset == "parameters" or dataset.startswith("params:")


def pipeline_homes(pipelines: Mapping[str, Pipeline]) -> dict[str, str]:
    """Name, for each node in no namespace, the registered pipeline it belongs to.

    Args:
        pipelines: The project's registered pipelines.

    Returns:
        ``{node name: pipeline name}``; a node in several pipelines gets the smallest (the most
        specific, e.g. ``reporting`` rather than an ``all_reports`` superset), ties by name.
        ``__default__`` names no node.
    """
    homes: dict[str, str] = {}
    by_size = sorted(
        (len(p.nodes), name, p) for name, p in pipelines.items() if name != "__default__"
    )
    for _, name, registered in by_size:
        for node in registered.nodes:
            if not node.namespace:
                homes.setdefault(node.name, name)
    return homes


def group_pipeline(
    pipeline: Pipeline,
    by: GroupBy = "namespace",
    depth: int = 2,
    homes: Mapping[str, str] | None = None,
) -> list[NodeGroup]:
    """Split a pipeline into groups, each to run as one job.

    Args:
        pipeline: The pipeline to deploy.
        by: ``"namespace"``: one group per namespace cut to ``depth`` parts; a node in no
            namespace is grouped by ``homes``, or alone. ``"node"``: one group per node.
        depth: How many leading parts of a namespace name a group; 2 makes each variant of
            ``finetune.<variant>`` a group, 1 groups all ``finetune.*`` variants together.
        homes: Group name of nodes in no namespace, e.g. :func:`pipeline_homes` to make the
            ingestion, preprocessing and reporting nodes one group each; nodes it does not name,
            and all of them when it is ``None``, are groups of their own.

    Returns:
        The groups in an order where each comes after the groups it depends on.

    Raises:
        ValueError: If ``by`` or ``depth`` is invalid, a group of nodes in no namespace has the
            name of a namespace group, or the groups depend on each other in a cycle.
    """
    if by not in ("namespace", "node"):
        raise ValueError(f"group_by must be 'namespace' or 'node', got {by!r}")
    if depth < 1:
        raise ValueError(f"namespace depth must be at least 1, got {depth}")
    homes = homes or {}
    key_of: dict[str, str] = {}
    namespaced_keys: set[str] = set()
    for node in pipeline.nodes:
        if by == "node":
            key_of[node.name] = node.name
        elif node.namespace:
            key_of[node.name] = ".".join(node.namespace.split(".")[:depth])
            namespaced_keys.add(key_of[node.name])
        else:
            key_of[node.name] = homes.get(node.name, node.name)
    plain_keys = {key_of[n.name] for n in pipeline.nodes if not n.namespace}
    if by == "namespace" and (clash := sorted(namespaced_keys & plain_keys)):
        raise ValueError(
            f"Group name(s) {clash} are both a namespace and a node or pipeline in no namespace: "
            "rename one so each group has one name."
        )

    # Kedro's per-node grouping gives each node's parents, derived from the datasets they share.
    members: dict[str, list[str]] = {}
    parents: dict[str, set[str]] = {}
    for single in pipeline.group_nodes_by(None):
        key = key_of[single.name]
        members.setdefault(key, []).extend(single.nodes)
        parents.setdefault(key, set()).update(key_of[p] for p in single.dependencies)

    order = _topological_order({key: deps - {key} for key, deps in parents.items()})
    groups = []
    for key in order:
        sub = pipeline.only_nodes(*members[key])
        namespace = None
        if by == "namespace" and key in namespaced_keys:
            selected = pipeline.only_nodes_with_namespaces([key]).nodes
            if {n.name for n in selected} == set(members[key]):
                namespace = key
        groups.append(
            NodeGroup(
                name=key,
                nodes=tuple(n.name for n in sub.nodes),
                dependencies=tuple(d for d in order if d in parents[key] and d != key),
                inputs=frozenset(d for d in sub.inputs() if not _is_parameter(d)),
                outputs=frozenset(sub.all_outputs()),
                namespace=namespace,
            )
        )
    return groups


def _topological_order(dependencies: dict[str, set[str]]) -> list[str]:
    sorter = graphlib.TopologicalSorter(dependencies)
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ValueError(
            f"The groups depend on each other in a cycle ({cycle}), so they cannot run as "
            "separate jobs: group by node, or change the namespaces."
        ) from None


def ephemeral_crossings(
    groups: Iterable[NodeGroup], ephemeral: Callable[[str], bool]
) -> list[Crossing]:
    """Find ephemeral datasets that one group produces and another group loads.

    Args:
        groups: The groups of one pipeline.
        ephemeral: Tells whether a dataset is ephemeral, e.g. ``partial(is_ephemeral, catalog)``.

    Returns:
        One crossing per dataset and consuming group, sorted by dataset.
    """
    groups = list(groups)
    producer = {dataset: g.name for g in groups for dataset in g.outputs}
    crossings = [
        Crossing(dataset, producer[dataset], group.name)
        for group in groups
        for dataset in group.inputs
        if dataset in producer and ephemeral(dataset)
    ]
    return sorted(crossings, key=lambda c: (c.dataset, c.consumer))


def group_status(group: NodeGroup, statuses: Mapping[str, NodeStatus]) -> tuple[State, str]:
    """A group's freshness, from its nodes' (:meth:`tlkedro.freshness.Freshness.assess`).

    Args:
        group: A group of the project's pipeline.
        statuses: The status of every node of the pipeline, by name.

    Returns:
        ``(state, reason)``: ``missing`` when a node's persisted outputs are (or when the group persists
        nothing, so nothing shows that it ran), else ``stale`` when a node must be re-made (stale
        itself, or downstream of a node that is re-made), else ``fresh``; the reason names the node.
    """
    persisted = [statuses[name] for name in group.nodes if statuses[name].persisted]
    if not persisted:
        return State.MISSING, "persists no output, so nothing shows that it ran"
    missing = [s for s in persisted if s.state is State.MISSING]
    dirty = missing or [s for s in persisted if s.dirty]
    if dirty:
        return State.MISSING if missing else State.STALE, f"{dirty[0].node}: {dirty[0].reason}"
    return State.FRESH, ""


def needs_run(group: NodeGroup, statuses: Mapping[str, NodeStatus]) -> bool:
    """Whether a submission must run the group: it is not fresh (:func:`group_status`)."""
    return group_status(group, statuses)[0] is not State.FRESH
