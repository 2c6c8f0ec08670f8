"""Science check of docs/ssl.md: SimCLR-pretrained versus age-pretrained versus scratch, fine-tuned on sex.

Reads the test predictions of the six finetune variants of ``conf/ssl`` (three sources, two target sizes)
from a project folder after

    kedro run --env ssl --pipelines data,pretrain,finetune

and prints, per target size, each variant's test AUROC with its BCa 95% interval and its paired
difference to scratch at the same size (the same test subjects resampled for both), with the number of
test subjects:

    PYTHONPATH=src python benchmarks/ssl_science_check.py --project .
"""

# ruff: noqa: T201  (a science check reports on stdout)

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tlkedro.tl.evaluation.scores import metric_interval, paired_difference

SOURCES = ("scratch", "age", "simclr")
SIZES = ("n40", "all")
METRIC = "auroc"


def predictions(project: Path, variant: str) -> pd.DataFrame:
    return pd.read_parquet(
        project / "data/07_model_output/finetune" / variant / "predictions_test.parquet"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="the project folder run")
    args = parser.parse_args()
    print(
        f"| target subjects | source | test {METRIC} (95% BCa) | paired difference to scratch | n test |"
    )
    print("|---|---|---|---|---|")
    for size in SIZES:
        scratch = predictions(args.project, f"scratch_{size}")
        for source in SOURCES:
            table = predictions(args.project, f"{source}_{size}")
            interval = metric_interval(table, METRIC, "classification")
            cell = f"{interval.estimate:.3f} ({interval.low:.3f} to {interval.high:.3f})"
            if source == "scratch":
                difference = "reference"
            else:
                paired = paired_difference(table, scratch, METRIC, "classification")
                mark = " (excludes 0)" if paired.excludes_zero() else ""
                difference = (
                    f"{paired.estimate:+.3f} ({paired.low:+.3f} to {paired.high:+.3f}){mark}"
                )
            print(f"| {size} | {source} | {cell} | {difference} | {interval.n} |")


if __name__ == "__main__":
    main()
