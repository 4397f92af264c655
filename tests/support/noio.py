"""The modules a source file imports, for the tests that keep I/O out of the sans-IO code."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: str | Path) -> set[str]:
    """Every module name ``path`` imports (``import a.b`` gives ``a.b``; ``from a import b``
    gives ``a``), wherever the import stands in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def top_levels(path: str | Path) -> set[str]:
    """The top-level packages of :func:`imported_modules` (``a`` for ``a.b``)."""
    return {name.split(".")[0] for name in imported_modules(path)}


__all__ = ["imported_modules", "top_levels"]
