"""The TL library's shape: small modules, no import circle, no Kedro."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TL = Path(__file__).resolve().parents[2] / "src" / "tlkedro" / "tl"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(TL.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported (not those under ``if TYPE_CHECKING``)."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return imported


MODULES = {module_name(path): path for path in sorted(TL.rglob("*.py"))}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name: str) -> None:
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


def test_no_import_circle_and_no_kedro() -> None:
    graph = {
        name: {other for other in module_level_imports(path) if other in MODULES and other != name}
        for name, path in MODULES.items()
    }
    assert not any(
        imported.split(".")[0] == "kedro"
        for p in MODULES.values()
        for imported in module_level_imports(p)
    )

    def circle_from(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        for other in sorted(graph[name]):
            # A package imports its submodules; a submodule importing its own package's siblings is no circle.
            if name.startswith(f"{other}."):
                continue
            found = circle_from(other, [*path, name])
            if found:
                return found
        return None

    circles = [circle for name in graph if (circle := circle_from(name, []))]
    assert circles == []
