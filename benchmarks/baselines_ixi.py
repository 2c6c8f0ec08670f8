"""The evaluation library on real scans: cross-validated baselines on the shared IXI T1 scans.

Reads ``../shared/data/ixi_t1_2mm_bids_100`` (raw, unregistered 2 mm head scans; ``participants.tsv``),
reorients each scan to RAS, z-scores it over the head, and runs what the reports run: subject-level
``assign_folds`` (stratified by sex and age bin), ``cross_validated_baselines`` (trivial and linear on the
volumes average-pooled to ``--pooled-size`` voxels per axis), ``evaluation_table`` with BCa intervals and
the paired difference to the trivial baseline, and ``quality_flags``. There is no ``head_scale`` column on
unregistered scans, so the covariate baseline is skipped (with its warning).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/baselines_ixi.py --folds 5 --repeats 3 --pooled-size 16
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tlkedro.imaging.folds import assign_folds
from tlkedro.tl import evaluation, reports


def _load(root: Path) -> tuple[np.ndarray, pd.DataFrame]:
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    volumes = []
    for subject in participants["participant_id"]:
        path = next((root / subject / "anat").glob("*_T1w.nii.gz"))
        data = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)
        head = data > np.percentile(data, 50)
        volumes.append((data - data[head].mean()) / data[head].std())
    shapes = {v.shape for v in volumes}
    if len(shapes) != 1:
        raise ValueError(f"the scans have different shapes {shapes}; this script needs one")
    labels = pd.DataFrame(
        {
            "subject_id": participants["participant_id"].astype(str),
            "age": participants["age"].astype(float),
            "sex": (participants["sex"] == "M").astype(int),  # the manifest's coding: 1 male
        }
    )
    return np.stack(volumes)[:, None], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ixi_t1_2mm_bids_100"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pooled-size", type=int, default=16)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    images, labels = _load(args.data)
    print(
        f"{len(labels)} subjects, volumes {images.shape[2:]}, loaded in {time.perf_counter() - start:.1f} s"
    )
    folds = assign_folds(labels, args.folds, args.repeats, args.seed)
    for task, target in (("regression", "age"), ("classification", "sex")):
        start = time.perf_counter()
        tables = evaluation.cross_validated_baselines(
            images, labels, folds, task, target, pooled_size=args.pooled_size, seed=args.seed
        )
        named = {f"baseline.{kind}": table for kind, table in tables.items()}
        table = reports.evaluation_table(
            named, task, reference="baseline.trivial", n_resamples=args.resamples, seed=args.seed
        )
        flags = evaluation.quality_flags(named, task, target, n_resamples=args.resamples)
        print()
        print(
            reports.evaluation_markdown(
                table,
                flags,
                f"{target}: {args.folds}-fold x {args.repeats} cross-validation",
                args.resamples,
            )
        )
        print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
