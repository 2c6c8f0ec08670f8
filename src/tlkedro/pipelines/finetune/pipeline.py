"""Target-task training (default: sex classification on the finetune split, from the pretrain checkpoint).

Every entry of `finetune.variants` and `finetune.sweeps` becomes a namespaced copy of the training template
(`finetune.<variant>`); see conf/base/parameters_finetune.yml.
"""

from kedro.pipeline import Pipeline

from tlkedro.pipelines.training import create_variants_pipeline
from tlkedro.plan import ExperimentPlan


def create_pipeline(plan: ExperimentPlan) -> Pipeline:
    """All finetune variants of the experiment plan."""
    return create_variants_pipeline(plan, "finetune")
