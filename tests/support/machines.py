"""What the tests of the sans-IO machines share: a server's settings, and feeding bytes.

``server_conf(Protocol.IMAP, imap_client_buffer=64)`` is a ``server{}`` with nginx's
defaults but for the given settings (no listen socket: the machines do not look at it).
``feed`` gives a machine the bytes whole or one byte at a time, as the property tests
and the "any split gives the same result" checks need; ``run_machine`` and
``check_machine`` do it for a new IMAP or POP3 client machine and say what came of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailfront.conf.model import AuthMethod, Protocol, ServerConf
from mailfront.protocol.base import Next


def server_conf(protocol: Protocol, **kw: Any) -> ServerConf:
    """A ``server{}`` of ``protocol`` with nginx's defaults and the settings ``kw``."""
    base: dict[str, Any] = {"file": "test.conf", "line": 1, "listen": (), "protocol": protocol}
    base.update(kw)
    return ServerConf(**base)


def feed(machine: Any, data: bytes | list[bytes], per_byte: bool, limit: int) -> Next:
    """``data`` to a client machine, whole or byte by byte (or in the chunks of a
    list, as given); the first outcome not READ.

    Checks after each call that the machine holds no more than ``limit`` bytes
    (its client buffer).
    """
    if isinstance(data, list):
        chunks = data
    else:
        chunks = [data[i : i + 1] for i in range(len(data))] if per_byte else [data]
    first = Next.READ
    for chunk in chunks:
        nxt = machine.receive(chunk)
        assert machine.buffered <= limit
        if first is Next.READ:
            first = nxt
    return first


@dataclass
class Outcome:
    """What an IMAP or POP3 client machine made of some input."""

    out: bytes
    logs: list[tuple[int, str]]
    next: Next
    auth: tuple[bytes, bytes, AuthMethod, bytes] | None
    login: bytes
    tag: bytes  # IMAP's current tag (b"" for POP3)
    action: str
    errors: int
    leftover: bytes  # what the machine held for the backend, after Next.AUTH


def run_machine(
    cls: Any,
    data: bytes | list[bytes],
    conf: ServerConf,
    limit: int,
    per_byte: bool,
    tls: bool,
    salt: bytes,
) -> tuple[Outcome, Any]:
    """A new ``cls`` machine (IMAP or POP3) past its greeting, fed ``data``; its outcome."""
    m = cls(conf, salt if cls.needs_salt(conf) else b"", tls)
    m.greeting()
    first = feed(m, data, per_byte, limit)
    auth = None
    if first is Next.AUTH:
        assert m.auth is not None
        auth = (m.auth.login, m.auth.passwd, m.auth.method, m.auth.salt)
    res = Outcome(
        b"".join(m.out),
        list(m.logs),
        first,
        auth,
        m.login,
        getattr(m, "tag", b""),
        m.action,
        m.errors,
        b"",
    )
    m.out.clear()
    m.logs.clear()
    if first is Next.AUTH:
        res.leftover = m.leftover()
    return res, m


def check_machine(
    cls: Any, data: bytes, conf: ServerConf, limit: int, tls: bool, salt: bytes
) -> Outcome:
    """Feed whole and byte by byte: the same bytes, logs and outcome."""
    whole, _ = run_machine(cls, data, conf, limit, False, tls, salt)
    single, _ = run_machine(cls, data, conf, limit, True, tls, salt)
    assert whole == single
    return whole


__all__ = ["Outcome", "check_machine", "feed", "run_machine", "server_conf"]
