"""conf/ does no I/O beyond reading files: no sockets, asyncio, ssl, time or logging."""

from __future__ import annotations

from pathlib import Path

import mailfront.conf
from support.noio import imported_modules

BANNED = {"asyncio", "socket", "ssl", "time", "logging", "selectors", "subprocess", "uvloop"}


def test_conf_imports() -> None:
    folder = Path(mailfront.conf.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in BANNED, f"{path.name} imports {name}"
            assert not name.startswith(("mailfront.server", "mailfront.cli")), (
                f"{path.name} imports {name}"
            )
