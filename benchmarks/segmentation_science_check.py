"""Science check of docs/segmentation.md: an age-pretrained encoder versus scratch, fine-tuned to segment.

The synthetic cohort (cohort seed 2024, current generator defaults, 4 mm) gives every subject its T1 and
its tissue label map (``generate_label_map``: background, csf, grey and white matter, ventricles); the
``--slices`` central axial slices of each are z-scored (images) and padded from 46x55 to 48x56. Subjects
are split into pretrain, finetune and test parts. resnet18 is pretrained on age (MSE) on the pretrain
subjects with the project's ``fit``; then a U-Net decoder is put on that encoder (strategy ``full``) and on
a random one (``scratch``) and both are trained with ``dice_ce`` on the first ``--sizes`` finetune subjects
(nested: each smaller set inside the larger), with ``fit_segmentation``. Prints, per size, each model's
test Dice (mean over subjects of the mean over the four tissues) and HD95 with 95% BCa intervals over the
test subjects, and the paired difference pretrained - scratch with its interval:

    PYTHONPATH=src OMP_NUM_THREADS=2 nice python benchmarks/segmentation_science_check.py

One training seed per model: the intervals are over test subjects, not over training runs.
"""

# ruff: noqa: T201  (a science check reports on stdout)

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import torch

from tlkedro.imaging.folds import nested_subsets
from tlkedro.imaging.labels import TISSUE_LABELS
from tlkedro.imaging.synthetic import (
    SyntheticCohortParams,
    draw_cohort,
    generate_label_map,
    generate_subject,
)
from tlkedro.imaging.transforms import zscore_brain
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.evaluation.scores import metric_interval
from tlkedro.tl.segmentation import (
    DICE_MEAN,
    HD95,
    SegmentConfig,
    fit_segmentation,
    mean_interval,
    paired_mean_difference,
    predict_masks,
    subject_metrics,
)
from tlkedro.tl.training import evaluate, fit

PAD = ((0, 0), (1, 1), (0, 1))  # 46 x 55 -> 48 x 56: every resnet18 stage halves it evenly


def cohort(n_subjects: int, seed: int, slices: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``slices`` central axial slices of every subject: images, label maps, labels (one row each)."""
    params = SyntheticCohortParams(seed=seed, n_subjects=n_subjects, voxel_size_mm=4.0)
    images, masks, rows = [], [], []
    for subject in draw_cohort(params):
        volume = np.asarray(generate_subject(subject, params).dataobj, dtype=np.float32)
        label_map = np.asarray(generate_label_map(subject, params).dataobj, dtype=np.uint8)
        middle = volume.shape[2] // 2
        chosen = range(middle - slices // 2, middle - slices // 2 + slices)
        images.append(np.pad(np.stack([zscore_brain(volume[:, :, k]) for k in chosen]), PAD))
        masks.append(np.pad(np.stack([label_map[:, :, k] for k in chosen]), PAD))
        rows += [
            {"subject_id": str(subject.eid), "age": subject.age, "sex": subject.sex, "slice": k}
            for k in chosen
        ]
    return (
        np.concatenate(images)[:, None].astype(np.float32),
        np.concatenate(masks)[:, None],
        pd.DataFrame(rows),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, nargs=3, default=(120, 40, 40), help="pretrain, finetune, test"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=(10, 40))
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs=2, default=(15, 30), help="pretrain, segment")
    parser.add_argument("--cohort-seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(2)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    start = time.time()
    images, masks, labels = cohort(sum(args.subjects), args.cohort_seed, args.slices)
    subjects = list(dict.fromkeys(labels["subject_id"]))
    n_pre, n_fine, _ = args.subjects
    parts = {
        "pretrain": subjects[:n_pre],
        "finetune": subjects[n_pre : n_pre + n_fine],
        "test": subjects[n_pre + n_fine :],
    }
    rows = {name: np.flatnonzero(labels["subject_id"].isin(s)) for name, s in parts.items()}
    elapsed = time.time() - start
    print(f"cohort: {len(subjects)} subjects x {args.slices} slices ({elapsed:.0f} s)", flush=True)
    trainer = {"batch_size": 32, "accelerator": "cpu", "enable_progress_bar": False}
    pretrain = TrainConfig.model_validate(
        {
            "seed": 0,
            "target": "age",
            "task": "regression",
            "architecture": {"name": "resnet18"},
            "objective": {"name": "mse"},
            "trainer": {**trainer, "max_epochs": args.epochs[0], "early_stopping_patience": 4},
            "data": {"val_fraction": 0.15},
        }
    )
    r = rows["pretrain"]
    source = fit(pretrain, images[r], labels.iloc[r].reset_index(drop=True)).checkpoint
    subsets = nested_subsets(parts["finetune"], list(args.sizes), seed=0)
    test = rows["test"]
    test_labels = labels.iloc[test].reset_index(drop=True)
    _, ages = evaluate(source, images[test], test_labels, "age", "test")
    mae = metric_interval(ages, "mae", "regression")
    spread = (ages["target"] - ages["target"].mean()).abs().mean()
    print(
        f"pretrained on age: test MAE {mae.estimate:.2f} [{mae.low:.2f}, {mae.high:.2f}] years over "
        f"{mae.n} subjects (predicting the mean age: {spread:.2f}) ({time.time() - start:.0f} s)",
        flush=True,
    )
    results = []
    for size in args.sizes:
        train = np.flatnonzero(labels["subject_id"].isin(subsets[size]))
        tables = {}
        for name, strategy, from_source in (
            ("scratch", "scratch", None),
            ("pretrained", "full", source),
        ):
            config = SegmentConfig.model_validate(
                {
                    "seed": 0,
                    "class_names": list(TISSUE_LABELS.values()),
                    "architecture": {"name": "resnet18"},
                    "strategy": {"name": strategy},
                    "optimizer": {"lr": 1e-3, "weight_decay": 1e-4},
                    "trainer": {
                        **trainer,
                        "max_epochs": args.epochs[1],
                        "early_stopping_patience": 6,
                    },
                }
            )
            fitted = fit_segmentation(
                config,
                images[train],
                masks[train],
                labels.iloc[train].reset_index(drop=True),
                from_source,
            )
            predicted = predict_masks(fitted.checkpoint, images[test])
            tables[name] = subject_metrics(predicted, masks[test], test_labels, config.class_names)
            dice = mean_interval(tables[name][DICE_MEAN], DICE_MEAN)
            hd95 = mean_interval(tables[name][HD95], HD95)
            results.append(
                {
                    "size": size,
                    "model": name,
                    "best_epoch": fitted.summary["best_epoch"],
                    "dice": f"{dice.estimate:.3f} [{dice.low:.3f}, {dice.high:.3f}]",
                    "hd95": f"{hd95.estimate:.2f} [{hd95.low:.2f}, {hd95.high:.2f}]",
                    "n_test": dice.n,
                }
            )
            print(results[-1], f"({time.time() - start:.0f} s)", flush=True)
        difference = paired_mean_difference(tables["pretrained"], tables["scratch"], DICE_MEAN)
        verdict = (
            ("pretrained better" if difference.estimate > 0 else "scratch better")
            if difference.excludes_zero
            else "not distinguishable"
        )
        print(
            f"size {size}: Dice pretrained - scratch {difference.estimate:+.3f} "
            f"[{difference.low:+.3f}, {difference.high:+.3f}] over {difference.n} test subjects: {verdict}"
        )
    print(pd.DataFrame(results).to_string(index=False))
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
