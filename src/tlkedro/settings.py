"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import warnings

from tlkedro.configuration import CONFIG_LOADER_ARGS  # noqa: F401 - Kedro reads it from here
from tlkedro.deploy.tracking import TrackingHook
from tlkedro.hooks import (
    AtomicOutputsHook,
    FreshnessHook,
    ParallelWorkerHook,
    PipelineParametersHook,
    ReportLocationHook,
)

# Kedro 1.7 itself calls an OmegaConf API that OmegaConf deprecates: nothing a user of this project can act
# on, and it would fill the top of every command's output.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

HOOKS = (
    PipelineParametersHook(),
    ReportLocationHook(),
    ParallelWorkerHook(),
    AtomicOutputsHook(),  # removes the temporary files an interrupted save of the run's outputs left
    TrackingHook(),  # MLflow tracking, only with TLKEDRO_TRACKING=1 (docs/deployment.md)
    # Completion records; --only-missing-outputs re-makes stale results (docs/freshness.md). Last: pluggy
    # calls the last registered first, so it can stop a run before the other hooks start anything.
    FreshnessHook(),
)
# kedro-mlflow, if installed, would switch its own hook on and log every run into ./mlruns; the project's
# TrackingHook nests one run per variant instead.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow",)
