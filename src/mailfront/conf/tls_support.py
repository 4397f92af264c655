"""Which ``ssl_*`` settings of a server the TLS engine can honour (pure, no ssl import).

nginx builds one ``SSL_CTX`` per ``server{}`` that uses TLS (``listen ... ssl``
or ``starttls on|only``) and applies every ``ssl_*`` directive to it.  mailfront's
first engine is Python's ``ssl`` module (OpenSSL behind the stdlib API, used by
uvloop's TLS transport).  It cannot do everything nginx does (see
``docs/tls.md``); what it cannot do is refused here, at ``-t``, with a clear
message, never accepted and silently ignored.

:func:`stdlib_refusals` is the list for the stdlib engine; a later engine
(pyOpenSSL over memory BIOs) will have its own list, and the server code will
pick the engine whose list is empty.  Settings of a server without TLS are not
looked at, as nginx does not look at them either (it creates no ``SSL_CTX``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailfront.conf.errors import ConfError
from mailfront.conf.model import ServerConf, Starttls, VerifyClient

# ngx_ssl_session_cache()'s builtin_session_cache values
SCACHE_OFF = -1  # NGX_SSL_NO_SCACHE: "off"
SCACHE_NONE = -2  # NGX_SSL_NONE_SCACHE: "none" (nginx's default)
SCACHE_NO_BUILTIN = -3  # NGX_SSL_NO_BUILTIN_SCACHE: only "shared:" was given
SCACHE_DEFAULT_BUILTIN = -5  # NGX_SSL_DFLT_BUILTIN_SCACHE: "builtin"

# OpenSSL's SSL_SESSION_CACHE_MAX_SIZE_DEFAULT: the size of "builtin"
OPENSSL_CACHE_SIZE = 1024 * 20
# nginx's default ssl_session_timeout (5m); the stdlib cannot set another
DEFAULT_SESSION_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class SessionCache:
    """``ssl_session_cache`` as ``ngx_mail_ssl_session_cache`` reads it."""

    builtin: int  # SCACHE_* or a size (builtin:N)
    shared: str | None = None  # the "shared:name:size" word, if any


def parse_session_cache(text: str) -> SessionCache:
    """The words of ``ssl_session_cache`` (already checked by the config reader)."""
    builtin: int | None = None
    shared: str | None = None
    for word in text.split():
        if word == "off":
            builtin = SCACHE_OFF
        elif word == "none":
            builtin = SCACHE_NONE
        elif word == "builtin":
            builtin = SCACHE_DEFAULT_BUILTIN
        elif word.startswith("builtin:"):
            builtin = int(word[8:])
        elif word.startswith("shared:"):
            shared = word
    if builtin is None:
        builtin = SCACHE_NO_BUILTIN if shared is not None else SCACHE_NONE
    return SessionCache(builtin, shared)


def tls_enabled(conf: ServerConf) -> bool:
    """Whether nginx would create an SSL context for this server."""
    return conf.starttls != Starttls.OFF or any(listen.ssl for listen in conf.listen)


def verify_enabled(conf: ServerConf) -> bool:
    """``ssl_verify_client`` other than ``off``: client certificates are asked for."""
    return conf.ssl_verify_client != VerifyClient.OFF


def _seconds(value: float) -> str:
    return f"{value:g}s" if value != int(value) else f"{int(value)}s"


def stdlib_refusals(conf: ServerConf) -> list[ConfError]:
    """What the stdlib engine cannot honour in ``conf``: one error per setting.

    Each error reads ``"<directive> <value>" is not supported yet for server
    in FILE:LINE`` (the place of the ``server{}`` block: the merged settings
    no longer know the line of each directive).  An empty list means the
    stdlib engine does exactly what nginx would, except for the documented
    differences of ``docs/tls.md``.
    """
    if not tls_enabled(conf):
        return []
    out: list[str] = []
    if conf.ssl_certificate_compression:
        out.append('"ssl_certificate_compression on"')
    cache = parse_session_cache(conf.ssl_session_cache)
    if cache.shared is not None or cache.builtin not in (
        SCACHE_NONE,
        SCACHE_DEFAULT_BUILTIN,
        OPENSSL_CACHE_SIZE,
    ):
        out.append(f'"ssl_session_cache {conf.ssl_session_cache}"')
    if conf.ssl_session_ticket_key:
        out.append('"ssl_session_ticket_key" directive')
    if conf.ssl_session_timeout != DEFAULT_SESSION_TIMEOUT:
        out.append(f'"ssl_session_timeout {_seconds(conf.ssl_session_timeout)}"')
    if ":" in conf.ssl_ecdh_curve:
        out.append(f'"ssl_ecdh_curve {conf.ssl_ecdh_curve}"')
    if conf.ssl_verify_client == VerifyClient.OPTIONAL_NO_CA:
        out.append('"ssl_verify_client optional_no_ca"')
    if conf.ssl_conf_command:
        out.append('"ssl_conf_command" directive')
    if any(ls.ssl and ls.proxy_protocol for ls in conf.listen):
        # the loop runs the TLS handshake from the first byte (docs/tls.md)
        out.append('"listen ... ssl proxy_protocol"')
    return [
        ConfError(f"{what} is not supported yet for server", conf.file, conf.line) for what in out
    ]


def openssl_refusals(conf: ServerConf) -> list[ConfError]:
    """What the OpenSSL engine (pyOpenSSL over memory BIOs) cannot honour in ``conf``.

    pyOpenSSL wraps neither the session cache callbacks (a cache shared by
    the workers), nor the size of OpenSSL's own cache, nor the ticket key
    callback, nor ``SSL_CONF_cmd``.
    """
    if not tls_enabled(conf):
        return []
    out: list[str] = []
    if conf.ssl_certificate_compression:
        out.append('"ssl_certificate_compression on"')
    cache = parse_session_cache(conf.ssl_session_cache)
    if cache.shared is not None or cache.builtin not in (
        SCACHE_OFF,
        SCACHE_NONE,
        SCACHE_DEFAULT_BUILTIN,
        OPENSSL_CACHE_SIZE,
    ):
        out.append(f'"ssl_session_cache {conf.ssl_session_cache}"')
    if conf.ssl_session_ticket_key:
        out.append('"ssl_session_ticket_key" directive')
    if conf.ssl_conf_command:
        out.append('"ssl_conf_command" directive')
    return [
        ConfError(f"{what} is not supported yet for server", conf.file, conf.line) for what in out
    ]


__all__ = [
    "DEFAULT_SESSION_TIMEOUT",
    "OPENSSL_CACHE_SIZE",
    "SCACHE_DEFAULT_BUILTIN",
    "SCACHE_NONE",
    "SCACHE_NO_BUILTIN",
    "SCACHE_OFF",
    "SessionCache",
    "openssl_refusals",
    "parse_session_cache",
    "stdlib_refusals",
    "tls_enabled",
    "verify_enabled",
]
