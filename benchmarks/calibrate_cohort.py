"""Calibration of the synthetic cohort: how hard are its tasks for the demo's own models?

Generates a synthetic cohort with the project's parameters (``synthetic``, ``preprocessing``,
``pretrain`` and ``finetune`` of ``conf/base``, or of ``--env``), runs it through the library exactly as
the pipelines do (``ingest``, ``split_subjects``, ``build_model_input``: by default the central axial
slice at 64 x 64) and prints:

- the shortcut check (``tlkedro.imaging.shortcuts``): a cross-validated linear model on label-free global
  features of the scans (brain voxel count, intensity statistics, file order) against chance, for age
  and sex, over every in-site subject;
- age regression trained from scratch on ``--pretrain`` subjects with the ``pretrain`` configuration;
- sex classification trained from scratch on ``--finetune`` subjects (the ``finetune.scratch`` variant)
  and, with ``--transfer``, fine-tuned from that age model (the base ``finetune`` configuration);
- each model on the in-site ``test`` split and on the held-out site (``preprocessing.splits.external_site``),
  and the drop between them.

The split sizes are counts: the cohort is drawn just large enough to hold them in-site, and every subject
of the external site drawn with them forms the external split. Generated scans and model-input arrays are
kept under ``--workdir``, keyed by a digest of the parameters that decide them, so a second run with the
same cohort skips straight to training.

Usage (the figures of docs/calibration.md; the issue's full size is ``--pretrain 10000 --test 1000``)::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/calibrate_cohort.py \\
        --pretrain 2000 --finetune 500 --test 400 --age-epochs 10 --sex-epochs 10 --transfer
"""

# ruff: noqa: T201  (a calibration script reports on stdout)
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.framework.project import configure_project
from sklearn.decomposition import PCA

from tlkedro.datasets import NiftiCollectionDataset, NumpyArrayDataset
from tlkedro.imaging.extraction import build_model_input
from tlkedro.imaging.ingest import IngestionConfig, ingest
from tlkedro.imaging.shortcuts import ShortcutReport, scan_features, shortcut_check
from tlkedro.imaging.splits import SPLITS, select_split, split_subjects
from tlkedro.imaging.synthetic import (
    UKB_IMAGE,
    SyntheticCohortParams,
    cohort_metadata,
    cohort_recipes,
    draw_cohort,
)
from tlkedro.pipeline_registry import load_parameters
from tlkedro.pipelines.preprocessing.nodes import PreprocessingParams
from tlkedro.pipelines.training.nodes import VariantConfig
from tlkedro.tl.training import evaluate, fit
from tlkedro.variants import base_config, deep_merge, expand_variants

_DONE = ".complete"
_SLICE_COMPONENTS = 50


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cohort_size(params: SyntheticCohortParams, in_site: int, external_site: str | None) -> int:
    """The smallest cohort whose first subjects include ``in_site`` subjects outside ``external_site``.

    Subjects are drawn from their own seeds, so the first ``n`` subjects of any larger cohort are the
    subjects of a cohort of ``n``; the labels are drawn without rendering any image.
    """
    drawn = 0
    while True:
        drawn = max(2 * drawn, in_site + 100)
        sites = [str(s.site) for s in draw_cohort(params.model_copy(update={"n_subjects": drawn}))]
        counts = np.cumsum([site != external_site for site in sites])
        if counts[-1] >= in_site:
            return int(np.searchsorted(counts, in_site) + 1)


def build_cohort(params: SyntheticCohortParams, root: Path, workers: int | None) -> pd.DataFrame:
    """Write the cohort's scans under ``root`` (unless a complete earlier run did) and ingest them.

    Returns:
        The manifest (one row per scan: ``path``, ``subject_id``, ``age``, ``sex``, ``site``, ...).
    """
    subjects = draw_cohort(params)
    images = NiftiCollectionDataset(str(root / "ukb"), UKB_IMAGE.format(eid="*"), workers=workers)
    if not (root / _DONE).exists():
        start = time.perf_counter()
        images.save(cohort_recipes(subjects, params))
        (root / _DONE).touch()
        print(f"generated {len(subjects)} subjects in {time.perf_counter() - start:.0f} s")
    paths = {key: ref.path for key, ref in images.load().items()}
    manifest, quarantine = ingest(
        paths, cohort_metadata(subjects, "ukb"), IngestionConfig(layout="ukb", workers=workers)
    )
    if not quarantine.empty:
        raise RuntimeError(f"ingestion rejected synthetic scans:\n{quarantine.head()}")
    return manifest


def model_input(
    manifest: pd.DataFrame, splits: pd.DataFrame, params: PreprocessingParams, root: Path
) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """Each split's images (memory-mapped) and labels, built as the preprocessing pipeline does."""
    arrays = {}
    for split in SPLITS:
        images = NumpyArrayDataset(filepath=str(root / split / "images.npy"))
        labels_path = root / split / "labels.parquet"
        if not labels_path.exists():
            scans = select_split(manifest, splits, split)
            stack, labels = build_model_input(scans, params, workers=params.workers, desc=split)
            images.save(stack)
            labels.to_parquet(labels_path)
        arrays[split] = (images.load(), pd.read_parquet(labels_path))
    return arrays


def print_shortcuts(name: str, report: ShortcutReport) -> None:
    feature, best = report.best_feature
    print(
        f"{name:<4} {report.metric:<9} chance {report.chance:6.3f}   all features {report.score:6.3f}   "
        f"best single feature {best:6.3f} ({feature})   n={report.n_subjects}"
    )


def print_slice_baseline(arrays: dict[str, tuple[np.ndarray, pd.DataFrame]]) -> None:
    """The same linear models on the networks' own input: how much a linear reading of it gives.

    The in-site model-input rows of each subject are flattened into one vector and reduced to their
    first principal components (fitted on all subjects: unsupervised, so no label reaches the folds).
    """
    parts = [arrays[split] for split in ("pretrain", "finetune", "test")]
    labels = pd.concat([part[1] for part in parts], ignore_index=True)
    rows = np.concatenate([np.asarray(part[0], dtype=np.float32) for part in parts])
    subjects = labels["subject_id"].nunique()
    vectors = rows.reshape(subjects, -1)  # one scan per subject, rows in subject order
    first = labels.groupby("subject_id", sort=False)[["age", "sex"]].first()
    components = pd.DataFrame(
        PCA(_SLICE_COMPONENTS, random_state=0).fit_transform(vectors)
    ).add_prefix("pc")
    print(f"\nLinear model on the model input ({_SLICE_COMPONENTS} principal components, 5-fold)")
    for name, task in (("age", "regression"), ("sex", "classification")):
        report = shortcut_check(components, first[name], task)
        print(
            f"{name:<4} {report.metric:<9} chance {report.chance:6.3f}   model input {report.score:6.3f}"
        )


def train_and_evaluate(
    name: str,
    config: VariantConfig,
    arrays: dict[str, tuple[np.ndarray, pd.DataFrame]],
    train_split: str,
    source: dict | None = None,
) -> tuple[dict, dict[str, dict[str, float]]]:
    """Fit ``config`` on ``train_split`` and evaluate it on the test and external splits."""
    images, labels = arrays[train_split]
    print(f"\n{name}: training on {labels['subject_id'].nunique()} subjects ...", flush=True)
    result = fit(config, images, labels, source=source)
    summary = result.summary
    print(
        f"  {summary['epochs_run']} epochs (best {summary['best_epoch']}), {summary['fit_seconds']:.0f} s, "
        f"{summary['train_images_per_second']:.0f} images/s"
    )
    metrics = {}
    for split in ("test", "external"):
        split_images, split_labels = arrays[split]
        if len(split_labels):
            metrics[split], _ = evaluate(
                result.checkpoint, split_images, split_labels, config.target, split
            )
    return result.checkpoint, metrics


def print_metrics(name: str, metrics: dict[str, dict[str, float]], keys: tuple[str, ...]) -> None:
    for key in keys:
        test = metrics["test"][f"test/{key}"]
        line = f"  {name:<28} {key:<9} test {test:7.3f}"
        if "external" in metrics:
            external = metrics["external"][f"external/{key}"]
            line += f"   external {external:7.3f}   external - test {external - test:+7.3f}"
        print(line)


def training_overrides(epochs: int) -> dict[str, Any]:
    return {"trainer": {"max_epochs": epochs, "enable_progress_bar": False}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pretrain", type=int, default=2000, help="age-training subjects (in-site; 0: sex only)"
    )
    parser.add_argument("--finetune", type=int, default=500, help="sex-training subjects (in-site)")
    parser.add_argument("--test", type=int, default=400, help="in-site test subjects")
    parser.add_argument("--age-epochs", type=int, default=10)
    parser.add_argument("--sex-epochs", type=int, default=10)
    parser.add_argument(
        "--transfer", action="store_true", help="also fine-tune sex from the age model"
    )
    parser.add_argument(
        "--train",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the networks (--no-train: the cohort and the linear baselines only)",
    )
    parser.add_argument("--env", default=None, help="Kedro environment whose parameters to use")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: one per core)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlkedro_calibration"))
    parser.add_argument(
        "--synthetic",
        default="{}",
        help='JSON overrides of the synthetic parameters, e.g. \'{"sex": {"shape_mm": 1}}\'',
    )
    args = parser.parse_args()
    if args.transfer and not args.pretrain:
        parser.error("--transfer fine-tunes from the age model, which --pretrain 0 does not train")
    if args.env:
        os.environ["KEDRO_ENV"] = args.env
    # The project's settings merge an environment's parameters into base key by key, as `kedro run` does.
    configure_project("tlkedro")
    parameters = load_parameters()
    preprocessing = PreprocessingParams.model_validate(
        deep_merge(
            parameters["preprocessing"],
            {
                "workers": args.workers,
                "splits": {"pretrain": args.pretrain, "finetune": args.finetune, "test": args.test},
            },
        )
    )
    external_site = preprocessing.splits.external_site
    synthetic = SyntheticCohortParams.model_validate(
        deep_merge(parameters["synthetic"], json.loads(args.synthetic))
    )
    in_site = args.pretrain + args.finetune + args.test
    synthetic = synthetic.model_copy(
        update={"n_subjects": cohort_size(synthetic, in_site, external_site)}
    )
    cohort_root = args.workdir / f"cohort-{_digest(synthetic.model_dump(mode='json'))}"
    input_root = cohort_root / f"model_input-{_digest(preprocessing.model_dump(mode='json'))}"
    print(
        f"cohort: {synthetic.n_subjects} subjects at {synthetic.voxel_size_mm} mm in {cohort_root}"
    )

    manifest = build_cohort(synthetic, cohort_root, args.workers)
    splits = split_subjects(manifest, preprocessing.splits, preprocessing.seed)
    arrays = model_input(manifest, splits, preprocessing, input_root)
    sizes = splits["split"].value_counts()
    print("subjects per split: " + ", ".join(f"{s} {sizes.get(s, 0)}" for s in (*SPLITS, "unused")))

    print("\nShortcut check: 5-fold linear model on global features of every in-site scan")
    in_site_scans = manifest[manifest["site"] != external_site].sort_values("scan_id")
    features = scan_features(in_site_scans["path"].tolist(), workers=args.workers)
    print_shortcuts("age", shortcut_check(features, in_site_scans["age"], "regression"))
    print_shortcuts("sex", shortcut_check(features, in_site_scans["sex"], "classification"))
    print_slice_baseline(arrays)
    if not args.train:
        return

    finetune = parameters["finetune"]
    sex_scratch = VariantConfig.model_validate(
        deep_merge(
            deep_merge(base_config(finetune), expand_variants(finetune, "finetune")["scratch"]),
            training_overrides(args.sex_epochs),
        )
    )
    start = time.perf_counter()
    results = []
    if args.pretrain:
        age_config = VariantConfig.model_validate(
            deep_merge(base_config(parameters["pretrain"]), training_overrides(args.age_epochs))
        )
        age_model, age_metrics = train_and_evaluate(
            "age from scratch", age_config, arrays, "pretrain"
        )
        results.append(("age from scratch", age_metrics, ("mae", "r2")))
    _, sex_metrics = train_and_evaluate("sex from scratch", sex_scratch, arrays, "finetune")
    results.append(("sex from scratch", sex_metrics, ("accuracy", "auroc")))
    if args.transfer:
        sex_full = VariantConfig.model_validate(
            deep_merge(base_config(finetune), training_overrides(args.sex_epochs))
        )
        _, transfer_metrics = train_and_evaluate(
            "sex fine-tuned from age", sex_full, arrays, "finetune", source=age_model
        )
        results.append(("sex fine-tuned from age", transfer_metrics, ("accuracy", "auroc")))

    print(f"\nResults (training {time.perf_counter() - start:.0f} s)")
    test = arrays["test"][1].groupby("subject_id")[["age", "sex"]].first()
    train_labels = arrays["pretrain" if args.pretrain else "finetune"][1]
    print(
        f"  chance on the test split: MAE {np.abs(test['age'] - train_labels['age'].mean()).mean():.3f} "
        f"(the training mean age), accuracy {test['sex'].value_counts(normalize=True).max():.3f} "
        "(the majority sex)"
    )
    for name, metrics, keys in results:
        print_metrics(name, metrics, keys)


if __name__ == "__main__":
    main()
