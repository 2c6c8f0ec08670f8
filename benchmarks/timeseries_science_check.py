"""Science check of docs/timeseries.md: a 1D network pretrained on age, fine-tuned on sex, against scratch.

The synthetic series cohort (``synthetic.data_type: timeseries``, the ``synthetic.timeseries`` defaults:
8 ROIs, age couples ROIs 0-1 and 2-3, sex couples ROIs 4-5), each series turned into its model-input row
as preprocessing does (``series_input``: z-scored per ROI, the first ``--length`` time points), split in
order into pretrain, finetune and test subjects. ``resnet10_1d`` is pretrained on age (MSE) on the
pretrain subjects; then it (strategy ``full``) and a randomly initialised copy (``scratch``) are
fine-tuned on sex on the first ``--sizes`` finetune subjects (nested, classes balanced), with the same
optimiser, learning rate and epochs, through the project's ``fit`` and ``evaluate``. Beside them, the
connectome baseline (``baseline_predictions("linear")``: logistic regression on each series' ROI
correlations) is fitted on the same target subjects. Prints, per target size, each model's test AUROC
with its BCa 95% interval over the test subjects and its paired difference to scratch (the same test
subjects resampled for both), and the number of test subjects:

    PYTHONPATH=src python benchmarks/timeseries_science_check.py --out /tmp/timeseries_check

Writes the test predictions of every model into ``--out`` (``--tables-only`` reprints from them).
"""

# ruff: noqa: T201  (a science check reports on stdout)

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tlkedro.imaging.folds import nested_subsets
from tlkedro.imaging.synthetic import SyntheticCohortParams, cohort_recipes, draw_cohort
from tlkedro.imaging.timeseries import series_input
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.evaluation import baseline_predictions, metric_interval, paired_difference
from tlkedro.tl.training import evaluate, fit

METRIC = "auroc"
MODELS = ("scratch", "full", "connectome")


def _cohort(n_subjects: int, seed: int, length: int) -> tuple[np.ndarray, pd.DataFrame]:
    params = SyntheticCohortParams(seed=seed, n_subjects=n_subjects, data_type="timeseries")
    subjects = draw_cohort(params)
    recipes = cohort_recipes(subjects, params)
    series = np.stack([series_input(recipe().to_numpy(), length) for recipe in recipes.values()])
    labels = pd.DataFrame(
        {
            "subject_id": [f"sub-{s.eid}" for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
        }
    )
    return series, labels


def _config(max_epochs: int, lr: float, **overrides) -> TrainConfig:
    trainer = {
        "max_epochs": max_epochs,
        "batch_size": 32,
        "early_stopping_patience": 10,
        "enable_progress_bar": False,
    }
    base = {
        "architecture": {"name": "resnet10_1d"},
        "trainer": trainer,
        "optimizer": {"lr": lr},
        "seed": 0,
    }
    return TrainConfig.model_validate(base | overrides)


def print_table(tables: dict[tuple[int, str], pd.DataFrame], sizes) -> None:
    """Each model's test AUROC with its interval, and its paired difference to scratch, per size."""
    print(
        f"\n| target subjects | model | test {METRIC} (95% BCa) | paired difference to scratch | n test |"
    )
    print("|---|---|---|---|---|")
    for size in sizes:
        for name in MODELS:
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
    parser.add_argument(
        "--subjects", type=int, nargs=3, default=(4000, 2000, 200), help="pretrain, finetune, test"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=(40, 200, 2000), help="target subjects"
    )
    parser.add_argument("--epochs", type=int, nargs=2, default=(40, 30), help="pretrain, finetune")
    parser.add_argument("--lr", type=float, default=1e-3, help="of every model, pretrained or not")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=2024, help="of the cohort")
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
            for name in MODELS
        }
        print_table(tables, args.sizes)
        return
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    series, labels = _cohort(sum(args.subjects), args.seed, args.length)
    n_pre, n_fine, _ = args.subjects
    pretrain = series[:n_pre], labels.iloc[:n_pre].reset_index(drop=True)
    finetune = series[n_pre : n_pre + n_fine], labels.iloc[n_pre : n_pre + n_fine]
    test = series[n_pre + n_fine :], labels.iloc[n_pre + n_fine :].reset_index(drop=True)
    print(
        f"cohort: {len(labels)} subjects, {series.shape[1]} ROIs x {series.shape[2]} time points "
        f"({time.time() - start:.0f} s)"
    )

    source_config = _config(
        args.epochs[0],
        args.lr,
        target="age",
        task="regression",
        objective={"name": "mse"},
        data={"val_fraction": 0.15},
    )
    source = fit(source_config, *pretrain)
    age, _ = evaluate(source.checkpoint, *test, target="age", split="test")
    print(
        f"source (age): best val/loss {source.summary['best_val_loss']:.3f} at epoch "
        f"{source.summary['best_epoch']}; test MAE {age['test/mae']:.2f} years "
        f"({time.time() - start:.0f} s)"
    )

    subjects = finetune[1].set_index("subject_id")["sex"]
    subsets = nested_subsets(sorted(subjects.index), args.sizes, seed=0, strata=subjects)
    tables: dict[tuple[int, str], pd.DataFrame] = {}
    for size in args.sizes:
        rows = finetune[1]["subject_id"].isin(subsets[size]).to_numpy()
        target_series, target_labels = finetune[0][rows], finetune[1][rows].reset_index(drop=True)
        for name, checkpoint in (("scratch", None), ("full", source.checkpoint)):
            config = _config(
                args.epochs[1],
                args.lr,
                target="sex",
                task="classification",
                objective={"name": "cross_entropy"},
                strategy={"name": "scratch" if checkpoint is None else "full"},
                data={"val_fraction": 0.2},
            )
            result = fit(config, target_series, target_labels, source=checkpoint)
            print(
                f"  {name} on {size}: best val/loss {result.summary['best_val_loss']:.3f} at epoch "
                f"{result.summary['best_epoch']} of {result.summary['epochs_run']}"
            )
            _, tables[size, name] = evaluate(result.checkpoint, *test, target="sex", split="test")
        tables[size, "connectome"] = baseline_predictions(
            "linear", target_series, target_labels, *test, task="classification", target="sex"
        )
        for name in MODELS:
            tables[size, name].to_parquet(args.out / f"{name}_{size}.parquet")
        print(f"fine-tuned on {size} subjects ({time.time() - start:.0f} s)")

    print_table(tables, args.sizes)
    print(f"\ntotal {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
