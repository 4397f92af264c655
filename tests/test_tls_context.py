"""The stdlib TLS engine: SSL contexts built from configurations, real handshakes.

Each test loads a small configuration with ``mailfront.conf.load``, builds the
server's context with ``make_server_context`` and runs real handshakes
against it: a stdlib client over a socketpair, the server in a thread, or
``openssl s_client`` over loopback.  Certificates are made by
``tests/support/certs.py``.  Where the stdlib engine differs from nginx
(docs/tls.md), the test says so and checks what mailfront does.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from contextlib import redirect_stderr, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
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
    stdlib_refusals,
    tls_enabled,
)
from mailfront.protocol import auth_http
from mailfront.server import tls
from mailfront.server.tls import Rejection
from support.certs import Authority, Issued, Pki

A = x509.NameAttribute

# Python deprecates the TLS 1.0/1.1 names and the OP_NO_* flags that nginx's
# ssl_protocols needs for such configurations (spec section 1.2): the tests
# that use them say so with these marks.
OLD_TLS = pytest.mark.filterwarnings(
    "ignore:ssl.TLSVersion.TLSv1:DeprecationWarning",
    "ignore:ssl.OP_NO_SSL\\*/ssl.OP_NO_TLS\\* options are deprecated:DeprecationWarning",
)


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


def server_ctx(tmp_path: Path, lines: str, **kw: str) -> tuple[ssl.SSLContext, ServerConf]:
    server = load_server(tmp_path, lines, **kw)
    return tls.make_server_context(server, server.protocol.value), server


def refused(tmp_path: Path, lines: str, **kw: str) -> str:
    server = load_server(tmp_path, lines, **kw)
    with pytest.raises(conf.ConfError) as info:
        tls.make_server_context(server, server.protocol.value)
    return str(info.value)


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


@dataclass
class Result:
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    reused: bool = False
    rejection: tls.CertRejection | None = None
    info: dict[str, bytes] = field(default_factory=dict)
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    server_cert: bytes | None = None  # the certificate the client was shown
    session: ssl.SSLSession | None = None
    server_session_timeout: int | None = None

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None


def handshake(
    ctx: ssl.SSLContext,
    server: ServerConf,
    client: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> Result:
    """One TLS session over a socketpair: server in a thread, clean shutdown both ways."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    out = Result()

    def serve() -> None:
        try:
            s = ctx.wrap_socket(a, server_side=True)
        except (ssl.SSLError, OSError) as e:
            out.server_error = e
            a.close()
            return
        try:
            out.version = s.version()
            cipher = s.cipher()
            out.cipher = cipher[0] if cipher else None
            out.alpn = s.selected_alpn_protocol()
            out.reused = bool(s.session_reused)
            out.rejection = tls.check_client_cert(s, server)
            out.info = tls.ssl_info(s, server)
            out.server_session_timeout = s.session.timeout if s.session else None
            s.sendall(b"ok")
            s.unwrap().close()
        except (ssl.SSLError, OSError) as e:
            out.server_error = e
        finally:
            s.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        c = client.wrap_socket(b, server_hostname="mail.test", session=session)
        try:
            assert c.recv(2) == b"ok"  # a TLSv1.3 client learns of a refusal here
            out.server_cert = c.getpeercert(binary_form=True)
            out.session = c.session
            c.unwrap().close()
        finally:
            c.close()
    except (ssl.SSLError, OSError) as e:
        out.client_error = e
    finally:
        b.close()
        thread.join(10)
    return out


def key_type(der: bytes | None) -> str:
    assert der is not None
    return type(x509.load_der_x509_certificate(der).public_key()).__name__


# ------------------------------------------------------------------ basics


def test_defaults_as_nginx(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    assert isinstance(ctx, tls.ServerContext)
    # nginx's options: no server cipher preference by default (Python sets it),
    # no renegotiation, an EOF without close_notify is a plain close
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_IGNORE_UNEXPECTED_EOF
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert not ctx.options & ssl.OP_NO_TICKET
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE
    r = handshake(ctx, server, client_ctx(pki))
    assert r.ok, r
    assert r.version == "TLSv1.3"
    assert r.info == {
        auth_http.SSL_PROTOCOL: b"TLSv1.3",
        auth_http.SSL_CIPHER: r.cipher.encode() if r.cipher else b"",
    }
    assert r.rejection is None
    assert r.server_cert == ecdsa.der


def test_starttls_needs_the_same_context(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    server = load_server(tmp_path, "starttls only; " + certs(ecdsa), listen="127.0.0.1:10143")
    assert tls_enabled(server)
    ctx = tls.make_server_context(server, "imap")
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
    assert (ctx.minimum_version, ctx.maximum_version) == TLS12
    assert handshake(ctx, server, client_ctx(pki)).version == "TLSv1.2"
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols TLSv1.3;")
    r = handshake(ctx, server, client_ctx(pki, versions=TLS12))
    assert not r.ok and r.server_error is not None
    assert handshake(ctx, server, client_ctx(pki)).version == "TLSv1.3"


@OLD_TLS
def test_old_protocols_and_holes(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    # a hole: TLSv1.1 disabled between the two others, as nginx's SSL_OP_NO_TLSv1_1
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols TLSv1 TLSv1.2;")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_TLSv1_1 and not ctx.options & ssl.OP_NO_TLSv1
    # TLSv1 needs OpenSSL's security level 0, in nginx too (ssl_ciphers @SECLEVEL=0)
    ctx, server = server_ctx(
        tmp_path, certs(ecdsa) + " ssl_protocols TLSv1; ssl_ciphers DEFAULT:@SECLEVEL=0;"
    )
    old = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1)
    r = handshake(ctx, server, client_ctx(pki, versions=old, ciphers="DEFAULT:@SECLEVEL=0"))
    assert r.ok and r.version == "TLSv1"
    assert r.info[auth_http.SSL_PROTOCOL] == b"TLSv1"
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols TLSv1;")
    assert not handshake(ctx, server, client_ctx(pki, versions=old, ciphers="DEFAULT")).ok
    # SSLv3 alone: no version OpenSSL still has, so no handshake at all (nginx alike)
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_protocols SSLv3;")
    assert ctx.options & ssl.OP_NO_TLSv1_2 and ctx.options & ssl.OP_NO_TLSv1_3
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
    message = refused(tmp_path, certs(ecdsa) + " ssl_ciphers NOPE;")
    assert message.startswith('SSL_CTX_set_cipher_list("NOPE") failed (SSL: ')


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
        assert bool(ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE) == (flag == "on")
        assert handshake(ctx, server, client).cipher == expected


def test_dhparam(tmp_path: Path, pki: Pki, rsa: Issued) -> None:
    dh = tmp_path / "dh.pem"
    subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
         "-out", str(dh)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    lines = certs(rsa) + " ssl_protocols TLSv1.2; ssl_ciphers DHE-RSA-AES128-GCM-SHA256;"
    client = client_ctx(pki, ciphers="DHE-RSA-AES128-GCM-SHA256")
    ctx, server = server_ctx(tmp_path, lines)
    assert not handshake(ctx, server, client).ok  # no DH parameters, no DHE (nginx alike)
    ctx, server = server_ctx(tmp_path, lines + f" ssl_dhparam {dh};")
    assert handshake(ctx, server, client).cipher == "DHE-RSA-AES128-GCM-SHA256"
    message = refused(tmp_path, certs(rsa) + f" ssl_dhparam {tmp_path}/none.pem;")
    assert message.startswith(f'BIO_new_file("{tmp_path}/none.pem") failed (2: ')
    message = refused(tmp_path, certs(rsa) + f" ssl_dhparam {rsa.cert};")
    assert message.startswith(f'PEM_read_bio_DHparams("{rsa.cert}") failed')


def test_ecdh_curve(tmp_path: Path, pki: Pki, ecdsa: Issued, rsa: Issued) -> None:
    for name in ("secp384r1", "P-384"):
        # RSA: with TLSv1.2 an ECDSA certificate on P-256 needs P-256 among the curves
        ctx, server = server_ctx(tmp_path, certs(rsa) + f" ssl_ecdh_curve {name};")
        assert not handshake(ctx, server, client_ctx(pki, curve="prime256v1")).ok
        for version in (TLS12, TLS13):
            assert handshake(ctx, server, client_ctx(pki, versions=version, curve="secp384r1")).ok
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_ecdh_curve X25519;")
    assert handshake(ctx, server, client_ctx(pki, curve="X25519")).ok
    message = refused(tmp_path, certs(ecdsa) + " ssl_ecdh_curve nocurve;")
    assert message.startswith('SSL_CTX_set1_curves_list("nocurve") failed')
    message = refused(tmp_path, certs(ecdsa) + " ssl_ecdh_curve X25519:prime256v1;")
    assert message.startswith('"ssl_ecdh_curve X25519:prime256v1" is not supported yet for server')


# ------------------------------------------------------------------ keys and files


def test_password_file(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    key = pki.encrypted_key(ecdsa, b"secret")
    pair = f"ssl_certificate {ecdsa.cert}; ssl_certificate_key {key};"
    passwords = tmp_path / "passwords"
    passwords.write_bytes(b"wrong\r\n\r\nalso wrong\nsecret")  # each line in turn, as nginx
    ctx, server = server_ctx(tmp_path, pair + f" ssl_password_file {passwords};")
    assert handshake(ctx, server, client_ctx(pki)).ok
    passwords.write_bytes(b"wrong\n")
    message = refused(tmp_path, pair + f" ssl_password_file {passwords};")
    assert message.startswith(f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() ')
    # no password file: an empty password, never a prompt on the terminal
    message = refused(tmp_path, pair)
    assert message.startswith(f'cannot load certificate key "{key}"')
    message = refused(tmp_path, pair + f" ssl_password_file {tmp_path}/nope;")
    assert message == f'open() "{tmp_path}/nope" failed (2: No such file or directory)'
    passwords.write_bytes(b"x" * 5000 + b"\n")
    assert refused(tmp_path, pair + f" ssl_password_file {passwords};") == (
        f'too long line in "{passwords}"'
    )


def test_certificate_errors(tmp_path: Path, pki: Pki, ecdsa: Issued, rsa: Issued) -> None:
    missing = tmp_path / "missing.crt"
    message = refused(tmp_path, f"ssl_certificate {missing}; ssl_certificate_key {ecdsa.key};")
    assert message.startswith(f'cannot load certificate "{missing}": BIO_new_file() failed (2: ')
    message = refused(tmp_path, f"ssl_certificate {ecdsa.cert}; ssl_certificate_key {missing};")
    assert message.startswith(f'cannot load certificate key "{missing}": BIO_new_file() failed')
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    message = refused(tmp_path, f"ssl_certificate {garbage}; ssl_certificate_key {ecdsa.key};")
    assert message.startswith(f'cannot load certificate "{garbage}": PEM_read_bio_X509_AUX()')
    message = refused(tmp_path, f"ssl_certificate {rsa.cert}; ssl_certificate_key {ecdsa.key};")
    assert message.startswith(f'SSL_CTX_use_PrivateKey("{ecdsa.key}") failed')
    other = pki.server("other.test", key_type=trustme.KeyType.RSA)
    message = refused(tmp_path, f"ssl_certificate {rsa.cert}; ssl_certificate_key {other.key};")
    assert message.startswith(f'SSL_CTX_use_PrivateKey("{other.key}") failed')


def test_verify_files_are_read_only_when_verifying(tmp_path: Path, ecdsa: Issued) -> None:
    # nginx loads ssl_client_certificate, ssl_trusted_certificate and ssl_crl
    # only with ssl_verify_client on: a missing file is no error otherwise
    lines = certs(ecdsa) + (
        f" ssl_client_certificate {tmp_path}/a.pem; ssl_trusted_certificate {tmp_path}/b.pem;"
        f" ssl_crl {tmp_path}/c.crl;"
    )
    server_ctx(tmp_path, lines)
    message = refused(tmp_path, lines + " ssl_verify_client on;")
    assert message.startswith(f'cannot load certificate "{tmp_path}/a.pem": BIO_new_file()')


# ------------------------------------------------------------------ ALPN


def test_alpn(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    for protocol in ("imap", "pop3", "smtp"):
        ctx, server = server_ctx(tmp_path, certs(ecdsa), protocol=protocol)
        r = handshake(ctx, server, client_ctx(pki, alpn=["x-other", protocol]))
        assert r.ok and r.alpn == protocol
        assert handshake(ctx, server, client_ctx(pki)).alpn is None
        # nginx ends this handshake with a fatal no_application_protocol alert;
        # the stdlib goes on without ALPN (docs/tls.md)
        r = handshake(ctx, server, client_ctx(pki, alpn=["http/1.1"]))
        assert r.ok and r.alpn is None


# ------------------------------------------------------------------ sessions


def test_session_resumption_with_tickets(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    for version in (TLS13, TLS12):
        client = client_ctx(pki, versions=version)
        first = handshake(ctx, server, client)
        assert first.ok and not first.reused
        again = handshake(ctx, server, client, first.session)
        assert again.ok and again.reused
        # OpenSSL's session lifetime: the stdlib cannot set nginx's 5m (docs/tls.md)
        assert again.server_session_timeout == 7200
    # another context (a reload) has other ticket keys: a full handshake
    other, _ = server_ctx(tmp_path, certs(ecdsa))
    client = client_ctx(pki)
    first = handshake(ctx, server, client)
    assert not handshake(other, server, client, first.session).reused


def test_session_tickets_off(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + " ssl_session_tickets off;")
    assert ctx.options & ssl.OP_NO_TICKET and ctx.num_tickets == 0
    client = client_ctx(pki, versions=TLS13)
    first = handshake(ctx, server, client)
    assert not handshake(ctx, server, client, first.session).reused
    # TLSv1.2 by session id: nginx's "none" cache keeps no session, OpenSSL's
    # cache does (docs/tls.md)
    client = client_ctx(pki, versions=TLS12)
    first = handshake(ctx, server, client)
    assert handshake(ctx, server, client, first.session).reused
    # with "builtin", TLSv1.3 falls back to stateful tickets, as in nginx
    ctx, server = server_ctx(
        tmp_path, certs(ecdsa) + " ssl_session_tickets off; ssl_session_cache builtin;"
    )
    assert ctx.num_tickets == 2
    client = client_ctx(pki, versions=TLS13)
    first = handshake(ctx, server, client)
    assert handshake(ctx, server, client, first.session).reused


@pytest.mark.filterwarnings(
    # Python 3.12+ warns about fork() in a process with threads; each child
    # here runs one handshake and leaves with os._exit
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
def test_tickets_resume_across_forked_workers(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """A context made before fork() shares its ticket keys with every worker."""
    ctx, _ = server_ctx(tmp_path, certs(ecdsa))
    client = client_ctx(pki)

    def worker_session(session: ssl.SSLSession | None) -> tuple[bytes, ssl.SSLSession | None]:
        a, b = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                b.close()
                a.settimeout(10)
                s = ctx.wrap_socket(a, server_side=True)
                s.sendall(b"r" if s.session_reused else b"n")
                s.unwrap().close()
                code = 0
            finally:
                os._exit(code)
        a.close()
        b.settimeout(10)
        try:
            c = client.wrap_socket(b, server_hostname="mail.test", session=session)
            answer = c.recv(1)
            got = c.session
            c.unwrap().close()
            c.close()
        finally:
            b.close()
            _, status = os.waitpid(pid, 0)
        assert status == 0
        return answer, got

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
    for value in ("none", "builtin", "builtin:20480"):
        server_ctx(tmp_path, certs(ecdsa) + f" ssl_session_cache {value};")
    for value in ("off", "builtin:1000", "shared:SSL:10m", "builtin shared:SSL:10m"):
        message = refused(tmp_path, certs(ecdsa) + f" ssl_session_cache {value};")
        assert message.startswith(
            f'"ssl_session_cache {value}" is not supported yet for server in '
        )
    message = refused(tmp_path, certs(ecdsa) + " ssl_session_timeout 10m;")
    assert message.startswith('"ssl_session_timeout 600s" is not supported yet for server in ')
    server_ctx(tmp_path, certs(ecdsa) + " ssl_session_timeout 300s;")


# ------------------------------------------------------------------ client certificates


def verify_lines(pki: Pki, mode: str = "on", **extra: Any) -> str:
    lines = f" ssl_verify_client {mode}; ssl_client_certificate {pki.ca.path};"
    return lines + "".join(f" {k} {v};" for k, v in extra.items())


def test_verify_on(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki))
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    # no certificate: the handshake completes, then no_cert, as nginx does
    r = handshake(ctx, server, client_ctx(pki))
    assert r.ok
    assert r.rejection == tls.CertRejection(
        Rejection.NO_CERT, "client sent no required SSL certificate"
    )
    assert r.info[auth_http.SSL_VERIFY] == b"NONE"
    # a good certificate
    r = handshake(ctx, server, client_ctx(pki, cert=alice))
    assert r.ok and r.rejection is None
    assert r.info[auth_http.SSL_VERIFY] == b"SUCCESS"
    assert r.info[auth_http.SSL_FINGERPRINT] == hashlib.sha1(alice.der).hexdigest().encode()
    for version in (TLS12, TLS13):
        assert (
            handshake(ctx, server, client_ctx(pki, versions=version, cert=alice)).rejection is None
        )


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


def test_bad_client_certificates_end_the_handshake(
    tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued
) -> None:
    """nginx completes these handshakes and answers cert_error; the stdlib sends an alert."""
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
        assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN == ssl.VERIFY_CRL_CHECK_CHAIN
        for cert, reason in ((expired, "certificate has expired"),
                             (stranger, "unable to get local issuer certificate"),
                             (revoked, "certificate revoked")):  # fmt: skip
            r = handshake(ctx, server, client_ctx(pki, cert=cert))
            assert isinstance(r.server_error, ssl.SSLCertVerificationError), r
            assert r.server_error.verify_message == reason
            assert r.client_error is not None
        assert handshake(ctx, server, client_ctx(pki, cert=alice)).rejection is None
    # without the CRL, bob passes
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki))
    assert handshake(ctx, server, client_ctx(pki, cert=revoked)).rejection is None


def test_crl_file_lends_no_trust(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    """nginx reads only the CRLs of ssl_crl: a CA certificate in it is not trusted."""
    stranger = pki.authority("stranger2")
    mallory = stranger.issue("mallory", stem="mallory2")
    crl = tmp_path / "mixed.crl"
    crl.write_bytes(pki.ca.crl([]).read_bytes() + stranger.pem)
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=crl))
    assert handshake(ctx, server, client_ctx(pki, cert=mallory)).server_error is not None
    message = refused(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=f"{tmp_path}/no.crl"))
    assert message.startswith(f'cannot load CRL "{tmp_path}/no.crl": BIO_new_file() failed')
    message = refused(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_crl=pki.ca.path))
    assert message == f'cannot load CRL "{pki.ca.path}": no CRLs'


def test_trusted_certificate(tmp_path: Path, pki: Pki, ecdsa: Issued, alice: Issued) -> None:
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
    """OpenSSL 3 allows ssl_verify_depth intermediate CAs (nginx's default: one)."""
    inter = pki.ca.child("inter")
    inter2 = inter.child("inter2")
    one = inter.issue("carol", stem="carol", chain=False)  # root > inter > carol
    two = inter2.issue("dave", stem="dave", chain=False)  # root > inter > inter2 > dave
    too_long = tls.CertRejection(
        Rejection.CERT_ERROR, "client SSL certificate verify error: (22:certificate chain too long)"
    )
    # the intermediates are in the CA file
    cas = chain_file(tmp_path, "cas", pki.ca, inter, inter2)
    for depth, who, expected in ((1, one, None), (0, one, too_long), (1, two, too_long),
                                 (2, two, None)):  # fmt: skip
        lines = f" ssl_verify_client on; ssl_client_certificate {cas}; ssl_verify_depth {depth};"
        ctx, server = server_ctx(tmp_path, certs(ecdsa) + lines)
        r = handshake(ctx, server, client_ctx(pki, cert=who))
        assert r.ok and r.rejection == expected, (depth, who)
        if expected is not None:
            assert r.rejection is not None
            line = tls.rejection_line(Protocol.IMAP, r.rejection.kind)
            assert line == b"* BYE SSL certificate error\r\n"
            assert r.info[auth_http.SSL_VERIFY] == b"FAILED:certificate chain too long"
    # the client sends its intermediate: one is within depth 1, none is allowed with depth 0
    sent_one = inter.issue("erin", stem="erin")  # the file holds erin, then inter
    for depth, expected in ((1, None), (0, too_long)):
        lines = verify_lines(pki, ssl_verify_depth=depth)
        ctx, server = server_ctx(tmp_path, certs(ecdsa) + lines)
        assert handshake(ctx, server, client_ctx(pki, cert=sent_one)).rejection == expected
    # two intermediates sent by the client: Python before 3.13 does not show
    # them, and the chain passes where nginx says "certificate chain too long"
    sent_two = inter2.issue("frank", stem="frank")
    ctx, server = server_ctx(tmp_path, certs(ecdsa) + verify_lines(pki))
    r = handshake(ctx, server, client_ctx(pki, cert=sent_two))
    exact = hasattr(ssl.SSLObject, "get_verified_chain")
    assert r.ok and r.rejection == (too_long if exact else None)


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


# ------------------------------------------------------------------ what the engine refuses


def test_stdlib_refusals(tmp_path: Path, ecdsa: Issued, pki: Pki) -> None:
    base = certs(ecdsa)
    server = load_server(tmp_path, base)
    assert stdlib_refusals(server) == []
    place = f"{tmp_path}/conf/mailfront.conf:4"
    for lines, what in [
        ("ssl_session_cache shared:SSL:10m;", '"ssl_session_cache shared:SSL:10m"'),
        ("ssl_session_cache off;", '"ssl_session_cache off"'),
        ("ssl_session_timeout 1h;", '"ssl_session_timeout 3600s"'),
        ("ssl_ecdh_curve X25519:secp384r1;", '"ssl_ecdh_curve X25519:secp384r1"'),
        (f"ssl_verify_client optional_no_ca; ssl_client_certificate {pki.ca.path};",
         '"ssl_verify_client optional_no_ca"'),
    ]:  # fmt: skip
        server = load_server(tmp_path, base + " " + lines)
        errors = stdlib_refusals(server)
        assert [str(e) for e in errors] == [f"{what} is not supported yet for server in {place}"]
        with pytest.raises(conf.ConfError) as info:
            tls.make_server_context(server, "imap")
        assert info.value is not errors[0] and str(info.value) == str(errors[0])
    # several at once, in a fixed order
    server = load_server(tmp_path, base + " ssl_session_cache builtin:10; ssl_session_timeout 1m;")
    assert len(stdlib_refusals(server)) == 2
    # a server without TLS is not looked at (nginx creates no SSL context)
    server = load_server(
        tmp_path, "ssl_session_cache shared:SSL:10m; ssl_verify_client optional_no_ca;",
        listen="127.0.0.1:10143",
    )  # fmt: skip
    assert stdlib_refusals(server) == []


def test_depth_is_honoured_not_refused(tmp_path: Path, ecdsa: Issued, pki: Pki) -> None:
    server = load_server(tmp_path, certs(ecdsa) + verify_lines(pki, ssl_verify_depth=5))
    assert stdlib_refusals(server) == []


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
        "  server { listen 127.0.0.1:10993 ssl; protocol imap; }\n"
        "  server { listen 127.0.0.1:10143; protocol imap; starttls only; }\n"
        "  server { listen 127.0.0.1:10110; protocol pop3; starttls on; }\n"
        "  server { listen 127.0.0.1:10587; protocol smtp; starttls on; }\n"
        "}\n"
    )
    rc, err = run_cli("-t", "-c", str(path), "-p", str(tmp_path))
    assert rc == 0, err
    config = conf.load(str(path), f"{tmp_path}/")
    assert config.mail is not None
    for server in config.mail.servers:
        assert stdlib_refusals(server) == []
        tls.make_server_context(server, server.protocol.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;",
         '"ssl_conf_command" directive is not supported yet'),
        ("ssl_session_ticket_key ticket.key;",
         '"ssl_session_ticket_key" directive is not supported yet'),
        ("ssl_certificate_compression on;",
         '"ssl_certificate_compression on" is not supported yet'),
        ("starttls on;", 'no "ssl_certificate" is defined for the "starttls" directive'),
    ],
)  # fmt: skip
def test_cli_refuses(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "mailfront.conf"
    path.write_text(
        "events {}\nmail {\n  auth_http 127.0.0.1:9000/auth;\n  server {\n"
        f"    listen 127.0.0.1:10143;\n    protocol imap;\n    {line}\n  }}\n}}\n"
    )
    rc, err = run_cli("-t", "-c", str(path), "-p", str(tmp_path))
    assert rc == 1
    assert f"[emerg] {message} in {path}:7\n" in err


# ------------------------------------------------------------------ openssl s_client


def serve_once(
    ctx: ssl.SSLContext, server: ServerConf
) -> tuple[int, threading.Thread, dict[str, Any]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]
    seen: dict[str, Any] = {}

    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as e:
            seen["error"] = e
            listener.close()
            return
        listener.close()
        conn.settimeout(20)
        try:
            s = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            seen["error"] = e
            conn.close()
            return
        try:
            seen["rejection"] = tls.check_client_cert(s, server)
            seen["info"] = tls.ssl_info(s, server)
            s.sendall(b"* OK hello\r\n")
            s.unwrap().close()
        except (ssl.SSLError, OSError) as e:
            seen["error"] = e
        finally:
            s.close()

    thread = threading.Thread(target=run)
    thread.start()
    return port, thread, seen


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
    assert seen.get("rejection") is None and "error" not in seen
    assert seen["info"][auth_http.SSL_VERIFY] == b"SUCCESS"
    assert seen["info"][auth_http.SSL_SUBJECT].startswith(b"CN=alice,OU=Testing cert #")
    # nginx sends the names of ssl_client_certificate; the stdlib cannot (docs/tls.md)
    assert "No client certificate CA names sent" in out
    # ALPN mismatch: nginx would end the handshake with a fatal alert
    port, thread, seen = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path), "-alpn", "pop3")
    thread.join(30)
    assert "No ALPN negotiated" in out and "error" not in seen


def test_s_client_resumes(tmp_path: Path, pki: Pki, ecdsa: Issued) -> None:
    ctx, server = server_ctx(tmp_path, certs(ecdsa))
    sess = tmp_path / "session.pem"
    port, thread, _ = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path), "-sess_out", str(sess))
    thread.join(30)
    assert re.search(r"\bNew, TLSv1\.3", out), out
    port, thread, _ = serve_once(ctx, server)
    out = s_client(port, "-CAfile", str(pki.ca.path), "-sess_in", str(sess))
    thread.join(30)
    assert "Reused, TLSv1.3" in out, out


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
