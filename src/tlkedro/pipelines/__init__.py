"""Kedro pipelines: thin nodes over the tlkedro library, one package per pipeline."""

import functools
from collections.abc import Callable
from typing import Any


def bind(func: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """``functools.partial`` that keeps ``func``'s name, so Kedro's logs and kedro-viz show it."""
    return functools.update_wrapper(functools.partial(func, **kwargs), func)
