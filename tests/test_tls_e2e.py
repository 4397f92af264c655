"""TLS end to end: real TLS clients -> mailfront -> a real auth_http service -> Dovecot / Postfix.

One mailfront process serves, for each of IMAP, POP3 and SMTP, a ``listen ... ssl``
server, a ``starttls on`` one, a ``starttls only`` one and two implicit-TLS servers that
ask for client certificates (``ssl_verify_client on`` with a CRL and
``auth_http_pass_client_cert on``; ``optional``).  The certificates come from
``support.certs`` (a CA, a server certificate for 127.0.0.1 and localhost, client
certificates: good, expired, from an unknown CA, revoked).  The clients are curl,
``openssl s_client``, imaplib / poplib / smtplib and raw sockets wrapped with ``ssl``
where the bytes matter (capability lines, CVE-2014-3556).

The auth service routes IMAP and POP3 to the session's Dovecot; SMTP goes to the
session's Postfix (the tests that log in over SMTP take the ``postfix`` fixture, which
needs root; the others run without it).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import imaplib
import os
import poplib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailfront.devtools.dovecot import DEMO_USERS, Dovecot
from mailfront.devtools.postfix import Postfix
from support.authserver import AuthServer
from support.certs import NOW, Issued, Pki
from support.proxy import Mailfront, free_port

PASS = DEMO_USERS["alice"]
HOST = "127.0.0.1"
PROTOCOLS = ("imap", "pop3", "smtp")
KINDS = ("ssl", "tls", "only", "verify", "optional")

GREETING = {
    "imap": b"* OK IMAP4 ready\r\n",
    "pop3": b"+OK POP3 ready\r\n",
    "smtp": b"220 mail.test ESMTP ready\r\n",
}
# nginx's STARTTLS replies (§1.8)
STARTTLS_CMD = {"imap": b"a1 STARTTLS\r\n", "pop3": b"STLS\r\n", "smtp": b"STARTTLS\r\n"}
STARTTLS_OK = {
    "imap": b"a1 OK completed\r\n",
    "pop3": b"+OK\r\n",
    "smtp": b"220 2.0.0 Start TLS\r\n",
}
# ngx_mail_verify_cert's lines (§1.9)
NO_CERT = {
    "imap": b"* BYE No required SSL certificate\r\n",
    "pop3": b"-ERR No required SSL certificate\r\n",
    "smtp": b"421 4.7.1 No required SSL certificate\r\n",
}

# the capability lines: before TLS (starttls on / only) and after it (§1.8)
IMAP_CAPA = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN"
POP3_HEAD = b"+OK Capability list follows\r\n"
SMTP_HEAD = b"250-mail.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
CAPABILITIES = {
    ("imap", "plain"): IMAP_CAPA + b"\r\na0 OK completed\r\n",
    ("imap", "on"): IMAP_CAPA + b" STARTTLS\r\na0 OK completed\r\n",
    ("imap", "only"): b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\n"
    b"a0 OK completed\r\n",
    ("pop3", "plain"): POP3_HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n",
    ("pop3", "on"): POP3_HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n",
    ("pop3", "only"): POP3_HEAD + b"TOP\r\nUIDL\r\nSTLS\r\n.\r\n",
    ("smtp", "plain"): SMTP_HEAD + b"250 AUTH PLAIN LOGIN\r\n",
    ("smtp", "on"): SMTP_HEAD + b"250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
    ("smtp", "only"): SMTP_HEAD + b"250 STARTTLS\r\n",
}
CAPA_CMD = {"imap": b"a0 CAPABILITY\r\n", "pop3": b"CAPA\r\n", "smtp": b"EHLO client.test\r\n"}


class Router:
    """The auth service: alice's password, routed by Auth-Protocol."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.ports = {"imap": dovecot.imap_port, "pop3": dovecot.pop3_port}

    def __call__(self, h: dict[str, str]) -> list[tuple[str, str]]:
        port = self.ports.get(h.get("auth-protocol", ""))
        if port is None:
            return [("Auth-Status", "no backend for this protocol")]
        if h.get("auth-pass") != DEMO_USERS.get(h.get("auth-user", "")):
            return [("Auth-Status", "Invalid login or password")]
        return [("Auth-Status", "OK"), ("Auth-Server", HOST), ("Auth-Port", str(port))]


@dataclass
class Env:
    mf: Mailfront
    auth: AuthServer
    router: Router
    pki: Pki
    server: Issued
    clients: dict[str, Issued]
    ports: dict[str, int] = field(default_factory=dict)

    def port(self, protocol: str, kind: str) -> int:
        return self.ports[f"{protocol}_{kind}"]

    def ctx(
        self, client: str | None = None, version: ssl.TLSVersion | None = None
    ) -> ssl.SSLContext:
        """A client context that trusts the test CA (and checks 127.0.0.1 in the certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.path))
        if client is not None:
            c = self.clients[client]
            ctx.load_cert_chain(str(c.cert), str(c.key))
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def requests_since(self, n: int, count: int = 1) -> list[bytes]:
        deadline = time.monotonic() + 5
        while len(self.auth.requests) < n + count:
            assert time.monotonic() < deadline, "no auth request"
            time.sleep(0.01)
        return self.auth.requests[n:]


def _server_block(env_ports: dict[str, int], pki: Pki, crl: Path) -> str:
    verify = f"ssl_client_certificate {pki.ca.path};"
    extra = {
        "ssl": ("ssl", ""),
        "tls": ("", "starttls on;"),
        "only": ("", "starttls only;"),
        "verify": ("ssl", f"ssl_verify_client on; {verify} ssl_crl {crl}; "
                          "auth_http_pass_client_cert on;"),
        "optional": ("ssl", f"ssl_verify_client optional; {verify}"),
    }  # fmt: skip
    out = []
    for protocol in PROTOCOLS:
        for kind, (ssl_flag, lines) in extra.items():
            port = env_ports[f"{protocol}_{kind}"]
            out.append(
                f"server {{ listen {HOST}:{port} {ssl_flag}; protocol {protocol}; {lines} }}"
            )
    # STARTTLS into a server that wants a certificate; a short timeout for handshakes
    out.append(
        f"server {{ listen {HOST}:{env_ports['imap_tlsverify']}; protocol imap; starttls on; "
        f"ssl_verify_client on; {verify} }}"
    )
    out.append(
        f"server {{ listen {HOST}:{env_ports['imap_short']} ssl; protocol imap; timeout 1s; }}"
    )
    return "\n".join(out)


@pytest.fixture(scope="module")
def env(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    server = pki.ca.issue("localhost", HOST, stem="server")
    past = NOW - datetime.timedelta(days=2)
    revoked = pki.client("mallory")
    clients = {
        "good": pki.client("alice"),
        "expired": pki.ca.issue("alice", stem="expired",
                                not_before=past - datetime.timedelta(days=1), not_after=past),
        "unknown": pki.authority("stranger").issue("alice", stem="unknown-ca"),
        "revoked": revoked,
    }  # fmt: skip
    crl = pki.ca.crl([revoked])
    router = Router(dovecot)
    auth = AuthServer(router)
    names = [f"{p}_{k}" for p in PROTOCOLS for k in KINDS] + ["imap_tlsverify", "imap_short"]
    ports = {name: free_port() for name in names}
    block = f"""
    server_name mail.test;
    auth_http {auth.url};
    ssl_certificate {server.cert};
    ssl_certificate_key {server.key};
    smtp_capabilities PIPELINING 8BITMIME;
    {_server_block(ports, pki, crl)}
    """
    mf = Mailfront(tmp_path_factory.mktemp("mf-tls"), block, list(ports.values()))
    with mf:
        yield Env(mf, auth, router, pki, server, clients, ports)
    auth.close()


@pytest.fixture
def smtp_backend(env: Env, postfix: Postfix) -> Postfix:
    env.router.ports["smtp"] = postfix.smtp_port
    return postfix


_open: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _open:
        with contextlib.suppress(OSError):
            _open.pop().close()


# -- helpers ---------------------------------------------------------------------------------


def connect(port: int, timeout: float = 10) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout)
    _open.append(s)
    return s


def read_line(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf


def read_reply(s: socket.socket, protocol: str, cmd: bytes) -> bytes:
    """One whole reply to ``cmd``: IMAP up to the tagged line, CAPA up to ".", SMTP multiline."""
    out = b""
    while True:
        line = read_line(s)
        out += line
        if not line:
            return out
        if protocol == "imap":
            if not line.startswith(b"* "):
                return out
        elif protocol == "pop3":
            if cmd != b"CAPA\r\n" or line == b".\r\n" or line.startswith(b"-ERR"):
                return out
        elif line[3:4] != b"-":
            return out


def read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            c = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not c:
            break
        out += c
    return out


def pending(s: socket.socket, wait: float = 0.3) -> bytes:
    """What arrives within ``wait`` seconds without asking (b"" when nothing does)."""
    s.settimeout(wait)
    try:
        return s.recv(65536)
    except TimeoutError:
        return b""
    finally:
        s.settimeout(10)


def tls_connect(env: Env, port: int, client: str | None = None, **kw: object) -> ssl.SSLSocket:
    tls = env.ctx(client, **kw).wrap_socket(connect(port), server_hostname=HOST)  # type: ignore[arg-type]
    _open.append(tls)
    return tls


def starttls(env: Env, protocol: str, port: int, client: str | None = None) -> ssl.SSLSocket:
    """Greeting, the STARTTLS command and its reply, then the handshake."""
    s = connect(port)
    assert read_line(s) == GREETING[protocol]
    s.sendall(STARTTLS_CMD[protocol])
    assert read_reply(s, protocol, b"") == STARTTLS_OK[protocol]
    tls = env.ctx(client).wrap_socket(s, server_hostname=HOST)
    _open.append(tls)
    return tls


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def run(*args: str, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)


def s_client(env: Env, port: int, *args: str, stdin: bytes = b"") -> str:
    """``openssl s_client`` that sends ``stdin`` (CRLF line ends) and waits for the close."""
    out = run(
        tool("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(env.pki.ca.path),
        "-verify_return_error", "-ign_eof", "-crlf", *args, stdin=stdin,
    )  # fmt: skip
    return out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")


def subject(tag: str) -> str:
    return f"tls-{tag}-{time.monotonic_ns()}"


def message(subj: str) -> bytes:
    return (
        f"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: {subj}\r\n\r\n"
        "sent over TLS\r\n"
    ).encode()


def delivered(postfix: Postfix, subj: str) -> bytes:
    deadline = time.monotonic() + 15
    while True:
        for m in postfix.messages("bob"):
            if f"Subject: {subj}".encode() in m:
                return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{subj} not delivered:\n{postfix.log_text()[-3000:]}")
        time.sleep(0.05)


def ssl_headers(sock: ssl.SSLSocket) -> bytes:
    """What nginx adds for a TLS session without client certificates (§1.6)."""
    cipher = sock.cipher()
    version = sock.version()
    assert cipher is not None and version is not None
    return (
        b"Auth-SSL: on\r\nAuth-SSL-Protocol: " + version.encode() + b"\r\n"
        b"Auth-SSL-Cipher: " + cipher[0].encode() + b"\r\n"
    )


def login_request(protocol: str, ssl_part: bytes = b"", attempt: int = 1) -> bytes:
    host = b"Client-Host: [UNAVAILABLE]\r\n" if protocol == "smtp" else b""
    return (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\n"
        b"Auth-User: alice\r\nAuth-Pass: " + PASS.encode() + b"\r\n"
        b"Auth-Protocol: " + protocol.encode() + b"\r\n"
        b"Auth-Login-Attempt: %d\r\nClient-IP: 127.0.0.1\r\n" % attempt + host + ssl_part + b"\r\n"
    )


LOGIN_CMDS = {
    "imap": [b"a2 LOGIN alice " + PASS.encode() + b"\r\n"],
    "pop3": [b"USER alice\r\n", b"PASS " + PASS.encode() + b"\r\n"],
    "smtp": [b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASS.encode()) + b"\r\n"],
}
LOGIN_OK = {"imap": b"a2 OK ", "pop3": b"+OK", "smtp": b"235 2.0.0 OK\r\n"}


def raw_login(s: socket.socket, protocol: str) -> bytes:
    """Log in with the protocol's plain commands; the last reply."""
    reply = b""
    for cmd in LOGIN_CMDS[protocol]:
        s.sendall(cmd)
        reply = read_reply(s, protocol, cmd)
    return reply


# -- 1. implicit TLS ----------------------------------------------------------------------------


def test_curl_implicit_tls_imaps_pop3s(env: Env, dovecot: Dovecot) -> None:
    curl = tool("curl")
    ca = str(env.pki.ca.path)
    first = dovecot.messages("alice")[0]
    out = run(curl, "-sS", "--cacert", ca, "-u", f"alice:{PASS}",
              f"imaps://{HOST}:{env.port('imap', 'ssl')}/INBOX;UID={first.uid}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == first.data
    out = run(curl, "-sS", "--cacert", ca, "-u", f"alice:{PASS}",
              f"pop3s://{HOST}:{env.port('pop3', 'ssl')}/1")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == first.data
    # curl checks the name: localhost is in the certificate too, another name is not
    port = env.port("imap", "ssl")
    out = run(curl, "-sS", "--cacert", ca, "--resolve", f"elsewhere.test:{port}:{HOST}",
              "-u", f"alice:{PASS}", f"imaps://elsewhere.test:{port}/")  # fmt: skip
    assert out.returncode == 60, out.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_curl_implicit_tls_smtps(env: Env, smtp_backend: Postfix, tmp_path: Path) -> None:
    curl = tool("curl")
    subj = subject("curl-smtps")
    (tmp_path / "msg").write_bytes(message(subj))
    out = run(
        curl, "-sS", "--cacert", str(env.pki.ca.path), "-u", f"alice:{PASS}",
        f"smtps://{HOST}:{env.port('smtp', 'ssl')}/curl.test",
        "--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.com",
        "--upload-file", str(tmp_path / "msg"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = delivered(smtp_backend, subj)
    assert b"sent over TLS" in got
    assert b"Received: from curl.test (localhost [127.0.0.1])" in got or b"curl.test" in got


def test_imap4_ssl(env: Env) -> None:
    n = len(env.auth.requests)
    port = env.port("imap", "ssl")
    with imaplib.IMAP4_SSL(HOST, port, ssl_context=env.ctx(), timeout=10) as m:
        assert m.welcome == b"* OK IMAP4 ready"
        assert m.capabilities == ("IMAP4", "IMAP4REV1", "UIDPLUS", "AUTH=PLAIN")
        assert m.login("alice", PASS)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        sock = m.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.selected_alpn_protocol() is None  # imaplib offers no ALPN
        headers = ssl_headers(sock)
        m.logout()
    assert env.requests_since(n)[0] == login_request("imap", headers)
    log = env.mf.wait_log(
        f'client logged in, client: 127.0.0.1, server: 127.0.0.1:{port}, login: "alice"'
    )
    assert "using starttls" not in log


def test_pop3_ssl(env: Env) -> None:
    n = len(env.auth.requests)
    p = poplib.POP3_SSL(HOST, env.port("pop3", "ssl"), timeout=10, context=env.ctx())
    try:
        assert p.getwelcome() == b"+OK POP3 ready"
        assert p.capa() == {"TOP": [], "USER": [], "UIDL": [], "SASL": ["PLAIN", "LOGIN"]}
        p.user("alice")
        assert p.pass_(PASS).startswith(b"+OK")
        count, _size = p.stat()
        assert count >= 1
        sock = p.sock
        assert isinstance(sock, ssl.SSLSocket)
        headers = ssl_headers(sock)
    finally:
        p.quit()
    assert env.requests_since(n)[0] == login_request("pop3", headers)


def test_smtp_ssl(env: Env, smtp_backend: Postfix) -> None:
    n = len(env.auth.requests)
    subj = subject("smtp-ssl")
    with smtplib.SMTP_SSL(HOST, env.port("smtp", "ssl"), timeout=20, context=env.ctx()) as s:
        code, banner = s.ehlo("client.test")
        assert (code, banner) == (250, b"mail.test\nPIPELINING\n8BITMIME\nAUTH PLAIN LOGIN")
        assert s.login("alice", PASS) == (235, b"2.0.0 OK")
        assert s.sendmail("alice@example.com", ["bob@example.com"], message(subj)) == {}
        sock = s.sock
        assert isinstance(sock, ssl.SSLSocket)
        headers = ssl_headers(sock)
    assert env.requests_since(n)[0] == login_request("smtp", headers)
    got = delivered(smtp_backend, subj)
    # XCLIENT told Postfix the client's EHLO and address
    assert b"Received: from client.test (" in got


QUIT = {"imap": b"a9 LOGOUT\n", "pop3": b"QUIT\n", "smtp": b"QUIT\n"}
BYE = {"imap": "a9 OK completed", "pop3": "+OK", "smtp": "221 2.0.0 Bye"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_s_client_implicit_tls(env: Env, protocol: str) -> None:
    out = s_client(env, env.port(protocol, "ssl"), "-alpn", protocol, stdin=QUIT[protocol])
    assert "Verify return code: 0 (ok)" in out, out
    assert f"ALPN protocol: {protocol}" in out
    assert GREETING[protocol].decode() in out.replace("\r\n", "\n").replace("\n", "\r\n")
    assert BYE[protocol] in out


RACE = (
    "session.py: for 'listen ... ssl' connection_made() starts the handshake in a task "
    "(_prelude -> loop.start_tls), but uvloop starts reading as soon as connection_made() "
    "returns, one loop iteration before the task runs: a ClientHello already in the socket "
    "goes to Session.data_received as plaintext (greeted is False), which calls "
    "machine.early_input() (AttributeError for IMAP/POP3, '503 5.5.0 Improper use of SMTP "
    "command pipelining' for SMTP) and the client's handshake fails. About 1 connection in "
    "5 hits it on an idle machine; docs/tls.md says loop.create_server(ssl=...) is used"
)


@pytest.mark.xfail(strict=True, reason=RACE)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_hello_waiting_at_accept(env: Env, protocol: str) -> None:
    """The ClientHello is in the socket before mailfront accepts it (the process is
    stopped while the client connects and writes): the handshake must still succeed."""
    assert env.mf.proc is not None
    pid = env.mf.proc.pid
    result: dict[str, object] = {}

    def client(s: socket.socket) -> None:
        try:
            tls = env.ctx().wrap_socket(s, server_hostname=HOST)
            _open.append(tls)
            result["greeting"] = read_line(tls)
        except (OSError, ssl.SSLError) as e:
            result["error"] = e

    os.kill(pid, signal.SIGSTOP)
    try:
        s = connect(env.port(protocol, "ssl"))  # the kernel completes the TCP handshake
        t = threading.Thread(target=client, args=(s,))
        t.start()
        time.sleep(0.2)  # the ClientHello is sent and waits in mailfront's socket
    finally:
        os.kill(pid, signal.SIGCONT)
    t.join(15)
    assert result.get("greeting") == GREETING[protocol], result
