"""A tiny Kedro 1.7 project shaped like tlkedro, written into a folder for the deployment tests.

``make_data`` (no namespace) feeds two variants of one template pipeline, ``train.small`` and
``train.large`` (nodes ``train`` then ``score``, exchanging an in-memory model), and ``compare``
(no namespace) reads both scores. Every persisted output records when it was written, so a test
can check the order the jobs ran in. ``--params train.large.fail=true`` makes one variant fail. Its
settings register tlkedro's ``FreshnessHook``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "toyproj"

FILES = {
    "pyproject.toml": f"""\
[tool.kedro]
package_name = "{PACKAGE}"
project_name = "{PACKAGE}"
kedro_init_version = "1.7.0"
source_dir = "src"
""",
    f"src/{PACKAGE}/__init__.py": "",
    # tlkedro's completion records, so that the commands can tell fresh groups from stale ones.
    f"src/{PACKAGE}/settings.py": """\
from tlkedro.hooks import FreshnessHook

HOOKS = (FreshnessHook(),)
""",
    f"src/{PACKAGE}/nodes.py": """\
import time


def make_data():
    return {"values": [1, 2, 3], "t": time.time()}


def train(raw, scale, fail):
    if fail:
        raise RuntimeError("asked to fail")
    return {"weight": sum(raw["values"]) * scale, "raw_t": raw["t"]}


def score(model):
    return {"score": model["weight"], "raw_t": model["raw_t"], "t": time.time()}


def compare(small, large):
    return {"best": max(small["score"], large["score"]),
            "inputs_t": [small["t"], large["t"]], "t": time.time()}
""",
    f"src/{PACKAGE}/pipeline_registry.py": f"""\
from kedro.pipeline import Node, Pipeline

from {PACKAGE}.nodes import compare, make_data, score, train


def register_pipelines():
    template = Pipeline([
        Node(train, ["raw", "params:scale", "params:fail"], "model", name="train"),
        Node(score, "model", "score", name="score"),
    ])
    variants = sum(
        Pipeline(template, namespace=f"train.{{v}}", inputs={{"raw"}}) for v in ("small", "large")
    )
    upstream = Pipeline([Node(make_data, None, "raw", name="make_data")])
    report = Pipeline([
        Node(compare, ["train.small.score", "train.large.score"], "report", name="compare"),
    ])
    return {{"__default__": upstream + variants + report, "variants": variants,
             "data": upstream, "reporting": report}}
""",
    # data_root: data/ here; an fsspec URL in an object-store environment (globals.yml).
    "conf/base/catalog.yml": """\
raw:
  type: tlkedro.datasets.atomic.JSONDataset
  filepath: ${globals:data_root,data}/raw.json

"train.{variant}.score":
  type: tlkedro.datasets.atomic.JSONDataset
  filepath: ${globals:data_root,data}/{variant}/score.json

report:
  type: tlkedro.datasets.atomic.JSONDataset
  filepath: ${globals:data_root,data}/report.json
""",
    "conf/base/parameters.yml": """\
train:
  small: {scale: 1, fail: false}
  large: {scale: 2, fail: false}
""",
    "conf/base/deploy.yml": """\
resources:
  default: {cpus: 1, memory: 300M, time: 10}
  groups:
    "train.*": {time: 5}
    train.large: {memory: 400M}
slurm:
  job_prefix: toy
argo:
  image: toy:1
  retries: 2
  volumes:
    - {name: data, claim_name: toy-data, mount_path: /project/data}
""",
    "conf/local/.gitkeep": "",
    # Tasks that share nothing but an object store; its globals.yml (data_root) is the test's.
    "conf/cloud/deploy.yml": """\
argo:
  volumes: []
  env_from_secrets: [toy-object-store]
""",
}

VARIANTS = ("train.small", "train.large")


def write_project(root: Path) -> Path:
    """Write the project into ``root``.

    Args:
        root: An empty or missing folder.

    Returns:
        ``root``.
    """
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
