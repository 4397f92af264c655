"""What the tests of the sans-IO machines share: a server's settings, and feeding bytes.

``server_conf(Protocol.IMAP, imap_client_buffer=64)`` is a ``server{}`` with nginx's
defaults but for the given settings (no listen socket: the machines do not look at it).
``feed`` gives a machine the bytes whole or one byte at a time, as the property tests
and the "any split gives the same result" checks need.
"""

from __future__ import annotations

from typing import Any

from mailfront.conf.model import Protocol, ServerConf
from mailfront.protocol.base import Next


def server_conf(protocol: Protocol, **kw: Any) -> ServerConf:
    """A ``server{}`` of ``protocol`` with nginx's defaults and the settings ``kw``."""
    base: dict[str, Any] = {"file": "test.conf", "line": 1, "listen": (), "protocol": protocol}
    base.update(kw)
    return ServerConf(**base)


def feed(machine: Any, data: bytes, per_byte: bool, limit: int) -> Next:
    """``data`` to a client machine, whole or byte by byte; the first outcome not READ.

    Checks after each call that the machine holds no more than ``limit`` bytes
    (its client buffer).
    """
    chunks = [data[i : i + 1] for i in range(len(data))] if per_byte else [data]
    first = Next.READ
    for chunk in chunks:
        nxt = machine.receive(chunk)
        assert machine.buffered <= limit
        if first is Next.READ:
            first = nxt
    return first


__all__ = ["feed", "server_conf"]
