"""What the TLS engine reads of a server's ``ssl_*`` settings (pure, no ssl import).

nginx builds one ``SSL_CTX`` per ``server{}`` that uses TLS (``listen ... ssl``
or ``starttls on|only``) and applies every ``ssl_*`` directive to it;
mailfront's engine (``mailfront.server.tls_openssl``) does the same.  Settings
of a server without TLS are not looked at, as nginx does not look at them
either (it creates no ``SSL_CTX``).  The one value the engine cannot carry
out, ``ssl_certificate_compression on``, is refused when it is read
(``directives.SUPPORTED_VALUES_ONLY``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailfront.conf.model import ServerConf, Starttls, VerifyClient

# ngx_ssl_session_cache()'s builtin_session_cache values
SCACHE_OFF = -1  # NGX_SSL_NO_SCACHE: "off"
SCACHE_NONE = -2  # NGX_SSL_NONE_SCACHE: "none" (nginx's default)
SCACHE_NO_BUILTIN = -3  # NGX_SSL_NO_BUILTIN_SCACHE: only "shared:" was given
SCACHE_DEFAULT_BUILTIN = -5  # NGX_SSL_DFLT_BUILTIN_SCACHE: "builtin"

# OpenSSL's SSL_SESSION_CACHE_MAX_SIZE_DEFAULT: the size of "builtin"
OPENSSL_CACHE_SIZE = 1024 * 20


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


__all__ = [
    "OPENSSL_CACHE_SIZE",
    "SCACHE_DEFAULT_BUILTIN",
    "SCACHE_NONE",
    "SCACHE_NO_BUILTIN",
    "SCACHE_OFF",
    "SessionCache",
    "parse_session_cache",
    "tls_enabled",
    "verify_enabled",
]
