"""The base class of the errors a user fixes in the parameters, the catalog or the data (not bugs).

Kedro-agnostic, so the library (``tlkedro.tl``, ``tlkedro.imaging``) and the plan raise them. Every such
error's message names the key, file or dataset at fault and what would be accepted; the project's
``kedro run`` (``tlkedro.cli``) therefore prints that message alone, without the traceback, unless it is
run with ``--verbose``.
"""

from __future__ import annotations


class ConfigurationError(Exception):
    """A problem in the configuration or the input data: its message says which key or file, and the fix."""


class MissingFileError(ConfigurationError, FileNotFoundError):
    """A file or folder that the configuration names does not exist."""
