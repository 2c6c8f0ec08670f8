"""Target-task training (default: sex classification on the finetune split, from the pretrain checkpoint).

Every entry of `finetune.variants` and `finetune.sweeps` becomes a namespaced copy of the training template
(`finetune.<variant>`); see conf/base/parameters_finetune.yml.
"""

from typing import Any

from kedro.pipeline import Pipeline

from tlkedro.pipelines.training import create_variants_pipeline


def create_pipeline(parameters: dict[str, Any]) -> Pipeline:
    """All finetune variants, built from the project's parameters."""
    return create_variants_pipeline("finetune", parameters["finetune"], train_split="finetune")
