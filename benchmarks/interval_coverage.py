"""Coverage of the bootstrap intervals of ``tlkedro.tl.evaluation.metric_interval`` on simulated data.

Draws many datasets from a population whose metric is known, computes the interval on each, and prints
how often it covers the true value (the nominal rate is the confidence level) and its mean width:

- regression: targets ~ N(50, 15), errors ~ N(0, 5), so the population MAE is 5 * sqrt(2 / pi);
- binary classification: balanced classes, scores N(0, 1) against N(shift, 1), so the population AUROC
  is Phi(shift / sqrt(2)).

Usage (the figures of docs/evaluation.md)::

    PYTHONPATH=src .venv/bin/python benchmarks/interval_coverage.py --datasets 1000 --subjects 30 60 120
"""

# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
from scipy.stats import norm

from tlkedro.tl.evaluation import metric_interval


def _regression(n: int, rng: np.random.Generator) -> pd.DataFrame:
    target = rng.normal(50, 15, n)
    prediction = target + rng.normal(0, 5, n)
    return pd.DataFrame(
        {"subject_id": np.arange(n).astype(str), "target": target, "prediction": prediction}
    )


def _classification(n: int, shift: float, rng: np.random.Generator) -> pd.DataFrame:
    target = np.arange(n) % 2
    probability = norm.cdf(rng.normal(shift * target, 1.0) - shift / 2)
    return pd.DataFrame(
        {
            "subject_id": np.arange(n).astype(str),
            "target": target,
            "prediction": (probability >= 0.5).astype(int),
            "probability": probability,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=1000, help="simulated datasets per setting")
    parser.add_argument(
        "--subjects", type=int, nargs="+", default=[30, 60, 120], help="subjects per dataset"
    )
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples per interval"
    )
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--shift", type=float, default=1.0, help="class separation of the scores")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = {
        "mae": ("regression", 5 * math.sqrt(2 / math.pi), _regression),
        "auroc": (
            "classification",
            norm.cdf(args.shift / math.sqrt(2)),
            lambda n, rng: _classification(n, args.shift, rng),
        ),
    }
    print(
        f"{args.datasets} datasets per row, {args.resamples} resamples, {args.confidence:.0%} intervals"
    )
    print("metric  true   subjects  method      coverage  mean width  seconds")
    for metric, (task, truth, simulate) in settings.items():
        for n in args.subjects:
            for method in ("BCa", "percentile"):
                rng = np.random.default_rng(args.seed)
                start = time.perf_counter()
                covered, widths = [], []
                for index in range(args.datasets):
                    interval = metric_interval(
                        simulate(n, rng),
                        metric,
                        task,
                        args.confidence,
                        args.resamples,
                        index,
                        method,
                    )
                    covered.append(interval.low <= truth <= interval.high)
                    widths.append(interval.high - interval.low)
                seconds = time.perf_counter() - start
                print(
                    f"{metric:6}  {truth:.3f}  {n:8d}  {method:10}  {np.mean(covered):8.3f}  "
                    f"{np.mean(widths):10.3f}  {seconds:7.1f}"
                )


if __name__ == "__main__":
    main()
