"""SMTP end to end: real clients (smtplib, swaks, curl) -> mailfront -> a real auth_http
service -> a real Postfix (XCLIENT from loopback, AUTH through Dovecot).

Clients connect from 127.0.0.5 while mailfront reaches Postfix from 127.0.0.1,
so an address in Postfix's log can only have come through XCLIENT ADDR.
Every message carries a unique Subject; Postfix's Maildirs are shared by the
whole run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import pytest

from mailfront.devtools.dovecot import DEMO_USERS
from mailfront.devtools.postfix import Postfix
from support.authserver import AuthServer
from support.dnsserver import DnsServer
from support.net import close_all, read_all
from support.net import connect as net_connect
from support.proxy import Mailfront, free_port
from support.tools import tool

CLIENT_IP = "127.0.0.5"  # the clients' source address (not mailfront's)
PASS = DEMO_USERS["alice"]
NAME = "mail.test"  # mailfront's server_name
GREETING = b"220 mail.test ESMTP ready\r\n"


class Router:
    """The auth service's behaviour, switchable per test."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.reset()

    def reset(self) -> None:
        self.mode = "ok"
        self.wait = 0
        self.error_code = ""
        self.backend_pass: str | None = None  # Auth-Pass to return, if any
        self.port: int | None = None  # another backend port
        self.user: str | None = None  # Auth-User to return, if any

    def _ok(self, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        port = self.port if self.port is not None else self.backend_port
        out = [("Auth-Status", "OK"), ("Auth-Server", "127.0.0.1"), ("Auth-Port", str(port))]
        if self.backend_pass is not None:
            out.append(("Auth-Pass", self.backend_pass))
        if self.user is not None:
            out.append(("Auth-User", self.user))
        return out + (extra or [])

    def _fail(self) -> list[tuple[str, str]]:
        out = [("Auth-Status", "Invalid login or password")]
        if self.wait:
            out.append(("Auth-Wait", str(self.wait)))
        if self.error_code:
            out.append(("Auth-Error-Code", self.error_code))
        return out

    def __call__(self, h: dict[str, str]) -> list[tuple[str, str]] | bytes:
        if self.mode == "garbage":
            return b"HTTP/1.0 200 OK\r\nAuth_Status: OK\r\n\r\n"
        method = h.get("auth-method")
        user = h.get("auth-user", "")
        if method == "none":
            return self._ok()
        if method == "external":
            return self._ok() if user in DEMO_USERS else self._fail()
        if method == "cram-md5":
            salt = h.get("auth-salt", "").encode()
            key = DEMO_USERS.get(user, "").encode()
            if h.get("auth-pass") == hmac.new(key, salt, "md5").hexdigest():
                if self.backend_pass is None and self.mode != "no-pass":
                    return self._ok([("Auth-Pass", key.decode())])
                return self._ok()
            return self._fail()
        if h.get("auth-pass") != DEMO_USERS.get(user):
            return self._fail()
        return self._ok()


@dataclass
class Env:
    mf: Mailfront
    auth: AuthServer
    router: Router
    postfix: Postfix
    dns: DnsServer
    ports: dict[str, int] = field(default_factory=dict)

    def port(self, name: str) -> int:
        return self.ports[name]


# the DNS answers the resolver server (when wired) gets for the clients' address
PTR = "5.0.0.127.in-addr.arpa"
PTR_BAD = "6.0.0.127.in-addr.arpa"
ZONE = {
    (PTR, "PTR"): ["client.example.net."],
    ("client.example.net", "A"): [CLIENT_IP],
    ("client.example.net", "AAAA"): "EMPTY",
    # CVE-2026-28753: a PTR name that would inject a line into auth_http and XCLIENT
    (PTR_BAD, "PTR"): [dns.name.Name([b"evil\r\nAuth-Status: OK", b"example", b""])],
}


def _garbage_backend(sock: socket.socket) -> None:
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        with c, contextlib.suppress(OSError):
            c.sendall(b"554 5.3.2 go away\r\n")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def env(postfix: Postfix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    router = Router(postfix.smtp_port)
    auth = AuthServer(router)
    dns_server = DnsServer(ZONE)
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen(16)
    threading.Thread(target=_garbage_backend, args=(garbage,), daemon=True).start()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    names = ["submit", "proxyauth", "proxyauth_xclient", "mx", "delay", "short", "resolver",
             "passerr", "hang"]  # fmt: skip
    ports = {name: free_port() for name in names}
    ports["garbage_backend"] = garbage.getsockname()[1]
    dns_host, dns_port = dns_server.address
    block = f"""
    server_name {NAME};
    auth_http {auth.url};
    smtp_capabilities PIPELINING "SIZE 10240000" 8BITMIME;
    server {{
        listen 127.0.0.1:{ports["submit"]}; protocol smtp;
        smtp_auth plain login cram-md5 external;
    }}
    server {{
        listen 127.0.0.1:{ports["proxyauth"]}; protocol smtp;
        smtp_auth plain login cram-md5; xclient off; proxy_smtp_auth on;
    }}
    server {{
        listen 127.0.0.1:{ports["proxyauth_xclient"]}; protocol smtp;
        proxy_smtp_auth on;
    }}
    server {{ listen 127.0.0.1:{ports["mx"]}; protocol smtp; smtp_auth none; }}
    server {{ listen 127.0.0.1:{ports["delay"]}; protocol smtp; smtp_greeting_delay 1s; }}
    server {{
        listen 127.0.0.1:{ports["short"]}; protocol smtp;
        timeout 1s; max_errors 2; smtp_client_buffer 64;
    }}
    server {{
        listen 127.0.0.1:{ports["resolver"]}; protocol smtp;
        resolver {dns_host}:{dns_port}; resolver_timeout 2s;
    }}
    server {{
        listen 127.0.0.1:{ports["passerr"]}; protocol smtp; proxy_pass_error_message on;
    }}
    server {{
        listen 127.0.0.1:{ports["hang"]}; protocol smtp;
        auth_http 127.0.0.1:{hang.getsockname()[1]}/auth; auth_http_timeout 1s;
    }}
    """
    mf = Mailfront(tmp_path_factory.mktemp("mf-smtp"), block, [ports[n] for n in names])
    with mf:
        yield Env(mf, auth, router, postfix, dns_server, ports)
    auth.close()
    dns_server.close()
    garbage.close()
    hang.close()


@pytest.fixture(autouse=True)
def _reset(env: Env) -> Iterator[None]:
    env.router.reset()
    yield
    close_all()


# -- helpers ---------------------------------------------------------------------------------


def connect(port: int, source: str = CLIENT_IP, timeout: float = 10) -> socket.socket:
    return net_connect(port, source, timeout)


def read_reply(s: socket.socket) -> bytes:
    """One SMTP reply, all its lines."""
    out = b""
    while True:
        line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c:
                return out + line
            line += c
        out += line
        if line[3:4] != b"-":
            return out


def smtp(env: Env, name: str = "submit") -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", env.port(name), timeout=20, source_address=(CLIENT_IP, 0))


def subject(tag: str) -> str:
    return f"{tag}-{time.monotonic_ns()}"


def message(subj: str, body: str = "hello from the e2e tests\r\n") -> bytes:
    return (
        f"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: {subj}\r\n\r\n{body}"
    ).encode()


def delivered(env: Env, user: str, subj: str) -> bytes:
    """The message with this Subject in ``user``'s Maildir (waits for it)."""
    deadline = time.monotonic() + 15
    while True:
        for m in env.postfix.messages(user):
            if f"Subject: {subj}".encode() in m:
                return m
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{subj} not delivered to {user}:\n{env.postfix.log_text()[-3000:]}"
            )
        time.sleep(0.05)


def queue_id_of(env: Env, subj: str) -> str:
    """Postfix's queue id of the delivered message with this Subject."""
    m = delivered(env, "bob", subj)
    for line in m.split(b"\n"):
        if b"with ESMTP" in line and b" id " in line:
            return line.rsplit(b" id ", 1)[1].split(b";")[0].decode()
    raise AssertionError(m[:500])


def auth_request(env: Env, since: int) -> bytes:
    deadline = time.monotonic() + 5
    while len(env.auth.requests) <= since:
        assert time.monotonic() < deadline, "no auth request"
        time.sleep(0.01)
    return env.auth.requests[since]


def write_message(tmp_path: Path, subj: str) -> Path:
    path = tmp_path / "msg.eml"
    path.write_bytes(message(subj))
    return path


# -- submission --------------------------------------------------------------------------------


def test_ehlo_banner_and_plain_submission(env: Env) -> None:
    n = len(env.auth.requests)
    subj = subject("plain")
    with smtp(env) as s:
        code, banner = s.ehlo("client.test")
        assert code == 250
        assert banner == (
            b"mail.test\nPIPELINING\nSIZE 10240000\n8BITMIME\nAUTH PLAIN LOGIN CRAM-MD5 EXTERNAL"
        )
        s.user, s.password = "alice", PASS
        assert s.auth("PLAIN", s.auth_plain) == (235, b"2.0.0 OK")
        assert s.sendmail("alice@example.com", ["bob@example.com", "carol@example.org"],
                          message(subj)) == {}  # fmt: skip
    assert auth_request(env, n) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Auth-Method: plain\r\n"
        b"Auth-User: alice\r\n"
        b"Auth-Pass: " + PASS.encode() + b"\r\n"
        b"Auth-Protocol: smtp\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 127.0.0.5\r\n"
        b"Client-Host: [UNAVAILABLE]\r\n"
        b"\r\n"
    )
    got = delivered(env, "bob", subj)
    assert got.endswith(b"\n\nhello from the e2e tests\n")
    qid = queue_id_of(env, subj)
    # XCLIENT reached Postfix: the client's address and login, not mailfront's
    env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.5], sasl_method=XCLIENT, "
                               "sasl_username=alice")  # fmt: skip
    assert f"{qid}: to=<carol@example.org>, relay=none" in env.postfix.wait_log(
        f"{qid}: to=<carol@example.org>"
    )
    # the client's EHLO, replayed after XCLIENT, and its address
    assert b"Received: from client.test (unknown [127.0.0.5])" in got, got[:400]
    assert b"with ESMTPA id " + qid.encode() in got
    mflog = env.mf.wait_log("proxied session done")
    assert (
        f"client logged in, client: 127.0.0.5, server: 127.0.0.1:{env.port('submit')}, "
        'login: "alice", upstream: 127.0.0.1:' in mflog
    )
    assert PASS not in mflog


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_each_mechanism(env: Env, mech: str) -> None:
    n = len(env.auth.requests)
    subj = subject(f"smtplib-{mech}")
    with smtp(env) as s:
        s.ehlo("client.test")
        s.user, s.password = "alice", PASS
        authobject = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}
        assert s.auth(mech, authobject[mech], initial_response_ok=False) == (235, b"2.0.0 OK")
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    method = {"PLAIN": b"plain", "LOGIN": b"plain", "CRAM-MD5": b"cram-md5"}[mech]
    assert b"Auth-Method: " + method + b"\r\n" in auth_request(env, n)
    qid = queue_id_of(env, subj)
    env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.5], sasl_method=XCLIENT, "
                         "sasl_username=alice")  # fmt: skip


def test_auth_external(env: Env) -> None:
    """EXTERNAL carries a login and no password: XCLIENT LOGIN needs none."""
    n = len(env.auth.requests)
    s = connect(env.port("submit"))
    assert read_reply(s) == GREETING
    s.sendall(b"EHLO client.test\r\n")
    read_reply(s)
    s.sendall(b"AUTH EXTERNAL\r\n")
    assert read_reply(s) == b"334 VXNlcm5hbWU6\r\n"
    s.sendall(base64.b64encode(b"bob") + b"\r\n")
    assert read_reply(s) == b"235 2.0.0 OK\r\n"
    req = auth_request(env, n)
    assert b"Auth-Method: external\r\nAuth-User: bob\r\nAuth-Pass: \r\n" in req
    subj = subject("external")
    s.sendall(b"MAIL FROM:<bob@example.com>\r\n")
    assert read_reply(s).startswith(b"250 ")
    s.sendall(b"RCPT TO:<carol@example.org>\r\n")  # relaying: Postfix trusts XCLIENT LOGIN
    assert read_reply(s).startswith(b"250 ")
    s.sendall(b"DATA\r\n")
    assert read_reply(s).startswith(b"354 ")
    s.sendall(message(subj) + b".\r\n")
    reply = read_reply(s)
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    qid = reply.split()[-1].decode()
    env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.5], sasl_method=XCLIENT, "
                         "sasl_username=bob")  # fmt: skip
    s.sendall(b"QUIT\r\n")
    assert read_reply(s).startswith(b"221 ")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_each_mechanism(env: Env, mech: str) -> None:
    swaks = tool("swaks")
    subj = subject(f"swaks-{mech}")
    out = subprocess.run(
        [
            swaks, "--server", f"127.0.0.1:{env.port('submit')}", "--local-interface", CLIENT_IP,
            "--ehlo", "swaks.test", "--from", "alice@example.com", "--to", "bob@example.com",
            "--auth", mech, "--auth-user", "alice", "--auth-password", PASS,
            "--header", f"Subject: {subj}", "--body", "sent by swaks", "--timeout", "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\n<-  235 2.0.0 OK\n" in out.stdout
    got = delivered(env, "bob", subj)
    assert b"Received: from swaks.test (unknown [127.0.0.5])" in got
    assert b"sent by swaks" in got


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_curl_each_mechanism(env: Env, mech: str, tmp_path: Path) -> None:
    curl = tool("curl")
    subj = subject(f"curl-{mech}")
    out = subprocess.run(
        [
            curl, "-sS", "--max-time", "20", f"smtp://127.0.0.1:{env.port('submit')}/curl.test",
            "--interface", CLIENT_IP, "--login-options", f"AUTH={mech}",
            "-u", f"alice:{PASS}", "--mail-from", "alice@example.com",
            "--mail-rcpt", "bob@example.com", "--upload-file", str(write_message(tmp_path, subj)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = delivered(env, "bob", subj)
    assert b"Received: from curl.test (unknown [127.0.0.5])" in got


def test_multi_megabyte_message(env: Env) -> None:
    subj = subject("big")
    payload = hashlib.shake_256(subj.encode()).digest(4 * 1024 * 1024)
    b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    msg = message(subj, b64)
    assert len(msg) > 5_000_000
    with smtp(env) as s:
        s.login("alice", PASS)
        assert s.sendmail("alice@example.com", ["bob@example.com"], msg) == {}
    got = delivered(env, "bob", subj)
    body = got.split(b"\n\n", 1)[1]
    assert base64.decodebytes(body) == payload


def test_pipelined_submission(env: Env) -> None:
    """EHLO, AUTH, MAIL, RCPT and DATA in one packet: what follows AUTH reaches Postfix."""
    subj = subject("pipelined")
    s = connect(env.port("submit"))
    assert read_reply(s) == GREETING
    ir = base64.b64encode(b"\0alice\0" + PASS.encode())
    s.sendall(
        b"EHLO client.test\r\nAUTH PLAIN " + ir + b"\r\n"
        b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
    )
    assert read_reply(s).startswith(b"250-mail.test\r\n")
    assert read_reply(s) == b"235 2.0.0 OK\r\n"
    assert read_reply(s).startswith(b"250 2.1.0")
    assert read_reply(s).startswith(b"250 2.1.5")
    assert read_reply(s).startswith(b"354 ")
    s.sendall(message(subj) + b".\r\nQUIT\r\n")
    assert read_reply(s).startswith(b"250 2.0.0 Ok: queued")
    assert read_reply(s).startswith(b"221 ")
    delivered(env, "bob", subj)


def test_xclient_login_is_xtext(env: Env) -> None:
    """Auth-User replaces the login; XCLIENT LOGIN= carries it xtext-encoded (1.29.2)."""
    env.router.user = "a+b=c d"
    subj = subject("xtext")
    with smtp(env) as s:
        s.login("alice", PASS)
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    qid = queue_id_of(env, subj)
    env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.5], sasl_method=XCLIENT, "
                         "sasl_username=a+b=c d")  # fmt: skip
    env.mf.wait_log('client logged in, client: 127.0.0.5, server: 127.0.0.1:'
                    f'{env.port("submit")}, login: "a+b=c d"')  # fmt: skip


def test_helo_client(env: Env) -> None:
    """A client that said HELO: XCLIENT, then its HELO replayed (Postfix: SMTP, not ESMTP)."""
    subj = subject("helo")
    s = connect(env.port("submit"))
    read_reply(s)
    s.sendall(b"HELO old.test\r\n")
    assert read_reply(s) == b"250 mail.test\r\n"
    s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASS.encode()) + b"\r\n")
    assert read_reply(s) == b"235 2.0.0 OK\r\n"
    for line in (b"MAIL FROM:<alice@example.com>", b"RCPT TO:<bob@example.com>", b"DATA"):
        s.sendall(line + b"\r\n")
        assert read_reply(s)[:1] in b"23", line
    s.sendall(message(subj) + b".\r\n")
    assert read_reply(s).startswith(b"250 ")
    got = delivered(env, "bob", subj)
    assert b"Received: from old.test (unknown [127.0.0.5])" in got
    assert b"by postfix.test (Postfix) with SMTP id " in got  # HELO: no ESMTP


# -- proxy_smtp_auth ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proxyauth", "proxyauth_xclient"])
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_proxy_smtp_auth(env: Env, name: str, mech: str) -> None:
    """mailfront logs in to Postfix with AUTH PLAIN; Dovecot checks the password again."""
    subj = subject(f"{name}-{mech}")
    with smtp(env, name) as s:
        s.ehlo("client.test")
        s.user, s.password = "alice", PASS
        auth = s.auth_plain if mech == "PLAIN" else s.auth_login
        assert s.auth(mech, auth) == (235, b"2.0.0 OK")
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    got = delivered(env, "bob", subj)
    qid = queue_id_of(env, subj)
    if name == "proxyauth":  # xclient off: Postfix sees mailfront itself
        env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.1], sasl_method=PLAIN, "
                             "sasl_username=alice")  # fmt: skip
        assert b"Received: from mail.test (unknown [127.0.0.1])" in got
    else:  # XCLIENT (no LOGIN=), then AUTH
        env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.5], sasl_method=PLAIN, "
                             "sasl_username=alice")  # fmt: skip
        assert b"Received: from client.test (unknown [127.0.0.5])" in got


def test_proxy_smtp_auth_with_auth_pass_after_cram_md5(env: Env) -> None:
    subj = subject("proxyauth-cram")
    with smtp(env, "proxyauth") as s:
        s.ehlo("client.test")
        s.user, s.password = "alice", PASS
        assert s.auth("CRAM-MD5", s.auth_cram_md5) == (235, b"2.0.0 OK")
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    delivered(env, "bob", subj)


def test_proxy_smtp_auth_without_a_password(env: Env) -> None:
    """CRAM-MD5 and no Auth-Pass: nginx has no password for AUTH PLAIN."""
    env.router.mode = "no-pass"
    with smtp(env, "proxyauth") as s:
        s.ehlo("client.test")
        s.user, s.password = "alice", PASS
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("CRAM-MD5", s.auth_cram_md5)
        assert (e.value.smtp_code, e.value.smtp_error) == (451, b"4.3.2 Internal server error")
    env.mf.wait_log("no password available while sending AUTH to upstream")


def test_proxy_smtp_auth_refused_by_postfix(env: Env) -> None:
    env.router.backend_pass = "wrong"
    s = connect(env.port("proxyauth"))
    read_reply(s)
    s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASS.encode()) + b"\r\n")
    assert read_all(s) == b"451 4.3.2 Internal server error\r\n"
    env.mf.wait_log('upstream sent invalid response: "535 5.7.8 Error: authentication failed')
    env.postfix.wait_log("SASL PLAIN authentication failed")


# -- MX style: smtp_auth none ------------------------------------------------------------------


def test_mx_style_none(env: Env) -> None:
    n = len(env.auth.requests)
    subj = subject("mx")
    with smtp(env, "mx") as s:
        _code, banner = s.ehlo("relay.test")
        assert banner == b"mail.test\nPIPELINING\nSIZE 10240000\n8BITMIME"
        assert s.sendmail("sender@example.org", ["bob@example.com"], message(subj)) == {}
    assert auth_request(env, n) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Auth-Method: none\r\n"
        b"Auth-User: \r\n"
        b"Auth-Pass: \r\n"
        b"Auth-Protocol: smtp\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 127.0.0.5\r\n"
        b"Client-Host: [UNAVAILABLE]\r\n"
        b"Auth-SMTP-Helo: relay.test\r\n"
        b"Auth-SMTP-From: mail FROM:<sender@example.org> size=" + _size(subj) + b"\r\n"
        b"Auth-SMTP-To: rcpt TO:<bob@example.com>\r\n"
        b"\r\n"
    )
    got = delivered(env, "bob", subj)
    assert b"Received: from relay.test (unknown [127.0.0.5])" in got
    qid = queue_id_of(env, subj)
    log = env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.5]\n")
    assert f"{qid}: client=unknown[127.0.0.5], sasl" not in log


def _size(subj: str) -> bytes:
    return str(len(message(subj))).encode()


def test_mx_style_rcpt_replies_come_from_postfix(env: Env) -> None:
    """The first RCPT's reply is Postfix's, whatever it is; the session then relays."""
    s = connect(env.port("mx"))
    read_reply(s)
    s.sendall(b"EHLO relay.test\r\n")
    read_reply(s)
    s.sendall(b"MAIL FROM:<sender@example.org>\r\n")
    assert read_reply(s) == b"250 2.0.0 OK\r\n"  # mailfront's own
    s.sendall(b"RCPT TO:<nobody@example.com>\r\n")
    assert read_reply(s).startswith(b"550 5.1.1 <nobody@example.com>: Recipient address rejected")
    s.sendall(b"RCPT TO:<carol@example.org>\r\n")
    assert read_reply(s) == b"554 5.7.1 <carol@example.org>: Relay access denied\r\n"
    s.sendall(b"RCPT TO:<bob@example.com>\r\n")
    assert read_reply(s) == b"250 2.1.5 Ok\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_reply(s) == b"221 2.0.0 Bye\r\n"
    env.postfix.wait_log("reject: RCPT from unknown[127.0.0.5]: 554 5.7.1 <carol@example.org>")


def test_mx_style_swaks_and_curl(env: Env, tmp_path: Path) -> None:
    swaks, curl = tool("swaks"), tool("curl")
    subj = subject("mx-swaks")
    out = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{env.port('mx')}", "--local-interface", CLIENT_IP,
         "--from", "sender@example.org", "--to", "bob@example.com", "--pipeline",
         "--header", f"Subject: {subj}", "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    delivered(env, "bob", subj)
    subj = subject("mx-curl")
    out = subprocess.run(
        [curl, "-sS", "--max-time", "20", f"smtp://127.0.0.1:{env.port('mx')}/curl.test",
         "--interface", CLIENT_IP, "--mail-from", "sender@example.org",
         "--mail-rcpt", "bob@example.com", "--upload-file", str(write_message(tmp_path, subj))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    delivered(env, "bob", subj)


def test_mx_style_pipelining(env: Env) -> None:
    subj = subject("mx-pipelined")
    s = connect(env.port("mx"))
    read_reply(s)
    s.sendall(
        b"EHLO relay.test\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<alice@example.com>\r\nDATA\r\n"
    )
    assert read_reply(s).startswith(b"250-mail.test")
    assert read_reply(s) == b"250 2.0.0 OK\r\n"
    assert read_reply(s) == b"250 2.1.5 Ok\r\n"
    assert read_reply(s) == b"250 2.1.5 Ok\r\n"
    assert read_reply(s).startswith(b"354 ")
    s.sendall(message(subj) + b".\r\nQUIT\r\n")
    assert read_reply(s).startswith(b"250 2.0.0 Ok: queued")
    assert read_reply(s).startswith(b"221 ")
    delivered(env, "bob", subj)
    delivered(env, "alice", subj)


# -- greeting delay --------------------------------------------------------------------------


def test_greeting_delay(env: Env) -> None:
    s = connect(env.port("delay"))
    start = time.monotonic()
    assert read_reply(s) == GREETING
    assert time.monotonic() - start >= 0.9
    s.sendall(b"EHLO client.test\r\n")
    assert read_reply(s).startswith(b"250-mail.test\r\n")
    s.sendall(b"QUIT\r\n")
    assert read_reply(s) == b"221 2.0.0 Bye\r\n"


def test_talking_before_the_delayed_greeting(env: Env) -> None:
    s = connect(env.port("delay"))
    s.sendall(b"EHLO eager.test\r\nMAIL FROM:<x@example.org>\r\n")
    assert read_all(s) == b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
    env.mf.wait_log('client was rejected before greeting: "EHLO eager.test')


def test_swaks_waits_for_the_delayed_greeting(env: Env) -> None:
    swaks = tool("swaks")
    subj = subject("delay-swaks")
    out = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{env.port('delay')}", "--local-interface", CLIENT_IP,
         "--from", "alice@example.com", "--to", "bob@example.com", "--auth", "LOGIN",
         "--auth-user", "alice", "--auth-password", PASS, "--header", f"Subject: {subj}",
         "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    delivered(env, "bob", subj)


# -- errors ----------------------------------------------------------------------------------


def test_commands_before_login(env: Env) -> None:
    s = connect(env.port("submit"))
    assert read_reply(s) == GREETING
    for command, reply in [
        (b"HELO", b"501 5.5.4 Invalid argument\r\n"),
        (b"HELO a b", b"501 5.5.4 Invalid argument\r\n"),
        (b"HELO client.test", b"250 mail.test\r\n"),
        (b"NOOP", b"250 2.0.0 OK\r\n"),
        (b"RSET", b"250 2.0.0 OK\r\n"),
        (b"MAIL FROM:<alice@example.com>", b"530 5.7.1 Authentication required\r\n"),
        (b"RCPT TO:<bob@example.com>", b"503 5.5.1 Bad sequence of commands\r\n"),
        (b"AUTH", b"501 5.5.4 Invalid argument\r\n"),
        (b"VRFY alice", b"500 5.5.1 Invalid command\r\n"),
        (b"STARTTLS", b"500 5.5.1 Invalid command\r\n"),
        (b"AUTH PLAIN", b"334 \r\n"),
        (b"*", b"500 5.5.1 Invalid command\r\n"),
        (b"AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n"),
        (base64.b64encode(b"alice"), b"334 UGFzc3dvcmQ6\r\n"),
    ]:
        s.sendall(command + b"\r\n")
        assert read_reply(s) == reply, command
    s.sendall(b"*\r\n")  # no cancel in nginx: invalid base64
    assert read_reply(s) == b"500 5.5.1 Invalid command\r\n"
    s.sendall(b"QUIT\r\n")
    assert read_reply(s) == b"221 2.0.0 Bye\r\n"
    assert s.recv(10) == b""
    log = env.mf.wait_log('client was rejected: "MAIL FROM:<alice@example.com>__"')
    assert "client sent invalid base64 encoding in AUTH PLAIN command" in log


@pytest.mark.parametrize(("code", "line"), [("", b"535 5.7.0"), ("535 5.7.8", b"535 5.7.8")])
def test_bad_password_closes(env: Env, code: str, line: bytes) -> None:
    env.router.error_code = code
    s = connect(env.port("submit"))
    read_reply(s)
    s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n")
    assert read_all(s) == line + b" Invalid login or password\r\n"
    env.mf.wait_log('client login failed: "Invalid login or password" while in http auth state')


def test_bad_password_with_auth_wait_allows_a_retry(env: Env) -> None:
    env.router.wait = 1
    n = len(env.auth.requests)
    with smtp(env) as s:
        s.ehlo("client.test")
        s.user, s.password = "alice", "wrong"
        start = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert time.monotonic() - start >= 0.9
        assert (e.value.smtp_code, e.value.smtp_error) == (535, b"5.7.0 Invalid login or password")
        s.password = PASS
        assert s.auth("LOGIN", s.auth_login) == (235, b"2.0.0 OK")
        subj = subject("retry")
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    assert b"Auth-Login-Attempt: 2\r\n" in auth_request(env, n + 1)
    delivered(env, "bob", subj)


def test_swaks_and_curl_see_the_refusal(env: Env, tmp_path: Path) -> None:
    swaks, curl = tool("swaks"), tool("curl")
    out = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{env.port('submit')}", "--local-interface", CLIENT_IP,
         "--from", "alice@example.com", "--to", "bob@example.com", "--auth", "PLAIN",
         "--auth-user", "alice", "--auth-password", "wrong", "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "<** 535 5.7.0 Invalid login or password" in out.stdout
    out = subprocess.run(
        [curl, "-sS", "--max-time", "20", f"smtp://127.0.0.1:{env.port('submit')}",
         "--interface", CLIENT_IP, "-u", "alice:wrong", "--mail-from", "alice@example.com",
         "--mail-rcpt", "bob@example.com", "--upload-file",
         str(write_message(tmp_path, "never"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 67, out.stderr  # CURLE_LOGIN_DENIED


def test_max_errors_and_too_long_command(env: Env) -> None:
    s = connect(env.port("short"))
    read_reply(s)
    s.sendall(b"DATA\r\nFOO\r\n")
    assert read_all(s) == b"500 5.5.1 Invalid command\r\n" * 2
    env.mf.wait_log("client sent too many invalid commands")
    s = connect(env.port("short"))
    read_reply(s)
    s.sendall(b"HELO " + b"x" * 100 + b"\r\n")
    assert read_all(s) == b"500 5.5.1 Invalid command\r\n"
    env.mf.wait_log("client sent too long command")


def test_client_timeout(env: Env) -> None:
    s = connect(env.port("short"))
    assert read_reply(s) == GREETING
    s.sendall(b"NOOP\r\n")
    assert read_reply(s) == b"250 2.0.0 OK\r\n"
    start = time.monotonic()
    assert read_all(s) == b""
    assert time.monotonic() - start < 5
    env.mf.wait_log("client timed out")


def _login_failure(env: Env, port_name: str = "submit") -> bytes:
    s = connect(env.port(port_name))
    read_reply(s)
    s.sendall(b"EHLO client.test\r\n")
    read_reply(s)
    s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PASS.encode()) + b"\r\n")
    return read_all(s)


def test_auth_service_errors(env: Env) -> None:
    env.router.mode = "garbage"
    assert _login_failure(env) == b"451 4.3.2 Internal server error\r\n"
    env.mf.wait_log("sent invalid header in response")
    assert _login_failure(env, "hang") == b"451 4.3.2 Internal server error\r\n"
    env.mf.wait_log("timed out (110: Connection timed out) while in http auth state")


def test_backend_refuses_the_connection(env: Env) -> None:
    env.router.port = free_port()
    assert _login_failure(env) == b"451 4.3.2 Internal server error\r\n"
    env.mf.wait_log("connect() failed (111: Connection refused) while connecting to upstream")


def test_backend_error_greeting(env: Env) -> None:
    env.router.port = env.port("garbage_backend")
    assert _login_failure(env) == b"451 4.3.2 Internal server error\r\n"
    env.mf.wait_log('upstream sent invalid response: "554 5.3.2 go away"')


def test_backend_error_passed_to_the_client(env: Env) -> None:
    """proxy_pass_error_message on: the backend's own error line reaches the client."""
    env.router.port = env.port("garbage_backend")
    assert _login_failure(env, "passerr") == b"554 5.3.2 go away\r\n"


def test_the_proxy_keeps_serving(env: Env) -> None:
    for mode in ("garbage", "ok"):
        env.router.mode = mode
        _login_failure(env)
    with smtp(env) as s:
        s.login("alice", PASS)
        assert s.noop()[0] == 250


def test_client_that_vanishes_mid_login(env: Env) -> None:
    for _ in range(5):
        s = connect(env.port("submit"))
        read_reply(s)
        s.sendall(b"AUTH LOGIN\r\n")
        s.close()
    with smtp(env) as s:
        s.login("alice", PASS)
        assert s.noop()[0] == 250


# -- the resolver ----------------------------------------------------------------------------


def test_resolver_names_the_client(env: Env) -> None:
    n = len(env.auth.requests)
    subj = subject("resolved")
    with smtp(env, "resolver") as s:
        s.ehlo("client.test")
        s.login("alice", PASS)
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    assert b"Client-IP: 127.0.0.5\r\nClient-Host: client.example.net\r\n" in auth_request(env, n)
    qid = queue_id_of(env, subj)
    env.postfix.wait_log(f"{qid}: client=client.example.net[127.0.0.5]")


def test_resolver_refuses_an_injected_ptr_name(env: Env) -> None:
    """CVE-2026-28753: the PTR name holds CRLF; neither auth_http nor XCLIENT may see it."""
    n = len(env.auth.requests)
    subj = subject("cve-2026-28753")
    with smtplib.SMTP(
        "127.0.0.1", env.port("resolver"), timeout=20, source_address=("127.0.0.6", 0)
    ) as s:
        s.ehlo("client.test")
        s.login("alice", PASS)
        s.sendmail("alice@example.com", ["bob@example.com"], message(subj))
    req = auth_request(env, n)
    assert b"Client-IP: 127.0.0.6\r\nClient-Host: [TEMPUNAVAIL]\r\n" in req
    assert b"evil" not in req
    qid = queue_id_of(env, subj)
    log = env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.6]")
    assert "evil" not in log
    env.mf.wait_log('127.0.0.6 resolved to invalid host name "evil\\r\\nAuth-Status: OK.example"'
                    " while in resolving client address")  # fmt: skip


# -- the README's examples -------------------------------------------------------------------


def test_readme_smtp_examples(env: Env) -> None:
    """The README's swaks and curl lines, run as written against mailfront (port 10587
    replaced by this test's, the subjects made unique)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## SMTP submission", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^(?:swaks|printf) .*$", section, re.M)
    assert len(lines) == 2
    tool("swaks")
    tool("curl")
    for line in lines:
        tag = subject("readme")
        command = line.replace("10587", str(env.port("submit"))).replace("hello from", tag)
        assert command.count(tag) == 1 and str(env.port("submit")) in command
        out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        got = delivered(env, "bob", tag)
        qid = queue_id_of(env, tag)
        env.postfix.wait_log(f"{qid}: client=unknown[127.0.0.1], sasl_method=XCLIENT, "
                             "sasl_username=alice")  # fmt: skip
        assert f"Subject: {tag}".encode() in got
