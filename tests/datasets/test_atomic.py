"""Atomic saves (tlkedro.datasets.atomic): a save killed halfway leaves the old file, never a partial one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node

from tests.datasets.interrupted_save import KINDS, make
from tlkedro.datasets.atomic import CSVDataset, atomic_write
from tlkedro.hooks import AtomicOutputsHook

SCRIPT = Path(__file__).with_name("interrupted_save.py")
ROOT = Path(__file__).parents[2]
# (kind, versioned) as the catalog uses them: reports and models are versioned.
SAVES = [(kind, False) for kind in KINDS if kind not in ("png", "pt")] + [
    ("png", True),
    ("pt", True),
]


def _kill_during_save(kind: str, path: Path, versioned: bool, tmp_path: Path) -> None:
    """Start saving generation 2 in a subprocess and SIGKILL it halfway through its first write."""
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), kind, str(path), "1" if versioned else "0", str(ready)],
        env=env,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        if process.poll() is not None:
            pytest.fail(
                f"the writer exited ({process.returncode}): {process.stderr.read().decode()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the writer never reached its first write")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def _target(dataset) -> Path:
    """The file a load reads: the latest version's if versioned."""
    if hasattr(dataset, "_get_load_path"):
        return Path(dataset._get_load_path())
    return Path(dataset._filepath)


def _partial_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


@pytest.mark.parametrize(("kind", "versioned"), SAVES)
def test_a_save_killed_halfway_keeps_the_previous_file(kind, versioned, tmp_path):
    path = tmp_path / "out" / f"data.{kind}"
    make(kind, str(path), versioned).save(KINDS[kind].data(1))
    before = make(kind, str(path), versioned)
    target = _target(before)
    previous = target.read_bytes()

    _kill_during_save(kind, path, versioned, tmp_path)

    (partial,) = _partial_files(tmp_path / "out")
    assert partial.stat().st_size > 0  # the kill did land in the middle of writing
    after = make(kind, str(path), versioned)
    assert after.exists()
    assert _target(after) == target
    assert target.read_bytes() == previous

    # The next run cleans up before it starts, and the old output stays the one that loads.
    _run_start(kind, after)
    assert _partial_files(tmp_path / "out") == []
    assert target.read_bytes() == previous
    if versioned:  # no empty version folder is left to look like a version
        assert [p.name for p in path.iterdir()] == [target.parent.name]


@pytest.mark.parametrize(("kind", "versioned"), [("json", False), ("pt", True)])
def test_a_first_save_killed_halfway_leaves_nothing_that_exists(kind, versioned, tmp_path):
    path = tmp_path / "out" / f"data.{kind}"
    _kill_during_save(kind, path, versioned, tmp_path)
    assert _partial_files(tmp_path / "out")
    assert not make(kind, str(path), versioned).exists()
    _run_start(kind, make(kind, str(path), versioned))
    assert _partial_files(tmp_path / "out") == []


def _run_start(name: str, dataset) -> None:
    """What ``kedro run`` does first: the hook sees a pipeline writing ``dataset``."""
    catalog = DataCatalog({name: dataset})
    pipeline = Pipeline([node(lambda: None, inputs=None, outputs=name)])
    AtomicOutputsHook().before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)


def test_the_hook_leaves_datasets_the_run_does_not_write(tmp_path):
    other = tmp_path / ".other.csv.abc.part"  # maybe being written right now by another job
    other.write_text("half")
    mine = tmp_path / ".mine.csv.abc.part"
    mine.write_text("half")
    catalog = DataCatalog(
        {
            "mine": CSVDataset(filepath=str(tmp_path / "mine.csv")),
            "other": CSVDataset(filepath=str(tmp_path / "other.csv")),
        }
    )
    pipeline = Pipeline([node(lambda x: x, inputs="other", outputs="mine")])
    AtomicOutputsHook().before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)
    assert not mine.exists()
    assert other.exists()


def test_an_error_during_a_save_writes_nothing_locally(tmp_path):
    dataset = CSVDataset(filepath=str(tmp_path / "x.csv"))
    dataset.save(pd.DataFrame({"a": [1]}))
    with pytest.raises(Exception, match="boom"):
        dataset.save(_Unwritable())
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]
    assert dataset.load().equals(pd.DataFrame({"a": [1]}))


class _Unwritable(pd.DataFrame):
    def to_csv(self, *args, **kwargs):
        stream = kwargs.get("path_or_buf")
        stream.write("a\n")
        raise RuntimeError("boom")


def test_on_an_object_store_the_object_appears_only_when_complete(s3_bucket):
    fs = fsspec.filesystem("s3")
    path = f"s3://{s3_bucket}/metrics.json"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(fs, path, "w") as stream:
            stream.write('{"half":')
            stream.flush()
            raise RuntimeError("boom")
    assert not fs.exists(path)
    with atomic_write(fs, path, "w") as stream:
        stream.write('{"whole": 1}')
    assert fs.cat_file(path) == b'{"whole": 1}'
    assert fs.ls(s3_bucket) == [f"{s3_bucket}/metrics.json"]  # no temporary object


@pytest.mark.parametrize("kind", ["csv", "parquet", "json", "md", "npy", "pt"])
def test_every_kind_round_trips_through_an_object_store(kind, s3_bucket):
    dataset = make(kind, f"s3://{s3_bucket}/out/data.{kind}", kind == "pt")
    assert not dataset.exists()
    dataset.save(KINDS[kind].data(1))
    loaded = make(kind, f"s3://{s3_bucket}/out/data.{kind}", kind == "pt").load()
    assert _equal(loaded, KINDS[kind].data(1))


def _equal(loaded, expected) -> bool:
    if isinstance(expected, pd.DataFrame):
        return loaded.equals(expected)
    if isinstance(expected, np.ndarray):
        return np.array_equal(loaded, expected)
    if isinstance(expected, dict) and "state_dict" in expected:
        return loaded["meta"] == expected["meta"] and all(
            torch.equal(loaded["state_dict"][k], v) for k, v in expected["state_dict"].items()
        )
    return loaded == expected


def test_appending_is_refused(tmp_path):
    with pytest.raises(ValueError, match="whole files"):
        with atomic_write(fsspec.filesystem("file"), str(tmp_path / "x.txt"), "a"):
            pass
