"""nginx's configuration tokenizer (``ngx_conf_read_token``), incremental.

Bytes go in with :meth:`Lexer.feed`, statements come out: the arguments of a
directive and what ended it (``;``, ``{``), a closing ``}``, the end of the
input, or an error worded as nginx words it.  Any split of the input gives the
same statements.  The rules are nginx's, quirks included:

* a word ends at a space, tab, CR, LF, ``;`` or ``{``; ``}`` inside a word is
  part of it; ``#`` starts a comment only where a word could start;
* ``"..."`` and ``'...'`` quote, and a quoted word must be followed by a space,
  ``;``, ``{`` or ``)`` (which then starts a new word);
* ``\\"``, ``\\'``, ``\\\\`` lose their backslash, ``\\t``, ``\\r``, ``\\n``
  become TAB, CR, LF, any other backslash stays;
* ``${`` does not end a word (``${a}b`` and ``x${a}`` are one word each);
* nginx reads a file through a 4096-byte buffer and fails with "too long
  parameter" when a word (or the text since the last word started) fills it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

BUFFER_SIZE = 4096  # NGX_CONF_BUFFER

_SPACE = frozenset(b" \t\r\n")


class End(enum.Enum):
    SEMICOLON = ";"  # NGX_OK
    BLOCK_START = "{"  # NGX_CONF_BLOCK_START
    BLOCK_DONE = "}"  # NGX_CONF_BLOCK_DONE
    EOF = "eof"  # NGX_CONF_FILE_DONE
    ERROR = "error"  # NGX_ERROR (message in ``error``)


@dataclass(frozen=True, slots=True)
class Stmt:
    """One result of ``ngx_conf_read_token``."""

    args: tuple[str, ...]
    end: End
    line: int  # the line nginx reports for this statement (where it ended)
    error: str = ""  # for End.ERROR: nginx's message, without " in F:L"


def decode(raw: bytes) -> str:
    """Configuration bytes as text; bytes that are not UTF-8 survive a round trip."""
    return raw.decode("utf-8", "surrogateescape")


def unescape(raw: bytes) -> bytes:
    r"""The copy loop of ``ngx_conf_read_token``: ``\"``, ``\'``, ``\\``, ``\t``, ``\r``, ``\n``."""
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == 0x5C and i + 1 < n:
            nxt = raw[i + 1]
            if nxt in b"\"'\\":
                out.append(nxt)
                i += 2
                continue
            if nxt == 0x74:  # t
                out.append(0x09)
                i += 2
                continue
            if nxt == 0x72:  # r
                out.append(0x0D)
                i += 2
                continue
            if nxt == 0x6E:  # n
                out.append(0x0A)
                i += 2
                continue
        out.append(ch)
        i += 1
    return bytes(out)


class Lexer:
    """Incremental tokenizer; ``param=True`` is the ``-g`` mode (no file)."""

    def __init__(self, *, param: bool = False, buffer_size: int = BUFFER_SIZE) -> None:
        self.param = param
        self.buffer_size = buffer_size
        self.line = 0 if param else 1
        self.dead = False
        self._pos = 0  # absolute offset of the next byte
        self._start = 0  # absolute offset of nginx's ``start``
        self._buf = bytearray()  # bytes from ``_start`` to ``_pos``
        self._reset()

    def _reset(self) -> None:
        self._args: list[str] = []
        self._found = False
        self._need_space = False
        self._last_space = True
        self._sharp_comment = False
        self._variable = False
        self._quoted = False
        self._s_quoted = False
        self._d_quoted = False
        self._start = self._pos
        self._start_line = self.line
        self._buf.clear()

    def _move_start(self, new_start: int) -> None:
        del self._buf[: new_start - self._start]
        self._start = new_start

    def _error(self, msg: str, line: int | None = None) -> Stmt:
        self.dead = True
        return Stmt(tuple(self._args), End.ERROR, self.line if line is None else line, msg)

    def feed(self, data: bytes) -> list[Stmt]:
        """Consume ``data``; return the statements it completes (an error ends them)."""
        out: list[Stmt] = []
        if self.dead:
            return out
        for ch in data:
            stmt = self._byte(ch)
            if stmt is not None:
                out.append(stmt)
                if stmt.end is End.ERROR:
                    break
        return out

    def finish(self) -> list[Stmt]:
        """End of input: the ``eof`` statement, or nginx's end-of-file error."""
        if self.dead:
            return []
        self.dead = True
        if self._args or not self._last_space:
            if self.param:
                return [self._error('unexpected end of parameter, expecting ";"')]
            return [self._error('unexpected end of file, expecting ";" or "}"')]
        return [Stmt((), End.EOF, self.line)]

    def _byte(self, ch: int) -> Stmt | None:
        if not self.param and self._pos - self._start == self.buffer_size:
            # nginx needs more data than its buffer holds for this word
            self.line = self._start_line
            if self._d_quoted or self._s_quoted:
                quote = '"' if self._d_quoted else "'"
                return self._error(
                    f'too long parameter, probably missing terminating "{quote}" character'
                )
            head = decode(bytes(self._buf[:10]))
            return self._error(f'too long parameter "{head}..." started')
        pos = self._pos
        self._pos += 1
        self._buf.append(ch)

        if ch == 0x0A:
            self.line += 1
            self._sharp_comment = False
        if self._sharp_comment:
            return None
        if self._quoted:
            self._quoted = False
            return None

        if self._need_space:
            if ch in _SPACE:
                self._last_space = True
                self._need_space = False
                return None
            if ch == 0x3B:  # ;
                return self._done(End.SEMICOLON)
            if ch == 0x7B:  # {
                return self._done(End.BLOCK_START)
            if ch == 0x29:  # ) after a quoted word: it starts a new word
                self._last_space = True
                self._need_space = False
            else:
                return self._error(f'unexpected "{decode(bytes((ch,)))}"')

        if self._last_space:
            if ch in _SPACE:
                return None
            self._move_start(pos)
            self._start_line = self.line
            if ch in (0x3B, 0x7B):  # ; {
                if not self._args:
                    return self._error(f'unexpected "{chr(ch)}"')
                return self._done(End.BLOCK_START if ch == 0x7B else End.SEMICOLON)
            if ch == 0x7D:  # }
                if self._args:
                    return self._error('unexpected "}"')
                return self._done(End.BLOCK_DONE)
            if ch == 0x23:  # #
                self._sharp_comment = True
                return None
            if ch == 0x5C:  # backslash
                self._quoted = True
                self._last_space = False
                return None
            if ch == 0x22:  # "
                self._move_start(pos + 1)
                self._d_quoted = True
                self._last_space = False
                return None
            if ch == 0x27:  # '
                self._move_start(pos + 1)
                self._s_quoted = True
                self._last_space = False
                return None
            if ch == 0x24:  # $
                self._variable = True
            self._last_space = False
            return None

        if ch == 0x7B and self._variable:
            return None
        self._variable = False
        if ch == 0x5C:
            self._quoted = True
            return None
        if ch == 0x24:  # $
            self._variable = True
            return None
        if self._d_quoted:
            if ch == 0x22:
                self._d_quoted = False
                self._need_space = True
                self._found = True
        elif self._s_quoted:
            if ch == 0x27:
                self._s_quoted = False
                self._need_space = True
                self._found = True
        elif ch in _SPACE or ch in (0x3B, 0x7B):
            self._last_space = True
            self._found = True

        if self._found:
            word = unescape(bytes(self._buf[: pos - self._start]))
            self._args.append(decode(word))
            if ch == 0x3B:
                return self._done(End.SEMICOLON)
            if ch == 0x7B:
                return self._done(End.BLOCK_START)
            self._found = False
        return None

    def _done(self, end: End) -> Stmt:
        stmt = Stmt(tuple(self._args), end, self.line)
        self._reset()
        return stmt


def tokenize(data: bytes, *, param: bool = False) -> list[Stmt]:
    """All statements of ``data`` (ending with an EOF or an error statement)."""
    lexer = Lexer(param=param)
    out = lexer.feed(data)
    if out and out[-1].end is End.ERROR:
        return out
    return out + lexer.finish()
