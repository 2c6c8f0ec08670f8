"""How the project's configuration is loaded: read by settings.py and by the pipeline registry outside a
Kedro session (a notebook, a test), so both merge environments the same way."""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"deploy": ["deploy*", "deploy*/**"]},
    # conf/<env>/ holds only the keys that differ from base: merge nested keys instead of replacing
    # whole top-level sections.
    "merge_strategy": {"parameters": "soft", "deploy": "soft"},
}
