"""The IMAP machines against real peers: imaplib as the client, Dovecot as the backend.

The machines stay sans-IO; these tests drive them over loopback sockets with
a few lines of blocking code, to check that a real client's syntax and a real
server's replies go through them as nginx would have them.
"""

from __future__ import annotations

import imaplib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from mailfront.conf.model import Protocol, ServerConf
from mailfront.protocol.base import AuthRequest, Next, UpNext
from mailfront.protocol.imap import ImapMachine, ImapUpstream
from support.dovecot import DEMO_USERS, Dovecot
from support.machines import server_conf

CONF = server_conf(Protocol.IMAP)


# -- imaplib -> ImapMachine ---------------------------------------------------------


@contextmanager
def machine_server(
    on_auth: Callable[[ImapMachine, AuthRequest], None],
) -> Iterator[tuple[tuple[str, int], list[AuthRequest]]]:
    """One connection served by an ImapMachine; ``on_auth`` answers each login."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: list[AuthRequest] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            m = ImapMachine(CONF)
            conn.sendall(m.greeting())
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                nxt = m.receive(data)
                while nxt is Next.AUTH:
                    assert m.auth is not None
                    seen.append(m.auth)
                    on_auth(m, m.auth)
                    nxt = m.resume()
                conn.sendall(b"".join(m.out))
                m.out.clear()
                if nxt is Next.CLOSE:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname(), seen
    finally:
        thread.join(10)
        listener.close()


def refuse(m: ImapMachine, req: AuthRequest) -> None:
    m.auth_failed(b"Authentication failed", None)


def test_imaplib_capability_and_logout() -> None:
    with machine_server(refuse) as (addr, _):
        client = imaplib.IMAP4(*addr, timeout=10)
        assert client.welcome == b"* OK IMAP4 ready"
        assert client.capabilities == ("IMAP4", "IMAP4REV1", "UIDPLUS", "AUTH=PLAIN")
        assert client.noop()[0] == "OK"
        typ, _ = client.logout()
        assert typ == "BYE"


def test_imaplib_login_with_quoted_password() -> None:
    password = 'p a"s\\s'  # imaplib sends it quoted, with backslash escapes
    with (
        machine_server(refuse) as (addr, seen),
        imaplib.IMAP4(*addr, timeout=10) as client,
        pytest.raises(imaplib.IMAP4.error, match="Authentication failed"),
    ):
        client.login("alice", password)
    assert [(r.login, r.passwd) for r in seen] == [(b"alice", password.encode())]


def test_imaplib_authenticate_plain() -> None:
    with (
        machine_server(refuse) as (addr, seen),
        imaplib.IMAP4(*addr, timeout=10) as client,
        pytest.raises(imaplib.IMAP4.error, match="Authentication failed"),
    ):
        client.authenticate("PLAIN", lambda _: b"\0bob\0bobpass")
    assert [(r.login, r.passwd) for r in seen] == [(b"bob", b"bobpass")]


def test_imaplib_unknown_mechanism_is_bad() -> None:
    with (
        machine_server(refuse) as (addr, seen),
        imaplib.IMAP4(*addr, timeout=10) as client,
        pytest.raises(imaplib.IMAP4.error, match="invalid command"),
    ):
        client.authenticate("XOAUTH2", lambda _: b"token")
    assert seen == []


# -- ImapUpstream -> Dovecot ----------------------------------------------------------


def backend_login(
    server: Dovecot, login: bytes, passwd: bytes, conf: ServerConf = CONF
) -> tuple[UpNext, ImapUpstream, socket.socket]:
    sock = socket.create_connection(server.imap_address, timeout=10)
    up = ImapUpstream(conf, login, passwd, b"a1 ")
    nxt = UpNext.READ
    while nxt is UpNext.READ:
        data = sock.recv(65536)
        if not data:
            break
        nxt = up.receive(data)
        if up.to_upstream:
            sock.sendall(b"".join(up.to_upstream))
            up.to_upstream.clear()
    return nxt, up, sock


def test_dovecot_login(dovecot: Dovecot) -> None:
    nxt, up, sock = backend_login(dovecot, b"alice", DEMO_USERS["alice"].encode())
    with sock:
        assert nxt is UpNext.DONE
        reply = b"".join(up.to_client)
        assert reply.startswith(b"a1 OK ") and reply.endswith(b"\r\n")
        assert up.logs == []
        # the connection is logged in: the relay phase would start here
        sock.sendall(b"a2 SELECT INBOX\r\n")
        answer = b""
        while b"a2 " not in answer:
            answer += sock.recv(65536)
        assert b"a2 OK" in answer


def test_dovecot_wrong_password(dovecot: Dovecot) -> None:
    nxt, up, sock = backend_login(dovecot, b"alice", b"wrong")
    sock.close()
    assert nxt is UpNext.FAIL
    assert up.to_client == [b"* BAD internal server error\r\n"]
    ((_, msg),) = up.logs
    assert msg.startswith('upstream sent invalid response: "NO [AUTHENTICATIONFAILED]')


def test_dovecot_wrong_password_relayed(dovecot: Dovecot) -> None:
    conf = server_conf(Protocol.IMAP, proxy_pass_error_message=True)
    nxt, up, sock = backend_login(dovecot, b"bob", b"wrong", conf)
    sock.close()
    assert nxt is UpNext.FAIL
    reply = b"".join(up.to_client)
    assert reply.startswith(b"a1 NO [AUTHENTICATIONFAILED]") and reply.endswith(b"\r\n")


def test_dovecot_login_with_odd_bytes_in_password(dovecot: Dovecot) -> None:
    # literals carry any byte: the backend sees the password as the client sent it
    nxt, up, sock = backend_login(dovecot, b"alice", b'alicepass" {3}\\')
    sock.close()
    assert nxt is UpNext.FAIL  # a wrong password, but one the backend parsed whole
    assert b"AUTHENTICATIONFAILED" in up.logs[0][1].encode()
