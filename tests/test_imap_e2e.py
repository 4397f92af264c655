"""IMAP end to end: real clients -> mailfront -> real auth_http service -> real Dovecot."""

from __future__ import annotations

import hashlib
import hmac
import imaplib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from mailfront.devtools.dovecot import BIG_MESSAGE_SHA256, BIG_MESSAGE_UID, DEMO_USERS
from support.authserver import AuthServer
from support.net import close_all, connect, read_all, read_line
from support.proxy import Mailfront, free_port

PASS = DEMO_USERS["alice"]


class Router:
    """The auth service's behaviour, switchable per test."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.mode = "ok"
        self.wait = 0

    def __call__(self, h: dict[str, str]) -> list[tuple[str, str]] | bytes:
        if self.mode == "garbage":
            return b"HTTP/1.0 200 OK\r\nAuth_Status: OK\r\n\r\n"
        if self.mode == "rename-fail":
            return [("Auth-Status", "No such mailbox"), ("Auth-User", "renamed")]
        if self.mode == "bad-server":
            return [("Auth-Status", "OK"), ("Auth-Server", "backend.example"), ("Auth-Port", "143")]
        if self.mode == "refused":
            return [
                ("Auth-Status", "OK"),
                ("Auth-Server", "127.0.0.1"),
                ("Auth-Port", str(self.refused_port)),
            ]
        if self.mode == "garbage-backend":
            return [
                ("Auth-Status", "OK"),
                ("Auth-Server", "127.0.0.1"),
                ("Auth-Port", str(self.garbage_port)),
            ]
        user = h.get("auth-user", "")
        if h.get("auth-method") == "cram-md5":
            # Auth-Salt keeps nginx's CRLF; the digest is over the salt without it
            salt = h.get("auth-salt", "").encode()
            key = DEMO_USERS.get(user, "").encode()
            if h.get("auth-pass") == hmac.new(key, salt, "md5").hexdigest():
                return [
                    ("Auth-Status", "OK"),
                    ("Auth-Server", "127.0.0.1"),
                    ("Auth-Port", str(self.backend_port)),
                    ("Auth-Pass", key.decode()),
                ]
            return [("Auth-Status", "Invalid login or password")]
        if h.get("auth-pass") != DEMO_USERS.get(user, None):
            out = [("Auth-Status", "Invalid login or password")]
            if self.wait:
                out.append(("Auth-Wait", str(self.wait)))
            return out
        return [
            ("Auth-Status", "OK"),
            ("Auth-Server", "127.0.0.1"),
            ("Auth-Port", str(self.backend_port)),
        ]

    refused_port = 0
    garbage_port = 0


@pytest.fixture(scope="module")
def env(
    dovecot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mailfront, AuthServer, Router, int]]:  # type: ignore[no-untyped-def]
    router = Router(dovecot.imap_port)
    router.refused_port = free_port()
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen(16)
    router.garbage_port = garbage.getsockname()[1]
    auth = AuthServer(router)
    port = free_port()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    hang_port = hang.getsockname()[1]
    short_port = free_port()
    idle_port = free_port()
    block = f"""
    server_name mail.test;
    auth_http {auth.url};
    server {{ listen 127.0.0.1:{port}; protocol imap; imap_auth plain login cram-md5; }}
    server {{
        listen 127.0.0.1:{short_port}; protocol imap;
        timeout 1s; max_errors 2; imap_client_buffer 64; proxy_timeout 1s;
        auth_http 127.0.0.1:{hang_port}/auth; auth_http_timeout 1s;
    }}
    server {{
        listen 127.0.0.1:{idle_port}; protocol imap; proxy_timeout 1s;
    }}
    """
    mf = Mailfront(tmp_path_factory.mktemp("mf-imap"), block, [port, short_port, idle_port])

    import threading

    def garbage_backend() -> None:
        while True:
            try:
                c, _ = garbage.accept()
            except OSError:
                return
            c.sendall(b"HELLO garbage\r\n")
            time.sleep(0.5)
            c.close()

    threading.Thread(target=garbage_backend, daemon=True).start()
    with mf:
        mf.short_port = short_port  # type: ignore[attr-defined]
        mf.idle_port = idle_port  # type: ignore[attr-defined]
        yield mf, auth, router, port
    auth.close()
    hang.close()
    garbage.close()


@pytest.fixture(autouse=True)
def _reset(env) -> Iterator[None]:  # type: ignore[no-untyped-def]
    env[2].mode = "ok"
    env[2].wait = 0
    yield
    close_all()


def test_login_select_fetch(env) -> None:  # type: ignore[no-untyped-def]
    mf, auth, _router, port = env
    n = len(auth.requests)
    with imaplib.IMAP4("127.0.0.1", port) as m:
        assert m.welcome == b"* OK IMAP4 ready"
        typ, data = m.login("alice", PASS)
        assert typ == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK"
        typ, data = m.uid("FETCH", str(BIG_MESSAGE_UID), "(BODY.PEEK[])")
        assert typ == "OK"
        body = data[0][1]  # type: ignore[index]
        assert hashlib.sha256(body).hexdigest() == BIG_MESSAGE_SHA256
        m.logout()
    req = auth.requests[n]
    assert req == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Auth-Method: plain\r\n"
        b"Auth-User: alice\r\n"
        b"Auth-Pass: " + PASS.encode() + b"\r\n"
        b"Auth-Protocol: imap\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 127.0.0.1\r\n"
        b"\r\n"
    )
    log = mf.wait_log("proxied session done")
    assert f"connected to 127.0.0.1:{port}" in log
    assert (
        f"client logged in, client: 127.0.0.1, server: 127.0.0.1:{port}, "
        'login: "alice", upstream: 127.0.0.1:' in log
    )
    assert PASS not in log


def test_authenticate_plain_and_pipelined_command(env) -> None:  # type: ignore[no-untyped-def]
    _mf, _auth, _router, port = env
    import base64

    s = connect(port)
    assert read_line(s) == b"* OK IMAP4 ready\r\n"
    ir = base64.b64encode(b"\0alice\0" + PASS.encode())
    # the auth command and the next command in one packet: the second reaches the backend
    s.sendall(b"a1 AUTHENTICATE PLAIN " + ir + b"\r\na2 NOOP\r\n")
    lines = [read_line(s) for _ in range(2)]
    while not lines[-1].startswith(b"a2 "):
        lines.append(read_line(s))
    assert any(ln.startswith(b"a1 OK") for ln in lines)
    assert lines[-1].startswith(b"a2 OK")
    s.sendall(b"a3 LOGOUT\r\n")
    rest = read_all(s)
    assert b"a3 OK" in rest
    s.close()


def test_capability_and_errors_before_login(env) -> None:  # type: ignore[no-untyped-def]
    _mf, _auth, _router, port = env
    s = connect(port)
    read_line(s)
    s.sendall(b"c1 CAPABILITY\r\n")
    assert (
        read_line(s)
        == b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5\r\n"
    )
    assert read_line(s) == b"c1 OK completed\r\n"
    s.sendall(b"c2 ID NIL\r\n")
    assert read_line(s) == b"c2 BAD invalid command\r\n"
    s.sendall(b"c3 NOOP\r\n")
    assert read_line(s) == b"c3 OK completed\r\n"
    s.sendall(b"c4 LOGOUT\r\n")
    assert read_line(s) == b"* BYE\r\n"
    assert read_line(s) == b"c4 OK completed\r\n"
    assert s.recv(10) == b""
    s.close()


def test_curl_reads_a_message(env) -> None:  # type: ignore[no-untyped-def]
    _mf, _auth, _router, port = env
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [
            curl,
            "-s",
            "--max-time",
            "20",
            f"imap://127.0.0.1:{port}/INBOX;UID=1",
            "-u",
            f"alice:{PASS}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert b"Subject:" in out


def test_bad_password_no_wait_closes(env) -> None:  # type: ignore[no-untyped-def]
    mf, _auth, _router, port = env
    s = connect(port)
    read_line(s)
    s.sendall(b"a1 LOGIN alice wrong\r\n")
    assert read_line(s) == b"a1 NO Invalid login or password\r\n"
    assert s.recv(10) == b""
    s.close()
    mf.wait_log('client login failed: "Invalid login or password" while in http auth state')


def test_bad_password_with_wait_allows_retry(env) -> None:  # type: ignore[no-untyped-def]
    _mf, auth, router, port = env
    router.wait = 1
    s = connect(port)
    read_line(s)
    s.sendall(b"a1 LOGIN alice wrong\r\n")
    assert read_line(s) == b"a1 NO Invalid login or password\r\n"
    n = len(auth.requests)
    s.sendall(b"a2 LOGIN alice " + PASS.encode() + b"\r\n")
    line = read_line(s)
    while line.startswith(b"* "):
        line = read_line(s)
    assert line.startswith(b"a2 OK")
    assert b"Auth-Login-Attempt: 2\r\n" in auth.requests[n]
    s.close()


@pytest.mark.parametrize(
    ("mode", "logged"),
    [
        ("garbage", "sent invalid header in response"),
        ("bad-server", 'sent invalid server address:"backend.example"'),
        ("refused", "connect() failed (111: Connection refused) while connecting to upstream"),
        ("garbage-backend", 'upstream sent invalid response: "HELLO garbage'),
    ],
)
def test_failures_give_internal_error(env, mode: str, logged: str) -> None:  # type: ignore[no-untyped-def]
    mf, _auth, router, port = env
    router.mode = mode
    s = connect(port)
    read_line(s)
    s.sendall(b"a1 LOGIN alice " + PASS.encode() + b"\r\n")
    assert read_all(s) == b"* BAD internal server error\r\n"
    s.close()
    mf.wait_log(logged)
    # the process keeps serving
    router.mode = "ok"
    with imaplib.IMAP4("127.0.0.1", port) as m:
        assert m.login("alice", PASS)[0] == "OK"


def test_auth_service_that_hangs_times_out(env) -> None:  # type: ignore[no-untyped-def]
    mf = env[0]
    s = connect(mf.short_port)
    read_line(s)
    s.sendall(b"a1 LOGIN alice x\r\n")
    assert read_all(s) == b"* BAD internal server error\r\n"
    mf.wait_log("timed out (110: Connection timed out) while in http auth state")


def test_client_timeout_is_a_deadline(env) -> None:  # type: ignore[no-untyped-def]
    mf = env[0]
    s = connect(mf.short_port)
    read_line(s)
    s.sendall(b"a1 NOOP\r\n")
    assert read_line(s) == b"a1 OK completed\r\n"
    assert read_all(s) == b""
    mf.wait_log("client timed out")


def test_too_long_command_and_max_errors(env) -> None:  # type: ignore[no-untyped-def]
    mf = env[0]
    s = connect(mf.short_port)
    read_line(s)
    s.sendall(b"a1 LOGIN " + b"x" * 100 + b"\r\n")
    out = read_all(s)
    assert out.endswith(b"BAD invalid command\r\n")
    mf.wait_log("client sent too long command")
    s = connect(mf.short_port)
    read_line(s)
    s.sendall(b"a1 FOO\r\na2 BAR\r\n")
    out = read_all(s)
    assert out == b"a1 BAD invalid command\r\na2 BAD invalid command\r\n"
    mf.wait_log("client sent too many invalid commands")


def test_client_that_vanishes_mid_login(env) -> None:  # type: ignore[no-untyped-def]
    _mf, _auth, _router, port = env
    for _ in range(5):
        s = connect(port)
        read_line(s)
        s.sendall(b"a1 LOGIN {5}\r\n")
        s.close()
    with imaplib.IMAP4("127.0.0.1", port) as m:
        assert m.login("alice", PASS)[0] == "OK"


def test_proxy_timeout_ends_idle_relayed_sessions_only(env) -> None:  # type: ignore[no-untyped-def]
    mf = env[0]
    m = imaplib.IMAP4("127.0.0.1", mf.idle_port, timeout=10)
    assert m.login("alice", PASS)[0] == "OK"
    for _ in range(6):  # active for 2.4 s: longer than proxy_timeout, kept open
        time.sleep(0.4)
        assert m.noop()[0] == "OK"
    time.sleep(1.6)  # idle: closed between 1 s and 1.125 s after the last byte
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        m.noop()
    m.shutdown()
    mf.wait_log("client timed out (110: Connection timed out) while proxying, client: 127.0.0.1")


def test_auth_user_in_an_error_answer_names_the_login_in_the_log(env) -> None:  # type: ignore[no-untyped-def]
    mf, _auth, router, port = env
    router.mode = "rename-fail"
    s = connect(port)
    read_line(s)
    s.sendall(b"a1 LOGIN alice " + PASS.encode() + b"\r\n")
    assert read_all(s) == b"a1 NO No such mailbox\r\n"
    mf.wait_log(
        'client login failed: "No such mailbox" while in http auth state, client: 127.0.0.1, '
        f'server: 127.0.0.1:{port}, login: "renamed"'
    )
