"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from tlkedro.hooks import ParallelWorkerHook, PipelineParametersHook, ReportLocationHook

HOOKS = (PipelineParametersHook(), ReportLocationHook(), ParallelWorkerHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"deploy": ["deploy*", "deploy*/**"]},
    # conf/<env>/ holds only the keys that differ from base: merge nested keys instead of replacing
    # whole top-level sections.
    "merge_strategy": {"parameters": "soft", "deploy": "soft"},
}
