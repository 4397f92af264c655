"""TLS end to end: real TLS clients -> mailfront -> a real auth_http service -> Dovecot / Postfix.

One mailfront process serves, for each of IMAP, POP3 and SMTP, a ``listen ... ssl``
server, a ``starttls on`` one, a ``starttls only`` one, two implicit-TLS servers that
ask for client certificates (``ssl_verify_client on`` with a CRL and
``auth_http_pass_client_cert on``; ``optional``) and a ``starttls on`` server with
``ssl_verify_client on`` and the CRL; plus two IMAP servers with ``timeout 1s``, with
implicit TLS and with STARTTLS (for the handshakes that fail or never finish).  The
certificates come from ``support.certs`` (a CA, a server certificate for 127.0.0.1 and
localhost, client certificates: good, expired, from an unknown CA, revoked).  The
clients are curl, ``openssl s_client``, imaplib / poplib / smtplib and raw sockets
wrapped with ``ssl`` where the bytes matter (capability lines, CVE-2014-3556).

What the tests expect of failed handshakes and bad certificates was compared with
Debian's nginx 1.22.1 (mail module) run with the same kind of configuration: a client
certificate that fails verification completes the handshake and gets the protocol's
cert_error line, and the log lines are nginx's, word for word, after the time, the pid
and the connection number (where mailfront still differs, the test says how: a comment,
or a strict xfail).

The auth service routes IMAP and POP3 to the session's Dovecot; SMTP goes to the
session's Postfix (the tests that log in over SMTP take the ``postfix`` fixture, which
needs root; the others run without it).
"""

from __future__ import annotations

import base64
import datetime
import imaplib
import os
import poplib
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailfront.devtools.dovecot import DEMO_USERS, Dovecot
from mailfront.devtools.postfix import Postfix
from support import net, tlsenv
from support.authserver import AuthServer, PasswordRouter
from support.certs import NOW, Issued, Pki
from support.net import OPEN, close_all, connect, read_all, read_line
from support.proxy import Mailfront, free_port
from support.tlsenv import CERT_ERROR, GREETING, client_hello
from support.tools import tool

PASS = DEMO_USERS["alice"]
HOST = "127.0.0.1"
PROTOCOLS = ("imap", "pop3", "smtp")
KINDS = ("ssl", "tls", "only", "verify", "optional")

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


@dataclass
class Env:
    mf: Mailfront
    auth: AuthServer
    router: PasswordRouter
    pki: Pki
    server: Issued
    clients: dict[str, Issued]
    ports: dict[str, int] = field(default_factory=dict)

    def port(self, protocol: str, kind: str) -> int:
        return self.ports[f"{protocol}_{kind}"]

    def ctx(
        self,
        client: str | None = None,
        version: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
        alpn: list[str] | None = None,
    ) -> ssl.SSLContext:
        """A client context that trusts the test CA (and checks 127.0.0.1 in the certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.path))
        if client is not None:
            c = self.clients[client]
            ctx.load_cert_chain(str(c.cert), str(c.key))
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        if ciphers is not None:
            ctx.set_ciphers(ciphers)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        return ctx


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
    # STARTTLS into a server that wants a certificate (with the CRL)
    for protocol in PROTOCOLS:
        out.append(
            f"server {{ listen {HOST}:{env_ports[f'{protocol}_tlsverify']}; protocol {protocol}; "
            f"starttls on; ssl_verify_client on; {verify} ssl_crl {crl}; }}"
        )
    # a short timeout for the handshakes that never finish
    out.append(
        f"server {{ listen {HOST}:{env_ports['imap_short']} ssl; protocol imap; timeout 1s; }}"
    )
    out.append(
        f"server {{ listen {HOST}:{env_ports['imap_tlsshort']}; protocol imap; starttls on; "
        f"timeout 1s; ssl_verify_client on; {verify} ssl_crl {crl}; }}"
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
    router = PasswordRouter(
        {"imap": dovecot.imap_port, "pop3": dovecot.pop3_port},
        DEMO_USERS,
        HOST,
        unknown="no backend for this protocol",
    )
    auth = AuthServer(router)
    names = [f"{p}_{k}" for p in PROTOCOLS for k in (*KINDS, "tlsverify")] + [
        "imap_short",
        "imap_tlsshort",
    ]
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


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    close_all()


# -- helpers ---------------------------------------------------------------------------------


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
    OPEN.append(tls)
    return tls


def starttls(env: Env, protocol: str, port: int, client: str | None = None) -> ssl.SSLSocket:
    """Greeting, the STARTTLS command and its reply, then the handshake."""
    return starttls_on(env, protocol, connect(port), client)


def starttls_on(
    env: Env,
    protocol: str,
    s: socket.socket,
    client: str | None = None,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLSocket:
    """``starttls`` on a socket already connected (its port is in the log's first line)."""
    assert read_line(s) == GREETING[protocol]
    s.sendall(STARTTLS_CMD[protocol])
    assert read_reply(s, protocol, b"") == STARTTLS_OK[protocol]
    tls = env.ctx(client, version).wrap_socket(s, server_hostname=HOST)
    OPEN.append(tls)
    return tls


TLS_VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}

# a log line: time, level, pid#tid, the connection number and the message
LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: \*(\d+) (.*)$")


def session_log(env: Env, head: str, count: int) -> list[str]:
    """The lines of the session whose first line is ``head`` (see ``connected``), once
    there are ``count`` of them (or after 5 s), as ``[level] message``: the part of a line
    that nginx's and ours must share."""
    deadline = time.monotonic() + 5
    while True:
        lines: list[str] = []
        number = None
        for ln in env.mf.log().splitlines():
            m = LOG_LINE.match(ln)
            if m is None:
                continue
            text = f"[{m[1]}] {m[3]}"
            if text == head:  # the last session of that client port
                number, lines = m[2], [text]
            elif m[2] == number:
                lines.append(text)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def connected(s: socket.socket, port: int) -> str:
    """The first line of a session (ngx_mail_init_connection)."""
    return f"[info] client 127.0.0.1:{s.getsockname()[1]} connected to 127.0.0.1:{port}"


def suffix(port: int, starttls: bool = False) -> str:
    """ngx_mail_log_error's context of a session before login."""
    return f", client: 127.0.0.1{' using starttls' if starttls else ''}, server: 127.0.0.1:{port}"


def run(*args: str, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)


def s_client(env: Env, port: int, *args: str, stdin: bytes = b"") -> str:
    """``openssl s_client`` that refuses an unverified server, sends ``stdin``, waits."""
    return tlsenv.s_client(port, env.pki.ca.path, "-verify_return_error", *args, stdin=stdin)


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
    assert b"Received: from curl.test (unknown [127.0.0.1])" in got


def test_imap4_ssl(env: Env) -> None:
    n = len(env.auth.requests)
    port = env.port("imap", "ssl")
    with imaplib.IMAP4_SSL(HOST, port, ssl_context=env.ctx(), timeout=10) as m:
        assert m.welcome == b"* OK IMAP4 ready"
        assert list(m.capabilities) == ["IMAP4", "IMAP4REV1", "UIDPLUS", "AUTH=PLAIN"]
        assert m.login("alice", PASS)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        sock = m.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.selected_alpn_protocol() is None  # imaplib offers no ALPN
        headers = ssl_headers(sock)
        m.logout()
    assert env.auth.requests_since(n)[0] == login_request("imap", headers)
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
    assert env.auth.requests_since(n)[0] == login_request("pop3", headers)


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
    assert env.auth.requests_since(n)[0] == login_request("smtp", headers)
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


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_hello_waiting_at_accept(env: Env, protocol: str) -> None:
    """The ClientHello is in the socket before mailfront accepts it (the process is
    stopped while the client connects and writes): the handshake must still succeed.
    (Until 1a71066, implicit TLS ran loop.start_tls in a task after the accept and uvloop
    read such a ClientHello as plain text first: about one handshake in five failed.)"""
    assert env.mf.proc is not None
    pid = env.mf.proc.pid
    result: dict[str, object] = {}

    def client(s: socket.socket) -> None:
        try:
            tls = env.ctx().wrap_socket(s, server_hostname=HOST)
            OPEN.append(tls)
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


# -- 2. STARTTLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["tls", "only"])
def test_capabilities_before_and_after_starttls(env: Env, protocol: str, kind: str) -> None:
    """CAPABILITY / CAPA / EHLO as nginx words them before and after TLS; no second greeting."""
    mode = "on" if kind == "tls" else "only"
    s = connect(env.port(protocol, kind))
    assert read_line(s) == GREETING[protocol]
    cmd = CAPA_CMD[protocol]
    s.sendall(cmd)
    assert read_reply(s, protocol, cmd) == CAPABILITIES[(protocol, mode)]
    s.sendall(STARTTLS_CMD[protocol])
    assert read_reply(s, protocol, b"") == STARTTLS_OK[protocol]
    tls = env.ctx().wrap_socket(s, server_hostname=HOST)
    OPEN.append(tls)
    assert pending(tls) == b""  # no greeting after the handshake
    tls.sendall(cmd)
    assert read_reply(tls, protocol, cmd) == CAPABILITIES[(protocol, "plain")]
    # STARTTLS again, inside TLS: an invalid command
    tls.sendall(STARTTLS_CMD[protocol])
    assert read_reply(tls, protocol, b"") == INVALID[protocol].replace(b"a0", b"a1")
    if protocol != "smtp":  # SMTP logs in through Postfix: see test_smtplib_starttls
        assert raw_login(tls, protocol).startswith(LOGIN_OK[protocol])


INVALID = {
    "imap": b"a0 BAD invalid command\r\n",
    "pop3": b"-ERR invalid command\r\n",
    "smtp": b"500 5.5.1 Invalid command\r\n",
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_implicit_tls_has_no_starttls(env: Env, protocol: str) -> None:
    tls = tls_connect(env, env.port(protocol, "ssl"))
    assert read_line(tls) == GREETING[protocol]
    cmd = CAPA_CMD[protocol]
    tls.sendall(cmd)
    assert read_reply(tls, protocol, cmd) == CAPABILITIES[(protocol, "plain")]
    tls.sendall(STARTTLS_CMD[protocol])
    assert read_reply(tls, protocol, b"") == INVALID[protocol].replace(b"a0", b"a1")


# what "starttls only" refuses before TLS, and nginx's reply to each
REFUSED = {
    "imap": [
        (b"a2 LOGIN alice " + PASS.encode() + b"\r\n", b"a2 BAD invalid command\r\n"),
        (b"a3 AUTHENTICATE PLAIN\r\n", b"a3 BAD invalid command\r\n"),
        (b"a4 AUTHENTICATE LOGIN\r\n", b"a4 BAD invalid command\r\n"),
    ],
    "pop3": [
        (b"USER alice\r\n", b"-ERR invalid command\r\n"),
        (b"AUTH PLAIN\r\n", b"-ERR invalid command\r\n"),
        (b"AUTH\r\n", b"-ERR invalid command\r\n"),
        (b"APOP alice 0123456789abcdef0123456789abcdef\r\n", b"-ERR invalid command\r\n"),
    ],
    "smtp": [
        (LOGIN_CMDS["smtp"][0], b"500 5.5.1 Invalid command\r\n"),
        (b"AUTH LOGIN\r\n", b"500 5.5.1 Invalid command\r\n"),
        (b"AUTH\r\n", b"500 5.5.1 Invalid command\r\n"),
    ],
}
# after TLS the same server takes them
AFTER_TLS = {
    "imap": (b"a3 AUTHENTICATE LOGIN\r\n", b"+ VXNlcm5hbWU6\r\n"),
    "pop3": (b"AUTH\r\n", b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
    "smtp": (b"AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_only_refuses_authentication_before_tls(env: Env, protocol: str) -> None:
    n = len(env.auth.requests)
    s = connect(env.port(protocol, "only"))
    assert read_line(s) == GREETING[protocol]
    for cmd, reply in REFUSED[protocol]:
        s.sendall(cmd)
        assert read_line(s) == reply, cmd
    s.sendall(STARTTLS_CMD[protocol])
    assert read_reply(s, protocol, b"") == STARTTLS_OK[protocol]
    tls = env.ctx().wrap_socket(s, server_hostname=HOST)
    OPEN.append(tls)
    cmd, reply = AFTER_TLS[protocol]
    tls.sendall(cmd)
    got = b""
    while len(got) < len(reply):
        chunk = tls.recv(len(reply) - len(got))
        if not chunk:
            break
        got += chunk
    assert got == reply
    time.sleep(0.1)
    assert len(env.auth.requests) == n  # nothing refused reached the auth service


def test_imaplib_starttls(env: Env) -> None:
    n = len(env.auth.requests)
    port = env.port("imap", "only")
    with imaplib.IMAP4(HOST, port, timeout=10) as m:
        assert list(m.capabilities) == [
            "IMAP4",
            "IMAP4REV1",
            "UIDPLUS",
            "STARTTLS",
            "LOGINDISABLED",
        ]
        assert m.starttls(ssl_context=env.ctx())[0] == "OK"
        assert list(m.capabilities) == ["IMAP4", "IMAP4REV1", "UIDPLUS", "AUTH=PLAIN"]
        assert m.login("alice", PASS)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        assert isinstance(m.sock, ssl.SSLSocket)
        headers = ssl_headers(m.sock)
        m.logout()
    assert env.auth.requests_since(n)[0] == login_request("imap", headers)
    env.mf.wait_log(
        f"client logged in, client: 127.0.0.1 using starttls, server: 127.0.0.1:{port}, "
        'login: "alice", upstream: 127.0.0.1:'
    )


def test_poplib_stls(env: Env) -> None:
    n = len(env.auth.requests)
    port = env.port("pop3", "only")
    p = poplib.POP3(HOST, port, timeout=10)
    try:
        assert p.capa() == {"TOP": [], "UIDL": [], "STLS": []}
        assert p.stls(context=env.ctx()) == b"+OK"
        assert p.capa() == {"TOP": [], "USER": [], "UIDL": [], "SASL": ["PLAIN", "LOGIN"]}
        p.user("alice")
        assert p.pass_(PASS).startswith(b"+OK")
        assert p.stat()[0] >= 1
        assert isinstance(p.sock, ssl.SSLSocket)
        headers = ssl_headers(p.sock)
    finally:
        p.quit()
    assert env.auth.requests_since(n)[0] == login_request("pop3", headers)
    env.mf.wait_log(
        f"client logged in, client: 127.0.0.1 using starttls, server: 127.0.0.1:{port}, "
        'login: "alice", upstream: 127.0.0.1:'
    )


def test_smtplib_starttls(env: Env, smtp_backend: Postfix) -> None:
    n = len(env.auth.requests)
    port = env.port("smtp", "only")
    subj = subject("smtplib-starttls")
    with smtplib.SMTP(HOST, port, timeout=20) as s:
        assert s.ehlo("client.test") == (250, b"mail.test\nPIPELINING\n8BITMIME\nSTARTTLS")
        assert s.starttls(context=env.ctx()) == (220, b"2.0.0 Start TLS")
        assert s.ehlo("client.test") == (250, b"mail.test\nPIPELINING\n8BITMIME\nAUTH PLAIN LOGIN")
        assert s.login("alice", PASS) == (235, b"2.0.0 OK")
        assert s.sendmail("alice@example.com", ["bob@example.com"], message(subj)) == {}
        assert isinstance(s.sock, ssl.SSLSocket)
        headers = ssl_headers(s.sock)
    assert env.auth.requests_since(n)[0] == login_request("smtp", headers)
    got = delivered(smtp_backend, subj)
    # the EHLO sent inside TLS is the one replayed to Postfix after XCLIENT
    assert b"Received: from client.test (" in got
    env.mf.wait_log(
        f"client logged in, client: 127.0.0.1 using starttls, server: 127.0.0.1:{port}, "
        'login: "alice", upstream: 127.0.0.1:'
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_s_client_starttls(env: Env, protocol: str) -> None:
    """``openssl s_client -starttls``: it reads the greeting and STARTTLS's reply itself;
    what it prints after the handshake is only the reply to our command, no greeting."""
    out = s_client(env, env.port(protocol, "only"), "-starttls", protocol, stdin=QUIT[protocol])
    assert "Verify return code: 0 (ok)" in out, out
    assert BYE[protocol] in out
    assert GREETING[protocol].decode().strip() not in out


def test_curl_starttls(env: Env, dovecot: Dovecot) -> None:
    curl = tool("curl")
    ca = str(env.pki.ca.path)
    first = dovecot.messages("alice")[0]
    for kind in ("only", "tls"):
        out = run(curl, "-sS", "--ssl-reqd", "--cacert", ca, "-u", f"alice:{PASS}",
                  f"imap://{HOST}:{env.port('imap', kind)}/INBOX;UID={first.uid}")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout == first.data
        out = run(curl, "-sS", "--ssl-reqd", "--cacert", ca, "-u", f"alice:{PASS}",
                  f"pop3://{HOST}:{env.port('pop3', kind)}/1")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout == first.data
    # without --ssl-reqd curl logs in in plain text where nginx lets it ("starttls on")...
    n = len(env.auth.requests)
    out = run(curl, "-sS", "-u", f"alice:{PASS}", f"pop3://{HOST}:{env.port('pop3', 'tls')}/1")
    assert out.returncode == 0 and out.stdout == first.data, out.stderr
    assert env.auth.requests_since(n)[0] == login_request("pop3")  # no Auth-SSL: plain text
    # ... and cannot with "starttls only" (curl: "Login denied", CURLE_LOGIN_DENIED)
    out = run(curl, "-sS", "-u", f"alice:{PASS}", f"imap://{HOST}:{env.port('imap', 'only')}/")
    assert out.returncode == 67, out.stderr


def test_curl_starttls_smtp(env: Env, smtp_backend: Postfix, tmp_path: Path) -> None:
    curl = tool("curl")
    subj = subject("curl-starttls")
    (tmp_path / "msg").write_bytes(message(subj))
    out = run(
        curl, "-sS", "--ssl-reqd", "--cacert", str(env.pki.ca.path), "-u", f"alice:{PASS}",
        f"smtp://{HOST}:{env.port('smtp', 'only')}/curl.test",
        "--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.com",
        "--upload-file", str(tmp_path / "msg"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert b"Received: from curl.test (" in delivered(smtp_backend, subj)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_session_has_no_auth_ssl(
    env: Env, protocol: str, request: pytest.FixtureRequest
) -> None:
    """A login in plain text on a "starttls on" server: no Auth-SSL headers, no
    "using starttls" in its log lines."""
    if protocol == "smtp":
        request.getfixturevalue("smtp_backend")
    n = len(env.auth.requests)
    port = env.port(protocol, "tls")
    line = f"client logged in, client: 127.0.0.1, server: 127.0.0.1:{port}, "
    before = env.mf.log().count(line)
    s = connect(port)
    assert read_line(s) == GREETING[protocol]
    assert raw_login(s, protocol).startswith(LOGIN_OK[protocol])
    assert env.auth.requests_since(n)[0] == login_request(protocol)
    deadline = time.monotonic() + 5
    while env.mf.log().count(line) == before:
        assert time.monotonic() < deadline, env.mf.log()
        time.sleep(0.02)


# -- 3. CVE-2014-3556 --------------------------------------------------------------------------

# STARTTLS with a command pipelined behind it in the same packet, the probe sent inside
# TLS, and the only reply the probe may get: had the pipelined command survived, the
# probe would be answered otherwise (or a login would have started)
PIPELINED = {
    "imap": (
        b"a1 STARTTLS\r\na2 LOGIN alice " + PASS.encode() + b"\r\n",
        b"a3 NOOP\r\n",
        b"a3 OK completed\r\n",
    ),
    "pop3": (
        b"STLS\r\nUSER alice\r\n",
        b"PASS " + PASS.encode() + b"\r\n",
        b"-ERR invalid command\r\n",
    ),
    "smtp": (b"STARTTLS\r\nAUTH LOGIN\r\n", b"YWxpY2U=\r\n", b"500 5.5.1 Invalid command\r\n"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cve_2014_3556_pipelined_plaintext_is_dropped(env: Env, protocol: str) -> None:
    n = len(env.auth.requests)
    s = connect(env.port(protocol, "tls"))
    assert read_line(s) == GREETING[protocol]
    packet, probe, reply = PIPELINED[protocol]
    s.sendall(packet)
    assert read_line(s) == STARTTLS_OK[protocol]
    tls = env.ctx().wrap_socket(s, server_hostname=HOST)
    OPEN.append(tls)
    assert pending(tls) == b""  # no reply to the pipelined command, no greeting
    tls.sendall(probe)
    assert read_line(tls) == reply
    assert pending(tls) == b""
    if protocol == "smtp":  # the session goes on
        tls.sendall(b"AUTH LOGIN\r\n")
        assert read_line(tls) == b"334 VXNlcm5hbWU6\r\n"
    time.sleep(0.1)
    assert len(env.auth.requests) == n


def test_cve_2014_3556_smtp_helo_is_forgotten(env: Env, smtp_backend: Postfix) -> None:
    """nginx clears HELO/EHLO at STARTTLS: a client that does not say EHLO again inside
    TLS has none replayed to Postfix after XCLIENT."""
    subj = subject("helo-forgotten")
    s = connect(env.port("smtp", "tls"))
    assert read_line(s) == GREETING["smtp"]
    s.sendall(b"EHLO before.test\r\n")
    assert read_reply(s, "smtp", b"") == CAPABILITIES[("smtp", "on")]
    s.sendall(b"STARTTLS\r\n")
    assert read_line(s) == STARTTLS_OK["smtp"]
    tls = env.ctx().wrap_socket(s, server_hostname=HOST)
    OPEN.append(tls)
    assert raw_login(tls, "smtp") == b"235 2.0.0 OK\r\n"
    for cmd in (b"MAIL FROM:<alice@example.com>", b"RCPT TO:<bob@example.com>", b"DATA"):
        tls.sendall(cmd + b"\r\n")
        assert read_reply(tls, "smtp", b"")[:1] in b"23", cmd
    tls.sendall(message(subj) + b".\r\n")
    assert read_reply(tls, "smtp", b"").startswith(b"250 ")
    got = delivered(smtp_backend, subj)
    assert b"before.test" not in got
    assert b"Received: from unknown (unknown [127.0.0.1])" in got


# -- 4. client certificates --------------------------------------------------------------------


def escape(value: bytes) -> bytes:
    """nginx's mail_auth escaping of Auth-SSL-Cert: bytes up to the space, and %, as %XX."""
    return b"".join(b"%%%02X" % c if c <= 0x20 or c == 0x25 else bytes([c]) for c in value)


def cert_headers(issued: Issued, with_pem: bool) -> bytes:
    """Auth-SSL-Verify .. Auth-SSL-Cert of a verified certificate, from ``openssl x509``."""
    out = tlsenv.cert_headers(tool("openssl"), issued, b"SUCCESS")
    if with_pem:
        pem = run(tool("openssl"), "x509", "-in", str(issued.cert), "-outform", "PEM").stdout
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----\n")
        out += b"Auth-SSL-Cert: " + escape(pem) + b"\r\n"
    return out


def login_over(tls: ssl.SSLSocket, protocol: str) -> bytes:
    assert read_line(tls) == GREETING[protocol]
    reply = raw_login(tls, protocol)
    assert reply.startswith(LOGIN_OK[protocol]), reply
    return ssl_headers(tls)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_certificate_verified(
    env: Env, protocol: str, request: pytest.FixtureRequest
) -> None:
    """ssl_verify_client on, ssl_crl, auth_http_pass_client_cert on: the facts of the
    certificate as ``openssl x509`` prints them, and its PEM."""
    if protocol == "smtp":
        request.getfixturevalue("smtp_backend")
    n = len(env.auth.requests)
    tls = tls_connect(env, env.port(protocol, "verify"), "good")
    headers = login_over(tls, protocol)
    expected = login_request(protocol, headers + cert_headers(env.clients["good"], True))
    assert env.auth.requests_since(n)[0] == expected
    assert b"Auth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0AMII" in expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_certificate_optional(
    env: Env, protocol: str, request: pytest.FixtureRequest
) -> None:
    """ssl_verify_client optional: with a certificate its facts (no PEM without
    auth_http_pass_client_cert), without one ``Auth-SSL-Verify: NONE``."""
    if protocol == "smtp":
        request.getfixturevalue("smtp_backend")
    port = env.port(protocol, "optional")
    n = len(env.auth.requests)
    headers = login_over(tls_connect(env, port, "good"), protocol)
    expected = login_request(protocol, headers + cert_headers(env.clients["good"], False))
    assert env.auth.requests_since(n)[0] == expected
    n = len(env.auth.requests)
    headers = login_over(tls_connect(env, port), protocol)
    expected = login_request(protocol, headers + b"Auth-SSL-Verify: NONE\r\n")
    assert env.auth.requests_since(n)[0] == expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_required_certificate(env: Env, protocol: str) -> None:
    """ssl_verify_client on, no certificate: the handshake completes, then nginx's
    no_cert line and the close."""
    n = len(env.auth.requests)
    port = env.port(protocol, "verify")
    for version in TLS_VERSIONS:
        s = connect(port)
        head = connected(s, port)
        tls = env.ctx(version=version).wrap_socket(s, server_hostname=HOST)
        OPEN.append(tls)
        assert read_all(tls) == NO_CERT[protocol]
        assert session_log(env, head, 2) == [
            head,
            "[info] client sent no required SSL certificate while SSL handshaking" + suffix(port),
        ]
    assert len(env.auth.requests) == n


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_required_certificate_after_starttls(env: Env, protocol: str) -> None:
    port = env.port(protocol, "tlsverify")
    s = connect(port)
    head = connected(s, port)
    tls = starttls_on(env, protocol, s)
    assert read_all(tls) == NO_CERT[protocol]
    assert session_log(env, head, 2) == [
        head,
        "[info] client sent no required SSL certificate while in starttls state"
        + suffix(port, starttls=True),
    ]
    # with the certificate: the session goes on inside TLS, no greeting again
    tls = starttls(env, protocol, port, "good")
    assert pending(tls) == b""
    cmd = CAPA_CMD[protocol]
    tls.sendall(cmd)
    assert read_reply(tls, protocol, cmd) == CAPABILITIES[(protocol, "plain")]
    if protocol == "imap":  # SMTP logs in through Postfix: see test_client_certificate_verified
        n = len(env.auth.requests)
        assert raw_login(tls, "imap").startswith(LOGIN_OK["imap"])
        expected = ssl_headers(tls) + cert_headers(env.clients["good"], False)
        assert env.auth.requests_since(n)[0] == login_request("imap", expected)


# OpenSSL's verify error for each bad certificate (X509_V_ERR_*, X509_verify_cert_error_string),
# as nginx 1.22.1 logs it for the same certificates.  The unknown CA's certificate comes
# alone, without its issuer: OpenSSL reports 21 for it, not 20
VERIFY_ERRORS = {
    "expired": (10, "certificate has expired"),
    "unknown": (21, "unable to verify the first certificate"),
    "revoked": (23, "certificate revoked"),
}


def verify_error(bad: str, port: int, starttls: bool = False) -> str:
    code, text = VERIFY_ERRORS[bad]
    action = "in starttls state" if starttls else "SSL handshaking"
    line = f"[info] client SSL certificate verify error: ({code}:{text}) while {action}"
    return line + suffix(port, starttls)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["verify", "optional"])
def test_bad_client_certificates(env: Env, protocol: str, kind: str) -> None:
    """A certificate that fails verification on a "listen ... ssl" server, as nginx: the
    handshake completes (TLSv1.2 and TLSv1.3, no alert), the client reads the cert_error
    line and a clean close, the log has the verify error, nothing reaches the auth
    service, and the server goes on serving."""
    port = env.port(protocol, kind)
    n = len(env.auth.requests)
    for bad in VERIFY_ERRORS:
        if bad == "revoked" and kind == "optional":
            continue  # no ssl_crl on that server
        for version in TLS_VERSIONS:
            s = connect(port)
            head = connected(s, port)
            tls = env.ctx(bad, version).wrap_socket(s, server_hostname=HOST)
            OPEN.append(tls)
            assert tls.version() == VERSION_NAMES[version]
            # read_all would raise SSLEOFError on a close without close_notify
            assert read_all(tls) == CERT_ERROR[protocol], (bad, version)
            assert session_log(env, head, 2) == [head, verify_error(bad, port)]
    assert len(env.auth.requests) == n
    if kind == "optional":  # without its CRL the server takes the revoked certificate
        tls = tls_connect(env, port, "revoked")
        assert read_line(tls) == GREETING[protocol]
    # still serving
    tls = tls_connect(env, port, "good")
    assert read_line(tls) == GREETING[protocol]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_client_certificate_after_starttls(env: Env, protocol: str) -> None:
    """After STARTTLS, the same: a completed handshake, the cert_error line, and the
    verify error logged "while in starttls state"."""
    port = env.port(protocol, "tlsverify")
    n = len(env.auth.requests)
    for bad in VERIFY_ERRORS:
        for version in TLS_VERSIONS:
            s = connect(port)
            head = connected(s, port)
            tls = starttls_on(env, protocol, s, bad, version)
            assert tls.version() == VERSION_NAMES[version]
            assert read_all(tls) == CERT_ERROR[protocol], (bad, version)
            assert session_log(env, head, 2) == [
                head,
                verify_error(bad, port, starttls=True),
            ]
    assert len(env.auth.requests) == n


# the handshakes that OpenSSL itself refuses, and what nginx 1.22.1 does with them: the
# client reads a fatal alert before the close, and the session logs OpenSSL's error
REFUSED_HANDSHAKES = [
    pytest.param(
        {"version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-RSA-AES128-GCM-SHA256"},
        "sslv3 alert handshake failure",
        "error:0A0000C1:SSL routines::no shared cipher",  # the server has an ECDSA key
        id="no-shared-cipher",
    ),
    pytest.param(
        {"alpn": ["http/1.1"]},
        "tlsv1 alert no application protocol",  # ngx_mail_ssl_alpn_select
        "error:0A0000EB:SSL routines::no application protocol",
        id="alpn-mismatch",
    ),
]


@pytest.mark.parametrize(("client", "alert", "error"), REFUSED_HANDSHAKES)
def test_refused_handshake_ends_with_an_alert(
    env: Env, client: dict[str, object], alert: str, error: str
) -> None:
    port = env.port("imap", "ssl")
    s = connect(port)
    head = connected(s, port)
    with pytest.raises(ssl.SSLError) as e:
        tls = env.ctx(**client).wrap_socket(s, server_hostname=HOST)  # type: ignore[arg-type]
        OPEN.append(tls)
        tls.recv(100)
    assert alert in str(e.value), e.value
    assert session_log(env, head, 2) == [
        head,
        f"[info] SSL_do_handshake() failed (SSL: {error}) while SSL handshaking" + suffix(port),
    ]


# -- 6. session resumption ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize(("protocol", "kind"), [("imap", "ssl"), ("pop3", "tls"), ("smtp", "ssl")])
def test_s_client_resumes(env: Env, tmp_path: Path, protocol: str, kind: str, version: str) -> None:
    """``-sess_out`` then ``-sess_in``: the second handshake is a resumed one (implicit TLS,
    and STARTTLS for POP3)."""
    args = [version, "-sess_out", str(tmp_path / "sess.pem")]
    if kind == "tls":
        args += ["-starttls", protocol]
    name = version[1:].replace("tls", "TLSv").replace("_", ".")
    out = s_client(env, env.port(protocol, kind), *args, stdin=QUIT[protocol])
    assert f"New, {name}, Cipher is " in out, out
    assert BYE[protocol] in out
    args[1] = "-sess_in"
    out = s_client(env, env.port(protocol, kind), *args, stdin=QUIT[protocol])
    assert f"Reused, {name}, Cipher is " in out, out
    assert BYE[protocol] in out


# -- 7. failed handshakes ----------------------------------------------------------------------
#
# Compared with Debian's nginx 1.22.1 running the same servers: the log lines below are its
# lines, after the time, the pid and the connection number.


def still_serving(env: Env, port: int) -> None:
    with imaplib.IMAP4_SSL(HOST, port, ssl_context=env.ctx(), timeout=10) as m:
        assert m.login("alice", PASS)[0] == "OK"
        m.logout()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"a1 LOGIN alice " + PASS.encode() + b"\r\n",
         "error:0A00010B:SSL routines::wrong version number"),
        (b"GET / HTTP/1.0\r\n\r\n", "error:0A00009C:SSL routines::http request"),
    ],
    ids=["imap-command", "http-request"],
)  # fmt: skip
def test_plain_text_on_a_tls_port(env: Env, data: bytes, error: str) -> None:
    """Plain text where a ClientHello is due: no greeting, no alert, the close, and
    nginx's line with OpenSSL's error (its code too: the same as nginx's OpenSSL 3.0)."""
    port = env.port("imap", "short")
    s = connect(port)
    head = connected(s, port)
    s.sendall(data)
    assert read_all(s) == b""
    assert session_log(env, head, 2) == [
        head,
        f"[info] SSL_do_handshake() failed (SSL: {error}) while SSL handshaking" + suffix(port),
    ]
    still_serving(env, port)


def test_client_refusing_the_certificate(env: Env) -> None:
    """A client that does not trust the server's certificate ends the handshake with an
    "unknown ca" alert; the session logs it as nginx does, with OpenSSL's error data."""
    port = env.port("imap", "short")
    s = connect(port)
    head = connected(s, port)
    other = ssl.create_default_context(cafile=str(env.pki.folder / "stranger.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        OPEN.append(other.wrap_socket(s, server_hostname=HOST))
    assert session_log(env, head, 2) == [
        head,
        "[info] SSL_do_handshake() failed (SSL: error:0A000418:SSL routines::tlsv1 alert "
        "unknown ca:SSL alert number 48) while SSL handshaking" + suffix(port),
    ]


def handshake_sockets(env: Env, mode: str) -> tuple[int, Callable[[], socket.socket], bool]:
    """The port, a maker of sockets about to send a ClientHello, and whether after STARTTLS."""
    if mode == "implicit":
        port = env.port("imap", "short")
        return port, lambda: connect(port), False
    port = env.port("imap", "tlsshort")

    def make() -> socket.socket:
        s = connect(port)
        assert read_line(s) == GREETING["imap"]
        s.sendall(STARTTLS_CMD["imap"])
        assert read_line(s) == STARTTLS_OK["imap"]
        return s

    return port, make, True


def serving_after(env: Env, mode: str, port: int) -> None:
    if mode == "implicit":
        still_serving(env, port)
        return
    tls = starttls(env, "imap", port, "good")
    tls.sendall(b"a0 NOOP\r\n")
    assert read_line(tls) == b"a0 OK completed\r\n"


MODES = ["implicit", "starttls"]


@pytest.mark.parametrize("mode", MODES)
def test_client_closes_mid_handshake(env: Env, mode: str) -> None:
    """Clients that go away during the handshake (nothing sent, part of a ClientHello, half
    of it): nginx's "peer closed connection in SSL handshake" for each."""
    port, make, after_starttls = handshake_sockets(env, mode)
    action = "in starttls state" if after_starttls else "SSL handshaking"
    hello = client_hello()
    for part in (b"", hello[:5], hello[: len(hello) // 2]):
        s = make()
        head = connected(s, port)
        s.sendall(part)
        s.close()
        assert session_log(env, head, 2) == [
            head,
            f"[info] peer closed connection in SSL handshake while {action}"
            + suffix(port, after_starttls),
        ], len(part)
    serving_after(env, mode, port)
    assert "Traceback" not in env.mf.output()


@pytest.mark.parametrize("mode", MODES)
def test_client_resets_mid_handshake(env: Env, mode: str) -> None:
    """A reset during the handshake: after part of a ClientHello (SO_LINGER 0), and after
    all of it with the server's answer unread (the close of a socket with unread data is a
    reset).  nginx logs the errno text too; uvloop reports the reset to connection_lost,
    not eof_received."""
    port, make, after_starttls = handshake_sockets(env, mode)
    action = "in starttls state" if after_starttls else "SSL handshaking"
    hello = client_hello()
    for whole in (False, True):
        s = make()
        head = connected(s, port)
        if whole:
            s.sendall(hello)
            assert s.recv(1) == b"\x16"  # the ServerHello is there; the rest stays unread
        else:
            s.sendall(hello[:20])
            # once accepted (test_reset_before_accept: a reset connection in the queue)
            assert session_log(env, head, 1) == [head]
            net.reset(s)
        s.close()
        assert session_log(env, head, 2) == [
            head,
            "[info] peer closed connection in SSL handshake (104: Connection reset by peer) "
            f"while {action}" + suffix(port, after_starttls),
        ], whole
    serving_after(env, mode, port)


@pytest.mark.xfail(
    strict=True,
    reason="a connection reset while it waits in the accept queue is logged as 'client unix: "
    "connected to ...' and its lines say 'client: unix:' (Session.connection_made takes the "
    "address from getpeername(), which fails with ENOTCONN on it; nginx uses accept()'s)",
)
def test_reset_before_accept(env: Env) -> None:
    """A client that connects, sends part of a ClientHello and resets while mailfront does
    not run (stopped, as in test_client_hello_waiting_at_accept): accept() still returns the
    connection, and nginx 1.22.1 logs its address and the reset."""
    assert env.mf.proc is not None
    port = env.port("imap", "short")
    os.kill(env.mf.proc.pid, signal.SIGSTOP)
    try:
        s = connect(port)  # the kernel completes the TCP handshake
        head = connected(s, port)
        s.sendall(client_hello()[:20])
        net.reset(s)
    finally:
        os.kill(env.mf.proc.pid, signal.SIGCONT)
    assert session_log(env, head, 2) == [
        head,
        "[info] peer closed connection in SSL handshake (104: Connection reset by peer) "
        "while SSL handshaking" + suffix(port),
    ]
    still_serving(env, port)


@pytest.mark.parametrize("mode", MODES)
def test_handshake_that_never_finishes_is_closed(env: Env, mode: str) -> None:
    """``timeout 1s``: a silent client and one that sends half a ClientHello are closed
    once the timeout has passed (not before: the timer cannot fire early)."""
    port, make, _ = handshake_sockets(env, mode)
    start = time.monotonic()
    silent = make()
    half = make()
    half.sendall(client_hello()[:30])
    for s in (half, silent):
        assert s.recv(1) == b""  # the close; the socket's own timeout (10 s) would raise
    assert time.monotonic() - start >= 0.9
    serving_after(env, mode, port)


@pytest.mark.parametrize("mode", MODES)
def test_handshake_timeout_is_not_logged(env: Env, mode: str) -> None:
    """nginx logs nothing when a handshake outlives ``timeout``: ngx_ssl_handshake_handler
    hands the timed-out event to ngx_mail_ssl_handshake_handler, which closes without a
    word (Debian's 1.22.1 alike)."""
    port, make, _ = handshake_sockets(env, mode)
    s = make()
    head = connected(s, port)
    assert s.recv(1) == b""  # the server closes
    # a later session's first line: what the first one logged is in the file by then
    later = net.connect(port)
    later_head = connected(later, port)
    later.close()
    assert session_log(env, later_head, 1)[0] == later_head
    assert session_log(env, head, 1) == [head]


# -- the README's curl lines -------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tls_curl_lines(env: Env, dovecot: Dovecot) -> None:
    """The README's TLS curl lines, run as written (their ports and ca.pem replaced)."""
    section = README.read_text().split("## TLS\n", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^curl .*$", section, re.M)
    assert len(lines) == 2
    tool("curl")
    first = dovecot.messages("alice")[0]
    for line in lines:
        command = (
            line.replace(":993/", f":{env.port('imap', 'ssl')}/")
            .replace(":143/", f":{env.port('imap', 'only')}/")
            .replace("ca.pem", str(env.pki.ca.path))
        )
        assert command != line
        out = run("sh", "-c", command + " -sS")
        assert out.returncode == 0, out.stderr
        assert out.stdout == first.data
    # the second line without --ssl-reqd: curl would not log in in plain text here
    plain = (
        lines[1]
        .replace("--ssl-reqd ", "")
        .replace(":143/", f":{env.port('imap', 'only')}/")
        .replace("ca.pem", str(env.pki.ca.path))
    )
    out = run("sh", "-c", plain + " -sS")
    assert out.returncode == 67, out.stderr  # CURLE_LOGIN_DENIED: LOGINDISABLED


# -- last: the whole log -----------------------------------------------------------------------


def test_log_never_holds_a_password(env: Env) -> None:
    log = env.mf.log()
    assert "client logged in" in log and "using starttls" in log
    for secret in (*DEMO_USERS.values(), base64.b64encode(b"\0alice\0" + PASS.encode()).decode()):
        assert secret not in log
    assert "Traceback" not in env.mf.output()
    assert env.mf.proc is not None and env.mf.proc.poll() is None
