"""Science check: does the SVCCA cutoff rule pick the cutoff that TruncatedTL's stage-1 search picks?

On a synthetic cohort (4 mm, central axial slice, 48x56): resnet18 pretrained from scratch on age, then
fine-tuned on sex with TruncatedTL at every stage-1 cutoff (``truncation_candidates``; ``layer4`` is
full fine-tuning) for each seed, with the project's ``fit`` and ``evaluate``. For each seed it prints the
SVCCA similarity per stage of the fully fine-tuned model to the source (on the test images), the
cutoff each SVCCA rule suggests, the similarity of the source to a randomly initialised resnet18 (what
unrelated networks score with these samples and dimensions), the cutoff stage 1 of the search selects (best validation AUPRC) and the
test AUROC of every cutoff. Stage 2 of the search (blocks around the best stage) is not run.

    PYTHONPATH=src python benchmarks/svcca_cutoff_check.py --out /tmp/svcca_check

Prints markdown tables; writes ``svcca.csv`` and ``cutoffs.csv`` into ``--out``.
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

from tlkedro.imaging.synthetic import SyntheticCohortParams, draw_cohort, generate_subject
from tlkedro.imaging.transforms import zscore_brain
from tlkedro.tl.analysis.svcca import suggest_cutoff, svcca_by_stage
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.strategies.truncated import truncation_candidates
from tlkedro.tl.training import evaluate, fit


def _cohort(n_subjects: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    params = SyntheticCohortParams(seed=seed, n_subjects=n_subjects, voxel_size_mm=4.0)
    subjects = draw_cohort(params)
    slices = []
    for subject in subjects:
        volume = np.asarray(generate_subject(subject, params).dataobj, dtype=np.float32)
        central = zscore_brain(volume[:, :, volume.shape[2] // 2])  # 46 x 55
        slices.append(np.pad(central, ((1, 1), (0, 1))))  # 48 x 56: every stage halves it evenly
    labels = pd.DataFrame(
        {
            "subject_id": [str(s.eid) for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
        }
    )
    return np.stack(slices)[:, None], labels


def _markdown(table: pd.DataFrame) -> str:
    """A markdown table of ``table`` with its index as the first column (tabulate is not installed)."""
    table = table.reset_index()
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _config(max_epochs: int, **overrides) -> TrainConfig:
    trainer = {
        "max_epochs": max_epochs,
        "batch_size": 32,
        "accelerator": "cpu",
        "enable_progress_bar": False,
    }
    return TrainConfig.model_validate(
        {"architecture": {"name": "resnet18", "kwargs": {}}, "trainer": trainer} | overrides
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--subjects",
        type=int,
        nargs=3,
        default=(400, 200, 300),
        help="pretrain, finetune and test subjects",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=(1, 2, 3))
    parser.add_argument("--cohort-seed", type=int, default=2024)
    parser.add_argument("--epochs", type=int, nargs=2, default=(8, 5), help="pretrain, finetune")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    images, labels = _cohort(sum(args.subjects), args.cohort_seed)
    n_pre, n_fine, _ = args.subjects
    parts = {
        "pretrain": slice(0, n_pre),
        "finetune": slice(n_pre, n_pre + n_fine),
        "test": slice(n_pre + n_fine, None),
    }
    split = {name: (images[s], labels.iloc[s].reset_index(drop=True)) for name, s in parts.items()}
    print(f"cohort: {len(labels)} subjects in {time.time() - start:.0f} s")

    source = fit(
        _config(
            args.epochs[0],
            target="age",
            task="regression",
            objective={"name": "mse"},
            seed=0,
            data={"val_fraction": 0.15},
        ),
        *split["pretrain"],
    ).checkpoint
    metrics, _ = evaluate(source, *split["test"], target="age", split="test")
    print(f"source: test MAE {metrics['test/mae']:.2f} years ({time.time() - start:.0f} s)")

    cutoffs = truncation_candidates("resnet18")[3:]  # conv1, bn1, act1 are parts of the stem
    rows, tables = [], []
    for seed in args.seeds:
        for cutoff in cutoffs:
            strategy = (
                {"name": "full"}
                if cutoff == "layer4"
                else {"name": "truncated", "kwargs": {"cutoff": cutoff}}
            )
            result = fit(
                _config(
                    args.epochs[1],
                    target="sex",
                    task="classification",
                    objective={"name": "cross_entropy"},
                    strategy=strategy,
                    seed=seed,
                    optimizer={"lr": 3e-4},
                ),
                *split["finetune"],
                source=source,
            )
            history = result.history
            best = history.loc[history["val/loss"].idxmin()]
            test, _ = evaluate(result.checkpoint, *split["test"], target="sex", split="test")
            rows.append(
                {
                    "seed": seed,
                    "cutoff": cutoff,
                    "val_auprc": best["val/auprc"],
                    "test_auroc": test["test/auroc"],
                }
            )
            if cutoff == "layer4":
                table = svcca_by_stage(
                    build_model(source),
                    build_model(result.checkpoint),
                    split["test"][0],
                    max_samples=4096,
                    seed=seed,
                )
                tables.append(table.assign(seed=seed))
            print(
                f"seed {seed} {cutoff}: val AUPRC {best['val/auprc']:.3f}, "
                f"test AUROC {test['test/auroc']:.3f} ({time.time() - start:.0f} s)"
            )
    runs = pd.DataFrame(rows)
    svcca = pd.concat(tables)
    runs.to_csv(args.out / "cutoffs.csv", index=False)
    svcca.to_csv(args.out / "svcca.csv", index=False)

    print("\n## SVCCA similarity of the fully fine-tuned model to the source, per seed\n")
    similarity = svcca.pivot(index="stage", columns="seed", values="similarity")
    torch.manual_seed(0)
    unrelated = svcca_by_stage(
        build_model(source), create_architecture("resnet18"), split["test"][0], max_samples=4096
    )
    similarity["random init"] = unrelated.set_index("stage")["similarity"]
    similarity["samples"] = unrelated.set_index("stage")["samples"]
    print(_markdown(similarity.loc[list(dict.fromkeys(svcca["stage"]))].round(3)))
    print("\n## Cutoffs per seed\n")
    picks = []
    for seed, table in svcca.groupby("seed"):
        seed_runs = runs[runs["seed"] == seed]
        picks.append(
            {
                "seed": seed,
                "svcca largest_drop": suggest_cutoff(table),
                "svcca threshold 0.9": suggest_cutoff(table, "threshold", threshold=0.9),
                "stage-1 search (val AUPRC)": seed_runs.loc[
                    seed_runs["val_auprc"].idxmax(), "cutoff"
                ],
                "best test AUROC": seed_runs.loc[seed_runs["test_auroc"].idxmax(), "cutoff"],
            }
        )
    print(_markdown(pd.DataFrame(picks).set_index("seed")))
    print("\n## Test AUROC per cutoff (mean ± sd over seeds)\n")
    summary = runs.groupby("cutoff", sort=False)[["val_auprc", "test_auroc"]].agg(["mean", "std"])
    summary.columns = [f"{metric} {stat}" for metric, stat in summary.columns]
    print(_markdown(summary.round(3)))
    print(f"\n{len(split['test'][1])} test subjects; total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
