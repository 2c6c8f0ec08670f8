"""Project hooks."""

from __future__ import annotations

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl


class PipelineParametersHook:
    """Hands the run's configuration to the pipeline registry.

    The training pipelines are built from the parameters (one namespace per variant), so the registry
    must see the same configuration as the run: the ``--env`` environment and the ``--params``
    overrides. Kedro creates the context before it first asks for the pipelines.
    """

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        # Imported here: the registry imports torch, which settings.py (read by every kedro command,
        # `kedro --help` included) should not pay for.
        from tlkedro.pipeline_registry import use_config_loader

        use_config_loader(context.config_loader)
