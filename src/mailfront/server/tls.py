"""Server-side TLS: nginx's SSL context of a ``server{}``, and the Auth-SSL-* facts.

This is the stdlib engine: Python's ``ssl`` module (the same OpenSSL nginx
links, behind the stdlib API), used through uvloop's public TLS entry points,
``loop.create_server(ssl=ctx)`` for ``listen ... ssl`` and
``loop.start_tls(transport, protocol, ctx, server_side=True)`` for STARTTLS.

* :func:`make_server_context` applies a server's ``ssl_*`` directives the way
  ``ngx_mail_ssl_merge_conf`` does, in nginx's order, so that the first broken
  file or value is the one nginx would report.  What the stdlib cannot honour
  is refused first (:func:`mailfront.conf.tls_support.stdlib_refusals`).  Build
  the contexts once, in the master process, before the workers are forked:
  OpenSSL draws the session ticket keys when a context is created, so the
  workers then share them and a ticket from one worker resumes in another, as
  with nginx.
* :func:`check_client_cert` is ``ngx_mail_verify_cert``: after the handshake,
  whether the session must answer with the protocol's *cert_error* or
  *no_cert* line and close (:func:`rejection_line` gives the line).
* :func:`ssl_info` gives the values of the Auth-SSL-* request headers.

What differs from nginx is listed in ``docs/tls.md``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import re
import ssl
from collections.abc import Callable, Iterable
from typing import NamedTuple

from cryptography import x509

from mailfront.conf.errors import ConfError
from mailfront.conf.model import Protocol, ServerConf, VerifyClient
from mailfront.conf.tls_support import (
    SCACHE_NONE,
    parse_session_cache,
    stdlib_refusals,
    verify_enabled,
)
from mailfront.protocol import auth_http, imap, pop3, smtp

# ngx_ssl_read_password_file: NGX_SSL_PASSWORD_BUFFER_SIZE
PASSWORD_BUFFER_SIZE = 4096

# OpenSSL's X509_V_ERR_CERT_CHAIN_TOO_LONG and its X509_verify_cert_error_string()
X509_V_ERR_CERT_CHAIN_TOO_LONG = 22
CERT_CHAIN_TOO_LONG = "certificate chain too long"

# ngx_mail_verify_cert's log texts (info level)
LOG_VERIFY_ERROR = "client SSL certificate verify error: (%d:%s)"
LOG_NO_CERT = "client sent no required SSL certificate"

# the TLS versions of ssl_protocols that OpenSSL 1.1+ still has, lowest first
_VERSIONS: tuple[tuple[str, ssl.TLSVersion, int], ...] = (
    ("TLSv1", ssl.TLSVersion.TLSv1, ssl.OP_NO_TLSv1),
    ("TLSv1.1", ssl.TLSVersion.TLSv1_1, ssl.OP_NO_TLSv1_1),
    ("TLSv1.2", ssl.TLSVersion.TLSv1_2, ssl.OP_NO_TLSv1_2),
    ("TLSv1.3", ssl.TLSVersion.TLSv1_3, ssl.OP_NO_TLSv1_3),
)

# SSL_CTX_set1_curves_list() knows these group names, OBJ_sn2nid() (behind
# SSLContext.set_ecdh_curve) only the short names they stand for
_CURVE_ALIASES = {
    "P-256": "prime256v1",
    "secp256r1": "prime256v1",
    "P-384": "secp384r1",
    "P-521": "secp521r1",
}


class Rejection(enum.Enum):
    """The line ``ngx_mail_verify_cert`` sends before it closes the session."""

    CERT_ERROR = "cert_error"
    NO_CERT = "no_cert"


class CertRejection(NamedTuple):
    kind: Rejection
    log: str  # the info-level log text, nginx's words


_REJECTION_LINES: dict[tuple[Protocol, Rejection], bytes] = {
    (Protocol.IMAP, Rejection.CERT_ERROR): imap.IMAP_CERT_ERROR,
    (Protocol.IMAP, Rejection.NO_CERT): imap.IMAP_NO_CERT,
    (Protocol.POP3, Rejection.CERT_ERROR): pop3.POP3_CERT_ERROR,
    (Protocol.POP3, Rejection.NO_CERT): pop3.POP3_NO_CERT,
    (Protocol.SMTP, Rejection.CERT_ERROR): smtp.SMTP_CERT_ERROR,
    (Protocol.SMTP, Rejection.NO_CERT): smtp.SMTP_NO_CERT,
}


def rejection_line(protocol: Protocol, kind: Rejection) -> bytes:
    """``cscf->protocol->cert_error`` / ``no_cert``: what the client reads before the close."""
    return _REJECTION_LINES[(protocol, kind)]


class ServerContext(ssl.SSLContext):
    """An ``SSLContext`` that also keeps what the post-handshake checks need."""

    mailfront_conf: ServerConf
    # the certificates of ssl_client_certificate and ssl_trusted_certificate
    trust_anchors: tuple[x509.Certificate, ...]
    _depth_cache: dict[bytes, bool]


# --------------------------------------------------------------- context


def make_server_context(conf: ServerConf, protocol_name: str) -> ssl.SSLContext:
    """The SSL context of one ``server{}``, as ``ngx_mail_ssl_merge_conf`` builds it.

    ``protocol_name`` (``imap``, ``pop3``, ``smtp``) is the ALPN protocol id.
    Raises :class:`ConfError` with nginx's message (no place: nginx reports
    these without one) when a file cannot be loaded or a value is refused by
    OpenSSL, and with the ``not supported yet`` message when the stdlib engine
    cannot do what the configuration asks (:func:`stdlib_refusals`).
    """
    refusals = stdlib_refusals(conf)
    if refusals:
        raise refusals[0]

    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.mailfront_conf = conf
    ctx.trust_anchors = ()
    ctx._depth_cache = {}

    # ngx_ssl_create: the options nginx sets on every context.  Python's
    # defaults already hold NO_COMPRESSION and SINGLE_(EC)DH_USE; OP_ALL adds
    # DONT_INSERT_EMPTY_FRAGMENTS, which nginx sets and Python clears.
    ctx.options |= ssl.OP_ALL | ssl.OP_NO_RENEGOTIATION | ssl.OP_IGNORE_UNEXPECTED_EOF
    _set_protocols(ctx, conf.ssl_protocols)

    # ALPN: the protocol's id; see docs/tls.md for a client that offers others
    ctx.set_alpn_protocols([protocol_name])

    # ngx_ssl_ciphers
    try:
        ctx.set_ciphers(conf.ssl_ciphers)
    except ssl.SSLError as e:
        raise ConfError(f'SSL_CTX_set_cipher_list("{conf.ssl_ciphers}") failed{_why(e)}') from None
    if conf.ssl_prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:  # Python sets it by default, nginx does not
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    # ngx_ssl_certificates
    passwords = _read_passwords(conf.ssl_password_file)
    for cert, key in zip(conf.ssl_certificate, conf.ssl_certificate_key, strict=False):
        _load_pair(ctx, cert, key, passwords)

    if verify_enabled(conf):
        # ngx_ssl_client_certificate, ngx_ssl_trusted_certificate, ngx_ssl_crl.
        # CERT_OPTIONAL for "on" too: the handshake completes without a
        # certificate and check_client_cert() answers no_cert, as nginx does.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        anchors: list[x509.Certificate] = []
        for path in (conf.ssl_client_certificate, conf.ssl_trusted_certificate):
            if path:
                anchors += _load_cas(ctx, path)
        ctx.trust_anchors = tuple(anchors)
        if conf.ssl_crl:
            _load_crl(ctx, conf.ssl_crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN

    # ngx_ssl_dhparam
    if conf.ssl_dhparam:
        try:
            ctx.load_dh_params(conf.ssl_dhparam)
        except OSError as e:
            if not isinstance(e, ssl.SSLError):
                raise ConfError(f'BIO_new_file("{conf.ssl_dhparam}") failed{_why(e)}') from None
            raise ConfError(
                f'PEM_read_bio_DHparams("{conf.ssl_dhparam}") failed{_why(e)}'
            ) from None

    # ngx_ssl_ecdh_curve: "auto" keeps OpenSSL's list; one curve replaces it
    # (a list is refused by stdlib_refusals)
    if conf.ssl_ecdh_curve != "auto":
        name = conf.ssl_ecdh_curve
        try:
            ctx.set_ecdh_curve(_CURVE_ALIASES.get(name, name))
        except (ValueError, ssl.SSLError) as e:
            raise ConfError(f'SSL_CTX_set1_curves_list("{name}") failed{_why(e)}') from None

    # ngx_ssl_session_cache and the tickets: only OpenSSL's own cache (the
    # "builtin" one, OpenSSL's timeout) is possible here; see docs/tls.md
    cache = parse_session_cache(conf.ssl_session_cache)
    if not conf.ssl_session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        if cache.builtin == SCACHE_NONE:
            # TLSv1.3 without tickets falls back to stateful tickets, which
            # nginx's "none" cache never stores: issue none at all
            ctx.num_tickets = 0
    return ctx


_SSL_NOISE = re.compile(r"^\[[A-Z0-9_: ]*\] *| \(_ssl\.c:\d+\)$")


def _why(e: BaseException) -> str:
    """nginx appends OpenSSL's error queue as `` (SSL: ...)``; ours is Python's text."""
    if isinstance(e, ssl.SSLError):
        reason = getattr(e, "reason", None)  # absent when Python raised it itself
        text = reason if reason else _SSL_NOISE.sub("", str(e.strerror or e))
        return f" (SSL: {text})"
    if isinstance(e, OSError) and e.strerror:
        return f" ({e.errno}: {e.strerror})"
    return f" ({e})" if str(e) else ""


def _set_protocols(ctx: ssl.SSLContext, protocols: Iterable[str]) -> None:
    """``ssl_protocols`` as OpenSSL applies nginx's ``SSL_OP_NO_*`` set.

    A contiguous set becomes the minimum and maximum versions; a version
    missing in between is disabled with its ``OP_NO_*`` flag, as nginx does
    (Python warns that those flags are deprecated; only such sets use them).
    SSLv2 and SSLv3 are not in OpenSSL 1.1+ builds: naming them changes
    nothing, in nginx too.
    """
    wanted = set(protocols)
    enabled = [(v, op) for name, v, op in _VERSIONS if name in wanted]
    if not enabled:
        # no TLS version at all: every handshake fails, as with nginx
        for _, _, op in _VERSIONS:
            ctx.options |= op
        return
    low, high = enabled[0][0], enabled[-1][0]
    ctx.minimum_version = low
    ctx.maximum_version = high
    for _, v, op in _VERSIONS:
        if low < v < high and (v, op) not in enabled:
            ctx.options |= op


def _read_passwords(path: str | None) -> list[bytes]:
    """``ngx_ssl_read_password_file``: the non-empty lines (CR LF or LF), tried in turn.

    Without a file, one empty password, so that OpenSSL never prompts on the
    terminal (nginx passes an empty list for the same reason).
    """
    if path is None:
        return [b""]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfError(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    passwords: list[bytes] = []
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) >= PASSWORD_BUFFER_SIZE:
            raise ConfError(f'too long line in "{path}"')
        if line:
            passwords.append(line)
    return passwords or [b""]


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str, passwords: list[bytes]) -> None:
    """``ngx_ssl_certificate``: the chain of ``cert``, then ``key``, each password in turn."""
    try:
        with open(cert, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ConfError(
            f'cannot load certificate "{cert}": BIO_new_file() failed{_why(e)}'
        ) from None
    if not _PEM_CERT.search(pem) or _cert_is_bad(pem):
        raise ConfError(f'cannot load certificate "{cert}": PEM_read_bio_X509_AUX() failed')
    try:
        with open(key, "rb"):
            pass
    except OSError as e:
        raise ConfError(
            f'cannot load certificate key "{key}": BIO_new_file() failed{_why(e)}'
        ) from None
    last: Exception | None = None
    for password in passwords:
        try:
            ctx.load_cert_chain(cert, key, password=_constant(password))
            return
        except ssl.SSLError as e:
            if getattr(e, "reason", None) in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
                raise ConfError(f'SSL_CTX_use_PrivateKey("{key}") failed{_why(e)}') from None
            last = e
        except ValueError as e:  # a password longer than the stdlib accepts
            last = e
    assert last is not None
    raise ConfError(
        f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() failed{_why(last)}'
    ) from None


def _constant(value: bytes) -> Callable[[], bytes]:
    return lambda: value


_PEM_CERT = re.compile(
    rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----\r?\n.*?"
    rb"-----END (?:X509 |TRUSTED )?CERTIFICATE-----",
    re.DOTALL,
)
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----\r?\n.*?-----END X509 CRL-----", re.DOTALL)


def _cert_is_bad(pem: bytes) -> bool:
    for block in _PEM_CERT.findall(pem):
        try:
            x509.load_pem_x509_certificate(block)
        except ValueError:
            return True
    return False


def _load_cas(ctx: ssl.SSLContext, path: str) -> list[x509.Certificate]:
    """The CA certificates of ``path`` into the verify store.

    Only its certificates: nginx reads no CRL from this file.
    """
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ConfError(
            f'cannot load certificate "{path}": BIO_new_file() failed{_why(e)}'
        ) from None
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise ConfError(f'cannot load certificate "{path}": no certificates')
    anchors: list[x509.Certificate] = []
    for block in blocks:
        try:
            anchors.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise ConfError(
                f'cannot load certificate "{path}": PEM_read_bio_X509() failed ({e})'
            ) from None
    try:
        ctx.load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as e:
        raise ConfError(f'X509_STORE_add_cert("{path}") failed{_why(e)}') from None
    return anchors


def _load_crl(ctx: ssl.SSLContext, path: str) -> None:
    """``ngx_ssl_crl``: the CRLs of ``path`` (and nothing else of it) into the verify store."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ConfError(f'cannot load CRL "{path}": BIO_new_file() failed{_why(e)}') from None
    blocks = _PEM_CRL.findall(pem)
    if not blocks:
        raise ConfError(f'cannot load CRL "{path}": no CRLs')
    for block in blocks:
        try:
            x509.load_pem_x509_crl(block)
        except ValueError as e:
            raise ConfError(
                f'cannot load CRL "{path}": PEM_read_bio_X509_CRL() failed ({e})'
            ) from None
    # load_verify_locations() reads CRLs only from a file (cadata takes
    # certificates only): hand it the CRL blocks through an anonymous file
    fd = os.memfd_create("mailfront-crl", os.MFD_CLOEXEC)
    try:
        os.write(fd, b"\n".join(blocks) + b"\n")
        ctx.load_verify_locations(cafile=f"/proc/self/fd/{fd}")
    except ssl.SSLError as e:
        raise ConfError(f'X509_STORE_add_crl("{path}") failed{_why(e)}') from None
    finally:
        os.close(fd)


# ------------------------------------------------------- after the handshake


def _peer_der(obj: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    return obj.getpeercert(binary_form=True)


def _verify_error(obj: ssl.SSLObject | ssl.SSLSocket, der: bytes) -> tuple[int, str] | None:
    """What ``SSL_get_verify_result`` would say beyond what OpenSSL already enforced.

    OpenSSL ended the handshake on every verification error but one: the
    depth limit, which the stdlib cannot set (OpenSSL's default is 100).
    OpenSSL 3 accepts a chain of at most ``ssl_verify_depth`` + 2
    certificates (the client's, the intermediate CAs, the trust anchor);
    beyond that it is nginx's ``certificate chain too long``.  The chain is
    read from the handshake where Python offers it (3.13+), else rebuilt from
    the CA files: intermediates that only the client sent cannot be counted
    then, and a chain with two or more of them passes (see docs/tls.md).
    """
    ctx = obj.context
    if not isinstance(ctx, ServerContext):
        return None
    limit = ctx.mailfront_conf.ssl_verify_depth + 2
    verified = getattr(obj, "get_verified_chain", None)  # Python 3.13+
    if verified is not None:
        too_long = len(verified()) > limit
    else:
        cached = ctx._depth_cache.get(der)
        if cached is None:
            try:
                leaf = x509.load_der_x509_certificate(der)
            except ValueError:  # OpenSSL took it, cryptography does not: count it unknown
                length = None
            else:
                length = _store_chain_length(leaf, ctx.trust_anchors)
            # unknown: intermediates from the client, at least one
            cached = (length if length is not None else 3) > limit
            if len(ctx._depth_cache) >= 1024:
                ctx._depth_cache.clear()
            ctx._depth_cache[der] = cached
        too_long = cached
    if too_long:
        return X509_V_ERR_CERT_CHAIN_TOO_LONG, CERT_CHAIN_TOO_LONG
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # ValueError, TypeError, InvalidSignature
        return False
    return True


def _store_chain_length(leaf: x509.Certificate, store: tuple[x509.Certificate, ...]) -> int | None:
    """The length of the chain OpenSSL builds from the store alone (trusted first), or None."""
    cert, length = leaf, 1
    for _ in range(16):
        if cert.issuer == cert.subject and _issued_by(cert, cert):
            return length
        issuer = next((s for s in store if s.subject == cert.issuer and _issued_by(cert, s)), None)
        if issuer is None:
            return None
        cert, length = issuer, length + 1
    return None


def check_client_cert(obj: ssl.SSLObject | ssl.SSLSocket, conf: ServerConf) -> CertRejection | None:
    """``ngx_mail_verify_cert``: None when the session goes on, else what to answer and log.

    Call it right after the handshake (implicit TLS or STARTTLS).  The caller
    logs ``log`` at info level, sends :func:`rejection_line` and closes.
    """
    if not verify_enabled(conf):
        return None
    der = _peer_der(obj)
    if der is not None:
        err = _verify_error(obj, der)
        if err is not None:
            return CertRejection(Rejection.CERT_ERROR, LOG_VERIFY_ERROR % err)
    elif conf.ssl_verify_client == VerifyClient.ON:
        return CertRejection(Rejection.NO_CERT, LOG_NO_CERT)
    return None


def ssl_info(obj: ssl.SSLObject | ssl.SSLSocket, conf: ServerConf) -> dict[str, bytes]:
    """The Auth-SSL-* values for ``SessionInfo.ssl`` (``build_request`` picks what to send).

    Protocol and cipher always; with ``ssl_verify_client`` on, the verify
    result and, when the client sent a certificate, its subject and issuer
    (RFC 2253, as ``X509_NAME_print_ex``), serial (``i2a_ASN1_INTEGER``),
    SHA-1 fingerprint and PEM text.
    """
    info: dict[str, bytes] = {}
    version = obj.version()
    if version:
        info[auth_http.SSL_PROTOCOL] = version.encode("ascii")
    cipher = obj.cipher()
    if cipher:
        info[auth_http.SSL_CIPHER] = cipher[0].encode("ascii")
    if not verify_enabled(conf):
        return info
    der = _peer_der(obj)
    if der is None:
        info[auth_http.SSL_VERIFY] = b"NONE"
        return info
    err = _verify_error(obj, der)
    info[auth_http.SSL_VERIFY] = b"SUCCESS" if err is None else b"FAILED:" + err[1].encode()
    try:
        info.update(cert_facts(der))
    except ValueError:  # a certificate OpenSSL took but this reader cannot walk
        info[auth_http.SSL_FINGERPRINT] = hashlib.sha1(der).hexdigest().encode("ascii")
        info[auth_http.SSL_CERT] = pem(der)
    return info


def cert_facts(der: bytes) -> dict[str, bytes]:
    """Subject, issuer, serial, fingerprint and PEM of a DER certificate, as nginx prints them.

    Raises ``ValueError`` when the DER cannot be walked.
    """
    issuer, subject, serial = _tbs_fields(der)
    return {
        auth_http.SSL_SUBJECT: rfc2253(subject),
        auth_http.SSL_ISSUER: rfc2253(issuer),
        auth_http.SSL_SERIAL: serial_text(serial),
        auth_http.SSL_FINGERPRINT: hashlib.sha1(der).hexdigest().encode("ascii"),
        auth_http.SSL_CERT: pem(der),
    }


def pem(der: bytes) -> bytes:
    """``PEM_write_bio_X509``: base64 in 64-column lines between the armour lines."""
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        b"-----BEGIN CERTIFICATE-----\n"
        + b"".join(x + b"\n" for x in lines)
        + (b"-----END CERTIFICATE-----\n")
    )


def serial_text(content: bytes) -> bytes:
    """``i2a_ASN1_INTEGER`` of a serial number's DER content bytes.

    Upper-case hex of the magnitude, ``-`` first when negative, ``00`` for
    zero, and OpenSSL's ``\\`` + newline after every 35 bytes.
    """
    n = int.from_bytes(content, "big", signed=True) if content else 0
    magnitude = abs(n)
    raw = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big")
    out = bytearray(b"-" if n < 0 else b"")
    for i in range(len(raw)):
        if i and i % 35 == 0:
            out += b"\\\n"
        out += b"%02X" % raw[i]
    return bytes(out)


# ------------------------------------------------------- DER and RFC 2253


class _DerError(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(tag byte, start of content, end of content, end of element) at ``pos``."""
    if pos + 2 > len(data):
        raise _DerError("truncated")
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # high tag number: skip its bytes
        while pos < len(data) and data[pos] & 0x80:
            pos += 1
        pos += 1
    if pos >= len(data):
        raise _DerError("truncated")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise _DerError("truncated")
    return tag, pos, end, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, cstart, cend, nxt = _tlv(data, pos)
        out.append((tag, pos, cstart, cend))
        pos = nxt
    return out


def _tbs_fields(der: bytes) -> tuple[bytes, bytes, bytes]:
    """(issuer Name DER, subject Name DER, serial content) of a certificate."""
    _, cstart, _, _ = _tlv(der, 0)  # Certificate
    _, tstart, tend, _ = _tlv(der, cstart)  # tbsCertificate
    fields = _children(der, tstart, tend)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 5:
        raise _DerError("short tbsCertificate")
    serial = der[fields[0][2] : fields[0][3]]
    issuer = der[fields[2][1] : fields[2][3]]
    subject = der[fields[4][1] : fields[4][3]]
    return issuer, subject, serial


# OpenSSL's short names (OBJ_nid2sn) of the attributes met in names
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.14": "searchGuide",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.19": "physicalDeliveryOfficeName",
    "2.5.4.20": "telephoneNumber",
    "2.5.4.21": "telexNumber",
    "2.5.4.22": "teletexTerminalIdentifier",
    "2.5.4.23": "facsimileTelephoneNumber",
    "2.5.4.24": "x121Address",
    "2.5.4.25": "internationaliSDNNumber",
    "2.5.4.26": "registeredAddress",
    "2.5.4.27": "destinationIndicator",
    "2.5.4.28": "preferredDeliveryMethod",
    "2.5.4.29": "presentationAddress",
    "2.5.4.30": "supportedApplicationContext",
    "2.5.4.31": "member",
    "2.5.4.32": "owner",
    "2.5.4.33": "roleOccupant",
    "2.5.4.34": "seeAlso",
    "2.5.4.35": "userPassword",
    "2.5.4.36": "userCertificate",
    "2.5.4.37": "cACertificate",
    "2.5.4.38": "authorityRevocationList",
    "2.5.4.39": "certificateRevocationList",
    "2.5.4.40": "crossCertificatePair",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.47": "enhancedSearchGuide",
    "2.5.4.48": "protocolInformation",
    "2.5.4.49": "distinguishedName",
    "2.5.4.50": "uniqueMember",
    "2.5.4.51": "houseIdentifier",
    "2.5.4.52": "supportedAlgorithms",
    "2.5.4.53": "deltaRevocationList",
    "2.5.4.54": "dmdName",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    "2.5.4.98": "c3",
    "2.5.4.99": "n3",
    "2.5.4.100": "dnsName",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.8": "unstructuredAddress",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.3": "mail",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

# asn1/a_strex.c: tag2nbyte, the character width of each universal string type
# OpenSSL prints as text (0 is UTF8String); any other type is dumped as #hex
_WIDTH = {12: 0, 18: 1, 19: 1, 20: 1, 22: 1, 23: 1, 24: 1, 26: 1, 28: 4, 30: 2}

# asn1/charmap.h for the flags of XN_FLAG_RFC2253: ESC_2253 chars take a
# backslash, control chars become \XX; space and "#" first, space last, too
_BACKSLASH = frozenset(b'"+,;<>\\')
_CONTROL = frozenset(range(0x20)) | {0x7F}


def _oid_text(der: bytes) -> str:
    """``OBJ_obj2txt(..., 1)``: the dotted form of an OID's content bytes."""
    if not der:
        return ""
    arcs: list[int] = []
    value = 0
    for byte in der:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0] if arcs else 0
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _escape_bytes(data: bytes) -> bytes:
    """``do_buf`` with one byte per character after UTF-8 conversion."""
    out = bytearray()
    last = len(data) - 1
    for i, c in enumerate(data):
        if c > 0x7F or c in _CONTROL:
            out += b"\\%02X" % c
        elif c in _BACKSLASH:
            out += b"\\" + bytes([c])
        elif c == 0x20 and (i == last or i == 0):
            out += b"\\ "
        elif c == 0x23 and i == 0 and i != last:
            out += b"\\#"
        else:
            out.append(c)
    return bytes(out)


def _print_value(tag: int, raw: bytes, tlv: bytes) -> bytes:
    """``do_print_ex`` with ASN1_STRFLGS_RFC2253 for one attribute value."""
    width = _WIDTH.get(tag) if tag < 0x20 else None  # universal, primitive
    if width is None:
        return b"#" + tlv.hex().upper().encode("ascii")
    if width == 0:  # UTF8String: its bytes as they are (no second conversion)
        return _escape_bytes(raw)
    if len(raw) % width:
        return b"#" + tlv.hex().upper().encode("ascii")
    chars = [int.from_bytes(raw[i : i + width], "big") for i in range(0, len(raw), width)]
    if any(c > 0x10FFFF for c in chars):
        return b"#" + tlv.hex().upper().encode("ascii")
    # UTF8_putc() refuses surrogates and do_buf() then drops the character
    text = "".join(chr(c) for c in chars if not 0xD800 <= c <= 0xDFFF).encode("utf-8")
    # a single-byte character keeps its first/last position; multi-byte ones are all > 0x7f
    return _escape_bytes(text)


def rfc2253(name_der: bytes) -> bytes:
    """``X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253)`` of a Name's DER.

    Entries last to first, ``,`` between RDNs and ``+`` inside one, OpenSSL's
    short names (an OID it has no name for: dotted, value dumped as ``#hex``
    of its DER), values escaped as RFC 2253 asks and every byte past ASCII as
    ``\\XX`` of its UTF-8 form.
    """
    _, start, end, _ = _tlv(name_der, 0)
    entries: list[tuple[int, bytes]] = []  # (RDN index, printed entry)
    for index, (_, _, sstart, send) in enumerate(_children(name_der, start, end)):
        for _, _, astart, aend in _children(name_der, sstart, send):
            parts = _children(name_der, astart, aend)
            if len(parts) < 2:
                raise _DerError("bad AttributeTypeAndValue")
            oid = _oid_text(name_der[parts[0][2] : parts[0][3]])
            vtag, vpos, vstart, vend = parts[1]
            tlv = name_der[vpos:vend]
            short = _SHORT_NAMES.get(oid)
            if short is None:
                printed = oid.encode("ascii") + b"=#" + tlv.hex().upper().encode("ascii")
            else:
                printed = (
                    short.encode("ascii") + b"=" + _print_value(vtag, name_der[vstart:vend], tlv)
                )
            entries.append((index, printed))
    out = bytearray()
    prev = None
    for index, printed in reversed(entries):
        if prev is not None:
            out += b"+" if index == prev else b","
        out += printed
        prev = index
    return bytes(out)


__all__ = [
    "CertRejection",
    "Rejection",
    "ServerContext",
    "cert_facts",
    "check_client_cert",
    "make_server_context",
    "pem",
    "rejection_line",
    "rfc2253",
    "serial_text",
    "ssl_info",
]
