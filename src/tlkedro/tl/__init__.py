"""The transfer-learning library: architectures, strategies, objectives, training and analysis.

Kedro-agnostic (nothing here imports kedro), so it can be used from a notebook. Components are found by
name in registries: ``create_<kind>(name, **kwargs)`` builds one, ``list_<kind>s()`` lists the names.
"""

from tlkedro.tl.architectures import create_architecture, list_architectures

__all__ = ["create_architecture", "list_architectures"]
