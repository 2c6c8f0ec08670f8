"""Plain-sentence warnings about results that should not be trusted or celebrated."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd

from tlkedro.tl.evaluation.predictions import pool_repeats
from tlkedro.tl.evaluation.scores import (
    default_metric,
    metric_interval,
    metric_values,
    paired_difference,
)

logger = logging.getLogger(__name__)

TRIVIAL = "baseline.trivial"
CHANCE_AUROC = 0.5


def quality_flags(
    tables: Mapping[str, pd.DataFrame],
    task: str,
    target: str,
    metric: str | None = None,
    trivial: str | None = TRIVIAL,
    min_subjects: int = 30,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> list[str]:
    """Sentences on what is wrong with each model's predictions; each is also logged as a warning.

    A flag is raised when a model
    - does not beat the trivial baseline: the paired interval of their difference in ``metric`` does not
      exclude 0 in the model's favour (a missing trivial baseline is a flag too). For AUROC the model's
      own interval must exclude 0.5, the AUROC of any constant predictor: pooled over folds, the
      trivial baseline's fold-wise class priors rank the subjects against their classes (a held-out
      fold with more of class 1 leaves a lower prior), which pulls its pooled AUROC below 0.5 and would
      make it too easy to beat;
    - (regression) has an MAE above the standard deviation of the target among its subjects;
    - (classification) predicts one class for every subject;
    - rests on fewer than ``min_subjects`` subjects (said once when every model has the same count).

    Args:
        tables: Predictions tables by model name (variants and baselines).
        task: ``regression`` or ``classification``.
        target: The target's name, for the sentences.
        metric: The metric compared with the trivial baseline; ``None``: ``mae`` or ``auroc``.
        trivial: Name of the trivial baseline in ``tables``; ``None`` to skip that comparison.
        min_subjects: Fewer subjects than this are flagged as very few.
        confidence: Confidence level of the paired interval.
        n_resamples: Its bootstrap resamples.
        seed: Its seed.
        method: ``BCa`` or ``percentile``.
    """
    metric = metric or default_metric(task)
    flags = []
    pooled = {name: pool_repeats(table, task, name) for name, table in tables.items()}
    against_chance = metric == "auroc"
    if trivial is not None and trivial not in tables and not against_chance:
        flags.append(
            f"No trivial baseline ({trivial}) was given: nothing shows whether the models beat "
            "predicting the training mean or majority class."
        )
    for name, table in tables.items():
        if name == trivial:
            continue
        if against_chance:
            interval = metric_interval(table, metric, task, confidence, n_resamples, seed, method)
            if not interval.low > CHANCE_AUROC:
                flags.append(
                    f"{name} does not beat the trivial baseline: its AUROC {interval.estimate:.3g} "
                    f"({confidence:.0%} interval {interval.low:.3g} to {interval.high:.3g}, {interval.n} "
                    f"subjects) does not exceed {CHANCE_AUROC}, the AUROC of a constant prediction."
                )
        elif trivial in tables:
            difference = paired_difference(
                table,
                tables[trivial],
                metric,
                task,
                confidence,
                n_resamples,
                seed,
                method,
                (name, trivial),
            )
            if difference.a_is_better is not True:
                flags.append(
                    f"{name} does not beat the trivial baseline {trivial}: {difference.figures()}."
                )
        rows = pooled[name]
        if task == "regression":
            sd = float(rows["target"].std(ddof=1))
            mae = metric_values(rows, task)["mae"]
            if len(rows) > 1 and mae > sd:
                flags.append(
                    f"{name} has an MAE of {mae:.3g}, above the standard deviation of {target} "
                    f"({sd:.3g}) among its {len(rows)} subjects."
                )
        else:
            classes = rows["prediction"].unique()
            if len(classes) == 1:
                flags.append(
                    f"{name} predicts class {classes[0]} of {target} for all {len(rows)} subjects."
                )
    counts = {name: len(rows) for name, rows in pooled.items()}
    few = {name: n for name, n in counts.items() if n < min_subjects}
    if few and len(set(counts.values())) == 1:
        flags.append(
            f"Every metric rests on {next(iter(counts.values()))} subjects (fewer than {min_subjects}): "
            "its interval is wide, and a difference between models is unlikely to be detectable."
        )
    else:
        flags += [
            f"{name}'s metrics rest on {n} subjects (fewer than {min_subjects}): its interval is wide."
            for name, n in few.items()
        ]
    for flag in flags:
        logger.warning(flag)
    return flags
