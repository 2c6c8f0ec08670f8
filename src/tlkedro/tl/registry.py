"""A name -> builder registry, one per kind of component (architectures, strategies, objectives).

Modelled on timm's ``@register_model`` / ``create_model`` and MONAI's ``look_up_option``: a component is
one module plus one decorated builder, a duplicate name is an error, and an unknown name raises an error
that lists the valid names and the closest match.

A registry that ``accept_class_paths`` also builds components that live outside the package, named by
class path, ``package.module:Name`` (``Name`` may be dotted, ``module:Outer.Inner``). The colon keeps a
class path from ever being read as a registered name. The registry imports the module and hands the
object to the kind's adapter, which wraps it in a builder that checks the built component against the
kind's contract (``ContractError`` names what is missing).

A builder may declare ``renamed_kwargs = {"old": "new"}``: the old keyword still works, for one release,
with a ``RenamedKeywordWarning`` naming the new one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from tlkedro.errors import ConfigurationError

T = TypeVar("T")

# (class path, imported object) -> builder that checks what it builds
ClassPathAdapter = Callable[[str, Any], Callable[..., Any]]


class UnknownComponentError(ConfigurationError, KeyError):
    """Raised for a name that is not registered, or a class path that does not import; its message lists
    the valid names or says why the import failed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ContractError(ConfigurationError, TypeError):
    """Raised when a component named by class path lacks what the rest of the code calls on it."""


class RenamedKeywordWarning(FutureWarning):
    """A keyword argument was given under its old name. A ``FutureWarning`` rather than a
    ``DeprecationWarning``, so that it is shown by default: the reader is the person writing the YAML."""


def is_class_path(name: str) -> bool:
    """Whether ``name`` is a class path (``package.module:Name``) rather than a registered name."""
    return ":" in name


def import_class_path(path: str, kind: str) -> Any:
    """The object that the class path ``package.module:Name`` names.

    Raises:
        UnknownComponentError: If the path is malformed, the module does not import, or it has no such
            attribute; the message says which and what the module does define.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise UnknownComponentError(
            f"{kind} {path!r} is not a class path; write it as 'package.module:Name'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            reason = (
                f"there is no module {error.name!r}; is its package installed or on PYTHONPATH?"
            )
        else:
            reason = f"the module needs {error.name!r}, which is not installed"
        raise UnknownComponentError(f"Cannot import {kind} {path!r}: {reason}") from error
    except Exception as error:  # a syntax or import error inside the user's module
        raise UnknownComponentError(
            f"Cannot import {kind} {path!r}: importing {module_name!r} failed with "
            f"{type(error).__name__}: {error}"
        ) from error
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(obj) if not n.startswith("_"))
            close = difflib.get_close_matches(part, public, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownComponentError(
                f"Cannot import {kind} {path!r}: {obj.__name__!r} has no attribute {part!r}.{hint}"
            )
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Maps names to builders of one kind of component.

    Args:
        kind: What the registry holds, used in error messages (e.g. ``"architecture"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._adapter: ClassPathAdapter | None = None
        self._from_class_paths: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a builder under ``name`` (default: the builder's ``__name__``)."""

        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            key = name or builder.__name__
            if is_class_path(key):
                raise ValueError(f"{self.kind} name {key!r} must not contain ':' (class paths do)")
            if key in self._builders:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._builders[key] = builder
            return builder

        return decorator

    def accept_class_paths(self, adapter: ClassPathAdapter) -> None:
        """Let ``get`` and ``create`` take class paths, turned into checked builders by ``adapter``.

        Args:
            adapter: ``adapter(path, obj)`` returns a builder for the imported ``obj`` that checks what
                it builds against the kind's contract, raising ``ContractError``; it may also raise
                ``ContractError`` straight away for an ``obj`` that cannot be a builder at all.
        """
        self._adapter = adapter

    def get(self, name: str) -> Callable[..., T]:
        """The builder registered as ``name``, or the checked builder of the class path ``name``."""
        if name in self._builders:
            return self._builders[name]
        if is_class_path(name):
            return self._class_path_builder(name)
        close = difflib.get_close_matches(name, self._builders, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        paths = " or a class path 'package.module:Name'" if self._adapter else ""
        raise UnknownComponentError(
            f"Unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(sorted(self._builders))}"
            f"{paths}"
        )

    def _class_path_builder(self, path: str) -> Callable[..., T]:
        if self._adapter is None:
            raise UnknownComponentError(
                f"{self.kind} {path!r}: {self.kind}s cannot be named by class path; valid names: "
                f"{', '.join(sorted(self._builders))}"
            )
        if path not in self._from_class_paths:
            self._from_class_paths[path] = self._adapter(path, import_class_path(path, self.kind))
        return self._from_class_paths[path]

    def canonical_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the keywords the builder of ``name`` renamed given their new names.

        Each old keyword warns once per call with a ``RenamedKeywordWarning`` naming the new one, so a
        caller that keeps the result (an experiment plan) warns once and then holds the new names.

        Raises:
            UnknownComponentError: If ``name`` is neither registered nor an importable class path.
            TypeError: If a keyword is given under both its old and its new name.
        """
        renamed: Mapping[str, str] = getattr(self.get(name), "renamed_kwargs", {})
        result = dict(kwargs)
        for old, new in renamed.items():
            if old not in result:
                continue
            if new in result:
                raise TypeError(
                    f"{self.kind.capitalize()} {name!r}: got both {old!r} and its new name {new!r}; "
                    f"keep only {new!r}"
                )
            warnings.warn(
                f"{self.kind} {name!r}: keyword {old!r} is renamed {new!r} ({self.kind}.kwargs.{new} "
                f"in the parameters); {old!r} still works in this release and will then be removed",
                RenamedKeywordWarning,
                stacklevel=3,
            )
            result[new] = result.pop(old)
        return result

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component registered as ``name`` (or named by class path) with ``kwargs``.

        Raises:
            UnknownComponentError: If ``name`` is not registered and not an importable class path; the
                message lists the valid names.
            TypeError: If ``kwargs`` do not fit the builder; the message lists the arguments it takes.
            ContractError: If a component named by class path lacks what the code calls on it.
        """
        builder = self.get(name)
        kwargs = self.canonical_kwargs(name, kwargs)
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
        """Registered names, sorted (class paths are not listed: any importable one works)."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders
