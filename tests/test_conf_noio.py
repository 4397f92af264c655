"""conf/ does no I/O beyond reading files: no sockets, asyncio, ssl, time or logging."""

from __future__ import annotations

import ast
from pathlib import Path

import mailfront.conf

BANNED = {"asyncio", "socket", "ssl", "time", "logging", "selectors", "subprocess", "uvloop"}


def test_conf_imports() -> None:
    folder = Path(mailfront.conf.__file__).parent
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in BANNED, f"{path.name} imports {name}"
                assert not name.startswith(("mailfront.server", "mailfront.cli")), (
                    f"{path.name} imports {name}"
                )
