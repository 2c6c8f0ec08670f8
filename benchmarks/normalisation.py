"""Spatial normalisation on real IXI scans: its cost per scan, its quality, and whether it helps.

Normalises ``--n`` scans of a BIDS folder (``tlkedro.imaging.normalisation``, the
``preprocessing.spatial_normalisation`` options given here), each on one thread, in ``--workers``
processes, and prints:

- CPU and wall seconds per scan (goal: at most 10 s of CPU per 2 mm scan);
- the distribution of the correlation with the template inside its mask, how many scans needed the
  full-affine retry in stage 1, and how many fall below ``--min-similarity`` (would be quarantined);
- as a check that normalisation helps: 5-fold cross-validation (``--repeats`` seeds, stratified by sex)
  of a ridge regression of age (MAE against the training-mean predictor) and a logistic regression of
  sex (AUROC), on the 4 mm downsampled normalised brains, on the raw scans (RAS, 4 mm, centre crop), and
  on the affine's scale alone (head size). Each figure is the mean +- SD over folds and the metric of the
  pooled out-of-fold predictions with a 95% bootstrap interval over subjects.

Normalised scans and their QC sidecars are kept under ``--workdir`` (keyed by the configuration's and the
file's fingerprint), so a second run only repeats the evaluation; timing figures are those recorded when
each scan was computed.

Usage (the figures of docs/data.md, "Spatial normalisation")::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/normalisation.py \\
        --data ../shared/data/ixi_t1_2mm_bids_100 --n 100
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import os

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # before antspyx starts ITK
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegressionCV, RidgeCV  # noqa: E402
from sklearn.metrics import mean_absolute_error, roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from tlkedro.imaging.normalisation import (  # noqa: E402
    NormalisationRecipe,
    SpatialNormalisationConfig,
    normalisation_recipe,
    template_mask,
)
from tlkedro.imaging.transforms import read_nifti  # noqa: E402
from tlkedro.parallel import run_recipes  # noqa: E402

_SPACING = (2.0, 2.0, 2.0)
_RAW_SHAPE_4MM = (48, 56, 48)  # 192 x 224 x 192 mm: the whole IXI head at 4 mm


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/ixi_t1_2mm_bids_100", help="BIDS folder")
    parser.add_argument("--n", type=int, default=100, help="scans to use (sorted by subject)")
    parser.add_argument(
        "--method", default="affine", choices=["rigid", "affine"], help="registration"
    )
    parser.add_argument("--fast", action="store_true", help="the cheaper setting")
    parser.add_argument("--min-similarity", type=float, default=0.4, help="quarantine threshold")
    parser.add_argument("--repeats", type=int, default=3, help="cross-validation seeds")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes (one ANTs thread each); CPU s are per scan",
    )
    parser.add_argument(
        "--workdir", default="data/benchmarks/normalisation", help="normalised scans kept here"
    )
    return parser.parse_args()


@dataclass(frozen=True)
class _TimedJob:
    """Normalise one scan, write it and its sidecar (with CPU and wall seconds); picklable for a pool."""

    recipe: NormalisationRecipe
    target: Path

    def __call__(self) -> dict:
        cpu, wall = time.process_time(), time.perf_counter()
        image, sidecar = self.recipe()
        sidecar.update(
            fingerprint=self.recipe.fingerprint,
            cpu_s=time.process_time() - cpu,
            wall_s=time.perf_counter() - wall,
        )
        nib.save(image, self.target)
        _sidecar(self.target).write_text(json.dumps(sidecar, indent=1))
        return sidecar


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name.replace(".nii.gz", ".json"))


def _normalise_all(
    files: list[Path], config: SpatialNormalisationConfig, workdir: Path, workers: int
) -> list[dict]:
    sidecars: dict[Path, dict] = {}
    jobs = []
    for source in files:
        recipe = normalisation_recipe(source, config, _SPACING)
        target = workdir / source.name
        cached = json.loads(_sidecar(target).read_text()) if _sidecar(target).exists() else {}
        if target.exists() and cached.get("fingerprint") == recipe.fingerprint:
            sidecars[source] = cached
        else:
            jobs.append(_TimedJob(recipe, target))
    print(f"{len(sidecars)} normalised scans reused, {len(jobs)} to compute", flush=True)
    results = run_recipes(jobs, workers=workers, desc="normalising", min_items_for_pool=2)
    for job, sidecar in zip(jobs, results, strict=True):
        sidecars[job.recipe.source] = sidecar
        print(
            f"{job.recipe.source.name}: r={sidecar['similarity']:.3f} "
            f"scale={sidecar['head_scale']:.2f} cpu={sidecar['cpu_s']:.1f}s",
            flush=True,
        )
    return [sidecars[source] for source in files]


def _block_mean(volume: np.ndarray, factor: int = 2) -> np.ndarray:
    """Downsample by averaging ``factor``^3 blocks (2 mm -> 4 mm), trimming odd edges."""
    shape = [n // factor * factor for n in volume.shape]
    trimmed = volume[: shape[0], : shape[1], : shape[2]]
    return trimmed.reshape(
        shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor
    ).mean(axis=(1, 3, 5))


def _normalised_features(files: list[Path], workdir: Path) -> np.ndarray:
    mask = template_mask(_SPACING).get_fdata() > 0
    rows = []
    for source in files:
        data = np.asanyarray(nib.load(workdir / source.name).dataobj, dtype=np.float32)
        brain = data[mask & (data != 0)]
        data = np.where(mask, (data - brain.mean()) / brain.std(), 0)  # zscore_brain
        rows.append(_block_mean(data).ravel())
    return np.stack(rows)


def _raw_features(files: list[Path]) -> np.ndarray:
    from monai.transforms import ResizeWithPadOrCrop

    crop = ResizeWithPadOrCrop(_RAW_SHAPE_4MM)
    rows = []
    for source in files:
        image = nib.as_closest_canonical(read_nifti(source))
        data = np.asanyarray(image.dataobj, dtype=np.float32)
        data = (data - data[data > 0].mean()) / data[data > 0].std()
        rows.append(np.asarray(crop(_block_mean(data)[None]))[0].ravel())
    return np.stack(rows)


def _bootstrap(metric, y: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    result = stats.bootstrap(
        (y, prediction),
        metric,
        paired=True,
        vectorized=False,
        n_resamples=2000,
        random_state=np.random.default_rng(0),
        method="percentile",
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _cross_validate(
    features: np.ndarray, age: np.ndarray, sex: np.ndarray, repeats: int
) -> dict[str, str]:
    """Ridge age MAE, mean-predictor MAE and logistic sex AUROC over 5 folds x ``repeats`` seeds."""
    fold_mae, fold_mean_mae, fold_auc = [], [], []
    pooled_age, pooled_mean, pooled_sex = [], [], []
    for seed in range(repeats):
        age_oof, mean_oof, sex_oof = np.zeros(len(age)), np.zeros(len(age)), np.zeros(len(age))
        folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(features, sex)
        for train, test in folds:
            # The penalty is chosen inside each training fold (efficient leave-one-out), relative to the
            # number of features since every feature is standardised.
            alphas = features.shape[1] * np.logspace(-3, 2, 11)
            ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas))
            ridge.fit(features[train], age[train])
            age_oof[test] = ridge.predict(features[test])
            mean_oof[test] = age[train].mean()
            # L2 logistic regression is invariant to a rotation of the features, so it runs on all
            # the training rows' principal components (exact, and fast); C chosen by inner 5-fold CV.
            logistic = make_pipeline(
                StandardScaler(),
                PCA(),
                LogisticRegressionCV(
                    Cs=np.logspace(-6, 2, 9),
                    l1_ratios=(0.0,),  # L2 only (scikit-learn 1.10's default, stated to silence it)
                    cv=5,
                    scoring="roc_auc",
                    max_iter=5000,
                    use_legacy_attributes=False,
                ),
            )
            logistic.fit(features[train], sex[train])
            sex_oof[test] = logistic.predict_proba(features[test])[:, 1]
            fold_mae.append(mean_absolute_error(age[test], age_oof[test]))
            fold_mean_mae.append(mean_absolute_error(age[test], mean_oof[test]))
            fold_auc.append(roc_auc_score(sex[test], sex_oof[test]))
        pooled_age.append(age_oof)
        pooled_mean.append(mean_oof)
        pooled_sex.append(sex_oof)
    age_pred, mean_pred, sex_prob = (
        np.mean(p, axis=0) for p in (pooled_age, pooled_mean, pooled_sex)
    )
    mae_ci = _bootstrap(lambda y, p: mean_absolute_error(y, p), age, age_pred)
    mean_ci = _bootstrap(lambda y, p: mean_absolute_error(y, p), age, mean_pred)
    auc_ci = _bootstrap(
        lambda y, p: roc_auc_score(y, p) if len(set(y)) > 1 else np.nan, sex, sex_prob
    )
    return {
        "age MAE (y)": f"{np.mean(fold_mae):.1f} +- {np.std(fold_mae):.1f} | pooled "
        f"{mean_absolute_error(age, age_pred):.1f} [{mae_ci[0]:.1f}, {mae_ci[1]:.1f}]",
        "mean predictor MAE (y)": f"{np.mean(fold_mean_mae):.1f} +- {np.std(fold_mean_mae):.1f} | "
        f"pooled {mean_absolute_error(age, mean_pred):.1f} [{mean_ci[0]:.1f}, {mean_ci[1]:.1f}]",
        "sex AUROC": f"{np.mean(fold_auc):.2f} +- {np.std(fold_auc):.2f} | pooled "
        f"{roc_auc_score(sex, sex_prob):.2f} [{auc_ci[0]:.2f}, {auc_ci[1]:.2f}]",
    }


def main() -> None:
    args = _parse()
    data = Path(args.data)
    participants = pd.read_csv(data / "participants.tsv", sep="\t").set_index("participant_id")
    files = sorted(data.glob("sub-*/anat/*_T1w.nii.gz"))[: args.n]
    workdir = Path(args.workdir) / f"{args.method}{'-fast' if args.fast else ''}"
    workdir.mkdir(parents=True, exist_ok=True)
    config = SpatialNormalisationConfig(
        method=args.method, fast=args.fast, min_similarity=args.min_similarity
    )
    sidecars = _normalise_all(files, config, workdir, args.workers)
    qc = pd.DataFrame(sidecars)
    cpu, wall, similarity = qc["cpu_s"], qc["wall_s"], qc["similarity"]
    print(
        f"\n{len(files)} scans from {data}, method {args.method}, fast={args.fast}, one thread per scan, {args.workers} process(es)"
    )
    print(
        f"CPU s/scan: mean {cpu.mean():.1f}, median {cpu.median():.1f}, max {cpu.max():.1f}; "
        f"wall s/scan: mean {wall.mean():.1f}"
    )
    print(
        "similarity (correlation in the template mask): "
        f"min {similarity.min():.3f}, 5% {similarity.quantile(0.05):.3f}, "
        f"median {similarity.median():.3f}, max {similarity.max():.3f}"
    )
    print(
        f"stage-1 retries (full affine): {int(qc['retried'].sum())}; below "
        f"min_similarity {args.min_similarity}: {int((similarity < args.min_similarity).sum())}"
    )
    print(
        f"head_scale: mean {qc['head_scale'].mean():.2f}, range "
        f"[{qc['head_scale'].min():.2f}, {qc['head_scale'].max():.2f}]"
    )

    subjects = [f.name.split("_")[0] for f in files]
    age = participants.loc[subjects, "age"].to_numpy(dtype=float)
    sex = (participants.loc[subjects, "sex"] == "M").to_numpy(dtype=int)
    print(f"\nCross-validation on {len(files)} subjects: 5 folds x {args.repeats} seeds")
    feature_sets = {
        "normalised brain, 4 mm": _normalised_features(files, workdir),
        "raw head, RAS 4 mm": _raw_features(files),
        "head_scale alone": qc[["head_scale"]].to_numpy(dtype=float),
    }
    for name, features in feature_sets.items():
        print(f"- {name} ({features.shape[1]} features)")
        for metric, value in _cross_validate(features, age, sex, args.repeats).items():
            print(f"    {metric}: {value}")


if __name__ == "__main__":
    main()
