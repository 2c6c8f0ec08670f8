"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import warnings

from tlkedro.configuration import CONFIG_LOADER_ARGS  # noqa: F401 - Kedro reads it from here
from tlkedro.hooks import ParallelWorkerHook, PipelineParametersHook, ReportLocationHook

# Kedro 1.7 itself calls an OmegaConf API that OmegaConf deprecates: nothing a user of this project can act
# on, and it would fill the top of every command's output.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

HOOKS = (PipelineParametersHook(), ReportLocationHook(), ParallelWorkerHook())
