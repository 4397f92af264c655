"""The OpenSSL engine: nginx's SSL context of a ``server{}``, on the system's OpenSSL.

Python's ``ssl`` module cannot do what nginx's mail module does with a TLS
handshake (spec §1.9): it installs no verify callback, so a bad client
certificate aborts the handshake instead of reaching nginx's *cert_error*
line, and ``optional_no_ca`` is impossible; it sends no CA names; it cannot
end the handshake with a fatal alert on an ALPN mismatch; it cannot set the
session timeout, the session cache, the ticket keys or ``SSL_CONF`` commands.
So mailfront calls OpenSSL itself, as nginx does, through
:mod:`mailfront.server.libssl` (the libssl.so.3 that Python's ``ssl`` and
Debian's nginx use), and :mod:`mailfront.server.tls_transport` runs each
connection over memory BIOs on uvloop's plain transports.

:func:`make_context` applies a server's ``ssl_*`` directives the way
``ngx_mail_ssl_merge_conf`` does, with the same calls in nginx's order, so
that the first broken file or value is the one nginx would report, in
nginx's words, with OpenSSL's own error queue.  Build the contexts once, in
the master process, before the workers are forked: OpenSSL draws the session
ticket keys when a context is created, so the workers share them and a ticket
from one worker resumes in another, as with nginx's shared keys.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from mailfront.conf.errors import ConfError
from mailfront.conf.model import ServerConf, VerifyClient
from mailfront.conf.tls_support import (
    SCACHE_DEFAULT_BUILTIN,
    SCACHE_NO_BUILTIN,
    SCACHE_NONE,
    SCACHE_OFF,
    parse_session_cache,
    verify_enabled,
)
from mailfront.conf.values import parse_size
from mailfront.server import libssl as L
from mailfront.server import ssl_cache
from mailfront.server.libssl import NULL, ffi, lib

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

# the TLS versions of ssl_protocols that OpenSSL 3 still has, lowest first
_VERSIONS: tuple[tuple[str, int, int], ...] = (
    ("TLSv1", L.TLS1_VERSION, L.SSL_OP_NO_TLSv1),
    ("TLSv1.1", L.TLS1_1_VERSION, L.SSL_OP_NO_TLSv1_1),
    ("TLSv1.2", L.TLS1_2_VERSION, L.SSL_OP_NO_TLSv1_2),
    ("TLSv1.3", L.TLS1_3_VERSION, L.SSL_OP_NO_TLSv1_3),
)


def ssl_error_text(e: BaseException) -> str:
    """nginx's tail after a failed call: `` (SSL: error:0A0000C1:SSL routines::...)``."""
    if isinstance(e, L.Error):
        return L.queue_text(e.queue)
    if isinstance(e, OSError) and e.strerror:
        return f" ({e.errno}: {e.strerror})"
    return f" ({e})" if str(e) else ""


class OpenSSLContext:
    """One ``server{}``'s SSL context (``SSL_CTX``), and what a handshake on it needs."""

    __slots__ = ("alpn", "conf", "ctx")

    def __init__(self, ctx: Any, conf: ServerConf, alpn: bytes) -> None:
        self.ctx = ctx
        self.conf = conf
        self.alpn = alpn

    def connection(self) -> tuple[Any, Any, Any]:
        """A server-side ``SSL`` between two memory BIOs: (ssl, incoming, outgoing)."""
        ssl = lib.SSL_new(self.ctx)
        if ssl == NULL:
            raise L.error()
        rbio = lib.BIO_new(_MEM)
        wbio = lib.BIO_new(_MEM)
        if rbio == NULL or wbio == NULL:
            for bio in (rbio, wbio):
                if bio != NULL:
                    lib.BIO_free(bio)
            lib.SSL_free(ssl)
            raise L.error()
        lib.SSL_set_bio(ssl, rbio, wbio)  # the SSL owns and frees them
        lib.SSL_set_accept_state(ssl)
        return ffi.gc(ssl, lib.SSL_free), rbio, wbio


_MEM = lib.BIO_s_mem()


def _failed(text: str) -> ConfError:
    """``ngx_ssl_error``: ``text``, then OpenSSL's error queue (drained) in nginx's form."""
    return ConfError(text + L.queue_text())


def _accept_any(_ok: int, _store: Any) -> int:
    """``ngx_ssl_verify_callback``: the handshake always completes; the session decides.

    The store's error stays, in ``SSL_get_verify_result`` and in the session
    (a resumed session keeps the verify result of its first handshake).
    """
    return 1


_VERIFY_CALLBACK = ffi.callback("int (*)(int, X509_STORE_CTX *)", _accept_any)


def _alpn_callback(alpn: bytes) -> Any:
    """``ngx_mail_ssl_alpn_select``: the protocol's id, or a fatal alert
    (``no_application_protocol``, ``SSL_TLSEXT_ERR_ALERT_FATAL``)."""

    def select(_ssl: Any, out: Any, outlen: Any, offered: Any, offered_len: int, _arg: Any) -> int:
        data = ffi.buffer(offered, offered_len)[:]
        i = 0
        while i < len(data):
            n = data[i]
            if data[i + 1 : i + 1 + n] == alpn:
                out[0] = offered + i + 1  # points into the ClientHello, as SSL_select_next_proto
                outlen[0] = n
                return L.SSL_TLSEXT_ERR_OK
            i += 1 + n
        return L.SSL_TLSEXT_ERR_ALERT_FATAL

    return ffi.callback(
        "int (*)(SSL *, const unsigned char **, unsigned char *, const unsigned char *,"
        " unsigned int, void *)",
        select,
        error=L.SSL_TLSEXT_ERR_ALERT_FATAL,
    )


# one callback per protocol id, alive as long as the process (the contexts point at them)
_ALPN_CALLBACKS: dict[bytes, Any] = {}
# the callbacks of each context (ticket keys, a shared cache), never freed: an SSL_CTX
# outlives the Python object that made it (its connections hold it, and OpenSSL calls
# the session callbacks as late as SSL_free / SSL_CTX_free)
_KEEP: list[Any] = []


def make_context(conf: ServerConf, protocol_name: str) -> OpenSSLContext:
    """The SSL context of one ``server{}``, as ``ngx_mail_ssl_merge_conf`` builds it.

    Raises :class:`ConfError` with nginx's message (no place: nginx reports
    these without one) when a file cannot be loaded or OpenSSL refuses a
    value.
    """
    lib.ERR_clear_error()
    raw = lib.SSL_CTX_new(lib.TLS_server_method())
    if raw == NULL:
        raise _failed("SSL_CTX_new() failed")
    ctx = ffi.gc(raw, lib.SSL_CTX_free)
    alpn = protocol_name.encode("ascii")
    tls = OpenSSLContext(ctx, conf, alpn)

    # ngx_ssl_create: the options nginx sets on every context
    lib.SSL_CTX_set_options(
        ctx,
        L.SSL_OP_ALL
        | L.SSL_OP_NO_COMPRESSION
        | L.SSL_OP_NO_RENEGOTIATION
        | L.SSL_OP_IGNORE_UNEXPECTED_EOF,
    )
    # nginx: no buffers held by idle sessions, and the chain sent is the certificate file's;
    # one SSL_write takes a whole write, all its records (partial writes stay off)
    L.ctx_ctrl(ctx, L.SSL_CTRL_MODE, L.SSL_MODE_RELEASE_BUFFERS | L.SSL_MODE_NO_AUTO_CHAIN)
    _set_protocols(ctx, conf.ssl_protocols)

    # ngx_mail_ssl_alpn_select
    callback = _ALPN_CALLBACKS.get(alpn)
    if callback is None:
        callback = _ALPN_CALLBACKS[alpn] = _alpn_callback(alpn)
    lib.SSL_CTX_set_alpn_select_cb(ctx, callback, NULL)

    # ngx_ssl_ciphers
    if not lib.SSL_CTX_set_cipher_list(ctx, conf.ssl_ciphers.encode("ascii", "replace")):
        raise _failed(f'SSL_CTX_set_cipher_list("{conf.ssl_ciphers}") failed')
    if conf.ssl_prefer_server_ciphers:
        lib.SSL_CTX_set_options(ctx, L.SSL_OP_CIPHER_SERVER_PREFERENCE)

    # ngx_ssl_certificates
    # ssl_password_file was read while parsing; without it one empty password, so
    # that OpenSSL never prompts on the terminal
    passwords = list(conf.ssl_passwords) if conf.ssl_passwords else [b""]
    leaves = [
        _load_pair(ctx, cert, key, passwords)
        for cert, key in zip(conf.ssl_certificate, conf.ssl_certificate_key, strict=False)
    ]
    ca_names: list[bytes] = []

    if verify_enabled(conf):
        # ngx_ssl_client_certificate (with the CA names), ngx_ssl_trusted_certificate, ngx_ssl_crl
        lib.SSL_CTX_set_verify(ctx, L.SSL_VERIFY_PEER, _VERIFY_CALLBACK)
        lib.SSL_CTX_set_verify_depth(ctx, conf.ssl_verify_depth)
        if conf.ssl_client_certificate:
            ca_names = _load_cas(ctx, conf.ssl_client_certificate, names=True)
        if conf.ssl_trusted_certificate:
            _load_cas(ctx, conf.ssl_trusted_certificate, names=False)
        if conf.ssl_crl:
            _load_crl(ctx, conf.ssl_crl)

    # ngx_ssl_dhparam
    if conf.ssl_dhparam:
        _load_dhparam(ctx, conf.ssl_dhparam)

    # ngx_ssl_ecdh_curve: "auto" keeps OpenSSL's list
    if conf.ssl_ecdh_curve != "auto":
        name = conf.ssl_ecdh_curve
        value = ffi.new("char[]", name.encode("ascii", "replace"))
        if not L.ctx_ctrl(ctx, L.SSL_CTRL_SET_GROUPS_LIST, 0, value):
            raise _failed(f'SSL_CTX_set1_curves_list("{name}") failed')

    # ngx_ssl_session_cache: the timeout (sessions and tickets) and the session
    # id context whatever the mode
    lib.SSL_CTX_set_timeout(ctx, int(conf.ssl_session_timeout))
    sid = session_id_context(leaves, ca_names)
    lib.SSL_CTX_set_session_id_context(ctx, sid, len(sid))
    cache = parse_session_cache(conf.ssl_session_cache)
    zone: ssl_cache.Zone | None = None
    if cache.builtin == SCACHE_OFF:
        L.ctx_ctrl(ctx, L.SSL_CTRL_SET_SESS_CACHE_MODE, L.SSL_SESS_CACHE_OFF)
    elif cache.builtin == SCACHE_NONE:
        # nginx's "none": pretend to cache (Outlook Express needs it), store nothing
        L.ctx_ctrl(
            ctx,
            L.SSL_CTRL_SET_SESS_CACHE_MODE,
            L.SSL_SESS_CACHE_SERVER
            | L.SSL_SESS_CACHE_NO_AUTO_CLEAR
            | L.SSL_SESS_CACHE_NO_INTERNAL_STORE,
        )
        L.ctx_ctrl(ctx, L.SSL_CTRL_SET_SESS_CACHE_SIZE, 1)
    else:
        mode = L.SSL_SESS_CACHE_SERVER
        if cache.shared is not None and cache.builtin == SCACHE_NO_BUILTIN:
            mode |= L.SSL_SESS_CACHE_NO_INTERNAL
        L.ctx_ctrl(ctx, L.SSL_CTRL_SET_SESS_CACHE_MODE, mode)
        if cache.builtin not in (SCACHE_NO_BUILTIN, SCACHE_DEFAULT_BUILTIN):
            L.ctx_ctrl(ctx, L.SSL_CTRL_SET_SESS_CACHE_SIZE, cache.builtin)
        if cache.shared is not None:
            name, _, size = cache.shared[len("shared:") :].partition(":")
            zone = ssl_cache.zone(name, parse_size(size) or 0)
            _shared_cache(tls, zone)

    # ngx_mail_ssl_merge_conf: ssl_session_tickets off
    if not conf.ssl_session_tickets:
        lib.SSL_CTX_set_options(ctx, L.SSL_OP_NO_TICKET)

    # ngx_ssl_session_ticket_keys: the files' keys, else those of the shared zone
    if conf.ssl_session_ticket_key:
        keys = [_read_ticket_key(path, conf) for path in conf.ssl_session_ticket_key]
        _ticket_key_callback(tls, lambda _seal: keys)
    elif zone is not None:
        _ticket_key_callback(tls, _zone_keys(zone, conf.ssl_session_timeout))

    # ngx_ssl_conf_commands, last, as nginx applies them
    if conf.ssl_conf_command:
        _conf_commands(ctx, conf.ssl_conf_command)
    return tls


def session_id_context(leaves: list[bytes], ca_names: list[bytes]) -> bytes:
    """``ngx_ssl_session_id_context`` of the mail module: SHA-1 over "MAIL", the SHA-1 of
    each certificate (nginx keeps them in a list it prepends to: the last one first) and
    of each CA name sent.  The same as nginx's, so that a session or a ticket of an nginx
    with the same certificates (and ``ssl_session_ticket_key``) resumes here too."""
    ids = hashlib.sha1(b"MAIL")
    for der in reversed(leaves):
        ids.update(hashlib.sha1(der).digest())
    for name in ca_names:
        ids.update(hashlib.sha1(name).digest())
    return ids.digest()


def _conf_commands(ctx: Any, commands: tuple[tuple[str, str], ...]) -> None:
    """``ngx_ssl_conf_commands``: each command through ``SSL_CONF_cmd``."""
    cctx = lib.SSL_CONF_CTX_new()
    if cctx == NULL:
        raise _failed("SSL_CONF_CTX_new() failed")
    try:
        lib.SSL_CONF_CTX_set_flags(cctx, L.SSL_CONF_FLAG_FILE)
        lib.SSL_CONF_CTX_set_flags(cctx, L.SSL_CONF_FLAG_SERVER)
        lib.SSL_CONF_CTX_set_flags(cctx, L.SSL_CONF_FLAG_CERTIFICATE)
        lib.SSL_CONF_CTX_set_flags(cctx, L.SSL_CONF_FLAG_SHOW_ERRORS)
        lib.SSL_CONF_CTX_set_ssl_ctx(cctx, ctx)
        for name, value in commands:
            raw_name = name.encode("utf-8", "surrogateescape")
            raw_value = value.encode("utf-8", "surrogateescape")
            if lib.SSL_CONF_cmd(cctx, raw_name, raw_value) <= 0:
                raise _failed(f'SSL_CONF_cmd("{name}", "{value}") failed')
        if lib.SSL_CONF_CTX_finish(cctx) != 1:
            raise _failed("SSL_CONF_finish() failed")
    finally:
        lib.SSL_CONF_CTX_free(cctx)


def _set_protocols(ctx: Any, protocols: tuple[str, ...]) -> None:
    """``ssl_protocols`` as OpenSSL applies nginx's ``SSL_OP_NO_*`` set."""
    wanted = set(protocols)
    enabled = [(v, op) for name, v, op in _VERSIONS if name in wanted]
    if not enabled:  # no TLS version at all: every handshake fails, as with nginx
        for _, _, op in _VERSIONS:
            lib.SSL_CTX_set_options(ctx, op)
        return
    low, high = enabled[0][0], enabled[-1][0]
    L.ctx_ctrl(ctx, L.SSL_CTRL_SET_MIN_PROTO_VERSION, low)
    L.ctx_ctrl(ctx, L.SSL_CTRL_SET_MAX_PROTO_VERSION, high)
    for _, v, op in _VERSIONS:
        if low < v < high and (v, op) not in enabled:
            lib.SSL_CTX_set_options(ctx, op)


def _open(path: str, what: str | None) -> Any:
    """``BIO_new_file(path, "r")``, or nginx's error for a file it cannot open
    (``what``: the error of ``ngx_ssl_cache``'s loaders, else ``ngx_ssl_dhparam``'s)."""
    bio = lib.BIO_new_file(os.fsencode(path), b"r")
    if bio == NULL:
        if what is None:
            raise _failed(f'BIO_new_file("{path}") failed')
        raise _failed(f'cannot load {what} "{path}": BIO_new_file() failed')
    return ffi.gc(bio, lib.BIO_free)


def _end_of_file() -> bool:
    """After a failed ``PEM_read_bio_*``: was it only the end of the file?"""
    code = lib.ERR_peek_last_error()
    if L.err_lib(code) == L.ERR_LIB_PEM and L.err_reason(code) == L.PEM_R_NO_START_LINE:
        lib.ERR_clear_error()
        return True
    return False


def _pem_objects(bio: Any, read: Any, free: Any, failed: str, required: bool = True) -> list[Any]:
    """Every object ``read`` (a ``PEM_read_bio_*``) finds up to the end of the file, at
    least one if ``required``; else ``failed`` with OpenSSL's error, nothing leaked."""
    objs: list[Any] = []
    while True:
        obj = read(bio, NULL, NULL, NULL)
        if obj != NULL:
            objs.append(obj)
            continue
        if (objs or not required) and _end_of_file():
            return objs
        for o in objs:
            free(o)
        raise _failed(failed)


def _load_pair(ctx: Any, cert: str, key: str, passwords: list[bytes]) -> bytes:
    """``ngx_ssl_certificate``: the certificate of ``cert`` and the chain after it, then
    ``key``, each password in turn.  Returns the leaf's DER, for the session id context."""
    bio = _open(cert, "certificate")
    leaf = lib.PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)
    if leaf == NULL:
        raise _failed(f'cannot load certificate "{cert}": PEM_read_bio_X509_AUX() failed')
    leaf = ffi.gc(leaf, lib.X509_free)
    chain = _pem_objects(
        bio,
        lib.PEM_read_bio_X509,
        lib.X509_free,
        f'cannot load certificate "{cert}": PEM_read_bio_X509() failed',
        required=False,
    )
    if not lib.SSL_CTX_use_certificate(ctx, leaf):
        for c in chain:
            lib.X509_free(c)
        raise _failed(f'SSL_CTX_use_certificate("{cert}") failed')
    for k, extra in enumerate(chain):  # SSL_CTX_add0_chain_cert: the context takes each one
        if not L.ctx_ctrl(ctx, L.SSL_CTRL_CHAIN_CERT, 0, extra):
            for c in chain[k:]:
                lib.X509_free(c)
            raise _failed(f'SSL_CTX_set0_chain("{cert}") failed')

    key_bio = _open(key, "certificate key")
    pkey = NULL
    for i, password in enumerate(passwords):
        if i:
            lib.ERR_clear_error()
            key_bio = _open(key, "certificate key")  # BIO_reset of a file BIO
        pkey = lib.PEM_read_bio_PrivateKey(key_bio, NULL, NULL, ffi.new("char[]", password))
        if pkey != NULL:
            break
    if pkey == NULL:
        raise _failed(f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() failed')
    pkey = ffi.gc(pkey, lib.EVP_PKEY_free)
    if not lib.SSL_CTX_use_PrivateKey(ctx, pkey):
        raise _failed(f'SSL_CTX_use_PrivateKey("{key}") failed')
    return L.der_of(leaf)


def _load_cas(ctx: Any, path: str, names: bool) -> list[bytes]:
    """``ngx_ssl_client_certificate`` / ``ngx_ssl_trusted_certificate``: the certificates
    of ``path`` into the verify store; with ``names``, their subjects (each once, in the
    file's order) are the CA names sent to the client, and returned (DER)."""
    cas = _pem_objects(
        _open(path, "certificate"),
        lib.PEM_read_bio_X509_AUX,
        lib.X509_free,
        f'cannot load certificate "{path}": PEM_read_bio_X509_AUX() failed',
    )
    store = lib.SSL_CTX_get_cert_store(ctx)
    seen: list[bytes] = []
    try:
        for ca in cas:
            if lib.X509_STORE_add_cert(store, ca) != 1:
                raise _failed(f'X509_STORE_add_cert("{path}") failed')
            if names:
                subject = L.name_der(lib.X509_get_subject_name(ca))
                if subject not in seen:
                    seen.append(subject)
                    lib.SSL_CTX_add_client_CA(ctx, ca)
    finally:
        for ca in cas:
            lib.X509_free(ca)
    return seen


def _load_crl(ctx: Any, path: str) -> None:
    """``ngx_ssl_crl``: the CRLs of ``path`` into the verify store, checked for the whole chain."""
    crls = _pem_objects(
        _open(path, "CRL"),
        lib.PEM_read_bio_X509_CRL,
        lib.X509_CRL_free,
        f'cannot load CRL "{path}": PEM_read_bio_X509_CRL() failed',
    )
    store = lib.SSL_CTX_get_cert_store(ctx)
    try:
        for crl in crls:
            if lib.X509_STORE_add_crl(store, crl) != 1:
                raise _failed(f'X509_STORE_add_crl("{path}") failed')
    finally:
        for crl in crls:
            lib.X509_CRL_free(crl)
    lib.X509_STORE_set_flags(store, L.X509_V_FLAG_CRL_CHECK | L.X509_V_FLAG_CRL_CHECK_ALL)


def _load_dhparam(ctx: Any, path: str) -> None:
    """``ngx_ssl_dhparam``."""
    dh = lib.PEM_read_bio_DHparams(_open(path, None), NULL, NULL, NULL)
    if dh == NULL:
        raise _failed(f'PEM_read_bio_DHparams("{path}") failed')
    try:
        if not L.ctx_ctrl(ctx, L.SSL_CTRL_SET_TMP_DH, 0, dh):
            raise _failed(f'SSL_CTX_set_tmp_dh("{path}") failed')
    finally:
        lib.DH_free(dh)


# -- ssl_session_ticket_key ----------------------------------------------------------


class _TicketKey:
    __slots__ = ("aes", "cipher", "hmac", "name")

    def __init__(self, data: bytes) -> None:
        self.name = data[:16]
        if len(data) == 48:  # nginx's order: name, AES-128 key, HMAC key
            self.aes, self.hmac, self.cipher = data[16:32], data[32:48], lib.EVP_aes_128_cbc()
        else:  # 80 bytes: name, HMAC key, AES-256 key
            self.hmac, self.aes, self.cipher = data[16:48], data[48:80], lib.EVP_aes_256_cbc()


def _read_ticket_key(path: str, conf: ServerConf) -> _TicketKey:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        why = f"({e.errno}: {e.strerror})"
        raise ConfError(f'open() "{path}" failed {why}', conf.file, conf.line) from None
    try:
        size = os.fstat(fd).st_size
        if size not in (48, 80):
            raise ConfError(f'"{path}" must be 48 or 80 bytes', conf.file, conf.line)
        data = os.read(fd, size)
    except OSError as e:
        why = f"({e.errno}: {e.strerror})"
        raise ConfError(f'read() "{path}" failed {why}', conf.file, conf.line) from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise ConfError(
            f'read() "{path}" returned only {len(data)} bytes instead of {size}',
            conf.file,
            conf.line,
        )
    return _TicketKey(data)


def _zone_keys(zone: ssl_cache.Zone, lifetime: float) -> Callable[[bool], list[_TicketKey]]:
    """nginx's automatic ticket keys of a shared zone: the same in every worker and
    across reloads, the sealing one replaced every ``ssl_session_timeout``."""
    made: dict[bytes, _TicketKey] = {}

    def keys(seal: bool) -> list[_TicketKey]:
        out = []
        for data in zone.ticket_keys(lifetime, ssl_cache.now(), seal):
            key = made.get(data)
            if key is None:
                if len(made) > 16:
                    made.clear()
                key = made[data] = _TicketKey(data)
            out.append(key)
        return out

    return keys


def _ticket_key_callback(tls: OpenSSLContext, get_keys: Callable[[bool], list[_TicketKey]]) -> None:
    """``ngx_ssl_session_ticket_key_callback``: tickets sealed with the first key,
    opened with any of them."""
    digest = lib.EVP_sha256()

    def callback(ssl: Any, name: Any, iv: Any, ectx: Any, hctx: Any, enc: int) -> int:
        keys = get_keys(enc == 1)
        if enc == 1:  # encrypt a new ticket with the first key
            key = keys[0]
            if lib.RAND_bytes(iv, 16) != 1:
                return -1
            if lib.EVP_EncryptInit_ex(ectx, key.cipher, NULL, key.aes, iv) != 1:
                return -1
            if lib.HMAC_Init_ex(hctx, key.hmac, len(key.hmac), digest, NULL) != 1:
                return -1
            ffi.memmove(name, key.name, 16)
            return 1
        wanted = ffi.buffer(name, 16)[:]
        i = next((n for n, k in enumerate(keys) if k.name == wanted), -1)
        if i < 0:
            return 0  # unknown key: a full handshake
        key = keys[i]
        if lib.HMAC_Init_ex(hctx, key.hmac, len(key.hmac), digest, NULL) != 1:
            return -1
        if lib.EVP_DecryptInit_ex(ectx, key.cipher, NULL, key.aes, iv) != 1:
            return -1
        # renew in TLSv1.3, and when the ticket was not sealed with the first key
        if lib.SSL_version(ssl) == L.TLS1_3_VERSION or i != 0:
            return 2
        return 1

    cb = ffi.callback(
        "int (*)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *, HMAC_CTX *, int)",
        callback,
        error=-1,
    )
    _KEEP.append(cb)
    lib.SSL_CTX_callback_ctrl(
        tls.ctx, L.SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB, ffi.cast("void (*)(void)", cb)
    )


def _shared_cache(tls: OpenSSLContext, zone: ssl_cache.Zone) -> None:
    """The session callbacks of a shared cache (``ngx_ssl_new_session``,
    ``ngx_ssl_get_cached_session``, ``ngx_ssl_remove_session``)."""
    id_len = ffi.new("unsigned int *")

    def session_id(sess: Any) -> bytes:
        data = lib.SSL_SESSION_get_id(sess, id_len)
        return bytes(ffi.buffer(data, id_len[0]))

    def new_session(ssl: Any, sess: Any) -> int:
        # a TLSv1.3 session is a ticket, unless tickets are off
        if (
            lib.SSL_version(ssl) == L.TLS1_3_VERSION
            and not lib.SSL_get_options(ssl) & L.SSL_OP_NO_TICKET
        ):
            return 0
        size = lib.i2d_SSL_SESSION(sess, NULL)
        if size <= 0 or size > ssl_cache.MAX_SESSION:
            return 0  # nginx does not cache too big a session
        timeout = lib.SSL_CTX_get_timeout(lib.SSL_get_SSL_CTX(ssl))
        der = L.i2d(lib.i2d_SSL_SESSION, sess)
        zone.store(session_id(sess), der, ssl_cache.now() + timeout)
        return 0  # OpenSSL keeps no reference for us

    def get_session(_ssl: Any, sid: Any, sid_len: int, copy: Any) -> Any:
        copy[0] = 0
        der = zone.fetch(bytes(ffi.buffer(sid, sid_len)), ssl_cache.now())
        if der is None:
            return NULL
        buf = ffi.new("unsigned char[]", der)
        sess = lib.d2i_SSL_SESSION(NULL, ffi.new("const unsigned char **", buf), len(der))
        if sess == NULL:  # not a session after all: a full handshake, and no error left
            lib.ERR_clear_error()
            zone.remove(bytes(ffi.buffer(sid, sid_len)))
        return sess

    def remove_session(_ctx: Any, sess: Any) -> None:
        zone.remove(session_id(sess))

    callbacks = (
        ffi.callback("int (*)(SSL *, SSL_SESSION *)", new_session, error=0),
        ffi.callback("SSL_SESSION *(*)(SSL *, const unsigned char *, int, int *)", get_session),
        ffi.callback("void (*)(SSL_CTX *, SSL_SESSION *)", remove_session),
    )
    _KEEP.extend(callbacks)
    lib.SSL_CTX_sess_set_new_cb(tls.ctx, callbacks[0])
    lib.SSL_CTX_sess_set_get_cb(tls.ctx, callbacks[1])
    lib.SSL_CTX_sess_set_remove_cb(tls.ctx, callbacks[2])


def optional_error(conf: ServerConf, code: int) -> bool:
    """``optional_no_ca`` lets an untrusted issuer through (``ngx_ssl_verify_error_optional``)."""
    return conf.ssl_verify_client == VerifyClient.OPTIONAL_NO_CA and code in VERIFY_ERRORS_OPTIONAL


__all__ = [
    "OpenSSLContext",
    "make_context",
    "optional_error",
    "ssl_error_text",
]
