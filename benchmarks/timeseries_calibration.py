"""How detectable are the synthetic series' age and sex effects? The connectome baselines, cross-validated.

Draws the synthetic cohort with ``data_type: timeseries`` (the ``synthetic.timeseries`` defaults unless
changed here), turns every series into its model-input row exactly as preprocessing does
(``series_input``: z-scored per ROI, cropped to ``--length``), then fits the project's baselines out of
fold (``cross_validated_baselines``: ``trivial`` and ``linear``, which for series is a ridge / logistic
model on each series' ROI correlation matrix) and prints age MAE and sex AUROC with their BCa bootstrap
intervals over subjects. It says how hard the tasks are for a model that reads the known coupling; it
does not train a network.

Usage (the figures of docs/timeseries.md)::

    KEDRO_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/timeseries_calibration.py --subjects 400
"""

# ruff: noqa: T201  (a calibration script reports on stdout)
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from tlkedro.imaging.folds import assign_folds
from tlkedro.imaging.synthetic import SyntheticCohortParams, cohort_recipes, draw_cohort
from tlkedro.imaging.timeseries import series_input
from tlkedro.tl.evaluation import cross_validated_baselines, metric_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=400)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--sex-log-coupling", type=float, default=None, help="synthetic.timeseries.sex_log_coupling"
    )
    parser.add_argument(
        "--age-log-coupling",
        type=float,
        default=None,
        help="synthetic.timeseries.age_log_coupling_per_decade",
    )
    args = parser.parse_args()

    changed = {
        "sex_log_coupling": args.sex_log_coupling,
        "age_log_coupling_per_decade": args.age_log_coupling,
    }
    params = SyntheticCohortParams(
        seed=args.seed,
        n_subjects=args.subjects,
        data_type="timeseries",
        timeseries={k: v for k, v in changed.items() if v is not None},
    )
    subjects = draw_cohort(params)
    recipes = cohort_recipes(subjects, params)
    series = np.stack(
        [series_input(recipe().to_numpy(), args.length) for recipe in recipes.values()]
    )
    labels = pd.DataFrame(
        {
            "subject_id": [f"sub-{s.eid}" for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
        }
    )
    folds = assign_folds(labels, k=args.folds, seed=0)
    print(
        f"{len(subjects)} subjects, series {series.shape[1]} ROIs x {args.length} time points, "
        f"{args.folds}-fold cross-validation; 95% BCa intervals over subjects"
    )
    for target, task, metric in (("age", "regression", "mae"), ("sex", "classification", "auroc")):
        tables = cross_validated_baselines(
            series, labels, folds, task, target, kinds=("trivial", "linear")
        )
        for kind, table in tables.items():
            interval = metric_interval(table, metric, task)
            print(
                f"{target} {kind:8s} {metric} {interval.estimate:.3f} "
                f"({interval.low:.3f} to {interval.high:.3f}), {interval.n} subjects"
            )


if __name__ == "__main__":
    main()
