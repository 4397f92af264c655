"""What the OpenSSL engine adds to TLS, end to end with real clients.

One mailfront process serves implicit-TLS servers that differ in one ``ssl_*``
setting each: ``ssl_verify_client optional_no_ca`` (with ``ssl_client_certificate``
and with only ``ssl_trusted_certificate``), ALPN on IMAP, POP3 and SMTP, the session
cache modes and ``ssl_session_timeout``, ``listen ... ssl proxy_protocol`` with
``set_real_ip_from``, ``ssl_verify_depth`` 0 and 2, and ``timeout 1s`` for a handshake
that never starts.  The clients are ``openssl s_client``, imaplib / poplib and raw
sockets wrapped with ``ssl`` (or driven over memory BIOs where a PROXY header must
share a packet with the ClientHello).  Logins go through a real auth_http service
to the session's Dovecot.

Where a test states what nginx does, it was checked against Debian's nginx 1.22.1
with the mail module and the same configuration (OpenSSL 3.0 there, and here: mailfront
runs the system's OpenSSL).
"""

from __future__ import annotations

import datetime
import imaplib
import poplib
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailfront.devtools.dovecot import DEMO_USERS, Dovecot
from support import net, tlsenv
from support.authserver import AuthServer, PasswordRouter
from support.certs import NOW, Issued, Pki
from support.net import OPEN, close_all, read_all, read_line
from support.proxy import Mailfront, free_port
from support.tlsenv import CERT_ERROR, GREETING, BioClient, cert_headers, self_signed, x509_field
from support.tools import tool

PASS = DEMO_USERS["alice"]
HOST = "127.0.0.1"
PROTOCOLS = ("imap", "pop3", "smtp")

# what s_client sends (-crlf makes the line ends CRLF) and the last reply line
QUIT = {"imap": b"a9 LOGOUT\n", "pop3": b"QUIT\n", "smtp": b"QUIT\n"}
BYE = {"imap": "a9 OK completed", "pop3": "+OK", "smtp": "221 2.0.0 Bye"}

# one server per setting under test (protocol, listen flags, directives)
SERVERS = {
    "imap": ("imap", "ssl", ""),
    "pop3": ("pop3", "ssl", ""),
    "smtp": ("smtp", "ssl", ""),
    "noca_imap": ("imap", "ssl", "ssl_verify_client optional_no_ca; ssl_client_certificate {ca};"),
    "noca_pop3": ("pop3", "ssl", "ssl_verify_client optional_no_ca; ssl_client_certificate {ca};"),
    "noca_smtp": ("smtp", "ssl", "ssl_verify_client optional_no_ca; ssl_client_certificate {ca};"),
    "trusted": ("imap", "ssl", "ssl_verify_client optional_no_ca; ssl_trusted_certificate {ca};"),
    "cache": ("imap", "ssl", "ssl_session_tickets off; ssl_session_cache builtin;"),
    "nocache": ("imap", "ssl", "ssl_session_tickets off; ssl_session_cache off;"),
    "short": ("imap", "ssl", "ssl_session_tickets off; ssl_session_cache builtin; "
                             "ssl_session_timeout 3s;"),
    "tickets_short": ("imap", "ssl", "ssl_session_timeout 3s;"),
    "pp": ("imap", "ssl proxy_protocol", "set_real_ip_from 127.0.0.1;"),
    "depth0": ("imap", "ssl", "ssl_verify_client on; ssl_client_certificate {ca}; "
                              "ssl_verify_depth 0;"),
    "depth2": ("imap", "ssl", "ssl_verify_client on; ssl_client_certificate {ca}; "
                              "ssl_verify_depth 2;"),
    "slow": ("imap", "ssl", "timeout 1s;"),
}  # fmt: skip


@dataclass
class Env:
    mf: Mailfront
    auth: AuthServer
    pki: Pki
    clients: dict[str, Issued]
    ports: dict[str, int]

    def ctx(self, client: str | None = None) -> ssl.SSLContext:
        """A client context that trusts the test CA, with one of the client certificates."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.path))
        if client is not None:
            c = self.clients[client]
            ctx.load_cert_chain(str(c.cert), str(c.key))
        return ctx


@pytest.fixture(scope="module")
def env(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    server = pki.ca.issue("localhost", HOST, stem="server")
    past = NOW - datetime.timedelta(days=2)
    clients = {
        "good": pki.client("alice"),
        "expired": pki.ca.issue("alice", stem="expired",
                                not_before=past - datetime.timedelta(days=1), not_after=past),
        "self-signed": self_signed(pki.folder, "alice", "self-signed"),
        # a leaf of an unknown root, sent alone / with its intermediate
        "unknown": pki.authority("stranger").issue("alice", stem="unknown-ca"),
        "unknown-chain": pki.authority("stranger2").child("stranger2-inter")
        .issue("alice", stem="unknown-chain"),
        # leaf <- intermediate <- root (the root is the CA the servers know)
        "chain": pki.ca.child("inter").issue("carol", stem="chain"),
    }  # fmt: skip
    auth = AuthServer(
        PasswordRouter({"imap": dovecot.imap_port, "pop3": dovecot.pop3_port}, DEMO_USERS, HOST)
    )
    ports = {name: free_port() for name in SERVERS}
    servers = "\n".join(
        f"server {{ listen {HOST}:{ports[name]} {flags}; protocol {protocol}; "
        f"{lines.format(ca=pki.ca.path)} }}"
        for name, (protocol, flags, lines) in SERVERS.items()
    )
    block = f"""
    server_name mail.test;
    auth_http {auth.url};
    ssl_certificate {server.cert};
    ssl_certificate_key {server.key};
    {servers}
    """
    mf = Mailfront(tmp_path_factory.mktemp("mf-tls-engine"), block, list(ports.values()))
    with mf:
        yield Env(mf, auth, pki, clients, ports)
    auth.close()


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    close_all()


# -- helpers ---------------------------------------------------------------------------------


def s_client(env: Env, port: int, *args: str, stdin: bytes = b"") -> str:
    """``openssl s_client`` trusting the test CA; sends ``stdin`` and waits for the close."""
    return tlsenv.s_client(port, env.pki.ca.path, *args, stdin=stdin)


def tls_connect(env: Env, port: int, client: str | None = None) -> ssl.SSLSocket:
    tls = env.ctx(client).wrap_socket(net.connect(port), server_hostname=HOST)
    OPEN.append(tls)
    return tls


def ssl_part(version: str | None, cipher: str | None) -> bytes:
    """Auth-SSL, Auth-SSL-Protocol and Auth-SSL-Cipher of a session (§1.6)."""
    assert version is not None and cipher is not None
    return (
        b"Auth-SSL: on\r\nAuth-SSL-Protocol: " + version.encode() + b"\r\n"
        b"Auth-SSL-Cipher: " + cipher.encode() + b"\r\n"
    )


def login_request(protocol: str, ssl_headers: bytes, client_ip: bytes = b"127.0.0.1") -> bytes:
    """nginx's auth_http request for alice's login (IMAP LOGIN, POP3 USER/PASS)."""
    return (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\n"
        b"Auth-User: alice\r\nAuth-Pass: " + PASS.encode() + b"\r\n"
        b"Auth-Protocol: " + protocol.encode() + b"\r\n"
        b"Auth-Login-Attempt: 1\r\nClient-IP: " + client_ip + b"\r\n" + ssl_headers + b"\r\n"
    )


def login(env: Env, protocol: str, port: int, client: str | None) -> bytes:
    """Log alice in with imaplib / poplib over implicit TLS; the Auth-SSL part of the
    request this session must have sent (from the client's view of the session)."""
    ctx = env.ctx(client)
    if protocol == "imap":
        with imaplib.IMAP4_SSL(HOST, port, ssl_context=ctx, timeout=10) as m:
            assert m.welcome == GREETING["imap"].rstrip()
            assert m.login("alice", PASS)[0] == "OK"
            assert m.select("INBOX")[0] == "OK"
            sock = m.sock
            assert isinstance(sock, ssl.SSLSocket)
            version, cipher = sock.version(), sock.cipher()
            m.logout()
    else:
        p = poplib.POP3_SSL(HOST, port, timeout=10, context=ctx)
        try:
            assert p.getwelcome() == GREETING["pop3"].rstrip()
            p.user("alice")
            assert p.pass_(PASS).startswith(b"+OK")
            assert p.stat()[0] >= 1
            sock = p.sock
            assert isinstance(sock, ssl.SSLSocket)
            version, cipher = sock.version(), sock.cipher()
        finally:
            p.quit()
    assert cipher is not None
    return ssl_part(version, cipher[0])


LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (\*\d+) (.*)$")


def conn_lines(env: Env, local_port: int, count: int = 1) -> list[tuple[str, str]]:
    """(level, text) of the log lines of the connection from ``local_port`` (its ``*N``;
    the last such connection, as the kernel may have given that port to an earlier one
    of this module's), once there are ``count`` of them."""
    deadline = time.monotonic() + 5
    while True:
        lines = [m.groups() for m in map(LOG_LINE.match, env.mf.log().split("\n")) if m]
        conn = [n for _, n, text in lines if text.startswith(f"client 127.0.0.1:{local_port} ")]
        out = [(level, text) for level, n, text in lines if conn and n == conn[-1]]
        if len(out) >= count or time.monotonic() > deadline:
            return out
        time.sleep(0.02)


# -- 1. ssl_verify_client optional_no_ca -----------------------------------------------------

# the certificates optional_no_ca lets through, and OpenSSL's verify text for each
# (nginx 1.22.1 sends the same Auth-SSL-Verify values)
UNTRUSTED = {
    "self-signed": b"FAILED:self-signed certificate",  # 18
    "unknown": b"FAILED:unable to verify the first certificate",  # 21: the leaf alone
    "unknown-chain": b"FAILED:unable to get local issuer certificate",  # 20
    "good": b"SUCCESS",
}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("client", list(UNTRUSTED))
def test_optional_no_ca_lets_untrusted_issuers_through(
    env: Env, protocol: str, client: str
) -> None:
    """The login goes on; the auth service learns the verify error and the certificate."""
    n = len(env.auth.requests)
    headers = login(env, protocol, env.ports[f"noca_{protocol}"], client)
    openssl = tool("openssl")
    headers += cert_headers(openssl, env.clients[client], UNTRUSTED[client])
    assert env.auth.requests_since(n)[0] == login_request(protocol, headers)


def test_optional_no_ca_without_a_certificate(env: Env) -> None:
    n = len(env.auth.requests)
    headers = login(env, "imap", env.ports["noca_imap"], None)
    assert env.auth.requests_since(n)[0] == login_request(
        "imap", headers + b"Auth-SSL-Verify: NONE\r\n"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_optional_no_ca_still_refuses_an_expired_certificate(env: Env, protocol: str) -> None:
    """An expired certificate from the known CA is not an "optional" error: the handshake
    completes, then the protocol's cert_error line, the close, and nginx's log line."""
    n = len(env.auth.requests)
    port = env.ports[f"noca_{protocol}"]
    tls = tls_connect(env, port, "expired")
    assert read_all(tls) == CERT_ERROR[protocol]
    env.mf.wait_log(
        "client SSL certificate verify error: (10:certificate has expired) while SSL "
        f"handshaking, client: 127.0.0.1, server: 127.0.0.1:{port}\n"
    )
    assert len(env.auth.requests) == n


def test_trusted_certificate_alone_verifies(env: Env) -> None:
    """``ssl_trusted_certificate`` (no ``ssl_client_certificate``) verifies as well: the
    CA's certificate is SUCCESS, a self-signed one FAILED."""
    openssl = tool("openssl")
    for client in ("good", "self-signed"):
        n = len(env.auth.requests)
        headers = login(env, "imap", env.ports["trusted"], client)
        headers += cert_headers(openssl, env.clients[client], UNTRUSTED[client])
        assert env.auth.requests_since(n)[0] == login_request("imap", headers)


# -- 2. the CA names of ssl_client_certificate -------------------------------------------------


def test_client_certificate_ca_names_are_sent(env: Env) -> None:
    ca_subject = x509_field(tool("openssl"), env.pki.ca.path, "-subject").decode().strip()
    # optional_no_ca, and "on" (which then wants the certificate s_client did not send)
    for name, last in (("noca_imap", BYE["imap"]), ("depth0", "* BYE No required SSL certificate")):
        out = s_client(env, env.ports[name], stdin=QUIT["imap"])
        assert f"Acceptable client certificate CA names\n{ca_subject}\n" in out, out
        assert last in out, out


def test_trusted_certificate_sends_no_ca_names(env: Env) -> None:
    out = s_client(env, env.ports["trusted"], stdin=QUIT["imap"])
    assert "No client certificate CA names sent" in out, out
    assert "Acceptable client certificate CA names" not in out
    assert BYE["imap"] in out


# -- 3. ALPN ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_alpn_selects_the_protocol(env: Env, protocol: str) -> None:
    for offered in (protocol, f"foo,{protocol}"):
        out = s_client(env, env.ports[protocol], "-alpn", offered, stdin=QUIT[protocol])
        assert f"ALPN protocol: {protocol}\n" in out, out
        assert GREETING[protocol].decode().rstrip() in out
        assert BYE[protocol] in out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_alpn_is_fine(env: Env, protocol: str) -> None:
    out = s_client(env, env.ports[protocol], stdin=QUIT[protocol])
    assert "No ALPN negotiated" in out, out
    assert GREETING[protocol].decode().rstrip() in out
    assert BYE[protocol] in out
    tls = tls_connect(env, env.ports[protocol])  # Python's ssl offers no ALPN by default
    assert tls.selected_alpn_protocol() is None
    assert read_line(tls) == GREETING[protocol]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_alpn_mismatch_is_a_fatal_alert(env: Env, protocol: str) -> None:
    port = env.ports[protocol]
    other = "pop3" if protocol == "imap" else "imap"
    for offered in ("foo", other):
        out = s_client(env, port, "-alpn", offered, stdin=QUIT[protocol])
        assert "alert no application protocol" in out and "SSL alert number 120" in out, out
        assert GREETING[protocol].decode().rstrip() not in out
    env.mf.wait_log(
        "SSL_do_handshake() failed (SSL: error:0A0000EB:SSL routines::no application protocol)"
        f" while SSL handshaking, client: 127.0.0.1, server: 127.0.0.1:{port}\n"
    )


# -- 4. session resumption ---------------------------------------------------------------------

VERSIONS = {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}


def handshake(env: Env, name: str, version: str, *args: str) -> str:
    """One s_client session on server ``name``: "New" or "Reused", its whole output checked."""
    out = s_client(env, env.ports[name], version, *args, stdin=QUIT["imap"])
    assert BYE["imap"] in out, out
    m = re.search(rf"^(New|Reused), {VERSIONS[version]}, Cipher is ", out, re.M)
    assert m, out
    return m.group(1)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_builtin_cache_resumes_without_tickets(env: Env, tmp_path: Path, version: str) -> None:
    sess = str(tmp_path / "sess.pem")
    assert handshake(env, "cache", version, "-sess_out", sess) == "New"
    assert handshake(env, "cache", version, "-sess_in", sess) == "Reused"
    if version == "-tls1_2":  # by session id: the server sent no ticket
        out = s_client(env, env.ports["cache"], version, stdin=QUIT["imap"])
        assert "TLS session ticket lifetime hint" not in out, out
        assert not re.search(r"Session-ID: \n", out), out


@pytest.mark.parametrize("version", list(VERSIONS))
def test_cache_off_without_tickets_never_resumes(env: Env, tmp_path: Path, version: str) -> None:
    sess = tmp_path / "sess.pem"
    assert handshake(env, "nocache", version, "-sess_out", str(sess)) == "New"
    if version == "-tls1_2":
        # no session id and no ticket: s_client has no session to write
        assert not sess.exists()
        return
    assert handshake(env, "nocache", version, "-sess_in", str(sess)) == "New"


@pytest.mark.parametrize("version", list(VERSIONS))
def test_default_resumes_through_the_ticket(env: Env, tmp_path: Path, version: str) -> None:
    """nginx's defaults: ``ssl_session_tickets on``, ``ssl_session_cache none``."""
    sess = str(tmp_path / "sess.pem")
    assert handshake(env, "imap", version, "-sess_out", sess) == "New"
    assert handshake(env, "imap", version, "-sess_in", sess) == "Reused"
    if version == "-tls1_2":  # a ticket, and no session id
        out = s_client(env, env.ports["imap"], version, stdin=QUIT["imap"])
        assert "TLS session ticket:\n" in out, out


@pytest.mark.parametrize("version", list(VERSIONS))
def test_session_timeout(env: Env, tmp_path: Path, version: str) -> None:
    """``ssl_session_timeout 3s``: the session resumes at once (within 3 s, which a
    slow machine leaves room for), not once it is older than the timeout (the sleep
    makes it older; nothing is timed).  OpenSSL 3.0 counts whole seconds and lets a
    session live while no more than its timeout has passed: the sleep is over 5 s."""
    sess = str(tmp_path / "sess.pem")
    assert handshake(env, "short", version, "-sess_out", sess) == "New"
    assert handshake(env, "short", version, "-sess_in", sess) == "Reused"
    time.sleep(5.2)
    assert handshake(env, "short", version, "-sess_in", sess) == "New"


@pytest.mark.parametrize("version", list(VERSIONS))
def test_session_timeout_applies_to_tickets(env: Env, tmp_path: Path, version: str) -> None:
    out = s_client(env, env.ports["imap"], version, stdin=QUIT["imap"])
    assert "TLS session ticket lifetime hint: 300 (seconds)" in out, out
    sess = str(tmp_path / "sess.pem")
    assert handshake(env, "tickets_short", version, "-sess_out", sess) == "New"
    assert handshake(env, "tickets_short", version, "-sess_in", sess) == "Reused"
    time.sleep(5.2)
    assert handshake(env, "tickets_short", version, "-sess_in", sess) == "New"


# -- 5. listen ... ssl proxy_protocol ----------------------------------------------------------

PROXY_V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 993\r\n"
PROXY_HEADERS = (
    b"Proxy-Protocol-Addr: 192.0.2.10\r\nProxy-Protocol-Port: 40000\r\n"
    b"Proxy-Protocol-Server-Addr: 198.51.100.1\r\nProxy-Protocol-Server-Port: 993\r\n"
)


def test_proxy_header_then_tls(env: Env) -> None:
    """The header in clear, then the handshake on the same connection (two writes);
    with ``set_real_ip_from 127.0.0.1`` the PROXY source is the client."""
    port = env.ports["pp"]
    s = net.connect(port)
    s.sendall(PROXY_V1)
    tls = env.ctx().wrap_socket(s, server_hostname=HOST)
    OPEN.append(tls)
    assert read_line(tls) == GREETING["imap"]
    n = len(env.auth.requests)
    tls.sendall(b"a1 LOGIN alice " + PASS.encode() + b"\r\n")
    assert read_line(tls).startswith(b"a1 OK ")
    cipher = tls.cipher()
    assert cipher is not None
    expected = login_request(
        "imap", PROXY_HEADERS + ssl_part(tls.version(), cipher[0]), client_ip=b"192.0.2.10"
    )
    assert env.auth.requests_since(n)[0] == expected
    env.mf.wait_log(
        f'client logged in, client: 192.0.2.10, server: 127.0.0.1:{port}, login: "alice"'
    )


def test_proxy_header_and_client_hello_in_one_packet(env: Env) -> None:
    """nginx takes exactly the header from the first read: the ClientHello that came
    with it is the handshake's."""
    port = env.ports["pp"]
    n = len(env.auth.requests)
    tls = BioClient(net.connect(port), env.ctx(), prefix=PROXY_V1, hostname=HOST)
    assert tls.read_line() == GREETING["imap"]
    tls.send(b"a1 LOGIN alice " + PASS.encode() + b"\r\n")
    assert tls.read_line().startswith(b"a1 OK ")
    cipher = tls.obj.cipher()
    assert cipher is not None
    expected = login_request(
        "imap", PROXY_HEADERS + ssl_part(tls.obj.version(), cipher[0]), client_ip=b"192.0.2.10"
    )
    assert env.auth.requests_since(n)[0] == expected


def test_tls_without_proxy_header_is_refused(env: Env) -> None:
    """The ClientHello read as a PROXY header: a broken header (error level), the close,
    no handshake and no greeting."""
    port = env.ports["pp"]
    n = len(env.auth.requests)
    s = net.connect(port)
    local = s.getsockname()[1]
    with pytest.raises(OSError):  # ssl.SSLError (EOF) or a reset, as the close comes
        tls = env.ctx().wrap_socket(s, server_hostname=HOST)
        OPEN.append(tls)
        tls.recv(100)
    lines = conn_lines(env, local, 2)
    assert len(lines) == 2, lines
    assert lines[0] == ("info", f"client 127.0.0.1:{local} connected to 127.0.0.1:{port}")
    level, text = lines[1]
    assert level == "error"
    assert text.startswith('broken header: "'), text
    assert text.endswith(
        f'" while reading PROXY protocol, client: 127.0.0.1, server: 127.0.0.1:{port}'
    ), text
    assert len(env.auth.requests) == n


# -- 6. ssl_verify_depth -----------------------------------------------------------------------


def test_verify_depth_0_refuses_a_chain(env: Env) -> None:
    """leaf <- intermediate (sent by the client) <- root (ssl_client_certificate) with
    ``ssl_verify_depth 0``: cert_error.  ``openssl verify -verify_depth 0`` stops at
    "certificate chain too long" (22) at depth 1; in the handshake the verify callback
    accepts every error (ngx_ssl_verify_callback), the walk does not stop there, and the
    error SSL_get_verify_result keeps at the end is "unable to get local issuer
    certificate" (20).  nginx 1.22.1 logs (20:...) here too, not (22:...)."""
    port = env.ports["depth0"]
    n = len(env.auth.requests)
    tls = tls_connect(env, port, "chain")
    assert read_all(tls) == CERT_ERROR["imap"]
    env.mf.wait_log(
        "client SSL certificate verify error: (20:unable to get local issuer certificate) "
        f"while SSL handshaking, client: 127.0.0.1, server: 127.0.0.1:{port}\n"
    )
    assert len(env.auth.requests) == n


def test_verify_depth_2_takes_the_chain(env: Env) -> None:
    n = len(env.auth.requests)
    headers = login(env, "imap", env.ports["depth2"], "chain")
    headers += cert_headers(tool("openssl"), env.clients["chain"], b"SUCCESS")
    assert env.auth.requests_since(n)[0] == login_request("imap", headers)


# -- 7. "connected" before the handshake -------------------------------------------------------


def test_connected_is_logged_before_the_handshake(env: Env) -> None:
    """A client that connects and sends nothing is logged as connected (no handshake
    has begun), and is closed at ``timeout`` with nothing sent to it.  (mailfront then
    logs "client timed out (110: Connection timed out) while SSL handshaking"; nginx
    does not: see the next test.)"""
    port = env.ports["slow"]
    s = net.connect(port)
    local = s.getsockname()[1]
    env.mf.wait_log(f"client 127.0.0.1:{local} connected to 127.0.0.1:{port}\n")
    assert read_all(s) == b""  # closed at the timeout: no alert, no greeting


def test_handshake_timeout_is_silent_as_in_nginx(env: Env) -> None:
    port = env.ports["slow"]
    s = net.connect(port)
    local = s.getsockname()[1]
    assert read_all(s) == b""
    # a later connection's two lines: what the first one logged is in the file by then
    later = net.connect(port)
    later_port = later.getsockname()[1]
    later.close()
    assert len(conn_lines(env, later_port, 2)) == 2
    assert conn_lines(env, local) == [
        ("info", f"client 127.0.0.1:{local} connected to 127.0.0.1:{port}")
    ]


def test_client_closing_before_the_handshake(env: Env) -> None:
    """Connected, then closed without a byte: nginx's two lines."""
    port = env.ports["slow"]
    s = net.connect(port)
    local = s.getsockname()[1]
    assert conn_lines(env, local) == [
        ("info", f"client 127.0.0.1:{local} connected to 127.0.0.1:{port}")
    ]
    s.close()
    assert conn_lines(env, local, 2) == [
        ("info", f"client 127.0.0.1:{local} connected to 127.0.0.1:{port}"),
        ("info", "peer closed connection in SSL handshake while SSL handshaking, "
                 f"client: 127.0.0.1, server: 127.0.0.1:{port}"),
    ]  # fmt: skip


# -- last: the whole log -----------------------------------------------------------------------


def test_no_traceback_and_still_running(env: Env) -> None:
    assert "Traceback" not in env.mf.output()
    assert PASS not in env.mf.log()
    assert env.mf.proc is not None and env.mf.proc.poll() is None
    # still serving
    tls = tls_connect(env, env.ports["imap"])
    assert read_line(tls) == GREETING["imap"]
