"""The configuration error, worded as nginx words it."""

from __future__ import annotations

COMMAND_LINE = "command line"


class ConfError(Exception):
    """A configuration error: nginx's message and where it was found.

    ``str()`` is what nginx prints after ``[emerg]``: the message, then
    `` in FILE:LINE`` (or `` in command line`` for ``-g``, or nothing for
    errors nginx reports without a place, such as ``no "events" section in
    configuration``).

    ``late`` marks the errors nginx finds after it has printed "the
    configuration file ... syntax is ok" (the checks of its core modules).
    ``warnings`` holds the warnings emitted before the error, with their place.
    ``level`` is the level nginx logs it at (``emerg``, or ``crit`` for a read error).
    """

    def __init__(
        self,
        msg: str,
        file: str | None = None,
        line: int = 0,
        *,
        late: bool = False,
        warnings: tuple[str, ...] = (),
        level: str = "emerg",
    ) -> None:
        self.msg = msg
        self.level = level
        self.file = file
        self.line = line
        self.late = late
        self.warnings = warnings
        super().__init__(self.text())

    def text(self) -> str:
        return self.msg + where(self.file, self.line)

    def __str__(self) -> str:
        return self.text()


def where(file: str | None, line: int) -> str:
    """nginx's suffix for a message: `` in F:L``, `` in command line`` or nothing."""
    if file is None:
        return ""
    if file == COMMAND_LINE:
        return " in command line"
    return f" in {file}:{line}"
