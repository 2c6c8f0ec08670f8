"""A name -> builder registry, one per kind of component (architectures, strategies, objectives).

Modelled on timm's ``@register_model`` / ``create_model`` and MONAI's ``look_up_option``: a component is
one module plus one decorated builder, a duplicate name is an error, and an unknown name raises an error
that lists the valid names and the closest match.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownComponentError(KeyError):
    """Raised for a name that is not registered; its message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to builders of one kind of component.

    Args:
        kind: What the registry holds, used in error messages (e.g. ``"architecture"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a builder under ``name`` (default: the builder's ``__name__``)."""

        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            key = name or builder.__name__
            if key in self._builders:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._builders[key] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The builder registered as ``name``."""
        try:
            return self._builders[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._builders, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownComponentError(
                f"Unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(sorted(self._builders))}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component registered as ``name`` with ``kwargs``.

        Raises:
            UnknownComponentError: If ``name`` is not registered; the message lists the valid names.
            TypeError: If ``kwargs`` do not fit the builder; the message lists the arguments it takes.
        """
        builder = self.get(name)
        signature = inspect.signature(builder)
        try:
            signature.bind(**kwargs)
        except TypeError as error:
            takes = ", ".join(signature.parameters) or "no arguments"
            raise TypeError(
                f"{self.kind.capitalize()} {name!r}: {error}. It takes: {takes}; got: {kwargs}"
            ) from None
        return builder(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders
