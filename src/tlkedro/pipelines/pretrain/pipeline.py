"""Source-task training (default: brain-age regression on the pretrain split).

Every entry of `pretrain.variants` and `pretrain.sweeps` becomes a namespaced copy of the training template
(`pretrain.<variant>`); see conf/base/parameters_pretrain.yml.
"""

from kedro.pipeline import Pipeline

from tlkedro.pipelines.training import create_variants_pipeline
from tlkedro.plan import ExperimentPlan


def create_pipeline(plan: ExperimentPlan) -> Pipeline:
    """All pretrain variants of the experiment plan."""
    return create_variants_pipeline(plan, "pretrain")
