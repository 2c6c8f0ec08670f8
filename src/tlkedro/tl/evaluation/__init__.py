"""Evaluation that survives small samples: metrics with intervals, paired comparisons, baselines, flags.

Kedro-free. Every function takes **predictions tables**, the contract shared by the training pipelines
(``tlkedro.tl.training.evaluate``), the baselines and the reports:

- one row per subject (per repeat, for cross-validation), with
  - ``subject_id`` (str),
  - ``target``: the subject's class index (classification) or value in the target's units (regression,
    the mean over the subject's rows),
  - ``prediction``: the predicted class, or the predicted value,
  - classification only: ``probability`` (of class 1) with two classes, or ``probability_<k>`` for each
    class ``k`` with more;
- optional ``repeat`` and ``fold`` columns: the table then holds cross-validated out-of-fold predictions,
  each subject once per repeat, predicted by the model of the fold that held it out;
- other columns (``split``, ...) are carried along and ignored.

Where a table has several repeats, a subject's out-of-fold predictions are averaged over them before a
metric or an interval is computed on the pooled table (``pool_repeats``), so each subject counts once;
``fold_metrics`` and ``fold_differences`` work per fold instead.

Modules: ``predictions`` (the contract, pooling, pairing), ``scores`` (metrics, ``metric_interval``,
``paired_difference``), ``folds`` (per-fold metrics and summaries), ``baselines`` (trivial, linear and covariate baselines),
``flags`` (``quality_flags``), ``head_size`` (whether each model could use head size).
docs/evaluation.md says how to read the results.
"""

from tlkedro.tl.evaluation.baselines import (
    BASELINE_KINDS,
    DEFAULT_COVARIATE,
    MissingCovariateError,
    baseline_predictions,
    cross_validated_baselines,
    fit_predict,
    image_features,
    subject_targets,
)
from tlkedro.tl.evaluation.flags import TRIVIAL, quality_flags
from tlkedro.tl.evaluation.folds import (
    FoldSummary,
    fold_differences,
    fold_metrics,
    fold_summary,
    summarise_folds,
)
from tlkedro.tl.evaluation.head_size import head_size_markdown, head_size_status
from tlkedro.tl.evaluation.predictions import (
    check_predictions,
    paired_tables,
    pool_repeats,
    probability_columns,
    repeat_count,
    split_models,
)
from tlkedro.tl.evaluation.scores import (
    HIGHER_IS_BETTER,
    METRICS,
    Interval,
    PairedDifference,
    default_metric,
    metric_interval,
    metric_values,
    paired_difference,
)

__all__ = [
    "BASELINE_KINDS",
    "DEFAULT_COVARIATE",
    "HIGHER_IS_BETTER",
    "METRICS",
    "TRIVIAL",
    "FoldSummary",
    "Interval",
    "MissingCovariateError",
    "PairedDifference",
    "baseline_predictions",
    "check_predictions",
    "cross_validated_baselines",
    "default_metric",
    "fit_predict",
    "fold_differences",
    "fold_metrics",
    "fold_summary",
    "head_size_markdown",
    "head_size_status",
    "image_features",
    "metric_interval",
    "metric_values",
    "paired_difference",
    "paired_tables",
    "pool_repeats",
    "probability_columns",
    "quality_flags",
    "repeat_count",
    "split_models",
    "subject_targets",
    "summarise_folds",
]
