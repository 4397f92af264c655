"""Raw-socket helpers for the end-to-end tests: open, read a line, read to the close.

Sockets opened with ``connect`` are remembered in ``OPEN`` and closed by
``close_all()``, which each test module calls from an autouse fixture.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

OPEN: list[socket.socket] = []


def connect(
    port: int, source: str | None = None, timeout: float = 10, rcvbuf: int = 0
) -> socket.socket:
    """A connection to 127.0.0.1:``port``, closed by :func:`close_all`; ``rcvbuf``, a
    receive buffer set before the connect (so that the window is small from the start)."""
    if rcvbuf:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
    else:
        s = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
    OPEN.append(s)
    return s


def reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, 0 s)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()


def read_line(s: socket.socket) -> bytes:
    """One line, CRLF included (less if the peer closes first)."""
    buf = b""
    while not buf.endswith(b"\r\n"):
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf


def read_n(s: socket.socket, n: int) -> bytes:
    return b"".join(read_line(s) for _ in range(n))


def read_all(s: socket.socket) -> bytes:
    """Everything until the peer closes (or the socket's timeout)."""
    out = b""
    while True:
        try:
            c = s.recv(65536)
        except TimeoutError:
            break
        if not c:
            break
        out += c
    return out


def wait_for(done: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``done`` until it is true or ``timeout`` seconds have passed (the caller
    then asserts what it waited for, so that a failure says what was missing)."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
