"""The OpenSSL engine: SSL contexts built from configurations, and real handshakes on them.

Each test loads a small configuration with ``mailfront.conf.load``, builds the
server's context with ``tls_openssl.make_context`` (as the master process does)
and runs real handshakes on it.  The server side is mailfront's own
``TLSTransport`` on a uvloop loop in a thread, with what the session does around
a handshake (``check_client_cert``, ``ssl_info``, the rejection line) and no
mail protocol; the client side is Python's ``ssl`` (over a socketpair) or
``openssl s_client`` (over loopback).  Certificates are made by
``tests/support/certs.py``.

The messages of broken files and values were compared with what Debian's
nginx 1.22.1 prints at ``nginx -t`` and with nginx's current sources (which
the spec follows where the two differ).  Where mailfront's message differs,
the test asserts the part they share and says what nginx prints.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gc
import hashlib
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import warnings
from contextlib import redirect_stderr, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfront import conf
from mailfront.cli import main
from mailfront.conf.model import Protocol, ServerConf
from mailfront.conf.tls_support import (
    SCACHE_DEFAULT_BUILTIN,
    SCACHE_NO_BUILTIN,
    SCACHE_NONE,
    SCACHE_OFF,
    SessionCache,
    parse_session_cache,
    tls_enabled,
)
from mailfront.protocol import auth_http
from mailfront.server import libssl, tls
from mailfront.server.tls import Rejection
from mailfront.server.tls_openssl import OpenSSLContext, make_context
from mailfront.server.tls_transport import TLSTransport
from support.certs import Authority, Issued, Pki
from support.tlsenv import self_signed

A = x509.NameAttribute
DER = Encoding.DER

# Python deprecates the TLS 1.0/1.1 names that a client needs to try such
# versions against nginx's ssl_protocols (spec section 1.2): the tests that use
# them say so with this mark.
OLD_TLS = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

# what the server writes after a handshake that passes ngx_mail_verify_cert
HELLO = b"* OK hello\r\n"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def ecdsa(pki: Pki) -> Issued:
    return pki.server("mail.test")


@pytest.fixture(scope="module")
def rsa(pki: Pki) -> Issued:
    return pki.server("mail.test", key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def alice(pki: Pki) -> Issued:
    return pki.client("alice")


def load_server(
    tmp_path: Path, lines: str, protocol: str = "imap", listen: str = "127.0.0.1:10993 ssl"
) -> ServerConf:
    text = (
        "events {}\nmail {\n    auth_http 127.0.0.1:9000/auth;\n    server {\n"
        f"        listen {listen};\n        protocol {protocol};\n        {lines}\n"
        "    }\n}\n"
    )
    path = tmp_path / "conf" / "mailfront.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    config = conf.load(str(path), f"{tmp_path}/", hostname="mx.test")
    assert config.mail is not None
    return config.mail.servers[0]


def certs(*pairs: Issued) -> str:
    return " ".join(f"ssl_certificate {p.cert}; ssl_certificate_key {p.key};" for p in pairs)


def server_ctx(tmp_path: Path, lines: str, **kw: str) -> tuple[OpenSSLContext, ServerConf]:
    server = load_server(tmp_path, lines, **kw)
    return make_context(server, server.protocol.value), server


def refused(tmp_path: Path, lines: str, **kw: str) -> str:
    server = load_server(tmp_path, lines, **kw)
    with pytest.raises(conf.ConfError) as info:
        make_context(server, server.protocol.value)
    return str(info.value)


def options(ctx: OpenSSLContext) -> int:
    """The context's options (``SSL_CTX_get_options``)."""
    return int(libssl.lib.SSL_CTX_get_options(ctx.ctx))


def client_ctx(
    pki: Pki,
    *,
    versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
    ciphers: str | None = None,
    cert: Issued | None = None,
    alpn: list[str] | None = None,
    curve: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca.path))
    if versions is not None:
        ctx.minimum_version, ctx.maximum_version = versions
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


TLS12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
TLS13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)


# ------------------------------------------------------------------ the handshakes


@dataclass
class Result:
    # the server's side
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    reused: bool = False
    rejection: tls.CertRejection | None = None
    info: dict[str, bytes] = field(default_factory=dict)
    server_error: BaseException | None = None
    # the client's side
    client_error: BaseException | None = None
    received: bytes = b""  # what the client read after the handshake, to the close
    server_cert: bytes | None = None  # the certificate the client was shown
    session: ssl.SSLSession | None = None
    # the server's end: its close_notify after HELLO, or (True) an abort, as after a timeout
    server_aborts: bool = False

    @property
    def ok(self) -> bool:
        """Both sides finished the handshake and the connection ended cleanly."""
        return self.server_error is None and self.client_error is None


class OneSession(asyncio.Protocol):
    """What the session does around a handshake, without the mail protocol.

    It hands the accepted transport to a ``TLSTransport`` at once (``listen ...
    ssl``); once the handshake is over it runs ``ngx_mail_verify_cert``
    (``check_client_cert``), collects the Auth-SSL-* facts, writes the
    rejection line or ``HELLO``, and closes (with close_notify).
    """

    def __init__(
        self,
        ctx: OpenSSLContext,
        server: ServerConf,
        out: Result,
        done: asyncio.Future[None],
    ) -> None:
        self.ctx = ctx
        self.server = server
        self.out = out
        self.done = done
        self.tls: TLSTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        raw: Any = transport
        self.tls = TLSTransport(
            raw, self.ctx, self, self.handshake_done, asyncio.get_running_loop()
        )

    def handshake_done(self, exc: BaseException | None) -> None:
        assert self.tls is not None
        out = self.out
        if exc is not None:
            out.server_error = exc
        else:
            facts = self.tls.get_extra_info("ssl_object")
            out.version = facts.version()
            cipher = facts.cipher()
            out.cipher = cipher[0] if cipher else None
            out.alpn = facts.selected_alpn_protocol()
            out.reused = facts.session_reused
            out.rejection = tls.check_client_cert(facts, self.server)
            out.info = tls.ssl_info(facts, self.server)
            if out.server_aborts:  # the last flight and a greeting go out, then the abort
                self.tls.write(HELLO)
                self.tls.abort()
                return
            if out.rejection is None:
                self.tls.write(HELLO)
            else:
                self.tls.write(tls.rejection_line(self.server.protocol, out.rejection.kind))
        self.tls.close()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _serve(sock: socket.socket, ctx: OpenSSLContext, server: ServerConf, out: Result) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    await loop.connect_accepted_socket(lambda: OneSession(ctx, server, out, done), sock=sock)
    await asyncio.wait_for(done, 20)


def serve(sock: socket.socket, ctx: OpenSSLContext, server: ServerConf, out: Result) -> None:
    """One session on a connected socket, on a uvloop loop of its own (as a worker's)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(sock, ctx, server, out))


def read_to_close(s: ssl.SSLSocket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def handshake(
    ctx: OpenSSLContext,
    server: ServerConf,
    client: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
    server_aborts: bool = False,
) -> Result:
    """One TLS session over a socketpair: the server in a thread, the client here."""
    a, b = socket.socketpair()
    b.settimeout(10)
    out = Result(server_aborts=server_aborts)
    thread = threading.Thread(target=serve, args=(a, ctx, server, out))
    thread.start()
    try:
        c = client.wrap_socket(b, server_hostname="mail.test", session=session)
        # TLSv1.2's session and the certificate, before an end that may be abrupt
        out.session = c.session
        out.server_cert = c.getpeercert(binary_form=True)
        try:
            # a TLSv1.3 client learns of a refusal here, after its handshake
            out.received = read_to_close(c)
            out.session = c.session
        finally:
            c.close()
    except (ssl.SSLError, OSError) as e:
        out.client_error = e
    finally:
        b.close()
        thread.join(30)
    assert not thread.is_alive()
    return out


def key_type(der: bytes | None) -> str:
    assert der is not None
    return type(x509.load_der_x509_certificate(der).public_key()).__name__


# ------------------------------------------------------------------ basics


def test_defaults_as_nginx(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    # ngx_ssl_create's options: no server cipher preference by default, no
    # renegotiation, an EOF without close_notify is a plain close
    opts = options(ctx)
    assert not opts & libssl.SSL_OP_CIPHER_SERVER_PREFERENCE
    assert opts & libssl.SSL_OP_NO_RENEGOTIATION
    assert opts & libssl.SSL_OP_IGNORE_UNEXPECTED_EOF
    assert opts & libssl.SSL_OP_NO_COMPRESSION
    assert not opts & libssl.SSL_OP_NO_TICKET
    assert libssl.lib.SSL_CTX_get_verify_mode(ctx.ctx) == libssl.SSL_VERIFY_NONE
    r = handshake(ctx, server, client_ctx(pki))
    assert r.ok, r
    assert r.version == "TLSv1.3" and r.received == HELLO
    assert r.info == {
        auth_http.SSL_PROTOCOL: b"TLSv1.3",
        auth_http.SSL_CIPHER: r.cipher.encode() if r.cipher else b"",
    }
    assert r.rejection is None
    assert r.server_cert == ecdsa.der
    assert handshake(ctx, server, client_ctx(pki, versions=TLS12)).version == "TLSv1.2"


def test_make_context_uses_no_deprecated_api(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    server = load_server(tmp_path, certs(ecdsa) + verify_lines(pki))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_context(server, "imap")
    assert [str(w.message) for w in seen if issubclass(w.category, DeprecationWarning)] == []


def test_starttls_needs_the_same_context(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    server = load_server(tmp_path, "starttls only; " + certs(ecdsa), listen="127.0.0.1:10143")
    assert tls_enabled(server)
    ctx = make_context(server, "imap")
    assert handshake(ctx, server, client_ctx(pki)).ok
    plain = load_server(tmp_path, certs(ecdsa), listen="127.0.0.1:10143")
    assert not tls_enabled(plain)


def test_relative_paths_are_read_from_the_config_folder(
    tmp_path: Path, pki: Pki, ecdsa: Issued
) -> None:
    folder = tmp_path / "conf" / "tls"
    folder.mkdir(parents=True)
    shutil.copy(ecdsa.cert, folder / "server.crt")
    shutil.copy(ecdsa.key, folder / "server.key")
    ctx, server = server_ctx(
        tmp_path, "ssl_certificate tls/server.crt; ssl_certificate_key tls/server.key;"
    )
    assert server.ssl_certificate == (str(folder / "server.crt"),)
    assert server.ssl_certificate_key == (str(folder / "server.key"),)
    assert handshake(ctx, server, client_ctx(pki)).ok


def test_rsa_and_ecdsa_certificates(tmp_path: Path, pki: Pki, rsa: Issued, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(rsa, ecdsa))
    r = handshake(
        ctx, server, client_ctx(pki, versions=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    )
    assert r.ok and r.cipher == "ECDHE-RSA-AES128-GCM-SHA256"
    assert key_type(r.server_cert) == "RSAPublicKey" and r.server_cert == rsa.der
    r = handshake(
        ctx, server, client_ctx(pki, versions=TLS12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    )
    assert r.ok and r.server_cert == ecdsa.der
    # TLSv1.3 picks by signature algorithm; either is fine, both are there
    assert handshake(ctx, server, client_ctx(pki)).ok


# ------------------------------------------------------------------ protocols


def test_protocols(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols TLSv1.2;")
    assert handshake(ctx, server, client_ctx(pki)).version == "TLSv1.2"
    assert not handshake(ctx, server, client_ctx(pki, versions=TLS13)).ok
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols TLSv1.3;")
    r = handshake(ctx, server, client_ctx(pki, versions=TLS12))
    assert not r.ok and isinstance(r.server_error, libssl.Error)
    assert handshake(ctx, server, client_ctx(pki)).version == "TLSv1.3"


@OLD_TLS
def test_old_protocols_and_holes(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    # TLSv1 needs OpenSSL's security level 0, in nginx too (ssl_ciphers @SECLEVEL=0)
    old = "DEFAULT:@SECLEVEL=0"
    v10 = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1)
    v11 = (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1)
    # a hole: TLSv1.1 disabled between the two others, as nginx's SSL_OP_NO_TLSv1_1
    ctx, server = server_ctx(
        tmp_path, certs(ecdsa) + f" ssl_protocols TLSv1 TLSv1.2; ssl_ciphers {old};"
    )
    assert options(ctx) & libssl.SSL_OP_NO_TLSv1_1 and not options(ctx) & libssl.SSL_OP_NO_TLSv1
    r = handshake(ctx, server, client_ctx(pki, versions=v10, ciphers=old))
    assert r.ok and r.version == "TLSv1"
    assert r.info[auth_http.SSL_PROTOCOL] == b"TLSv1"
    assert not handshake(ctx, server, client_ctx(pki, versions=v11, ciphers=old)).ok
    assert handshake(ctx, server, client_ctx(pki)).version == "TLSv1.2"
    # without the security level, no TLSv1 handshake
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols TLSv1;")
    assert not handshake(ctx, server, client_ctx(pki, versions=v10, ciphers=old)).ok
    # the default (TLSv1.2 TLSv1.3) refuses TLSv1.1
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + f" ssl_ciphers {old};")
    assert not handshake(ctx, server, client_ctx(pki, versions=v11, ciphers=old)).ok
    # SSLv3 alone: no version OpenSSL still has, so no handshake at all (nginx alike)
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols SSLv3;")
    assert options(ctx) & libssl.SSL_OP_NO_TLSv1_2 and options(ctx) & libssl.SSL_OP_NO_TLSv1_3
    assert not handshake(ctx, server, client_ctx(pki)).ok


# ------------------------------------------------------------------ ciphers


def test_ciphers(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(
        tmp_path,
        certs(ecdsa) + " ssl_protocols TLSv1.2; ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384;",
    )
    r = handshake(ctx, server, client_ctx(pki))
    assert r.cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert r.info[auth_http.SSL_CIPHER] == b"ECDHE-ECDSA-AES256-GCM-SHA384"
    r = handshake(ctx, server, client_ctx(pki, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert not r.ok
    # nginx -t prints exactly this
    assert refused(tmp_path, certs(ecdsa) + " ssl_ciphers NOPE;") == (
        'SSL_CTX_set_cipher_list("NOPE") failed (SSL: error:0A0000B9:SSL routines::no cipher match)'
    )


def test_ciphers_leave_tls13_alone(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    # as in nginx: ssl_ciphers is SSL_CTX_set_cipher_list, TLSv1.2 and older only
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384;")
    r = handshake(ctx, server, client_ctx(pki))
    assert r.version == "TLSv1.3" and r.cipher is not None and r.cipher.startswith("TLS_")


def test_prefer_server_ciphers(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    server_list = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    client_list = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
    client = client_ctx(pki, versions=TLS12, ciphers=client_list)
    for flag, expected in (("off", "ECDHE-ECDSA-AES128-GCM-SHA256"),
                           ("on", "ECDHE-ECDSA-AES256-GCM-SHA384")):  # fmt: skip
        ctx, server = server_ctx(
            tmp_path,
            certs(ecdsa) + f" ssl_ciphers {server_list}; ssl_prefer_server_ciphers {flag};",
        )
        assert bool(options(ctx) & libssl.SSL_OP_CIPHER_SERVER_PREFERENCE) == (flag == "on")
        assert handshake(ctx, server, client).cipher == expected


def test_dhparam(tmp_path: Path, pki: Pki, rsa: Issued) -> None:
    dh = tmp_path / "dh.pem"
    subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
         "-out", str(dh)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    lines = certs(rsa) + " ssl_protocols TLSv1.2; ssl_ciphers DHE-RSA-AES128-GCM-SHA256;"
    # no DH parameters, no DHE (nginx alike) for a client that offers no RFC 7919 group:
    # the OpenSSL of cryptography (4.x) negotiates one that a client offers (Python's
    # client does, with its default groups), nginx's OpenSSL 3.0 does not
    client = client_ctx(pki, ciphers="DHE-RSA-AES128-GCM-SHA256", curve="prime256v1")
    ctx, server = server_ctx(tmp_path, lines)
    assert not handshake(ctx, server, client).ok
    ctx, server = server_ctx(tmp_path, lines + f" ssl_dhparam {dh};")
    assert handshake(ctx, server, client).cipher == "DHE-RSA-AES128-GCM-SHA256"
    # nginx: '... failed (SSL: error:80000002:system library::No such file or directory:
    # calling fopen(PATH, r) error:10000080:BIO routines::no such file)'; mailfront: '(2: ...)'
    message = refused(tmp_path, certs(rsa) + f" ssl_dhparam {tmp_path}/none.pem;")
    assert message.startswith(f'BIO_new_file("{tmp_path}/none.pem") failed (')
    # nginx: '... failed (SSL: error:0480006C:PEM routines::no start line:Expecting: DH
    # PARAMETERS)'; mailfront has no error data (":Expecting: ...") and a second error
    message = refused(tmp_path, certs(rsa) + f" ssl_dhparam {rsa.cert};")
    assert message.startswith(
        f'PEM_read_bio_DHparams("{rsa.cert}") failed (SSL: error:0480006C:PEM routines::'
        "no start line"
    )


def test_ecdh_curve(tmp_path: Path, pki: Pki, ecdsa: Issued, rsa: Issued) -> None:
    for name in ("secp384r1", "P-384"):
        # RSA: with TLSv1.2 an ECDSA certificate on P-256 needs P-256 among the curves
        ctx, server = server_ctx(tmp_path, certs(rsa) + f" ssl_ecdh_curve {name};")
        assert not handshake(ctx, server, client_ctx(pki, curve="prime256v1")).ok
        for version in (TLS12, TLS13):
            assert handshake(ctx, server, client_ctx(pki, versions=version, curve="secp384r1")).ok
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_ecdh_curve X25519;")
    assert handshake(ctx, server, client_ctx(pki, curve="X25519")).ok
    # a list (SSL_CTX_set1_curves_list): each curve of it, and none other
    ctx, server = server_ctx(tmp_path, certs(rsa) + " ssl_ecdh_curve X25519:prime256v1;")
    for curve in ("X25519", "prime256v1"):
        for version in (TLS12, TLS13):
            assert handshake(ctx, server, client_ctx(pki, versions=version, curve=curve)).ok
    assert not handshake(ctx, server, client_ctx(pki, curve="secp384r1")).ok
    # nginx adds OpenSSL's error: ' (SSL: error:0A080106:SSL routines::passed invalid
    # argument:group 'nocurve' cannot be set)'
    for value in ("nocurve", "X25519:nocurve"):
        message = refused(tmp_path, certs(ecdsa) + f" ssl_ecdh_curve {value};")
        assert message.startswith(f'SSL_CTX_set1_curves_list("{value}") failed')


# ------------------------------------------------------------------ keys and files


def test_password_file(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    key = pki.encrypted_key(ecdsa, b"secret")
    pair = f"ssl_certificate {ecdsa.cert}; ssl_certificate_key {key};"
    passwords = tmp_path / "passwords"
    passwords.write_bytes(b"wrong\r\n\r\nalso wrong\nsecret")  # each line in turn, as nginx
    ctx, server = server_ctx(tmp_path, pair + f" ssl_password_file {passwords};")
    assert handshake(ctx, server, client_ctx(pki)).ok
    # nginx ends with OpenSSL's errors, "(SSL: error:1C800064:Provider routines::bad
    # decrypt ...)"; mailfront with cryptography's message
    passwords.write_bytes(b"wrong\n")
    message = refused(tmp_path, pair + f" ssl_password_file {passwords};")
    assert message.startswith(f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() ')
    # no password file: an empty password, never a prompt on the terminal (nginx prompts)
    message = refused(tmp_path, pair)
    assert message.startswith(f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() ')
    # nginx reads the file while parsing, at the directive, and adds its place
    place = f"{tmp_path}/conf/mailfront.conf:7"
    with pytest.raises(conf.ConfError) as info:
        load_server(tmp_path, pair + f" ssl_password_file {tmp_path}/nope;")
    assert str(info.value) == (
        f'open() "{tmp_path}/nope" failed (2: No such file or directory) in {place}'
    )
    passwords.write_bytes(b"x" * 5000 + b"\n")
    with pytest.raises(conf.ConfError) as info:
        load_server(tmp_path, pair + f" ssl_password_file {passwords};")
    assert str(info.value) == f'too long line in "{passwords}" in {place}'
    # even for a server without TLS, as nginx
    with pytest.raises(conf.ConfError) as info:
        load_server(tmp_path, f"ssl_password_file {tmp_path}/nope;", listen="127.0.0.1:10143")
    assert str(info.value).startswith(f'open() "{tmp_path}/nope" failed')


def test_certificate_errors(tmp_path: Path, pki: Pki, ecdsa: Issued, rsa: Issued) -> None:
    # where nginx prints OpenSSL's errors after a prefix, mailfront prints the errno or
    # nothing: the prefix is asserted
    missing = tmp_path / "missing.crt"
    message = refused(tmp_path, f"ssl_certificate {missing}; ssl_certificate_key {ecdsa.key};")
    assert message.startswith(f'cannot load certificate "{missing}": BIO_new_file() failed (')
    message = refused(tmp_path, f"ssl_certificate {ecdsa.cert}; ssl_certificate_key {missing};")
    assert message.startswith(f'cannot load certificate key "{missing}": BIO_new_file() failed (')
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    message = refused(tmp_path, f"ssl_certificate {garbage}; ssl_certificate_key {ecdsa.key};")
    assert message.startswith(
        f'cannot load certificate "{garbage}": PEM_read_bio_X509_AUX() failed'
    )
    # a key of the certificate's type that is not its key: nginx -t prints exactly this
    other = pki.server("other.test", key_type=trustme.KeyType.RSA)
    message = refused(tmp_path, f"ssl_certificate {rsa.cert}; ssl_certificate_key {other.key};")
    assert message == (
        f'SSL_CTX_use_PrivateKey("{other.key}") failed '
        "(SSL: error:05800074:x509 certificate routines::key values mismatch)"
    )


def test_verify_files_are_read_only_when_verifying(tmp_path: Path, ecdsa: Issued) -> None:
    # nginx loads ssl_client_certificate, ssl_trusted_certificate and ssl_crl
    # only with ssl_verify_client on: a missing file is no error otherwise
    lines = certs(ecdsa) + (
        f" ssl_client_certificate {tmp_path}/a.pem; ssl_trusted_certificate {tmp_path}/b.pem;"
        f" ssl_crl {tmp_path}/c.crl;"
    )
    server_ctx(tmp_path, lines)
    message = refused(tmp_path, lines + " ssl_verify_client on;")
    assert message.startswith(f'cannot load certificate "{tmp_path}/a.pem": BIO_new_file() failed')


# ------------------------------------------------------------------ ALPN


def test_alpn(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    for protocol in ("imap", "pop3", "smtp"):
        ctx, server = server_ctx(tmp_path, certs(ecdsa), protocol=protocol)
        r = handshake(ctx, server, client_ctx(pki, alpn=["x-other", protocol]))
        assert r.ok and r.alpn == protocol
        r = handshake(ctx, server, client_ctx(pki))
        assert r.ok and r.alpn is None


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_alpn_mismatch_is_a_fatal_alert(
    tmp_path: Path, pki: Pki, ecdsa: Issued, protocol: str
) -> None:
    """ngx_mail_ssl_alpn_select: an ALPN list without the protocol's id ends the handshake
    with a fatal no_application_protocol alert (nginx 1.21.4+, spec §1.9)."""
    ctx, server = server_ctx(tmp_path, certs(ecdsa), protocol=protocol)
    r = handshake(ctx, server, client_ctx(pki, alpn=["http/1.1"]))
    assert isinstance(r.client_error, ssl.SSLError), r
    assert "alert no application protocol" in str(r.client_error)
    assert isinstance(r.server_error, libssl.Error), r
    assert "no application protocol" in str(r.server_error)


# ------------------------------------------------------------------ sessions


def test_session_resumption_with_tickets(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """nginx's defaults (ssl_session_cache none, tickets on): tickets resume, with TLSv1.3
    and TLSv1.2."""
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    for version in (TLS13, TLS12):
        client = client_ctx(pki, versions=version)
        first = handshake(ctx, server, client)
        assert first.ok and not first.reused
        assert first.session is not None and first.session.has_ticket
        again = handshake(ctx, server, client, first.session)
        assert again.ok and again.reused
    # another context (a reload) has other ticket keys: a full handshake
    other, _ = server_ctx(tmp_path, certs(ecdsa))
    client = client_ctx(pki)
    first = handshake(ctx, server, client)
    assert not handshake(other, server, client, first.session).reused


@pytest.mark.parametrize(
    ("cache", "tickets", "resumed"),
    [
        # checked against nginx 1.22.1 (openssl s_client -sess_out / -sess_in)
        ("none", "on", {"TLSv1.2": True, "TLSv1.3": True}),
        ("none", "off", {"TLSv1.2": False, "TLSv1.3": False}),  # "none" stores nothing
        ("off", "on", {"TLSv1.2": True, "TLSv1.3": True}),
        ("off", "off", {"TLSv1.2": False, "TLSv1.3": False}),
        ("builtin", "on", {"TLSv1.2": True, "TLSv1.3": True}),
        # by session id (TLSv1.2) and stateful tickets (TLSv1.3), from OpenSSL's cache
        ("builtin", "off", {"TLSv1.2": True, "TLSv1.3": True}),
        ("builtin:20480", "off", {"TLSv1.2": True, "TLSv1.3": True}),
    ],
)
def test_session_cache_and_tickets(
    tmp_path: Path, pki: Pki, ecdsa: Issued, cache: str, tickets: str, resumed: dict[str, bool]
) -> None:
    ctx, server = server_ctx(
        tmp_path, certs(ecdsa) + f" ssl_session_cache {cache}; ssl_session_tickets {tickets};"
    )
    assert bool(options(ctx) & libssl.SSL_OP_NO_TICKET) == (tickets == "off")
    for version in (TLS12, TLS13):
        client = client_ctx(pki, versions=version)
        first = handshake(ctx, server, client)
        assert first.ok and first.session is not None
        again = handshake(ctx, server, client, first.session)
        assert again.ok and again.reused == resumed[again.version or ""], (version, again)


@pytest.mark.parametrize(
    ("cache", "timeout", "seconds"),
    [
        ("builtin", "", 300),
        ("builtin", "ssl_session_timeout 10m;", 600),
        ("none", "", 300),
        ("none", "ssl_session_timeout 10m;", 600),
        ("off", "ssl_session_timeout 1h;", 3600),
    ],
)
def test_session_timeout_is_the_ticket_lifetime(
    tmp_path: Path, pki: Pki, ecdsa: Issued, cache: str, timeout: str, seconds: int
) -> None:
    """ssl_session_timeout (5m by default) is the session's lifetime, which the server
    announces in its tickets: nginx calls SSL_CTX_set_timeout whatever the cache (1.22.1
    announces 600 for "ssl_session_cache none; ssl_session_timeout 10m")."""
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + f" ssl_session_cache {cache}; {timeout}")
    for version in (TLS12, TLS13):
        r = handshake(ctx, server, client_ctx(pki, versions=version))
        assert r.ok and r.session is not None
        assert r.session.ticket_lifetime_hint == seconds, version


@pytest.mark.filterwarnings(
    # Python 3.12+ warns about fork() in a process with threads; each child
    # here runs one handshake and leaves with os._exit
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
def test_tickets_resume_across_forked_workers(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """A context made before fork() shares its ticket keys with every worker."""
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    client = client_ctx(pki)

    def worker_session(session: ssl.SSLSession | None) -> tuple[bytes, ssl.SSLSession | None]:
        a, b = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker: one session on its own loop, then the verdict
            code = 1
            try:
                b.close()
                out = Result()
                serve(a, ctx, server, out)
                code = 0 if out.reused else 2
            finally:
                os._exit(code)
        a.close()
        b.settimeout(10)
        try:
            c = client.wrap_socket(b, server_hostname="mail.test", session=session)
            assert read_to_close(c) == HELLO
            got = c.session
            c.close()
        finally:
            b.close()
            _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status)
        code = os.WEXITSTATUS(status)
        assert code in (0, 2), f"the worker failed (exit code {code})"
        return (b"r" if code == 0 else b"n"), got

    answer, session = worker_session(None)
    assert answer == b"n" and session is not None
    answer, _ = worker_session(session)
    assert answer == b"r"


def test_session_cache_values(tmp_path: Path, ecdsa: Issued) -> None:
    assert parse_session_cache("none") == SessionCache(SCACHE_NONE)
    assert parse_session_cache("builtin") == SessionCache(SCACHE_DEFAULT_BUILTIN)
    assert parse_session_cache("builtin:1000 off") == SessionCache(SCACHE_OFF)
    assert parse_session_cache("shared:SSL:10m") == SessionCache(
        SCACHE_NO_BUILTIN, "shared:SSL:10m"
    )
    assert parse_session_cache("builtin:20480 shared:M:1m") == SessionCache(20480, "shared:M:1m")
    # ngx_ssl_session_cache: the mode and size OpenSSL's cache gets
    server_cache = libssl.SSL_SESS_CACHE_SERVER
    none = (
        server_cache | libssl.SSL_SESS_CACHE_NO_AUTO_CLEAR | libssl.SSL_SESS_CACHE_NO_INTERNAL_STORE
    )
    for value, mode, size in (
        ("none", none, 1),
        ("off", libssl.SSL_SESS_CACHE_OFF, 20480),
        ("builtin", server_cache, 20480),
        ("builtin:20480", server_cache, 20480),
        ("builtin:1000", server_cache, 1000),
    ):
        ctx, _ = server_ctx(tmp_path, certs(ecdsa) + f" ssl_session_cache {value};")
        got_mode = libssl.ctx_ctrl(ctx.ctx, libssl.SSL_CTRL_GET_SESS_CACHE_MODE)
        assert (got_mode, libssl.ctx_ctrl(ctx.ctx, libssl.SSL_CTRL_GET_SESS_CACHE_SIZE)) == (
            mode,
            size,
        ), value
    for value in ("shared:SSL:10m", "builtin shared:SSL:10m", "none shared:SSL:10m"):
        server_ctx(tmp_path, certs(ecdsa) + f" ssl_session_cache {value};")
    for value in ("10m", "300s", "1d"):
        server_ctx(tmp_path, certs(ecdsa) + f" ssl_session_timeout {value};")


# ------------------------------------------------------------------ client certificates


def verify_lines(pki: Pki, mode: str = "on", **extra: Any) -> str:
    lines = f" ssl_verify_client {mode}; ssl_client_certificate {pki.ca.path};"
    return lines + "".join(f" {k} {v};" for k, v in extra.items())


def test_verify_on(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki))
    assert libssl.lib.SSL_CTX_get_verify_mode(ctx.ctx) == libssl.SSL_VERIFY_PEER
    for version in (TLS12, TLS13):
        # no certificate: the handshake completes, then no_cert, as nginx does
        r = handshake(ctx, server, client_ctx(pki, versions=version))
        assert r.ok
        assert r.rejection == tls.CertRejection(
            Rejection.NO_CERT, "client sent no required SSL certificate"
        )
        assert r.received == b"* BYE No required SSL certificate\r\n"
        assert r.info[auth_http.SSL_VERIFY] == b"NONE"
        # a good certificate
        r = handshake(ctx, server, client_ctx(pki, versions=version, cert=alice))
        assert r.ok and r.rejection is None and r.received == HELLO
        assert r.info[auth_http.SSL_VERIFY] == b"SUCCESS"
        assert r.info[auth_http.SSL_FINGERPRINT] == hashlib.sha1(alice.der).hexdigest().encode()


def test_verify_optional(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, "optional"))
    r = handshake(ctx, server, client_ctx(pki))
    assert r.ok and r.rejection is None
    assert r.info[auth_http.SSL_VERIFY] == b"NONE" and auth_http.SSL_SUBJECT not in r.info
    r = handshake(ctx, server, client_ctx(pki, cert=alice))
    assert r.ok and r.rejection is None and r.info[auth_http.SSL_VERIFY] == b"SUCCESS"


def test_verify_off_asks_for_nothing(
    tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued
) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    r = handshake(ctx, server, client_ctx(pki, cert=alice))
    assert r.ok and r.rejection is None
    assert set(r.info) == {auth_http.SSL_PROTOCOL, auth_http.SSL_CIPHER}


def cert_error(code: int, text: str) -> tls.CertRejection:
    return tls.CertRejection(
        Rejection.CERT_ERROR, f"client SSL certificate verify error: ({code}:{text})"
    )


def test_bad_client_certificates_complete_the_handshake(
    tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued
) -> None:
    """As nginx (ngx_ssl_verify_callback accepts everything): the handshake completes
    with TLSv1.2 and TLSv1.3, then ngx_mail_verify_cert answers cert_error."""
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.ca.issue(
        "old", stem="expired", not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )  # fmt: skip
    stranger = pki.authority("stranger").issue("mallory", stem="mallory")
    revoked = pki.client("bob")
    crl = pki.ca.crl([revoked], stem="ca-revoking-bob")
    for mode in ("on", "optional"):
        ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, mode, ssl_crl=crl))
        for cert, code, reason in ((expired, 10, "certificate has expired"),
                                   (stranger, 21, "unable to verify the first certificate"),
                                   (revoked, 23, "certificate revoked")):  # fmt: skip
            for version in (TLS12, TLS13):
                r = handshake(ctx, server, client_ctx(pki, versions=version, cert=cert))
                assert r.ok, r
                assert r.rejection == cert_error(code, reason)
                assert r.received == b"* BYE SSL certificate error\r\n"
                assert r.info[auth_http.SSL_VERIFY] == b"FAILED:" + reason.encode()
        assert handshake(ctx, server, client_ctx(pki, cert=alice)).rejection is None
    # without the CRL, bob passes
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki))
    assert handshake(ctx, server, client_ctx(pki, cert=revoked)).rejection is None


def test_crl_check_covers_the_whole_chain(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """ngx_ssl_crl sets X509_V_FLAG_CRL_CHECK_ALL: every CA of the chain needs its CRL."""
    inter = pki.ca.child("crl-inter")
    carol = inter.issue("carol", stem="crl-carol")  # the file holds carol, then inter
    root_crl = pki.ca.crl([], stem="root-empty")
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=root_crl))
    r = handshake(ctx, server, client_ctx(pki, cert=carol))
    assert r.ok and r.rejection == cert_error(3, "unable to get certificate CRL")
    both = tmp_path / "both.crl"
    both.write_bytes(root_crl.read_bytes() + inter.crl([], stem="inter-empty").read_bytes())
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=both))
    assert handshake(ctx, server, client_ctx(pki, cert=carol)).rejection is None
    # the intermediate revoked by the root
    both.write_bytes(
        pki.ca.crl([Issued(inter.path, inter.path, inter.cert.public_bytes(DER))],
                   stem="root-revoking-inter").read_bytes()
        + inter.crl([], stem="inter-empty").read_bytes()
    )  # fmt: skip
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=both))
    r = handshake(ctx, server, client_ctx(pki, cert=carol))
    assert r.ok and r.rejection == cert_error(23, "certificate revoked")


def test_optional_no_ca(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
    """ssl_verify_client optional_no_ca: the errors of an unknown issuer (2, 18, 19, 20,
    21: ngx_ssl_verify_error_optional) are let through and reported as FAILED:..., the
    others are cert_error; no certificate is no error."""
    stranger = pki.authority("stranger-no-ca").issue("mallory", stem="mallory-no-ca")
    own = self_signed(pki.folder, "alice", "self-signed")
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.ca.issue(
        "old", stem="expired-no-ca", not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )  # fmt: skip
    for lines in (verify_lines(pki, "optional_no_ca"), " ssl_verify_client optional_no_ca;"):
        ctx, server = server_ctx(tmp_path, certs(ecdsa) + lines)
        for cert, reason in ((stranger, "unable to verify the first certificate"),
                             (own, "self-signed certificate")):  # fmt: skip
            r = handshake(ctx, server, client_ctx(pki, cert=cert))
            assert r.ok and r.rejection is None and r.received == HELLO
            assert r.info[auth_http.SSL_VERIFY] == b"FAILED:" + reason.encode()
            assert r.info[auth_http.SSL_FINGERPRINT] == hashlib.sha1(cert.der).hexdigest().encode()
        r = handshake(ctx, server, client_ctx(pki))
        assert r.ok and r.rejection is None and r.info[auth_http.SSL_VERIFY] == b"NONE"
    # with the CA: alice verifies, an expired certificate is still an error
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, "optional_no_ca"))
    r = handshake(ctx, server, client_ctx(pki, cert=alice))
    assert r.rejection is None and r.info[auth_http.SSL_VERIFY] == b"SUCCESS"
    r = handshake(ctx, server, client_ctx(pki, cert=expired))
    assert r.ok and r.rejection == cert_error(10, "certificate has expired")
    # without it, alice's issuer is unknown too; Python's client sends the root it trusts
    # after alice's certificate (OpenSSL builds the chain), hence 19
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_verify_client optional_no_ca;")
    r = handshake(ctx, server, client_ctx(pki, cert=alice))
    assert r.rejection is None
    assert r.info[auth_http.SSL_VERIFY] == b"FAILED:self-signed certificate in certificate chain"


def test_crl_file_lends_no_trust(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """nginx reads only the CRLs of ssl_crl: a CA certificate in it is not trusted."""
    stranger = pki.authority("stranger2")
    mallory = stranger.issue("mallory", stem="mallory2")
    crl = tmp_path / "mixed.crl"
    crl.write_bytes(pki.ca.crl([]).read_bytes() + stranger.pem)
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=crl))
    r = handshake(ctx, server, client_ctx(pki, cert=mallory))
    assert r.ok and r.rejection == cert_error(21, "unable to verify the first certificate")
    message = refused(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=f"{tmp_path}/no.crl"))
    assert message.startswith(f'cannot load CRL "{tmp_path}/no.crl": BIO_new_file() failed (')
    # nginx 1.31 (ngx_ssl_cache_crl_create): 'cannot load CRL "F": PEM_read_bio_X509_CRL()
    # failed (SSL: ...no start line...)'; mailfront: 'cannot load CRL "F": no CRLs'
    message = refused(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=pki.ca.path))
    assert message.startswith(f'cannot load CRL "{pki.ca.path}": ')


def test_trusted_certificate(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
    # nginx 1.31: ssl_trusted_certificate alone is enough for ssl_verify_client on
    lines = f" ssl_verify_client on; ssl_trusted_certificate {pki.ca.path};"
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + lines)
    assert handshake(ctx, server, client_ctx(pki, cert=alice)).rejection is None
    r = handshake(ctx, server, client_ctx(pki))
    assert r.rejection is not None and r.rejection.kind is Rejection.NO_CERT


def chain_file(tmp_path: Path, stem: str, *authorities: Authority) -> Path:
    path = tmp_path / f"{stem}.pem"
    path.write_bytes(b"".join(a.pem for a in authorities))
    return path


def test_verify_depth(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """ssl_verify_depth: how many intermediate CAs OpenSSL walks (nginx's default: one).
    The verify callback accepts every error, so the walk goes on past "certificate chain
    too long" (22) and the error that stays is the last one; each case below is what
    Debian's nginx 1.22.1 logs for the same chains."""
    inter = pki.ca.child("inter")
    inter2 = inter.child("inter2")
    carol = inter.issue("carol", stem="carol", chain=False)  # root > inter > carol
    dave = inter2.issue("dave", stem="dave", chain=False)  # root > inter > inter2 > dave
    erin = inter.issue("erin", stem="erin")  # the client sends inter too
    frank = inter2.issue("frank", stem="frank")  # the client sends inter2 and inter
    no_issuer = (2, "unable to get issuer certificate")
    no_local = (20, "unable to get local issuer certificate")
    no_first = (21, "unable to verify the first certificate")
    # the intermediates in the CA file, or only the root
    cas = chain_file(tmp_path, "cas", pki.ca, inter, inter2)
    cases = [
        (cas, 0, carol, no_issuer), (cas, 1, carol, None), (cas, 1, dave, no_issuer),
        (cas, 2, dave, None), (cas, 0, erin, no_issuer), (cas, 1, erin, None),
        (cas, 1, frank, no_issuer), (cas, 2, frank, None),
        (pki.ca.path, 2, carol, no_first), (pki.ca.path, 0, erin, no_local),
        (pki.ca.path, 1, erin, None), (pki.ca.path, 1, frank, no_local),
        (pki.ca.path, 2, frank, None),
    ]  # fmt: skip
    for ca_file, depth, who, expected in cases:
        lines = (
            f" ssl_verify_client on; ssl_client_certificate {ca_file}; ssl_verify_depth {depth};"
        )
        ctx, server = server_ctx(tmp_path, certs(ecdsa) + lines)
        r = handshake(ctx, server, client_ctx(pki, cert=who))
        where = (ca_file.name, depth, who.cert.name)
        if expected is None:
            assert r.ok and r.rejection is None and r.received == HELLO, where
            continue
        code, text = expected
        assert r.ok and r.rejection == cert_error(code, text), where
        assert r.received == b"* BYE SSL certificate error\r\n"
        assert r.info[auth_http.SSL_VERIFY] == b"FAILED:" + text.encode()


def test_rejection_lines() -> None:
    assert (
        tls.rejection_line(Protocol.IMAP, Rejection.NO_CERT)
        == b"* BYE No required SSL certificate\r\n"
    )
    assert (
        tls.rejection_line(Protocol.POP3, Rejection.CERT_ERROR) == b"-ERR SSL certificate error\r\n"
    )
    assert (
        tls.rejection_line(Protocol.POP3, Rejection.NO_CERT)
        == b"-ERR No required SSL certificate\r\n"
    )
    assert tls.rejection_line(Protocol.SMTP, Rejection.CERT_ERROR) == (
        b"421 4.7.1 SSL certificate error\r\n"
    )
    assert tls.rejection_line(Protocol.SMTP, Rejection.NO_CERT) == (
        b"421 4.7.1 No required SSL certificate\r\n"
    )


# ------------------------------------------------------------------ Auth-SSL-* facts


def openssl_x509(path: Path, *args: str) -> bytes:
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", *args],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip


def test_auth_ssl_facts_match_openssl(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    subject = x509.Name([
        A(NameOID.COUNTRY_NAME, "FR"),
        A(NameOID.ORGANIZATION_NAME, "Example, Inc. <mail>"),
        A(NameOID.ORGANIZATIONAL_UNIT_NAME, " spaced "),
        A(NameOID.COMMON_NAME, "#Zoë Ünïcode 日本"),
        A(NameOID.EMAIL_ADDRESS, "zoe@example.test"),
    ])  # fmt: skip
    zoe = pki.ca.issue_named(subject, stem="zoe", serial=0x00FF00112233445566778899AABBCCDDEEFF)
    ctx, server = server_ctx(
        tmp_path, certs(ecdsa) + verify_lines(pki) + " auth_http_pass_client_cert on;"
    )
    r = handshake(ctx, server, client_ctx(pki, cert=zoe))
    assert r.ok and r.rejection is None
    info = r.info
    assert info[auth_http.SSL_SUBJECT] == openssl_x509(
        zoe.cert, "-subject", "-nameopt", "RFC2253"
    ).strip().removeprefix(b"subject=")
    assert info[auth_http.SSL_SUBJECT] == (
        b"emailAddress=zoe@example.test,CN=\\#Zo\\C3\\AB \\C3\\9Cn\\C3\\AFcode "
        b"\\E6\\97\\A5\\E6\\9C\\AC,OU=\\ spaced\\ ,O=Example\\, Inc. \\<mail\\>,C=FR"
    )
    assert info[auth_http.SSL_ISSUER] == openssl_x509(
        zoe.cert, "-issuer", "-nameopt", "RFC2253"
    ).strip().removeprefix(b"issuer=")
    assert info[auth_http.SSL_SERIAL] == openssl_x509(zoe.cert, "-serial").strip().removeprefix(
        b"serial="
    )
    assert info[auth_http.SSL_SERIAL] == b"FF00112233445566778899AABBCCDDEEFF"
    fingerprint = openssl_x509(zoe.cert, "-fingerprint", "-sha1").strip().split(b"=", 1)[1]
    assert info[auth_http.SSL_FINGERPRINT] == fingerprint.replace(b":", b"").lower()
    pem = subprocess.run(
        ["openssl", "x509", "-in", str(zoe.cert), "-outform", "PEM"],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    assert info[auth_http.SSL_CERT] == pem
    # and as build_request sends them
    from mailfront.auth.base import SessionInfo
    from mailfront.conf.model import AuthMethod
    from mailfront.protocol.base import AuthRequest

    session = SessionInfo("imap", "127.0.0.1")
    session.ssl = info
    request = auth_http.build_request(
        server, session, AuthRequest(b"zoe", b"pw", AuthMethod.PLAIN), 1
    )
    assert b"Auth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.3\r\n" in request
    assert b"\r\nAuth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0A" in request


@pytest.mark.parametrize(
    "attributes",
    [
        [A(NameOID.ORGANIZATION_NAME, "".join(chr(c) for c in range(1, 41)))],
        [A(NameOID.ORGANIZATION_NAME, "".join(chr(c) for c in range(41, 81)))],
        [A(NameOID.ORGANIZATION_NAME, "".join(chr(c) for c in range(81, 128)))],
        [A(NameOID.COMMON_NAME, "#")],
        [A(NameOID.COMMON_NAME, " ")],
        [A(NameOID.COMMON_NAME, "a#b #")],
        [A(NameOID.COMMON_NAME, "\x00nul")],
        [A(NameOID.COMMON_NAME, "t61 é", _ASN1Type.T61String)],
        [A(NameOID.COMMON_NAME, "bmp é 日", _ASN1Type.BMPString)],
        [A(NameOID.COMMON_NAME, "univ é 😀", _ASN1Type.UniversalString)],
        [A(NameOID.COMMON_NAME, "ia5", _ASN1Type.IA5String)],
        [A(NameOID.COMMON_NAME, "emoji 😀 é")],
        [A(x509.ObjectIdentifier("1.2.3.4.5"), "an OID OpenSSL has no name for")],
        [A(x509.ObjectIdentifier(oid), "XY" if oid.endswith((".6", ".3")) else "v")
         for oid in sorted(tls._SHORT_NAMES)],
        [x509.RelativeDistinguishedName([A(NameOID.COMMON_NAME, "a"), A(NameOID.USER_ID, "b")]),
         x509.RelativeDistinguishedName([A(NameOID.ORGANIZATION_NAME, "o")])],
    ],
    ids=lambda attributes: "attrs",
)  # fmt: skip
def test_rfc2253_as_openssl(pki: Pki, attributes: list[Any]) -> None:
    if isinstance(attributes[0], x509.RelativeDistinguishedName):
        subject = x509.Name(attributes)
    else:
        subject = x509.Name([x509.RelativeDistinguishedName([a]) for a in attributes])
    issued = pki.ca.issue_named(subject, stem=f"name-{abs(hash(subject))}")
    expected = openssl_x509(issued.cert, "-subject", "-nameopt", "RFC2253")
    facts = tls.cert_facts(issued.der)
    assert b"subject=" + facts[auth_http.SSL_SUBJECT] + b"\n" == expected


def test_serial_text() -> None:
    assert tls.serial_text(b"\x00") == b"00"
    assert tls.serial_text(b"\x01") == b"01"
    assert tls.serial_text(b"\x00\x80") == b"80"
    assert tls.serial_text(b"\xff\x7f") == b"-81"  # -129
    assert tls.serial_text(b"\x80") == b"-80"
    long = bytes(range(1, 41))
    assert tls.serial_text(long) == (
        long[:35].hex().upper().encode() + b"\\\n" + long[35:].hex().upper().encode()
    )


def test_pem_layout() -> None:
    der = bytes(range(256)) * 3
    text = tls.pem(der)
    lines = text.split(b"\n")
    assert lines[0] == b"-----BEGIN CERTIFICATE-----" and lines[-2] == b"-----END CERTIFICATE-----"
    assert all(len(line) == 64 for line in lines[1:-3]) and lines[-1] == b""
    assert base64.b64decode(b"".join(lines[1:-2])) == der


# ------------------------------------------------------------------ what the engine applies


def test_every_setting_is_applied(tmp_path: Path, ecdsa: Issued, pki: Pki) -> None:
    """Each setting makes a context (what the engine cannot do, certificate compression,
    is refused when it is read: test_cli_refuses)."""
    base = certs(ecdsa)
    key = tmp_path / "ticket.key"
    key.write_bytes(bytes(range(80)))
    for lines in (
        "",
        "ssl_session_cache off;",
        "ssl_session_cache builtin:20480;",
        "ssl_session_cache builtin:1000;",
        "ssl_session_timeout 1h;",
        "ssl_ecdh_curve X25519:prime256v1;",
        f"ssl_verify_client optional_no_ca; ssl_client_certificate {pki.ca.path};",
        "ssl_verify_client optional_no_ca;",
        "ssl_verify_depth 5;",
        "ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;",
        "ssl_conf_command Options -SessionTicket,ServerPreference;",
        "ssl_conf_command RecordPadding 512;",
        "ssl_conf_command Options UnsafeLegacyRenegotiation;",
        f"ssl_session_ticket_key {key};",
        "ssl_session_cache shared:SSL:10m;",
        "ssl_session_cache builtin shared:M:1m;",
    ):
        server = load_server(tmp_path, base + " " + lines)
        make_context(server, "imap")


def test_ticket_key_files(tmp_path: Path, ecdsa: Issued) -> None:
    """``ngx_ssl_session_ticket_keys``: 48 or 80 bytes each, read when the context is made
    (nginx's merge), its errors with the server's place."""
    place = f"{tmp_path}/conf/mailfront.conf:4"
    good = tmp_path / "good.key"
    good.write_bytes(bytes(range(48)))
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"x" * 64)
    missing = tmp_path / "missing.key"
    server_ctx(tmp_path, certs(ecdsa) + f" ssl_session_ticket_key {good};")
    # even with tickets off: nginx reads the files whatever ssl_session_tickets says
    message = refused(
        tmp_path, certs(ecdsa) + f" ssl_session_tickets off; ssl_session_ticket_key {bad};"
    )
    assert message == f'"{bad}" must be 48 or 80 bytes in {place}'
    message = refused(
        tmp_path,
        certs(ecdsa) + f" ssl_session_ticket_key {good}; ssl_session_ticket_key {missing};",
    )
    assert message == f'open() "{missing}" failed (2: No such file or directory) in {place}'


def test_session_id_context_is_nginx_s(pki: Pki, ecdsa: Issued, rsa: Issued) -> None:
    """SHA-1 over "MAIL", each certificate's SHA-1 (the last configured first) and each
    CA name's: what nginx sets, so that sessions move between the two."""
    import hashlib

    from mailfront.server.tls_openssl import session_id_context

    want = hashlib.sha1(
        b"MAIL" + hashlib.sha1(ecdsa.der).digest() + hashlib.sha1(rsa.der).digest()
    ).digest()
    assert session_id_context([rsa.der, ecdsa.der], []) == want
    name = pki.ca.cert.subject.public_bytes()
    assert (
        session_id_context([ecdsa.der], [name])
        == hashlib.sha1(
            b"MAIL" + hashlib.sha1(ecdsa.der).digest() + hashlib.sha1(name).digest()
        ).digest()
    )


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def test_shared_session_cache(tmp_path: Path, pki: Pki, ecdsa: Issued, versions: Any) -> None:
    """``ssl_session_cache shared:NAME:SIZE`` with tickets off: a session of one context
    resumes on another that names the zone (as in two workers); OpenSSL's own cache is
    off unless ``builtin`` is given too (``SSL_SESS_CACHE_NO_INTERNAL``)."""
    name = f"T{len(versions)}{versions[0].value}"
    lines = certs(ecdsa) + f" ssl_session_tickets off; ssl_session_cache shared:{name}:1m;"
    a, server = server_ctx(tmp_path, lines)
    b, _ = server_ctx(tmp_path, lines)
    mode = libssl.ctx_ctrl(a.ctx, libssl.SSL_CTRL_GET_SESS_CACHE_MODE)
    assert mode == libssl.SSL_SESS_CACHE_SERVER | libssl.SSL_SESS_CACHE_NO_INTERNAL
    client = client_ctx(pki, versions=versions)
    first = handshake(a, server, client)
    assert first.ok and not first.reused and first.session is not None
    again = handshake(b, server, client, session=first.session)
    assert again.ok and again.reused
    # another zone, or no shared cache: no session to resume
    c, _ = server_ctx(
        tmp_path, certs(ecdsa) + f" ssl_session_tickets off; ssl_session_cache shared:{name}x:1m;"
    )
    assert not handshake(c, server, client, session=first.session).reused
    d, _ = server_ctx(tmp_path, certs(ecdsa) + " ssl_session_tickets off;")
    assert not handshake(d, server, client, session=first.session).reused
    # builtin and shared: both caches
    e, _ = server_ctx(tmp_path, lines.replace("shared:", "builtin:100 shared:"))
    assert libssl.ctx_ctrl(e.ctx, libssl.SSL_CTRL_GET_SESS_CACHE_MODE) == (
        libssl.SSL_SESS_CACHE_SERVER
    )


@pytest.mark.parametrize("cache", ["builtin", "shared:ENDS:1m"])
def test_session_stays_after_an_end_without_close_notify(
    tmp_path: Path, pki: Pki, ecdsa: Issued, cache: str
) -> None:
    """A session that ends without the server's close_notify (a timeout, an error, the
    client's close) stays in the cache once its connection is freed: nginx's
    ngx_ssl_shutdown marks it shut down both ways; otherwise SSL_free takes the session
    out of the caches."""
    lines = certs(ecdsa) + f" ssl_session_tickets off; ssl_session_cache {cache};"
    ctx, server = server_ctx(tmp_path, lines)
    client = client_ctx(pki, versions=TLS12)
    first = handshake(ctx, server, client, server_aborts=True)
    assert first.server_error is None and first.session is not None
    gc.collect()  # the server's SSL is freed now
    assert handshake(ctx, server, client, session=first.session).reused


def test_shared_zone_keeps_ticket_keys(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """With a shared zone and no ssl_session_ticket_key, the tickets are sealed with
    keys kept in the zone (nginx's automatic keys): every context of the zone, as
    every worker and every configuration after a reload, opens them."""
    lines = certs(ecdsa) + " ssl_session_cache shared:TK:1m;"
    a, server = server_ctx(tmp_path, lines)
    b, _ = server_ctx(tmp_path, lines)
    other, _ = server_ctx(tmp_path, certs(ecdsa))
    client = client_ctx(pki, versions=TLS12)
    first = handshake(a, server, client)
    assert first.ok and first.session is not None and first.session.has_ticket
    assert handshake(b, server, client, session=first.session).reused
    assert not handshake(other, server, client, session=first.session).reused


def test_shared_zone_sizes(tmp_path: Path, ecdsa: Issued) -> None:
    """nginx's errors for a zone too small or declared twice with two sizes."""
    path = tmp_path / "conf" / "mailfront.conf"
    with pytest.raises(conf.ConfError) as info:
        load_server(tmp_path, certs(ecdsa) + " ssl_session_cache shared:S:16k;")
    assert str(info.value) == f'session cache "shared:S:16k" is too small in {path}:7'
    text = (
        "events {}\nmail {\n    auth_http 127.0.0.1:9000/auth;\n"
        "    server { listen 127.0.0.1:10993 ssl; ssl_session_cache shared:S:1m; }\n"
        "    server { listen 127.0.0.1:10994 ssl; ssl_session_cache shared:S:2m; }\n}\n"
    )
    path.write_text(text)
    with pytest.raises(conf.ConfError) as info:
        conf.load(str(path), f"{tmp_path}/")
    assert str(info.value) == (
        f'the size 2097152 of shared memory zone "S" conflicts with already declared size '
        f"1048576 in {path}:5"
    )


def test_conf_commands(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """The ssl_conf_command commands the engine carries out, applied last (after
    ssl_protocols, ssl_ciphers and ssl_ecdh_curve), as ngx_ssl_conf_commands."""
    lines = certs(ecdsa) + (
        " ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256;"
        " ssl_ecdh_curve prime256v1; ssl_conf_command Groups X25519;"
    )
    ctx, server = server_ctx(tmp_path, lines)
    r = handshake(ctx, server, client_ctx(pki))
    assert r.version == "TLSv1.3" and r.cipher == "TLS_CHACHA20_POLY1305_SHA256"
    assert handshake(ctx, server, client_ctx(pki, curve="X25519")).ok
    assert not handshake(ctx, server, client_ctx(pki, curve="prime256v1")).ok
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_conf_command MaxProtocol TLSv1.2;")
    assert handshake(ctx, server, client_ctx(pki)).version == "TLSv1.2"
    ctx, _ = server_ctx(tmp_path, certs(ecdsa) + " ssl_conf_command Options -SessionTicket;")
    assert options(ctx) & libssl.SSL_OP_NO_TICKET
    # as nginx: OpenSSL's reason, then the error SSL_CONF_cmd itself queues
    message = refused(tmp_path, certs(ecdsa) + " ssl_conf_command Ciphersuites NOPE;")
    assert message == (
        'SSL_CONF_cmd("Ciphersuites", "NOPE") failed (SSL: error:0A0000B9:SSL routines::'
        "no cipher match error:0A000180:SSL routines::bad value:cmd=Ciphersuites, value=NOPE)"
    )
    # any command of SSL_CONF_cmd: one it does not know is OpenSSL's error
    message = refused(tmp_path, certs(ecdsa) + " ssl_conf_command NoSuchCommand 1;")
    assert message == (
        'SSL_CONF_cmd("NoSuchCommand", "1") failed (SSL: error:0A000182:SSL routines::'
        "unknown cmd name:cmd=NoSuchCommand)"
    )
    # commands beyond the ones other settings have (RecordPadding, an Options word)
    ctx, _ = server_ctx(
        tmp_path, certs(ecdsa) + " ssl_conf_command Options PrioritizeChaCha;"
        " ssl_conf_command RecordPadding 512;",
    )  # fmt: skip
    assert options(ctx) & libssl.SSL_OP_PRIORITIZE_CHACHA


def run_cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(list(args))
    return rc, err.getvalue()


def test_cli_accepts_tls_configurations(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "mailfront.conf"
    path.write_text(
        "events {}\nmail {\n  auth_http 127.0.0.1:9000/auth;\n"
        f"  ssl_certificate {ecdsa.cert};\n  ssl_certificate_key {ecdsa.key};\n"
        "  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_prefer_server_ciphers on;\n"
        f"  ssl_verify_client optional;\n  ssl_client_certificate {pki.ca.path};\n"
        "  auth_http_pass_client_cert on;\n"
        "  ssl_session_cache off;\n  ssl_session_timeout 1h;\n"
        "  ssl_ecdh_curve X25519:prime256v1;\n"
        "  server { listen 127.0.0.1:10993 ssl; protocol imap; }\n"
        "  server { listen 127.0.0.1:10143; protocol imap; starttls only; }\n"
        "  server { listen 127.0.0.1:10110; protocol pop3; starttls on; }\n"
        "  server { listen 127.0.0.1:10587; protocol smtp; starttls on;\n"
        "           ssl_verify_client optional_no_ca; ssl_session_cache builtin; }\n"
        "}\n"
    )
    rc, err = run_cli("-t", "-c", str(path), "-p", str(tmp_path))
    assert rc == 0, err
    config = conf.load(str(path), f"{tmp_path}/")
    assert config.mail is not None
    for server in config.mail.servers:
        make_context(server, server.protocol.value)


@pytest.mark.parametrize(
    ("line", "message", "line_no"),
    [
        # refused when the directive is read
        ("ssl_certificate_compression on;",
         '"ssl_certificate_compression on" is not supported yet', 9),
    ],
)  # fmt: skip
def test_cli_refuses(tmp_path: Path, ecdsa: Issued, line: str, message: str, line_no: int) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "mailfront.conf"
    path.write_text(
        "events {}\nmail {\n  auth_http 127.0.0.1:9000/auth;\n  server {\n"
        "    listen 127.0.0.1:10993 ssl;\n    protocol imap;\n"
        f"    ssl_certificate {ecdsa.cert};\n    ssl_certificate_key {ecdsa.key};\n"
        f"    {line}\n  }}\n}}\n"
    )
    rc, err = run_cli("-t", "-c", str(path), "-p", str(tmp_path))
    assert rc == 1
    assert f"[emerg] {message} in {path}:{line_no}\n" in err


def test_cli_starttls_needs_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "mailfront.conf"
    path.write_text(
        "events {}\nmail {\n  auth_http 127.0.0.1:9000/auth;\n  server {\n"
        "    listen 127.0.0.1:10143;\n    protocol imap;\n    starttls on;\n  }\n}\n"
    )
    rc, err = run_cli("-t", "-c", str(path), "-p", str(tmp_path))
    assert rc == 1
    assert (
        f'[emerg] no "ssl_certificate" is defined for the "starttls" directive in {path}:7\n' in err
    )


# ------------------------------------------------------------------ openssl s_client


def serve_once(ctx: OpenSSLContext, server: ServerConf) -> tuple[int, threading.Thread, Result]:
    """A loopback port where one session is served (in a thread) for ``s_client``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]
    out = Result()

    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as e:
            out.server_error = e
            return
        finally:
            listener.close()
        serve(conn, ctx, server, out)

    thread = threading.Thread(target=run)
    thread.start()
    return port, thread, out


def s_client(port: int, *args: str) -> str:
    run = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "mail.test",
         "-ign_eof", *args],
        input=b"", capture_output=True, timeout=30,
    )  # fmt: skip
    return run.stdout.decode("utf-8", "replace") + run.stderr.decode("utf-8", "replace")


def test_s_client(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, "optional"))
    port, thread, seen = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path), "-alpn", "imap",
                   "-cert", str(alice.cert), "-key", str(alice.key))  # fmt: skip
    thread.join(30)
    assert "ALPN protocol: imap" in out and "Verify return code: 0 (ok)" in out
    assert "* OK hello" in out
    assert seen.rejection is None and seen.server_error is None
    assert seen.info[auth_http.SSL_VERIFY] == b"SUCCESS"
    assert seen.info[auth_http.SSL_SUBJECT].startswith(b"CN=alice,OU=Testing cert #")
    # the names of ssl_client_certificate, sent as nginx sends them (SSL_CTX_set_client_CA_list)
    assert "Acceptable client certificate CA names" in out
    ca_name = pki.ca.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert ca_name and str(ca_name[0].value) in out
    # ssl_trusted_certificate only: no names
    ctx, server = server_ctx(
        tmp_path,
        certs(ecdsa) + f" ssl_verify_client optional; ssl_trusted_certificate {pki.ca.path};",
    )
    port, thread, seen = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path))
    thread.join(30)
    assert "No client certificate CA names sent" in out and "* OK hello" in out


def test_s_client_resumes(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    sess = tmp_path / "session.pem"
    port, thread, _ = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path), "-sess_out", str(sess))
    thread.join(30)
    assert re.search(r"\bNew, TLSv1\.3", out), out
    port, thread, seen = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path), "-sess_in", str(sess))
    thread.join(30)
    assert "Reused, TLSv1.3" in out, out
    assert seen.reused


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_der_reader_only_raises_value_error(data: bytes) -> None:
    """The certificate reader, fed anything, answers or raises ValueError (nothing else)."""
    for function in (tls.rfc2253, tls.cert_facts):
        with suppress(ValueError):
            function(data)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_der_reader_on_damaged_certificates(pki: Pki, alice: Issued, data: st.DataObject) -> None:
    der = bytearray(alice.der)
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    try:
        facts = tls.cert_facts(bytes(der))
    except ValueError:
        return
    assert set(facts) == {
        auth_http.SSL_SUBJECT, auth_http.SSL_ISSUER, auth_http.SSL_SERIAL,
        auth_http.SSL_FINGERPRINT, auth_http.SSL_CERT,
    }  # fmt: skip


def test_openssl_error_texts_are_nginx_s(tmp_path: Path, ecdsa: Issued) -> None:
    """The ``(SSL: ...)`` tails of the common mistakes, word for word as Debian's nginx
    (OpenSSL 3.0) prints them with ``nginx -t`` (compared by hand; the codes are OpenSSL's)."""
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    gone = tmp_path / "gone.pem"
    enoent = f"system library::No such file or directory:calling fopen({gone}, r)"
    cases = {
        f"ssl_certificate {gone}; ssl_certificate_key {ecdsa.key};": (
            f'cannot load certificate "{gone}": BIO_new_file() failed (SSL: error:80000002:'
            f"{enoent} error:10000080:BIO routines::no such file)"
        ),
        f"ssl_certificate {empty}; ssl_certificate_key {ecdsa.key};": (
            f'cannot load certificate "{empty}": PEM_read_bio_X509_AUX() failed (SSL: '
            "error:0480006C:PEM routines::no start line:Expecting: TRUSTED CERTIFICATE)"
        ),
        certs(ecdsa) + f" ssl_dhparam {empty};": (
            f'PEM_read_bio_DHparams("{empty}") failed (SSL: error:0480006C:PEM routines::'
            "no start line:Expecting: DH PARAMETERS)"
        ),
        certs(ecdsa) + " ssl_ecdh_curve prime256v1:foo:bar;": (
            'SSL_CTX_set1_curves_list("prime256v1:foo:bar") failed (SSL: error:0A080106:'
            "SSL routines::passed invalid argument:group 'foo' cannot be set)"
        ),
        certs(ecdsa) + " ssl_conf_command Ciphersuites BOGUS;": (
            'SSL_CONF_cmd("Ciphersuites", "BOGUS") failed (SSL: error:0A0000B9:SSL routines::'
            "no cipher match error:0A000180:SSL routines::bad value:cmd=Ciphersuites, "
            "value=BOGUS)"
        ),
        certs(ecdsa) + " ssl_conf_command MinProtocol foo;": (
            'SSL_CONF_cmd("MinProtocol", "foo") failed (SSL: error:0A000180:SSL routines::'
            "bad value:cmd=MinProtocol, value=foo)"
        ),
    }
    for lines, message in cases.items():
        assert refused(tmp_path, lines) == message, lines
