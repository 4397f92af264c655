"""Listening sockets, and the runtime state of each ``server{}``.

A ``Listener`` owns one bound socket for the life of the process; a reload
swaps the ``ServerRuntime`` it hands to new sessions, while sessions already
running keep the runtime they started with.  As in nginx, a wildcard socket
on a port also serves the specific addresses on that port that have no
``bind`` parameter; the session picks its server by the local address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from typing import Any

from mailfront.auth.base import AuthBackend
from mailfront.conf.model import Config, Listen, Protocol, ServerConf
from mailfront.server.log import Log
from mailfront.server.session import Session


class ServerRuntime:
    """What a session needs from its ``server{}``: conf, log, auth backend, machines."""

    __slots__ = (
        "addr_text",
        "auth",
        "by_addr",
        "client_buffer",
        "conf",
        "listen_proxy_protocol",
        "listen_ssl",
        "log",
        "loop",
        "machine_cls",
        "make_upstream",
        "needs_salt",
        "protocol_name",
        "resolver",
        "sessions",
        "ssl_ctx",
    )

    def __init__(
        self,
        conf: ServerConf,
        addr_text: str,
        log: Log,
        auth: AuthBackend,
        loop: asyncio.AbstractEventLoop,
        sessions: set[Session],
    ) -> None:
        self.conf = conf
        self.addr_text = addr_text
        self.log = log
        self.auth = auth
        self.loop = loop
        self.sessions = sessions
        self.protocol_name = conf.protocol.value
        self.by_addr: dict[str, ServerRuntime] | None = None
        self.listen_ssl = False  # the listen socket of this runtime has "ssl"
        self.listen_proxy_protocol = False  # ... and "proxy_protocol"
        self.ssl_ctx: Any = None  # tls_openssl.OpenSSLContext for "listen ... ssl" and STARTTLS
        # SMTP with "resolver": resolver.resolve_client_host, run before the greeting
        self.resolver: Any = None
        if conf.protocol is Protocol.SMTP and conf.resolver is not None:
            from mailfront.server.resolver import resolve_client_host

            self.resolver = resolve_client_host
        self.machine_cls, self.make_upstream = protocol_classes(conf.protocol)
        self.needs_salt = bool(self.machine_cls.needs_salt(conf))
        if conf.protocol is Protocol.IMAP:
            self.client_buffer = conf.imap_client_buffer
        elif conf.protocol is Protocol.SMTP:
            self.client_buffer = conf.smtp_client_buffer
        else:
            self.client_buffer = 128


def protocol_classes(protocol: Protocol) -> tuple[Any, Any]:
    """The front-end machine class and an upstream factory for a protocol."""
    if protocol is Protocol.IMAP:
        from mailfront.protocol import imap

        def imap_upstream(conf: ServerConf, m: Any, login: bytes, passwd: bytes, s: Any) -> Any:
            return imap.ImapUpstream(conf, login, passwd, m.tag)

        return imap.ImapMachine, imap_upstream
    if protocol is Protocol.POP3:
        from mailfront.protocol import pop3

        def pop3_upstream(conf: ServerConf, m: Any, login: bytes, passwd: bytes, s: Any) -> Any:
            return pop3.Pop3Upstream(conf, login, passwd)

        return pop3.Pop3Machine, pop3_upstream
    from mailfront.protocol import smtp

    def smtp_upstream(conf: ServerConf, m: Any, login: bytes, passwd: bytes, s: Any) -> Any:
        return smtp.SmtpUpstream(conf, m, login, passwd, s.client, s.client_host)

    return smtp.SmtpMachine, smtp_upstream


def listen_key(ls: Listen) -> tuple[str, str, int]:
    return (ls.family, ls.host, ls.port)


def listen_text(ls: Listen) -> str:
    """The ``server:`` text of log lines (nginx's addr_text: the socket address)."""
    if ls.family == "unix":
        return "unix:" + ls.host
    if ls.family == "inet6":
        return f"[{ls.host}]:{ls.port}"
    return f"{ls.host}:{ls.port}"


class Listener:
    """One listening socket and the server(s) it serves."""

    __slots__ = ("key", "listen", "server", "sock", "srv")

    def __init__(self, ls: Listen, sock: socket.socket) -> None:
        self.key = listen_key(ls)
        self.listen = ls
        self.sock = sock
        self.srv: ServerRuntime | None = None
        self.server: asyncio.AbstractServer | None = None

    def make_session(self) -> Session:
        assert self.srv is not None
        return Session(self.srv)

    def close(self) -> None:
        """Stop accepting: the loop's server (and its copy of the socket), then the socket."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.sock.close()


def open_socket(ls: Listen) -> socket.socket:
    """Create, bind and listen, as nginx's ngx_open_listening_sockets does."""
    if ls.family == "unix":
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(ls.host).st_mode):
                os.unlink(ls.host)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: Any = ls.host
    else:
        family = socket.AF_INET6 if ls.family == "inet6" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if ls.ipv6only else 0)
        address = (ls.host, ls.port)
    try:
        if ls.rcvbuf > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ls.rcvbuf)
        if ls.sndbuf > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ls.sndbuf)
        if ls.so_keepalive == 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if ls.tcp_keepidle:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, ls.tcp_keepidle)
            if ls.tcp_keepintvl:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, ls.tcp_keepintvl)
            if ls.tcp_keepcnt:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, ls.tcp_keepcnt)
        sock.bind(address)
        sock.listen(ls.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def plan_listeners(
    config: Config,
) -> dict[tuple[str, str, int], tuple[Listen, list[tuple[Listen, ServerConf]]]]:
    """Which sockets to bind, and which (listen, server) pairs each serves.

    A wildcard address on a port takes every address on that port that has no
    ``bind``-implying parameter.
    """
    pairs: list[tuple[Listen, ServerConf]] = []
    if config.mail is not None:
        for srv in config.mail.servers:
            for ls in srv.listen:
                pairs.append((ls, srv))
    wild: dict[tuple[str, int], tuple[str, str, int]] = {}
    plan: dict[tuple[str, str, int], tuple[Listen, list[tuple[Listen, ServerConf]]]] = {}
    for ls, srv in pairs:
        if ls.wildcard:
            key = listen_key(ls)
            wild[(ls.family, ls.port)] = key
            plan.setdefault(key, (ls, []))[1].append((ls, srv))
    for ls, srv in pairs:
        if ls.wildcard:
            continue
        wkey = wild.get((ls.family, ls.port))
        if wkey is not None and not ls.bind:
            plan[wkey][1].append((ls, srv))
        else:
            plan.setdefault(listen_key(ls), (ls, []))[1].append((ls, srv))
    return plan
