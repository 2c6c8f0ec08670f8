"""Throughput and memory of ingestion + preprocessing, against the floor of merely decompressing the files.

Generates ``N`` synthetic brain volumes on the MNI 2 mm grid (91 x 109 x 91, int16 with a scale factor,
gzip) in the UK Biobank layout with a showcase-style metadata table, then times, on the same files with a
warm page cache:

- the floor: decompressing every file once, single process (Python's ``gzip``, as ``gzip -dc`` would);
- ingestion: ``tlkedro.imaging.ingest.ingest`` (header, geometry and voxel checks), writing the manifest;
- preprocessing: ``split_subjects`` and, for every split, ``build_model_input`` written by
  ``NumpyArrayDataset`` (one process pool per split, as the pipeline's four nodes do).

Each stage runs in a fresh interpreter, as ``kedro run --pipelines ingestion`` and
``kedro run --pipelines preprocessing`` would, and is timed from inside (imports excluded, process pool
start-up included). The report gives volumes per second, each as a ratio to the floor, the workers used,
and the peak memory of each stage: the largest sum over its whole process tree (the stage's process, the
forkserver and the pool workers) of RSS, and of PSS (resident memory with the pages that processes share
divided among them, i.e. the physical memory the tree holds), sampled every 0.1 s; and the stage's main
process's own peak from ``getrusage`` (its children's figure would miss the pool workers: they are
children of the forkserver, which the stage does not reap). The CPU time of each stage's
process tree per volume (interpreter start and imports included) does not depend on what else runs on
the machine: on ``k`` free cores a stage approaches ``k / CPU time per volume``.

Usage::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/ingest_preprocess.py --n 200 --mode slices
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import functools
import gzip
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tlkedro.parallel import imap_ordered, resolve_workers

MNI_2MM_SHAPE = (91, 109, 91)
MNI_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
SITES = (11025, 11026, 11027, 11028)
IMAGE_KEY = "{eid}/T1/T1_brain_to_MNI.nii.gz"


def _write_volume(index: int, root: str) -> None:
    """One brain-like volume: a noisy ellipsoid with a smooth intensity gradient, zero outside."""
    rng = np.random.default_rng(index)
    x, y, z = np.ogrid[tuple(slice(0, n) for n in MNI_2MM_SHAPE)]
    centre = np.array([45, 60, 40]) + rng.normal(0, 1.5, 3)
    radii = np.array([34, 42, 34]) * rng.uniform(0.9, 1.1)
    inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (z - centre[2]) / radii[2]
    ) ** 2 < 1
    intensity = 60 + 0.4 * z + rng.normal(0, 6, MNI_2MM_SHAPE)
    image = nib.Nifti1Image(np.where(inside, intensity, 0).astype(np.float32), MNI_2MM_AFFINE)
    image.set_data_dtype(
        np.int16
    )  # nibabel picks scl_slope/scl_inter to fit the float data into int16
    path = Path(root) / IMAGE_KEY.format(eid=1000000 + index)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def make_cohort(root: Path, n: int, workers: int) -> tuple[dict[str, str], pd.DataFrame]:
    """Write ``n`` volumes and their metadata under ``root`` (reused when already there)."""
    keys = [IMAGE_KEY.format(eid=1000000 + i) for i in range(n)]
    missing = [i for i, key in enumerate(keys) if not (root / key).exists()]
    list(imap_ordered(functools.partial(_write_volume, root=str(root)), missing, workers=workers))
    rng = np.random.default_rng(0)
    metadata = pd.DataFrame(
        {
            "eid": 1000000 + np.arange(n),
            "21003-2.0": rng.uniform(45, 82, n).round(),
            "31-0.0": rng.integers(0, 2, n),
            "54-2.0": rng.choice(SITES, n, p=[0.4, 0.15, 0.3, 0.15]),
        }
    )
    return {key: str(root / key) for key in keys}, metadata


class TreeSampler(threading.Thread):
    """Samples a process and all its descendants: peak summed RSS and PSS (kB), and CPU seconds.

    The CPU time of a process is its last sampled value, so up to one interval per process is missed.

    Args:
        root: The process at the top of the tree.
        interval: Seconds between samples.
    """

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self._cpu_ticks: dict[int, int] = {}
        self._halt = threading.Event()

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds used by the processes of the tree."""
        return sum(self._cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, stack = [], [pid]
        while stack:
            current = stack.pop()
            pids.append(current)
            for task in Path(f"/proc/{current}/task").glob("*/children"):
                try:
                    stack.extend(int(c) for c in task.read_text().split())
                except OSError:
                    pass
        return pids

    def _sample(self, pid: int) -> tuple[int, int]:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 0, 0
        # Fields after the command name: state is field 3, utime and stime are fields 14 and 15.
        fields = stat.rsplit(")", 1)[1].split()
        self._cpu_ticks[pid] = int(fields[11]) + int(fields[12])
        sizes = dict(line.split(":", 1) for line in rollup)
        return int(sizes["Rss"].split()[0]), int(sizes["Pss"].split()[0])

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            totals = [self._sample(pid) for pid in self._tree(self.root)]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(r for r, _ in totals))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(p for _, p in totals))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def decompress_floor(paths: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds to decompress every file once in this process."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for path in paths:
        gzip.decompress(Path(path).read_bytes())
    return time.perf_counter() - start, time.process_time() - cpu_start


def run_ingestion(workdir: Path, n: int, workers: int) -> None:
    """The ingestion pipeline's work on the cohort; writes the manifest."""
    # Stage libraries are imported in the stage processes only: pool workers re-import this script.
    from tlkedro.imaging.ingest import IngestionConfig, ingest

    images, metadata = make_cohort(workdir / "cohort", n, workers)
    manifest, quarantine = ingest(images, metadata, IngestionConfig(layout="ukb", workers=workers))
    assert len(manifest) == n and quarantine.empty, quarantine
    manifest.to_parquet(workdir / "manifest.parquet")


def run_preprocessing(workdir: Path, mode: str, workers: int) -> None:
    """The preprocessing pipeline's work, node by node, with the real dataset writing the arrays."""
    from tlkedro.datasets import NumpyArrayDataset
    from tlkedro.imaging.extraction import build_model_input
    from tlkedro.imaging.splits import SPLITS, select_split, split_subjects
    from tlkedro.pipelines.preprocessing.nodes import PreprocessingParams

    manifest = pd.read_parquet(workdir / "manifest.parquet")
    params = PreprocessingParams(mode=mode, workers=workers, splits={"external_site": "11028"})
    splits = split_subjects(manifest, params.splits, seed=params.seed)
    for split in SPLITS:
        scans = select_split(manifest, splits, split)
        stack, labels = build_model_input(
            scans, params, workers=params.workers, desc=f"{split} images"
        )
        NumpyArrayDataset(filepath=str(workdir / "model_input" / split / "images.npy")).save(stack)
        labels.to_parquet(workdir / "model_input" / split / "labels.parquet")


def run_stage(
    stage: str, args: argparse.Namespace, workers: int
) -> tuple[float, float, int, TreeSampler]:
    """Run one stage in a fresh interpreter, as its own ``kedro run`` would.

    Returns:
        The stage's wall seconds (timed inside it), the CPU seconds of its whole process tree
        (interpreter start and imports included), the stage process's own peak RSS in kB
        (``getrusage``), and the sampler of its tree.
    """
    command = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--n",
        str(args.n),
        "--workers",
        str(workers),
    ]
    command += ["--mode", args.mode, "--workdir", str(args.workdir)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    sampler = TreeSampler(process.pid)
    sampler.start()
    stdout, _ = process.communicate()
    sampler.stop()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    seconds, max_rss_kb = stdout.split()[-2:]
    return float(seconds), sampler.cpu_seconds, int(max_rss_kb), sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="number of volumes")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    parser.add_argument("--mode", choices=["slices", "volume"], default="slices")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlkedro_benchmark"))
    parser.add_argument("--stage", choices=["ingestion", "preprocessing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    workers = resolve_workers(args.workers)

    if args.stage:
        start = time.perf_counter()
        if args.stage == "ingestion":
            run_ingestion(args.workdir, args.n, workers)
        else:
            run_preprocessing(args.workdir, args.mode, workers)
        print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return

    images, _ = make_cohort(args.workdir / "cohort", args.n, workers)
    paths = list(images.values())
    decompress_floor(paths)  # warm the page cache, so every stage reads from memory
    floor_s, floor_cpu = decompress_floor(paths)
    load_before = os.getloadavg()[0]
    stages = {stage: run_stage(stage, args, workers) for stage in ("ingestion", "preprocessing")}
    load_after = os.getloadavg()[0]

    raw_mb = sum(Path(p).stat().st_size for p in paths) / 2**20
    floor_rate = args.n / floor_s
    print(
        f"volumes: {args.n} ({raw_mb:.0f} MiB gzip), workers: {workers}, cores: {os.cpu_count()}, mode: {args.mode}"
    )
    # Other processes on the machine take cores from the workers: report how busy it was.
    print(f"1-min load average: {load_before:.1f} before the stages, {load_after:.1f} after")
    header = f"{'stage':<32}{'seconds':>9}{'volumes/s':>11}{'x floor':>9}{'CPU ms/vol':>12}"
    print(header + f"{'main RSS MiB':>14}{'tree RSS MiB':>14}{'tree PSS MiB':>14}")
    print(
        f"{'floor: gzip decompress, 1 proc':<32}{floor_s:>9.2f}{floor_rate:>11.1f}{1.0:>9.2f}{1000 * floor_cpu / args.n:>12.1f}"
    )
    for stage, (seconds, cpu, max_rss_kb, tree) in stages.items():
        print(
            f"{stage:<32}{seconds:>9.2f}{args.n / seconds:>11.1f}{args.n / seconds / floor_rate:>9.2f}"
            f"{1000 * cpu / args.n:>12.1f}{max_rss_kb / 1024:>14.0f}"
            f"{tree.peak_rss_kb / 1024:>14.0f}{tree.peak_pss_kb / 1024:>14.0f}"
        )
    seconds = sum(stage[0] for stage in stages.values())
    cpu = sum(stage[1] for stage in stages.values())
    print(
        f"{'ingestion + preprocessing':<32}{seconds:>9.2f}{args.n / seconds:>11.1f}"
        f"{args.n / seconds / floor_rate:>9.2f}{1000 * cpu / args.n:>12.1f}"
    )


if __name__ == "__main__":
    main()
