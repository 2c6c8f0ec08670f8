"""The reports' tables, markdown and figures over training variants (Kedro-agnostic: data in, data out)."""

from tlkedro.tl.reports.classes import (
    class_markdown,
    class_names,
    confusion_matrices,
    confusion_table,
    per_class_table,
)
from tlkedro.tl.reports.figures import (
    plot_confusion_matrices,
    plot_learning_curves,
    plot_metric_by_training_size,
    plot_metric_by_variant,
    plot_predicted_vs_true,
    plot_roc_curves,
)
from tlkedro.tl.reports.sites import site_markdown, site_table
from tlkedro.tl.reports.tables import (
    BASELINE_PREFIX,
    COMPLEXITY_COLUMNS,
    LEADING_COLUMNS,
    comparison_table,
    evaluation_markdown,
    evaluation_table,
    group_comparison,
    group_summary,
    higher_is_better,
    markdown_report,
    markdown_table,
    rank_cutoffs,
    resolve_reference,
)

__all__ = [
    "BASELINE_PREFIX",
    "COMPLEXITY_COLUMNS",
    "LEADING_COLUMNS",
    "class_markdown",
    "class_names",
    "comparison_table",
    "confusion_matrices",
    "confusion_table",
    "evaluation_markdown",
    "evaluation_table",
    "group_comparison",
    "group_summary",
    "higher_is_better",
    "markdown_report",
    "markdown_table",
    "per_class_table",
    "plot_confusion_matrices",
    "plot_learning_curves",
    "plot_metric_by_training_size",
    "plot_metric_by_variant",
    "plot_predicted_vs_true",
    "plot_roc_curves",
    "rank_cutoffs",
    "resolve_reference",
    "site_markdown",
    "site_table",
]
