"""The OpenSSL engine: nginx's SSL context of a ``server{}`` on pyOpenSSL.

Python's ``ssl`` module cannot do what nginx's mail module does with a TLS
handshake (spec §1.9): it installs no verify callback, so a bad client
certificate aborts the handshake instead of reaching nginx's *cert_error*
line, and ``optional_no_ca`` is impossible; it sends no CA names; it cannot
end the handshake with a fatal alert on an ALPN mismatch; it cannot set the
session timeout, the session cache mode or the verify depth.  pyOpenSSL
(PyCA's binding, over the OpenSSL that ``cryptography`` ships) can, and
:mod:`mailfront.server.tls_transport` runs it over memory BIOs on uvloop's
plain transports.

:func:`make_context` applies a server's ``ssl_*`` directives the way
``ngx_mail_ssl_merge_conf`` does, in nginx's order, so that the first broken
file or value is the one nginx would report.  Build the contexts once, in the
master process, before the workers are forked: OpenSSL draws the session
ticket keys when a context is created, so the workers share them and a ticket
from one worker resumes in another, as with nginx's shared keys.

Four OpenSSL calls that pyOpenSSL does not wrap as nginx needs them
(``SSL_CTX_set_verify`` with a callback that keeps the verify error,
``SSL_get_verify_result``, ``SSL_session_reused``,
``SSL_CTX_set1_curves_list``) go through the cffi
binding of ``cryptography`` that pyOpenSSL itself uses, on the handles
pyOpenSSL keeps (``Connection._ssl``, ``Context._context``); both packages
are pinned, and ``tests/test_tls_context.py`` covers each call.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from OpenSSL import SSL, crypto

from mailfront.conf.errors import ConfError
from mailfront.conf.model import ServerConf, VerifyClient
from mailfront.conf.tls_support import (
    SCACHE_DEFAULT_BUILTIN,
    SCACHE_NONE,
    SCACHE_OFF,
    openssl_refusals,
    parse_session_cache,
    verify_enabled,
)

_lib: Any = Binding.lib
_ffi: Any = Binding.ffi

# ngx_ssl_verify_error_optional(): the errors optional_no_ca lets through
VERIFY_ERRORS_OPTIONAL = frozenset(
    {
        2,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    }
)

# the TLS versions of ssl_protocols that OpenSSL 1.1+ still has, lowest first
# OpenSSL's SSL_MODE_NO_AUTO_CHAIN (ssl.h), which the binding does not name
SSL_MODE_NO_AUTO_CHAIN = 0x00000008

_VERSIONS: tuple[tuple[str, int, int], ...] = (
    ("TLSv1", SSL.TLS1_VERSION, SSL.OP_NO_TLSv1),
    ("TLSv1.1", SSL.TLS1_1_VERSION, SSL.OP_NO_TLSv1_1),
    ("TLSv1.2", SSL.TLS1_2_VERSION, SSL.OP_NO_TLSv1_2),
    ("TLSv1.3", SSL.TLS1_3_VERSION, SSL.OP_NO_TLSv1_3),
)


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


def verify_error_text(code: int) -> str:
    """``X509_verify_cert_error_string``."""
    return str(_ffi.string(_lib.X509_verify_cert_error_string(code)).decode("ascii", "replace"))


def verify_result(conn: SSL.Connection) -> int:
    """``SSL_get_verify_result``: ``X509_V_OK`` (0) or the verification error."""
    return int(_lib.SSL_get_verify_result(conn._ssl))


def session_reused(conn: SSL.Connection) -> bool:
    """``SSL_session_reused``."""
    return bool(_lib.SSL_session_reused(conn._ssl))


def ssl_error_text(e: BaseException, first: bool = False) -> str:
    """nginx appends OpenSSL's error queue as `` (SSL: error:0A0000C1:SSL routines::...)``.

    pyOpenSSL keeps each error's library, function and reason strings but not
    its code; :func:`_error_code` finds the code back from the two strings.
    """
    if isinstance(e, SSL.Error) and e.args and isinstance(e.args[0], list):
        parts = []
        for item in e.args[0]:
            if isinstance(item, tuple) and len(item) == 3:
                lib, func, reason = (str(x or "") for x in item)
                parts.append(f"error:{_error_code(lib, reason):08X}:{lib}:{func}:{reason}")
        if parts:
            return " (SSL: " + " ".join(parts[:1] if first else parts) + ")"
    if isinstance(e, OSError) and e.strerror:
        return f" ({e.errno}: {e.strerror})"
    return f" ({e})" if str(e) else ""


def bio_error_text(path: str, e: OSError) -> str:
    """OpenSSL 3's error queue after ``BIO_new_file(path, "r")`` failed, as nginx prints it."""
    errno_ = e.errno or 0
    why = e.strerror or ""
    bio = (
        "error:10000080:BIO routines::no such file"
        if errno_ in (2, 6)  # ENOENT, ENXIO: BIO_R_NO_SUCH_FILE
        else "error:10080002:BIO routines::system lib"
    )
    return (
        f" (SSL: error:{0x80000000 | errno_:08X}:system library::{why}:calling fopen({path}, r)"
        f" {bio})"
    )


def no_start_line(expecting: str) -> str:
    """OpenSSL's error when a PEM file holds no block of the kind read."""
    return f" (SSL: error:0480006C:PEM routines::no start line:Expecting: {expecting})"


_ERROR_CODES: dict[tuple[str, str], int] = {}


def _error_code(lib: str, reason: str) -> int:
    """OpenSSL's packed error code (``ERR_PACK(lib, 0, reason)``) of a library and reason text."""
    if not _ERROR_CODES:
        for lib_no in range(1, 64):
            lib_text = _text(_lib.ERR_lib_error_string(lib_no << 23))
            if not lib_text:
                continue
            for reason_no in range(1, 2048):
                code = (lib_no << 23) | reason_no
                text = _text(_lib.ERR_reason_error_string(code))
                if text:
                    _ERROR_CODES.setdefault((lib_text, text), code)
    return _ERROR_CODES.get((lib, reason), 0)


def queue_text() -> str:
    """The error queue after a failed call through the binding, drained, as nginx prints it."""
    parts = []
    while True:
        code = int(_lib.ERR_get_error())
        if not code:
            break
        lib = _text(_lib.ERR_lib_error_string(code))
        func = _text(_lib.ERR_func_error_string(code))
        parts.append(f"error:{code:08X}:{lib}:{func}:{_text(_lib.ERR_reason_error_string(code))}")
    return " (SSL: " + " ".join(parts) + ")" if parts else ""


def _groups_error(ctx: SSL.Context, names: str) -> str:
    """OpenSSL 3's error for a group list it refused: the first name it does not know.

    The OpenSSL that ``cryptography`` ships refuses without a word in the
    queue; nginx on OpenSSL 3 prints this.
    """
    queue = queue_text()
    if queue:
        return queue
    for name in names.split(":"):
        raw = name.encode("ascii", "replace")
        if name and not _lib.SSL_CTX_set1_curves_list(ctx._context, raw):
            _lib.ERR_clear_error()
            return (
                f" (SSL: error:0A080106:SSL routines::passed invalid argument:"
                f"group '{name}' cannot be set)"
            )
    return ""


def _text(ptr: Any) -> str:
    return "" if ptr == _ffi.NULL else str(_ffi.string(ptr).decode("ascii", "replace"))


class OpenSSLContext:
    """One ``server{}``'s SSL context, and what a handshake on it needs."""

    __slots__ = ("alpn", "conf", "ctx")

    def __init__(self, ctx: SSL.Context, conf: ServerConf, alpn: bytes) -> None:
        self.ctx = ctx
        self.conf = conf
        self.alpn = alpn

    def connection(self) -> SSL.Connection:
        """A server-side connection over memory BIOs."""
        conn = SSL.Connection(self.ctx, None)
        conn.set_accept_state()
        return conn


def _accept_any(_ok: int, _store: Any) -> int:
    """``ngx_ssl_verify_callback``: the handshake always completes; the session decides.

    A C callback of our own, not ``Context.set_verify``'s: pyOpenSSL resets
    the store's error to ``X509_V_OK`` when its callback accepts, and nginx
    needs the error to stay, in ``SSL_get_verify_result`` and in the session
    (a resumed session keeps the verify result of its first handshake).
    """
    return 1


_VERIFY_CALLBACK = _ffi.callback("int (*)(int, X509_STORE_CTX *)", _accept_any)


def _alpn_callback(alpn: bytes) -> Any:
    """``ngx_mail_ssl_alpn_select``: the protocol's id, or a fatal alert.

    A C callback of our own: pyOpenSSL's ``NO_OVERLAPPING_PROTOCOLS`` answers
    ``SSL_TLSEXT_ERR_NOACK`` (go on without ALPN), and nginx ends the handshake
    with ``no_application_protocol`` (``SSL_TLSEXT_ERR_ALERT_FATAL``).
    """

    def select(_ssl: Any, out: Any, outlen: Any, offered: Any, offered_len: int, _arg: Any) -> int:
        data = _ffi.buffer(offered, offered_len)[:]
        i = 0
        while i < len(data):
            n = data[i]
            if data[i + 1 : i + 1 + n] == alpn:
                out[0] = offered + i + 1  # points into the ClientHello, as SSL_select_next_proto
                outlen[0] = n
                return int(_lib.SSL_TLSEXT_ERR_OK)
            i += 1 + n
        return int(_lib.SSL_TLSEXT_ERR_ALERT_FATAL)

    return _ffi.callback(
        "int (*)(SSL *, unsigned char **, unsigned char *, unsigned char *, unsigned int, void *)",
        select,
        error=int(_lib.SSL_TLSEXT_ERR_ALERT_FATAL),
    )


# one callback per protocol id, alive as long as the process (the contexts point at them)
_ALPN_CALLBACKS: dict[bytes, Any] = {}


def make_context(conf: ServerConf, protocol_name: str) -> OpenSSLContext:
    """The SSL context of one ``server{}``, as ``ngx_mail_ssl_merge_conf`` builds it.

    Raises :class:`ConfError` with nginx's message (no place: nginx reports
    these without one) when a file cannot be loaded or OpenSSL refuses a
    value, and with the ``not supported yet`` message for what this engine
    cannot do (:func:`mailfront.conf.tls_support.openssl_refusals`).
    """
    refusals = openssl_refusals(conf)
    if refusals:
        raise refusals[0]
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)

    # ngx_ssl_create: the options nginx sets on every context
    ctx.set_options(
        SSL.OP_ALL
        | SSL.OP_NO_COMPRESSION
        | SSL.OP_SINGLE_DH_USE
        | SSL.OP_SINGLE_ECDH_USE
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_IGNORE_UNEXPECTED_EOF
    )
    # nginx: no buffers held by idle sessions, and the chain sent is the certificate file's
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN)
    # one SSL_write takes a whole write, all its records (pyOpenSSL turns partial writes on)
    ctx.clear_mode(_lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
    _set_protocols(ctx, conf.ssl_protocols)

    # ngx_mail_ssl_alpn_select
    alpn = protocol_name.encode("ascii")
    callback = _ALPN_CALLBACKS.get(alpn)
    if callback is None:
        callback = _ALPN_CALLBACKS[alpn] = _alpn_callback(alpn)
    _lib.SSL_CTX_set_alpn_select_cb(ctx._context, callback, _ffi.NULL)

    # ngx_ssl_ciphers
    try:
        ctx.set_cipher_list(conf.ssl_ciphers.encode("ascii", "replace"))
    except SSL.Error as e:
        raise ConfError(
            f'SSL_CTX_set_cipher_list("{conf.ssl_ciphers}") failed{ssl_error_text(e)}'
        ) from None
    if conf.ssl_prefer_server_ciphers:
        ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)

    # ngx_ssl_certificates
    # ssl_password_file was read while parsing; without it one empty password, so
    # that OpenSSL never prompts on the terminal (nginx passes an empty list)
    passwords = list(conf.ssl_passwords) if conf.ssl_passwords else [b""]
    ids = hashlib.sha1()
    for cert, key in zip(conf.ssl_certificate, conf.ssl_certificate_key, strict=False):
        ids.update(_load_pair(ctx, cert, key, passwords))

    if verify_enabled(conf):
        # ngx_ssl_client_certificate (with the CA names), ngx_ssl_trusted_certificate, ngx_ssl_crl
        _lib.SSL_CTX_set_verify(ctx._context, _lib.SSL_VERIFY_PEER, _VERIFY_CALLBACK)
        ctx.set_verify_depth(conf.ssl_verify_depth)
        if conf.ssl_client_certificate:
            cas = _load_cas(ctx, conf.ssl_client_certificate)
            # SSL_load_client_CA_file: each subject once, in the file's order
            seen: set[bytes] = set()
            for ca in cas:
                subject = ca.subject.public_bytes()
                if subject not in seen:
                    seen.add(subject)
                    ctx.add_client_ca(ca)
        if conf.ssl_trusted_certificate:
            _load_cas(ctx, conf.ssl_trusted_certificate)
        if conf.ssl_crl:
            _load_crl(ctx, conf.ssl_crl)

    # ngx_ssl_dhparam
    if conf.ssl_dhparam:
        try:
            with open(conf.ssl_dhparam, "rb") as f:
                dh_pem = f.read()
        except OSError as e:
            raise ConfError(
                f'BIO_new_file("{conf.ssl_dhparam}") failed{bio_error_text(conf.ssl_dhparam, e)}'
            ) from None
        what = f'PEM_read_bio_DHparams("{conf.ssl_dhparam}") failed'
        if b"-----BEGIN DH PARAMETERS-----" not in dh_pem:
            raise ConfError(what + no_start_line("DH PARAMETERS"))
        try:
            ctx.load_tmp_dh(conf.ssl_dhparam.encode())
        except SSL.Error as e:
            raise ConfError(what + ssl_error_text(e, first=True)) from None

    # ngx_ssl_ecdh_curve: "auto" keeps OpenSSL's list (pyOpenSSL sets it)
    if conf.ssl_ecdh_curve != "auto":
        name = conf.ssl_ecdh_curve
        if not _lib.SSL_CTX_set1_curves_list(ctx._context, name.encode("ascii", "replace")):
            raise ConfError(f'SSL_CTX_set1_curves_list("{name}") failed{_groups_error(ctx, name)}')

    # ngx_ssl_session_cache: the timeout (sessions and tickets) and the session
    # id context (nginx hashes the certificates and names) whatever the mode
    ctx.set_timeout(int(conf.ssl_session_timeout))
    ids.update(b"mailfront:" + f"{conf.file}:{conf.line}".encode())
    ctx.set_session_id(ids.digest()[:32])
    cache = parse_session_cache(conf.ssl_session_cache)
    if cache.builtin == SCACHE_OFF:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    elif cache.builtin == SCACHE_NONE:
        # nginx's "none": pretend to cache (Outlook Express needs it), store nothing
        ctx.set_session_cache_mode(
            SSL.SESS_CACHE_SERVER | SSL.SESS_CACHE_NO_AUTO_CLEAR | SSL.SESS_CACHE_NO_INTERNAL_STORE
        )
    else:
        assert cache.builtin == SCACHE_DEFAULT_BUILTIN or cache.shared is None
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)

    # ngx_ssl_session_ticket_keys
    if not conf.ssl_session_tickets:
        ctx.set_options(SSL.OP_NO_TICKET)

    # ngx_ssl_conf_commands, last, as nginx applies them
    for name, value in conf.ssl_conf_command:
        _conf_command(ctx, name, value)
    return OpenSSLContext(ctx, conf, alpn)


# SSL_CONF's protocol names (MinProtocol, MaxProtocol)
_PROTOCOL_NAMES = {
    "none": 0,
    "tlsv1": SSL.TLS1_VERSION,
    "tlsv1.1": SSL.TLS1_1_VERSION,
    "tlsv1.2": SSL.TLS1_2_VERSION,
    "tlsv1.3": SSL.TLS1_3_VERSION,
}
# the "Options" words of CONF_OPTIONS, as SSL_CONF sets them
_OPTION_BITS = {
    "serverpreference": SSL.OP_CIPHER_SERVER_PREFERENCE,
    "norenegotiation": SSL.OP_NO_RENEGOTIATION,
    "prioritizechacha": 0x00200000,  # SSL_OP_PRIORITIZE_CHACHA, unnamed in the binding
    "-sessionticket": SSL.OP_NO_TICKET,
    "-compression": SSL.OP_NO_COMPRESSION,
}


def _conf_command(ctx: SSL.Context, name: str, value: str) -> None:
    """One ``ssl_conf_command``, as ``SSL_CONF_cmd`` would apply it (the supported ones)."""
    key = name.lower()
    raw = value.encode("ascii", "replace")
    ok = True
    try:
        if key == "ciphersuites":
            ctx.set_tls13_ciphersuites(raw)
        elif key == "cipherstring":
            ctx.set_cipher_list(raw)
        elif key in ("groups", "curves"):
            ok = bool(_lib.SSL_CTX_set1_curves_list(ctx._context, raw))
        elif key == "signaturealgorithms":
            ok = bool(_lib.SSL_CTX_set1_sigalgs_list(ctx._context, raw))
        elif key in ("minprotocol", "maxprotocol"):
            version = _PROTOCOL_NAMES.get(value.lower())
            if version is None:
                ok = False
            elif key == "minprotocol":
                ctx.set_min_proto_version(version)
            else:
                ctx.set_max_proto_version(version)
        else:  # options
            for word in value.split(","):
                if word.strip():
                    ctx.set_options(_OPTION_BITS[word.strip().lower()])
    except SSL.Error as e:
        why = ssl_error_text(e)
        ok = False
    else:
        why = _groups_error(ctx, value) if key in ("groups", "curves") else queue_text()
    if not ok:
        # SSL_CONF_cmd adds its own error last
        bad = f"error:0A000180:SSL routines::bad value:cmd={name}, value={value}"
        why = why[:-1] + " " + bad + ")" if why else f" (SSL: {bad})"
        raise ConfError(f'SSL_CONF_cmd("{name}", "{value}") failed{why}')


def _set_protocols(ctx: SSL.Context, protocols: tuple[str, ...]) -> None:
    """``ssl_protocols`` as OpenSSL applies nginx's ``SSL_OP_NO_*`` set."""
    wanted = set(protocols)
    enabled = [(v, op) for name, v, op in _VERSIONS if name in wanted]
    if not enabled:  # no TLS version at all: every handshake fails, as with nginx
        for _, _, op in _VERSIONS:
            ctx.set_options(op)
        return
    low, high = enabled[0][0], enabled[-1][0]
    ctx.set_min_proto_version(low)
    ctx.set_max_proto_version(high)
    for _, v, op in _VERSIONS:
        if low < v < high and (v, op) not in enabled:
            ctx.set_options(op)


def _load_pair(
    ctx: SSL.Context,
    cert: str,
    key: str,
    passwords: list[bytes],
) -> bytes:
    """``ngx_ssl_certificate``: the chain of ``cert``, then ``key``, each password in turn.

    Returns the leaf's DER, for the session id context.
    """
    try:
        with open(cert, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ConfError(
            f'cannot load certificate "{cert}": BIO_new_file() failed{bio_error_text(cert, e)}'
        ) from None
    blocks = _PEM_CERT.findall(pem)
    if not blocks or _cert_is_bad(pem):
        tail = no_start_line("TRUSTED CERTIFICATE") if not blocks else ""
        raise ConfError(f'cannot load certificate "{cert}": PEM_read_bio_X509_AUX() failed{tail}')
    try:
        with open(key, "rb") as f:
            key_pem = f.read()
    except OSError as e:
        raise ConfError(
            f'cannot load certificate key "{key}": BIO_new_file() failed{bio_error_text(key, e)}'
        ) from None
    try:
        ctx.use_certificate_chain_file(cert.encode())
    except SSL.Error as e:
        raise ConfError(
            f'cannot load certificate "{cert}": PEM_read_bio_X509_AUX() failed{ssl_error_text(e)}'
        ) from None
    private: Any = None
    last: Exception | None = None
    for password in passwords:
        try:
            private = load_pem_private_key(key_pem, password or None)
            break
        except TypeError as e:  # a password for a clear key, or none for an encrypted one
            if password and "not encrypted" in str(e):
                private = load_pem_private_key(key_pem, None)
                break
            last = e
        except ValueError as e:
            last = e
    if private is None:
        why = f" ({last})" if last is not None and str(last) else ""
        raise ConfError(
            f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() failed{why}'
        ) from None
    try:
        ctx.use_privatekey(private)
        ctx.check_privatekey()
    except (SSL.Error, TypeError, ValueError) as e:
        raise ConfError(f'SSL_CTX_use_PrivateKey("{key}") failed{ssl_error_text(e)}') from None
    return x509.load_pem_x509_certificate(blocks[0]).public_bytes(Encoding.DER)


def _pem_blocks(
    path: str, pattern: re.Pattern[bytes], what: str, reader: str, kind: str
) -> list[bytes]:
    """The PEM blocks of ``pattern`` in ``path``, or nginx's error for a missing file or none."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ConfError(
            f'cannot load {what} "{path}": BIO_new_file() failed{bio_error_text(path, e)}'
        ) from None
    blocks: list[bytes] = pattern.findall(pem)
    if not blocks:
        raise ConfError(f'cannot load {what} "{path}": {reader}() failed' + no_start_line(kind))
    return blocks


def _load_cas(ctx: SSL.Context, path: str) -> list[x509.Certificate]:
    """The CA certificates of ``path`` into the verify store (only its certificates)."""
    blocks = _pem_blocks(
        path, _PEM_CERT, "certificate", "PEM_read_bio_X509_AUX", "TRUSTED CERTIFICATE"
    )
    cas: list[x509.Certificate] = []
    store = ctx.get_cert_store()
    assert store is not None
    for block in blocks:
        try:
            ca = x509.load_pem_x509_certificate(block)
        except ValueError as e:
            raise ConfError(
                f'cannot load certificate "{path}": PEM_read_bio_X509() failed ({e})'
            ) from None
        try:
            store.add_cert(crypto.X509.from_cryptography(ca))
        except crypto.Error as e:
            if "already in hash table" not in str(e):  # OpenSSL 1.1.1+ ignores duplicates
                raise ConfError(f'X509_STORE_add_cert("{path}") failed ({e})') from None
        cas.append(ca)
    return cas


def _load_crl(ctx: SSL.Context, path: str) -> None:
    """``ngx_ssl_crl``: the CRLs of ``path`` into the verify store, checked for the whole chain."""
    blocks = _pem_blocks(path, _PEM_CRL, "CRL", "PEM_read_bio_X509_CRL", "X509 CRL")
    store = ctx.get_cert_store()
    assert store is not None
    for block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as e:
            raise ConfError(
                f'cannot load CRL "{path}": PEM_read_bio_X509_CRL() failed ({e})'
            ) from None
        try:
            store.add_crl(crl)
        except crypto.Error as e:
            raise ConfError(f'X509_STORE_add_crl("{path}") failed ({e})') from None
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)


def optional_error(conf: ServerConf, code: int) -> bool:
    """``optional_no_ca`` lets an untrusted issuer through (``ngx_ssl_verify_error_optional``)."""
    return conf.ssl_verify_client == VerifyClient.OPTIONAL_NO_CA and code in VERIFY_ERRORS_OPTIONAL


__all__ = [
    "OpenSSLContext",
    "make_context",
    "optional_error",
    "session_reused",
    "ssl_error_text",
    "verify_error_text",
    "verify_result",
]
