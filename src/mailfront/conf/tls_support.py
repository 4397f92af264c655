"""Which ``ssl_*`` settings of a server the TLS engine can honour (pure, no ssl import).

nginx builds one ``SSL_CTX`` per ``server{}`` that uses TLS (``listen ... ssl``
or ``starttls on|only``) and applies every ``ssl_*`` directive to it.
mailfront's TLS engine is pyOpenSSL over memory BIOs
(``mailfront.server.tls_openssl``).  What it cannot do (see ``docs/tls.md``)
is refused here, at ``-t``, with a clear message, never accepted and silently
ignored.  Settings of a server without TLS are not looked at, as nginx does
not look at them either (it creates no ``SSL_CTX``).
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


# ssl_conf_command: the SSL_CONF_cmd() commands (file names, matched without case) that the
# OpenSSL engine can apply through pyOpenSSL, and the "Options" words it can set
CONF_COMMANDS = frozenset(
    {
        "ciphersuites",
        "cipherstring",
        "groups",
        "curves",
        "minprotocol",
        "maxprotocol",
        "signaturealgorithms",
        "options",
    }
)
CONF_OPTIONS = frozenset(
    {"serverpreference", "norenegotiation", "prioritizechacha", "-sessionticket", "-compression"}
)


def conf_command_supported(name: str, value: str) -> bool:
    """Whether the OpenSSL engine can apply ``ssl_conf_command name value``."""
    key = name.lower()
    if key not in CONF_COMMANDS:
        return False
    if key == "options":
        return all(w.strip().lower() in CONF_OPTIONS for w in value.split(",") if w.strip())
    return True


def openssl_refusals(conf: ServerConf) -> list[ConfError]:
    """What the OpenSSL engine (pyOpenSSL over memory BIOs) cannot honour in ``conf``.

    pyOpenSSL wraps neither the session cache callbacks (a cache shared by
    the workers), nor the size of OpenSSL's own cache, nor the ticket key
    callback, nor ``SSL_CONF_cmd``: of ``ssl_conf_command``, what maps onto
    calls it has (:data:`CONF_COMMANDS`) is applied, the rest is refused.
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
    for name, value in conf.ssl_conf_command:
        if not conf_command_supported(name, value):
            out.append(f'"ssl_conf_command {name} {value}"')
    return [
        ConfError(f"{what} is not supported yet for server", conf.file, conf.line) for what in out
    ]


__all__ = [
    "CONF_COMMANDS",
    "CONF_OPTIONS",
    "OPENSSL_CACHE_SIZE",
    "SCACHE_DEFAULT_BUILTIN",
    "SCACHE_NONE",
    "SCACHE_NO_BUILTIN",
    "SCACHE_OFF",
    "SessionCache",
    "conf_command_supported",
    "openssl_refusals",
    "parse_session_cache",
    "tls_enabled",
    "verify_enabled",
]
