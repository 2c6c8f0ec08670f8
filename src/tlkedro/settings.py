"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import warnings

from tlkedro.hooks import ParallelWorkerHook, PipelineParametersHook, ReportLocationHook

# Kedro 1.7 itself calls an OmegaConf API that OmegaConf deprecates: nothing a user of this project can act
# on, and it would fill the top of every command's output.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

HOOKS = (PipelineParametersHook(), ReportLocationHook(), ParallelWorkerHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"deploy": ["deploy*", "deploy*/**"]},
    # conf/<env>/ holds only the keys that differ from base: merge nested keys instead of replacing
    # whole top-level sections.
    "merge_strategy": {"parameters": "soft", "deploy": "soft"},
}
