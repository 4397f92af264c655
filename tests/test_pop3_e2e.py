"""POP3 end to end: real clients (poplib, curl) -> mailfront -> real auth service -> real Dovecot.

One mailfront process serves five POP3 servers:

- ``main``: ``pop3_auth plain apop cram-md5 external``, auth_http to ``Router``;
- ``short``: ``max_errors 2; timeout 1s`` (default ``pop3_auth``), same service;
- ``passerr``: ``proxy_pass_error_message on``, same service;
- ``hashed``: ``auth_file`` written by ``dovecot.write_auth_file`` (SHA512-CRYPT),
  configured as the quickstart's POP3 server (the README's example runs here);
- ``plainfile``: ``auth_file`` with ``{PLAIN}`` entries, ``pop3_auth plain apop cram-md5``.

The auth service computes the APOP and CRAM-MD5 digests itself from the
``Auth-Salt`` it receives, as a real one must.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import poplib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailfront.auth.file import make_hash
from support.authserver import AuthServer
from support.dovecot import BIG_MESSAGE_SHA256, DEMO_USERS, Dovecot
from support.net import close_all, connect, read_all, read_line, read_n
from support.proxy import Mailfront, free_port

PASS = DEMO_USERS["alice"]
README = Path(__file__).resolve().parent.parent / "README.md"
INTERNAL = b"-ERR internal server error\r\n"
INVALID = b"-ERR invalid command\r\n"
REFUSED = b"-ERR Invalid login or password\r\n"
SALT_RE = re.compile(rb"^\+OK POP3 ready (<\d+\.\d+@mail\.test>)\r\n$")
CAPA_MAIN = (
    b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
    b"SASL PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n.\r\n"
)
TOKEN = "one-time-token"  # a password the auth service accepts for alice, not Dovecot


class Router:
    """The auth service: checks what it is sent, routes to Dovecot's POP3 port.

    ``mode``: ``ok``; ``no-pass`` (never sends Auth-Pass); ``wrong-pass``
    (sends an Auth-Pass Dovecot refuses); ``hang-backend`` (routes to a
    backend that never answers); ``wait-first`` (answers a good APOP or
    CRAM-MD5 digest with ``WAIT``, then the re-query, which carries no password,
    with OK and Auth-Pass).  ``wait``: Auth-Wait on refusals.
    """

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.mode = "ok"
        self.wait = 0
        self.hang_port = 0

    def _ok(self, user: str, passwd: str | None) -> list[tuple[str, str]]:
        out = [("Auth-Status", "OK"), ("Auth-Server", "127.0.0.1")]
        port = self.hang_port if self.mode == "hang-backend" else self.backend_port
        out.append(("Auth-Port", str(port)))
        if user == "bobby":  # an alias: the backend login is bob's
            out.append(("Auth-User", "bob"))
        if self.mode == "wrong-pass":
            out.append(("Auth-Pass", "wrongpass"))
        elif self.mode != "no-pass" and passwd is not None:
            out.append(("Auth-Pass", passwd))
        return out

    def _refuse(self) -> list[tuple[str, str]]:
        out = [("Auth-Status", "Invalid login or password")]
        if self.wait:
            out.append(("Auth-Wait", str(self.wait)))
        return out

    def __call__(self, h: dict[str, str]) -> list[tuple[str, str]]:
        user = h.get("auth-user", "")
        real = DEMO_USERS.get("bob" if user == "bobby" else user)
        if real is None:
            return self._refuse()
        method = h.get("auth-method")
        if self.mode == "wait-first" and method in ("apop", "cram-md5") and not h.get("auth-pass"):
            return self._ok(user, real)  # the re-query: nginx sends no password any more
        # Auth-Salt is the greeting's <...> plus CRLF; the digests are over it without CRLF
        salt = h.get("auth-salt", "").encode()
        given = h.get("auth-pass", "")
        if method in ("apop", "cram-md5"):
            if method == "apop":
                expected = hashlib.md5(salt + real.encode()).hexdigest()
            else:
                expected = hmac.new(real.encode(), salt, "md5").hexdigest()
            if given != expected:
                return self._refuse()
            if self.mode == "wait-first":
                return [("Auth-Status", "WAIT"), ("Auth-Wait", "0")]
            return self._ok(user, real)
        if method == "external":
            return self._ok(user, real)  # trusts the login: Auth-Pass is a must
        if given == TOKEN and user == "alice":
            return self._ok(user, real)  # the backend needs the real password
        if given != real:
            return self._refuse()
        return self._ok(user, None)  # the client's password goes on


@dataclass
class Env:
    mf: Mailfront
    auth: AuthServer
    router: Router
    dovecot: Dovecot
    main: int
    short: int
    passerr: int
    hashed: int
    plainfile: int
    hangauth: int


@pytest.fixture(scope="module")
def env(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    pytest.importorskip("passlib")
    work = tmp_path_factory.mktemp("mf-pop3")
    router = Router(dovecot.pop3_port)
    auth = AuthServer(router)
    hashed_file = dovecot.write_auth_file(work / "users-hashed")
    plain_file = work / "users-plain"
    plain_file.write_text(
        f"alice:{make_hash('PLAIN', PASS.encode())}::::::"
        f"host=127.0.0.1 pop3_port={dovecot.pop3_port}\n"
        f"bob:{make_hash('SHA512-CRYPT', b'bobpass')}::::::"
        f"host=127.0.0.1 pop3_port={dovecot.pop3_port}\n"
    )
    hang = socket.socket()  # listens, never answers: a stuck backend or auth service
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    router.hang_port = hang.getsockname()[1]
    ports = [free_port() for _ in range(6)]
    main, short, passerr, hashed, plainfile, hangauth = ports
    block = f"""
    server_name mail.test;
    auth_http {auth.url};
    server {{ listen 127.0.0.1:{main}; protocol pop3; pop3_auth plain apop cram-md5 external; }}
    server {{
        listen 127.0.0.1:{short}; protocol pop3; max_errors 2; timeout 1s; proxy_timeout 1s;
    }}
    server {{
        listen 127.0.0.1:{hangauth}; protocol pop3;
        auth_http 127.0.0.1:{router.hang_port}/auth; auth_http_timeout 1s;
    }}
    server {{ listen 127.0.0.1:{passerr}; protocol pop3; proxy_pass_error_message on; }}
    server {{ listen 127.0.0.1:{hashed}; protocol pop3; auth_file {hashed_file}; }}
    server {{
        listen 127.0.0.1:{plainfile}; protocol pop3; pop3_auth plain apop cram-md5;
        auth_file {plain_file};
    }}
    """
    with Mailfront(work, block, ports) as mf:
        yield Env(mf, auth, router, dovecot, main, short, passerr, hashed, plainfile, hangauth)
    auth.close()
    hang.close()


@pytest.fixture(autouse=True)
def _reset(env: Env) -> Iterator[None]:
    env.router.mode = "ok"
    env.router.wait = 0
    yield
    close_all()


def wait_re(mf: Mailfront, pattern: str, deadline: float = 5.0) -> str:
    end = time.monotonic() + deadline
    while True:
        log = mf.log()
        if re.search(pattern, log) or time.monotonic() > end:
            assert re.search(pattern, log), log
            return log
        time.sleep(0.02)


def greeting_salt(s: socket.socket) -> bytes:
    m = SALT_RE.match(read_line(s))
    assert m is not None
    return m[1]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def request(method: str, user: str, passwd: bytes, attempt: int = 1, salt: bytes = b"") -> bytes:
    """The auth_http request nginx sends for a POP3 login, byte for byte."""
    return (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Auth-Method: " + method.encode() + b"\r\n"
        b"Auth-User: " + user.encode() + b"\r\n"
        b"Auth-Pass: "
        + passwd
        + b"\r\n"
        + (b"Auth-Salt: " + salt if salt else b"")  # the salt ends in CRLF
        + b"Auth-Protocol: pop3\r\n"
        b"Auth-Login-Attempt: " + str(attempt).encode() + b"\r\n"
        b"Client-IP: 127.0.0.1\r\n"
        b"\r\n"
    )


@contextlib.contextmanager
def pop(port: int, timeout: float = 10) -> Iterator[poplib.POP3]:
    """poplib.POP3 is no context manager."""
    p = poplib.POP3("127.0.0.1", port, timeout=timeout)
    try:
        yield p
    finally:
        p.close()


def assert_serves(port: int, user: str = "alice", password: str = PASS) -> None:
    """The process still serves: a full login and a STAT."""
    with pop(port, 10) as p:
        p.user(user)
        assert p.pass_(password) == b"+OK Logged in."
        assert p.stat()[0] == 3
        p.quit()


def big_message_lines(dovecot: Dovecot) -> list[bytes]:
    """Message 3 as poplib's retr() gives it: lines without CRLF, dots unstuffed."""
    data = dovecot.messages("alice")[2].data
    assert hashlib.sha256(data).hexdigest() == BIG_MESSAGE_SHA256
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


# -- logins that work ------------------------------------------------------------


def test_user_pass_and_retr_of_the_big_message(env: Env) -> None:
    n = len(env.auth.requests)
    expected = big_message_lines(env.dovecot)
    with pop(env.main, 30) as p:
        assert SALT_RE.match(p.getwelcome() + b"\r\n")
        assert p.user("alice") == b"+OK"
        assert p.pass_(PASS) == b"+OK Logged in."  # Dovecot's own reply, relayed
        count, _size = p.stat()
        assert count == 3
        resp, lines, _octets = p.retr(3)
        assert resp.startswith(b"+OK")
        digest = hashlib.sha256(b"\r\n".join(lines) + b"\r\n").hexdigest()
        assert digest == BIG_MESSAGE_SHA256
        assert lines == expected
        assert p.quit().startswith(b"+OK")
    assert env.auth.requests[n] == request("plain", "alice", PASS.encode())
    log = env.mf.wait_log(f"proxied session done, client: 127.0.0.1, server: 127.0.0.1:{env.main}")
    assert f"connected to 127.0.0.1:{env.main}" in log
    assert (
        f"client logged in, client: 127.0.0.1, server: 127.0.0.1:{env.main}, "
        f'login: "alice", upstream: 127.0.0.1:{env.dovecot.pop3_port}' in log
    )
    assert PASS not in log


def test_auth_pass_and_auth_user_go_to_the_backend(env: Env) -> None:
    # the client's password is a token the service trades for the real one
    with pop(env.main, 10) as p:
        p.user("alice")
        assert p.pass_(TOKEN) == b"+OK Logged in."
        assert p.stat()[0] == 3
        p.quit()
    # Auth-User renames the login for the backend and in the log
    with pop(env.main, 10) as p:
        p.user("bobby")
        assert p.pass_("bobpass") == b"+OK Logged in."
        assert p.stat()[0] == 3
        p.quit()
    log = env.mf.wait_log(
        f'client logged in, client: 127.0.0.1, server: 127.0.0.1:{env.main}, login: "bob"'
    )
    assert TOKEN not in log


def test_apop(env: Env) -> None:
    n = len(env.auth.requests)
    with pop(env.main, 10) as p:
        salt = SALT_RE.match(p.getwelcome() + b"\r\n")
        assert salt is not None
        assert p.apop("alice", PASS) == b"+OK Logged in."
        assert p.stat()[0] == 3
        p.quit()
    digest = hashlib.md5(salt[1] + PASS.encode()).hexdigest().encode()
    assert env.auth.requests[n] == request("apop", "alice", digest, salt=salt[1] + b"\r\n")


def test_apop_wait_status_requery(env: Env) -> None:
    """Auth-Status WAIT: nginx asks again, with an empty Auth-Pass and the same salt."""
    env.router.mode = "wait-first"
    n = len(env.auth.requests)
    s = connect(env.main)
    salt = greeting_salt(s)
    digest = hashlib.md5(salt + PASS.encode()).hexdigest().encode()
    s.sendall(b"APOP alice " + digest + b"\r\n")
    assert read_line(s) == b"+OK Logged in.\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_all(s).startswith(b"+OK")
    assert env.auth.requests[n : n + 2] == [
        request("apop", "alice", digest, salt=salt + b"\r\n"),
        request("apop", "alice", b"", salt=salt + b"\r\n"),
    ]


def test_apop_wrong_digest(env: Env) -> None:
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"APOP alice " + b"0" * 32 + b"\r\n")
    assert read_all(s) == REFUSED
    env.mf.wait_log(
        'client login failed: "Invalid login or password" while in http auth state, '
        f'client: 127.0.0.1, server: 127.0.0.1:{env.main}, login: "alice"'
    )


def cram_md5_login(s: socket.socket, salt: bytes, user: bytes, password: bytes) -> bytes:
    s.sendall(b"AUTH CRAM-MD5\r\n")
    assert read_line(s) == b"+ " + b64(salt) + b"\r\n"
    digest = hmac.new(password, salt, "md5").hexdigest().encode()
    s.sendall(b64(user + b" " + digest) + b"\r\n")
    return digest


def test_cram_md5(env: Env) -> None:
    n = len(env.auth.requests)
    s = connect(env.main)
    salt = greeting_salt(s)
    digest = cram_md5_login(s, salt, b"alice", PASS.encode())
    assert read_line(s) == b"+OK Logged in.\r\n"
    s.sendall(b"STAT\r\nQUIT\r\n")
    assert read_line(s).startswith(b"+OK 3 ")
    assert read_all(s).startswith(b"+OK")
    assert env.auth.requests[n] == request("cram-md5", "alice", digest, salt=salt + b"\r\n")


@pytest.mark.parametrize("method", ["apop", "cram-md5", "external"])
def test_no_auth_pass_where_nginx_holds_no_password(env: Env, method: str) -> None:
    env.router.mode = "no-pass"
    s = connect(env.main)
    salt = greeting_salt(s)
    if method == "apop":
        s.sendall(b"APOP alice " + hashlib.md5(salt + PASS.encode()).hexdigest().encode() + b"\r\n")
    elif method == "cram-md5":
        cram_md5_login(s, salt, b"alice", PASS.encode())
    else:
        s.sendall(b"AUTH EXTERNAL " + b64(b"alice") + b"\r\n")
    assert read_all(s) == INTERNAL
    env.mf.wait_log(
        f"auth http server 127.0.0.1:{env.auth.port} did not send password "
        f"while in http auth state, client: 127.0.0.1, server: 127.0.0.1:{env.main}, "
        'login: "alice"'
    )
    # a plain login needs no Auth-Pass: the client's own password goes on
    assert_serves(env.main)


def test_external(env: Env) -> None:
    n = len(env.auth.requests)
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"AUTH EXTERNAL\r\n")
    assert read_line(s) == b"+ VXNlcm5hbWU6\r\n"
    s.sendall(b64(b"alice") + b"\r\n")
    assert read_line(s) == b"+OK Logged in.\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_all(s).startswith(b"+OK")
    assert env.auth.requests[n] == request("external", "alice", b"")


@pytest.mark.parametrize(
    "steps",
    [
        # AUTH PLAIN with an initial response, and after the "+ " prompt
        [(b"AUTH PLAIN " + b64(b"\0alice\0" + PASS.encode()), None)],
        [(b"AUTH PLAIN", b"+ \r\n"), (b64(b"zed\0alice\0" + PASS.encode()), None)],
        # AUTH LOGIN in two steps, and with the user name on the command line
        [
            (b"auth login", b"+ VXNlcm5hbWU6\r\n"),
            (b64(b"alice"), b"+ UGFzc3dvcmQ6\r\n"),
            (b64(PASS.encode()), None),
        ],
        [(b"AUTH LOGIN " + b64(b"alice"), b"+ UGFzc3dvcmQ6\r\n"), (b64(PASS.encode()), None)],
    ],
    ids=["plain-ir", "plain-prompt", "login", "login-ir"],
)
def test_auth_plain_and_login(env: Env, steps: list[tuple[bytes, bytes | None]]) -> None:
    n = len(env.auth.requests)
    s = connect(env.main)
    greeting_salt(s)
    for line, prompt in steps:
        s.sendall(line + b"\r\n")
        if prompt is not None:
            assert read_line(s) == prompt
    assert read_line(s) == b"+OK Logged in.\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_all(s).startswith(b"+OK")
    assert env.auth.requests[n] == request("plain", "alice", PASS.encode())


def test_curl_retrieves_the_big_message(env: Env) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    n = len(env.auth.requests)
    out = subprocess.run(
        [curl, "-sS", "--max-time", "30", f"pop3://127.0.0.1:{env.main}/3", "-u", f"alice:{PASS}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert hashlib.sha256(out).hexdigest() == BIG_MESSAGE_SHA256
    # curl prefers CRAM-MD5 among the SASL mechanisms CAPA lists
    assert b"Auth-Method: cram-md5\r\n" in env.auth.requests[n]


# -- refusals and failures ---------------------------------------------------------


def test_bad_password_without_auth_wait_closes(env: Env) -> None:
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"USER alice\r\n")
    assert read_line(s) == b"+OK\r\n"
    s.sendall(b"PASS Wr0ngSecret\r\n")
    assert read_all(s) == REFUSED
    log = env.mf.wait_log(
        'client login failed: "Invalid login or password" while in http auth state, '
        f'client: 127.0.0.1, server: 127.0.0.1:{env.main}, login: "alice"'
    )
    assert "Wr0ngSecret" not in log
    with (
        pytest.raises(poplib.error_proto, match="Invalid login or password"),
        pop(env.main, 10) as p,
    ):
        p.user("alice")
        p.pass_("wrong")
    assert_serves(env.main)


def test_bad_password_with_auth_wait_allows_a_retry(env: Env) -> None:
    env.router.wait = 1
    n = len(env.auth.requests)
    s = connect(env.main)
    greeting_salt(s)
    start = time.monotonic()
    s.sendall(b"USER alice\r\nPASS wrong\r\n")
    assert read_line(s) == b"+OK\r\n"
    assert read_line(s) == REFUSED
    assert time.monotonic() - start >= 0.9  # the client was kept waiting
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_n(s, 2) == b"+OK\r\n+OK Logged in.\r\n"
    assert env.auth.requests[n + 1] == request("plain", "alice", PASS.encode(), attempt=2)
    s.sendall(b"QUIT\r\n")
    assert read_all(s).startswith(b"+OK")


def test_auth_wait_then_a_second_cram_md5(env: Env) -> None:
    """A refused CRAM-MD5 with Auth-Wait, then a good one in the same session
    (nginx commit 9bc13718f: a second CRAM-MD5 attempt used to crash it)."""
    env.router.wait = 1
    n = len(env.auth.requests)
    s = connect(env.main)
    salt = greeting_salt(s)
    bad = cram_md5_login(s, salt, b"alice", b"Wr0ngSecret")
    assert read_line(s) == REFUSED
    good = cram_md5_login(s, salt, b"alice", PASS.encode())
    assert read_line(s) == b"+OK Logged in.\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_all(s).startswith(b"+OK")
    assert env.auth.requests[n : n + 2] == [
        request("cram-md5", "alice", bad, salt=salt + b"\r\n"),
        request("cram-md5", "alice", good, attempt=2, salt=salt + b"\r\n"),
    ]


def test_input_sent_during_auth_wait_is_kept(env: Env) -> None:
    """nginx leaves what the client sends during the wait in the socket and
    handles it once the error is sent."""
    env.router.wait = 1
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"USER alice\r\nPASS Wr0ngSecret\r\n")
    assert read_line(s) == b"+OK\r\n"
    time.sleep(0.2)  # the auth service has answered; mailfront waits
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\nSTAT\r\nQUIT\r\n")
    out = read_all(s)
    head = REFUSED + b"+OK\r\n+OK Logged in.\r\n+OK 3 "
    assert out.startswith(head), out
    assert out.count(b"\r\n") == 5


def test_user_name_with_spaces_is_escaped(env: Env) -> None:
    n = len(env.auth.requests)
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"USER  al ice%\r\nPASS  pass word \r\n")
    assert read_all(s) == b"+OK\r\n" + REFUSED
    # spaces before the argument are skipped, spaces in it kept (even trailing ones)
    assert env.auth.requests[n] == request("plain", "al%20ice%25", b"pass%20word%20")
    env.mf.wait_log(
        'client login failed: "Invalid login or password" while in http auth state, '
        f'client: 127.0.0.1, server: 127.0.0.1:{env.main}, login: "al ice%"'
    )


def test_proxy_pass_error_message(env: Env) -> None:
    """A backend refusing the Auth-Pass: its -ERR reaches the client only with the flag on."""
    env.router.mode = "wrong-pass"
    s = connect(env.passerr)
    assert read_line(s) == b"+OK POP3 ready\r\n"
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    out = read_all(s)
    assert out.startswith(b"+OK\r\n-ERR ") and out.endswith(b"\r\n")
    dovecot_err = out[5:-2].decode()
    assert dovecot_err != "-ERR internal server error"
    env.mf.wait_log(
        f'upstream sent invalid response: "{dovecot_err}" while reading response from '
        f"upstream, client: 127.0.0.1, server: 127.0.0.1:{env.passerr}, "
        f'login: "alice", upstream: 127.0.0.1:{env.dovecot.pop3_port}'
    )
    # flag off: the internal error, and the backend's line in the log only
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_all(s) == b"+OK\r\n" + INTERNAL
    log = wait_re(
        env.mf,
        rf'\[error\] .*upstream sent invalid response: "{re.escape(dovecot_err)}" '
        rf".*server: 127\.0\.0\.1:{env.main}, ",
    )
    assert re.search(rf"\[info\] .*upstream sent invalid response: .*:{env.passerr}, ", log)
    env.router.mode = "ok"
    assert_serves(env.passerr)
    assert_serves(env.main)


# -- what the client sends before the login ---------------------------------------


def test_pipelined_commands(env: Env) -> None:
    s = connect(env.main)
    greeting_salt(s)
    # everything up to the login is nginx's; STAT and QUIT go to Dovecot afterwards
    s.sendall(b"CAPA\r\nNOOP\r\nUSER alice\r\nPASS " + PASS.encode() + b"\r\nSTAT\r\nQUIT\r\n")
    out = read_all(s)
    head = CAPA_MAIN + b"+OK\r\n+OK\r\n+OK Logged in.\r\n"
    assert out.startswith(head)
    rest = out[len(head) :].split(b"\r\n")
    assert rest[0].startswith(b"+OK 3 ")
    assert rest[1].startswith(b"+OK") and rest[2:] == [b""]
    # AUTH PLAIN with its response in the same packet as the next command
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"AUTH PLAIN " + b64(b"\0alice\0" + PASS.encode()) + b"\r\nLIST 3\r\nQUIT\r\n")
    out = read_all(s)
    assert out.startswith(b"+OK Logged in.\r\n+OK 3 ")
    assert out.count(b"\r\n") == 3


def test_pipelined_commands_and_the_128_byte_window(env: Env) -> None:
    """nginx's POP3 buffer is 128 bytes and rewinds only when empty: a pipeline
    whose next command straddles the window's end is a too long command."""
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"NOOP\r\n" * 21 + b"NOOP\r\n")  # 132 bytes: 21 fit, the 22nd straddles
    assert read_all(s) == b"+OK\r\n" * 21 + INVALID
    env.mf.wait_log(f"while in auth state, client: 127.0.0.1, server: 127.0.0.1:{env.main}\n")
    needle = b'client sent too long command "' + b"NOOP\r\n" * 21 + b'NO" while in auth state'
    assert needle in env.mf.log_path.read_bytes()  # the whole window, CRLFs raw as nginx
    # a window emptied by the commands in it starts again from its beginning
    s = connect(env.main)
    greeting_salt(s)
    for _ in range(3):
        s.sendall(b"NOOP\r\n" * 21)
        assert read_n(s, 21) == b"+OK\r\n" * 21
    s.sendall(b"QUIT\r\n")
    assert read_all(s) == b"+OK\r\n"


def test_too_long_command(env: Env) -> None:
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"USER " + b"x" * 200 + b"\r\n")
    assert read_all(s) == INVALID
    env.mf.wait_log(
        'client sent too long command "USER ' + "x" * 123 + '" while in auth state, '
        f"client: 127.0.0.1, server: 127.0.0.1:{env.main}"
    )
    assert_serves(env.main)


def test_bad_base64(env: Env) -> None:
    s = connect(env.main)
    salt = greeting_salt(s)
    s.sendall(b"AUTH PLAIN !!!!\r\n")
    assert read_line(s) == INVALID
    s.sendall(b"AUTH LOGIN\r\n")
    assert read_line(s) == b"+ VXNlcm5hbWU6\r\n"
    s.sendall(b"YWxp*2U=\r\n")
    assert read_line(s) == INVALID
    s.sendall(b"AUTH CRAM-MD5\r\n")
    assert read_line(s) == b"+ " + b64(salt) + b"\r\n"
    s.sendall(b"a\r\n")  # 4n+1 characters
    assert read_line(s) == INVALID
    s.sendall(b"AUTH CRAM-MD5\r\n")
    read_line(s)
    s.sendall(b64(b"alice short") + b"\r\n")
    assert read_line(s) == INVALID
    # four errors of five: the session still logs in
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\nQUIT\r\n")
    out = read_all(s)
    assert out.startswith(b"+OK\r\n+OK Logged in.\r\n+OK")
    log = env.mf.wait_log(f"client logged in, client: 127.0.0.1, server: 127.0.0.1:{env.main}")
    for mech in ("AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5"):
        assert f"client sent invalid base64 encoding in {mech} command while in auth state" in log
    assert "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command" in log


def test_max_errors(env: Env) -> None:
    s = connect(env.short)
    assert read_line(s) == b"+OK POP3 ready\r\n"
    s.sendall(b"FOO\r\n")
    assert read_line(s) == INVALID
    s.sendall(b"USER alice\r\nRETR 1\r\nNOOP\r\n")  # RETR after USER is the second error
    assert read_all(s) == b"+OK\r\n" + INVALID
    env.mf.wait_log(
        "client sent too many invalid commands while in auth state, "
        f"client: 127.0.0.1, server: 127.0.0.1:{env.short}"
    )
    assert_serves(env.short)


def test_errors_of_the_handlers_do_not_count(env: Env) -> None:
    """As nginx: only what the parser refuses counts toward max_errors; bad base64,
    STLS without TLS or APOP when it is off are answered and forgiven."""
    s = connect(env.short)
    read_line(s)
    s.sendall(b"AUTH PLAIN !!!!\r\nSTLS\r\nAPOP alice x\r\nAUTH LOGIN =\r\n*\r\nNOOP\r\n")
    assert read_n(s, 6) == INVALID * 3 + b"+ UGFzc3dvcmQ6\r\n" + INVALID + b"+OK\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_all(s) == b"+OK\r\n"


def test_client_timeout_and_quit(env: Env) -> None:
    s = connect(env.short)
    read_line(s)
    s.sendall(b"NOOP\r\n")
    assert read_line(s) == b"+OK\r\n"
    assert read_all(s) == b""  # timeout 1s, not re-armed by NOOP
    env.mf.wait_log(
        "client timed out (110: Connection timed out) while in auth state, client: 127.0.0.1, "
        f"server: 127.0.0.1:{env.short}"
    )
    s = connect(env.short)
    read_line(s)
    s.sendall(b"CAPA\r\nQUIT\r\nNOOP\r\n")
    assert read_all(s) == (
        b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n+OK\r\n"
    )


# -- timeouts: nginx logs them with the errno text ----------------------------------
#
# Every timeout line of nginx's mail modules is ngx_log_error(..., NGX_ETIMEDOUT, ...),
# which appends " (110: Connection timed out)" before " while <action>"
# (ngx_mail_pop3_handler.c, ngx_mail_proxy_module.c, ngx_mail_auth_http_module.c);
# in the relay the action is "proxying" (ngx_mail_proxy_handler).

ETIMEDOUT = " (110: Connection timed out)"


def test_client_timeout_in_the_auth_state_as_nginx_logs_it(env: Env) -> None:
    s = connect(env.short)
    read_line(s)
    assert read_all(s) == b""
    env.mf.wait_log(
        f"client timed out{ETIMEDOUT} while in auth state, client: 127.0.0.1, "
        f"server: 127.0.0.1:{env.short}",
        deadline=2,
    )


def test_upstream_timeout(env: Env) -> None:
    env.router.mode = "hang-backend"
    s = connect(env.short)
    read_line(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_all(s) == b"+OK\r\n" + INTERNAL
    log = env.mf.wait_log(f"upstream: 127.0.0.1:{env.router.hang_port}")
    assert "upstream timed out" in log
    env.router.mode = "ok"
    assert_serves(env.short)


def test_upstream_timeout_as_nginx_logs_it(env: Env) -> None:
    env.router.mode = "hang-backend"
    s = connect(env.short)
    read_line(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_all(s) == b"+OK\r\n" + INTERNAL
    env.mf.wait_log(
        f"upstream timed out{ETIMEDOUT} while connecting to upstream, client: 127.0.0.1, "
        f'server: 127.0.0.1:{env.short}, login: "alice", '
        f"upstream: 127.0.0.1:{env.router.hang_port}",
        deadline=2,
    )


def test_auth_http_timeout_as_nginx_logs_it(env: Env) -> None:
    s = connect(env.hangauth)
    read_line(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_all(s) == b"+OK\r\n" + INTERNAL
    env.mf.wait_log(
        f"auth http server 127.0.0.1:{env.router.hang_port} timed out{ETIMEDOUT} while in "
        f'http auth state, client: 127.0.0.1, server: 127.0.0.1:{env.hangauth}, login: "alice"',
        deadline=2,
    )


def test_relay_timeout(env: Env) -> None:
    s = connect(env.short)
    read_line(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_n(s, 2) == b"+OK\r\n+OK Logged in.\r\n"
    assert read_all(s) == b""  # proxy_timeout 1s
    wait_re(env.mf, rf'client timed out.*server: 127\.0\.0\.1:{env.short}, login: "alice", ')


def test_relay_timeout_as_nginx_logs_it(env: Env) -> None:
    s = connect(env.short)
    read_line(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\n")
    assert read_n(s, 2) == b"+OK\r\n+OK Logged in.\r\n"
    assert read_all(s) == b""
    env.mf.wait_log(
        f"client timed out{ETIMEDOUT} while proxying, client: 127.0.0.1, "
        f'server: 127.0.0.1:{env.short}, login: "alice", '
        f"upstream: 127.0.0.1:{env.dovecot.pop3_port}",
        deadline=2,
    )


def test_slow_reader_gets_the_whole_big_message(env: Env) -> None:
    """Backpressure in the relay: a client that does not read for a while loses nothing."""
    s = connect(env.main)
    greeting_salt(s)
    s.sendall(b"USER alice\r\nPASS " + PASS.encode() + b"\r\nRETR 3\r\nQUIT\r\n")
    time.sleep(1)
    out = read_all(s)
    head = b"+OK\r\n+OK Logged in.\r\n"
    assert out.startswith(head)
    body = out[len(head) :]
    status, _, body = body.partition(b"\r\n")
    assert status.startswith(b"+OK")
    message, _, rest = body.partition(b"\r\n.\r\n")
    assert rest.startswith(b"+OK")
    assert hashlib.sha256(message + b"\r\n").hexdigest() == BIG_MESSAGE_SHA256


# -- auth_file -------------------------------------------------------------------


def test_auth_file_hashed(env: Env) -> None:
    with pop(env.hashed, 10) as p:
        assert p.getwelcome() == b"+OK POP3 ready"
        p.user("bob")
        assert p.pass_("bobpass") == b"+OK Logged in."
        assert p.retr(1)[1][1] == b"To: bob@example.com"
        p.quit()
    for password in ("wrong", PASS + " "):
        with (
            pytest.raises(poplib.error_proto, match="Invalid login or password"),
            pop(env.hashed, 10) as p,
        ):
            p.user("alice")
            p.pass_(password)
    # AUTH PLAIN; CRAM-MD5 is not enabled here
    s = connect(env.hashed)
    read_line(s)
    s.sendall(b"AUTH CRAM-MD5\r\n")
    assert read_line(s) == INVALID
    s.sendall(b"AUTH PLAIN " + b64(b"\0alice\0" + PASS.encode()) + b"\r\nQUIT\r\n")
    assert read_all(s).startswith(b"+OK Logged in.\r\n+OK")
    assert_serves(env.hashed)


def test_auth_file_apop_and_cram_md5(env: Env) -> None:
    # {PLAIN} entry: APOP and CRAM-MD5 work, the clear password goes to Dovecot
    with pop(env.plainfile, 10) as p:
        assert p.apop("alice", PASS) == b"+OK Logged in."
        assert p.stat()[0] == 3
        p.quit()
    s = connect(env.plainfile)
    salt = greeting_salt(s)
    cram_md5_login(s, salt, b"alice", PASS.encode())
    assert read_line(s) == b"+OK Logged in.\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_all(s).startswith(b"+OK")
    # a wrong digest, and a hashed entry (no digest possible): refused
    with (
        pytest.raises(poplib.error_proto, match="Invalid login or password"),
        pop(env.plainfile, 10) as p,
    ):
        p.apop("alice", "wrong")
    with (
        pytest.raises(poplib.error_proto, match="Invalid login or password"),
        pop(env.plainfile, 10) as p,
    ):
        p.apop("bob", "bobpass")
    # the hashed entry still logs in with USER/PASS
    assert_serves(env.plainfile, "bob", "bobpass")


# -- the README's examples -----------------------------------------------------------


def test_readme_pop3_examples(env: Env) -> None:
    """The README's poplib snippet and curl pop3:// line, run as written against
    mailfront (the quickstart's POP3 port 10110 replaced by this test's)."""
    text = README.read_text()
    snippets = [s for s in re.findall(r"```python\n(.*?)```", text, re.S) if "poplib" in s]
    assert len(snippets) == 1
    code = snippets[0].replace("10110", str(env.hashed))
    assert code != snippets[0]
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "+OK Logged in.\nSubject: Welcome to mailfront\n"
    curl_lines = re.findall(r"^curl pop3://.*$", text, re.M)
    assert len(curl_lines) == 1
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        curl_lines[0].replace("10110", str(env.hashed)) + " -sS",
        shell=True,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    assert out == env.dovecot.messages("alice")[0].data


# -- last: the whole log -------------------------------------------------------------


def test_no_password_in_the_log(env: Env) -> None:
    log = env.mf.log()
    assert "client logged in" in log
    for secret in (*DEMO_USERS.values(), TOKEN, b64(PASS.encode()).decode(), "Wr0ngSecret"):
        assert secret not in log
    assert "Traceback" not in log
    assert env.mf.proc is not None and env.mf.proc.poll() is None
