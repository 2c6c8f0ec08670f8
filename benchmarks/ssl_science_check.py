"""Science check of docs/ssl.md: SimCLR-pretrained versus age-pretrained versus scratch, fine-tuned on sex.

The cohort of ``svcca_cutoff_check.py`` (synthetic, cohort seed 2024, current generator defaults, 4 mm,
central axial slice padded to 48x56), split into pretrain, finetune and test subjects. resnet18 is
pretrained on the pretrain subjects twice: on age (MSE) and with SimCLR without their labels; then each
source and a randomly initialised network are fine-tuned on sex (strategy ``full``, or ``scratch``) on
the first ``--sizes`` finetune subjects (nested, classes balanced as ``train_size`` draws them), with the
project's ``fit`` and ``evaluate``. Prints, per target size, each model's test AUROC with its BCa 95%
interval and its paired difference to scratch at the same size (the same test subjects resampled for
both), with the number of test subjects:

    PYTHONPATH=src python benchmarks/ssl_science_check.py --out /tmp/ssl_check

Writes the test predictions of every model into ``--out``.
"""

# ruff: noqa: T201  (a science check reports on stdout)

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from svcca_cutoff_check import _cohort  # the same cohort, so the two checks' figures compare

from tlkedro.imaging.folds import nested_subsets
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.evaluation.scores import metric_interval, paired_difference
from tlkedro.tl.training import evaluate, fit

METRIC = "auroc"


def _config(max_epochs: int, **overrides) -> TrainConfig:
    trainer = {"max_epochs": max_epochs, "batch_size": 32, "enable_progress_bar": False}
    base = {"architecture": {"name": "resnet18"}, "trainer": trainer, "seed": 0}
    return TrainConfig.model_validate(base | overrides)


def print_table(tables: dict[tuple[int, str], pd.DataFrame], sizes, names: list[str]) -> None:
    """Each model's test AUROC with its interval, and its paired difference to scratch, per size."""
    print(
        f"\n| target subjects | source | test {METRIC} (95% BCa) | paired difference to scratch | n test |"
    )
    print("|---|---|---|---|---|")
    for size in sizes:
        for name in names:
            interval = metric_interval(tables[size, name], METRIC, "classification")
            cell = f"{interval.estimate:.3f} ({interval.low:.3f} to {interval.high:.3f})"
            difference = "reference"
            if name != "scratch":
                paired = paired_difference(
                    tables[size, name], tables[size, "scratch"], METRIC, "classification"
                )
                mark = " **excludes 0**" if paired.excludes_zero else ""
                difference = (
                    f"{paired.estimate:+.3f} ({paired.low:+.3f} to {paired.high:+.3f}){mark}"
                )
            print(f"| {size} | {name} | {cell} | {difference} | {interval.n} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subjects", type=int, nargs=3, default=(400, 200, 300))
    parser.add_argument("--sizes", type=int, nargs="+", default=(40, 200), help="target subjects")
    parser.add_argument("--epochs", type=int, nargs=2, default=(8, 5), help="pretrain, finetune")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="print the table from the test predictions an earlier run wrote into --out",
    )
    args = parser.parse_args()
    if args.tables_only:
        tables = {
            (size, name): pd.read_parquet(args.out / f"{name}_{size}.parquet")
            for size in args.sizes
            for name in ("scratch", "age", "simclr")
        }
        print_table(tables, args.sizes, ["scratch", "age", "simclr"])
        return
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    images, labels = _cohort(sum(args.subjects), 2024)
    n_pre, n_fine, _ = args.subjects
    pretrain = images[:n_pre], labels.iloc[:n_pre].reset_index(drop=True)
    finetune = images[n_pre : n_pre + n_fine], labels.iloc[n_pre : n_pre + n_fine]
    test = images[n_pre + n_fine :], labels.iloc[n_pre + n_fine :].reset_index(drop=True)
    print(f"cohort: {len(labels)} subjects in {time.time() - start:.0f} s")

    pretraining = {"seed": 0, "data": {"val_fraction": 0.15}, "target": "age", "task": "regression"}
    sources = {
        "age": _config(args.epochs[0], objective={"name": "mse"}, **pretraining),
        "simclr": _config(args.epochs[0], objective={"name": "simclr"}, **pretraining),
    }
    models = {"scratch": None}
    for name, config in sources.items():
        result = fit(config, *pretrain)
        models[name] = result.checkpoint
        print(
            f"source {name}: best val/loss {result.summary['best_val_loss']:.3f} at epoch "
            f"{result.summary['best_epoch']} ({time.time() - start:.0f} s)"
        )

    subjects = finetune[1].set_index("subject_id")["sex"]
    subsets = nested_subsets(sorted(subjects.index), args.sizes, seed=0, strata=subjects)
    tables: dict[tuple[int, str], pd.DataFrame] = {}
    for size in args.sizes:
        rows = finetune[1]["subject_id"].isin(subsets[size]).to_numpy()
        for name, source in models.items():
            config = _config(
                args.epochs[1],
                target="sex",
                task="classification",
                objective={"name": "cross_entropy"},
                strategy={"name": "scratch" if source is None else "full"},
                optimizer={"lr": 3e-4},
                data={"val_fraction": 0.2},
            )
            labels_of = finetune[1][rows].reset_index(drop=True)
            result = fit(config, finetune[0][rows], labels_of, source=source)
            _, table = evaluate(result.checkpoint, *test, target="sex", split="test")
            table.to_parquet(args.out / f"{name}_{size}.parquet")
            tables[size, name] = table
        print(f"fine-tuned on {size} subjects ({time.time() - start:.0f} s)")

    print_table(tables, args.sizes, list(models))
    print(f"\ntotal {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
