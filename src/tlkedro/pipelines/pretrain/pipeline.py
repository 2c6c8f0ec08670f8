"""Source-task training (default: brain-age regression on the pretrain split).

Every entry of `pretrain.variants` and `pretrain.sweeps` becomes a namespaced copy of the training template
(`pretrain.<variant>`); see conf/base/parameters_pretrain.yml.
"""

from typing import Any

from kedro.pipeline import Pipeline

from tlkedro.pipelines.training import create_variants_pipeline


def create_pipeline(parameters: dict[str, Any]) -> Pipeline:
    """All pretrain variants, built from the project's parameters."""
    return create_variants_pipeline("pretrain", parameters["pretrain"], train_split="pretrain")
