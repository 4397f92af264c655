"""THE command table: one row per directive mailfront reads.

A row says where a directive may appear, how many arguments it takes, which
handler stores it, the module whose merge step gives it its default, and how
it is documented (``docs/directives.md`` is generated from these rows:
``python -m mailfront.conf.docs``).

Refusing what is not implemented yet
------------------------------------
A directive of nginx's mail modules that mailfront does not implement yet is
not ignored: it is refused with ``"x" directive is not supported yet``.  To
enable one when its feature lands, flip its row's ``supported`` to ``True``.
Directives where only some values are implemented are listed in
:data:`SUPPORTED_VALUES_ONLY`, and ``listen`` parameters in
:data:`UNSUPPORTED_LISTEN_PARAMS`; remove an entry to enable it.

nginx core directives that have no meaning for mailfront (``timer_resolution``,
``load_module``, ``http { }`` ...) are accepted and ignored (``ignored=True``),
so that a complete ``nginx.conf`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailfront.conf import handlers as h
from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_NONE_ENABLED,
    AUTH_PLAIN_ENABLED,
    VerifyClient,
)
from mailfront.conf.slots import (
    FLAG,
    NOARGS,
    ONEMORE,
    TAKE1,
    TAKE2,
    TAKE12,
    TAKE23,
    Arity,
    Ctx,
    Handler,
    bitmask,
    capabilities,
    enum_slot,
    flag,
    ignore,
    keyval,
    msec,
    num,
    sec,
    size,
    str_array,
    string,
)

M = Ctx.MAIL
S = Ctx.SERVER
MS = Ctx.MAIL | Ctx.SERVER
MAIN = Ctx.MAIN
EV = Ctx.EVENTS

# Directives accepted only with these values for now (compared case-insensitively);
# any other value is refused as "not supported yet".  Delete an entry to enable it.
SUPPORTED_VALUES_ONLY: dict[str, frozenset[str]] = {
    # OpenSSL 3.0 (the system's, as Debian's nginx) has no certificate compression (docs/tls.md)
    "ssl_certificate_compression": frozenset({"off"}),
}

# listen parameters refused as "not supported yet".  Delete one to enable it.
UNSUPPORTED_LISTEN_PARAMS: frozenset[str] = frozenset({"multipath"})

IMAP_AUTH = {
    "plain": AUTH_PLAIN_ENABLED,
    "login": AUTH_LOGIN_ENABLED,
    "cram-md5": AUTH_CRAM_MD5_ENABLED,
    "external": AUTH_EXTERNAL_ENABLED,
}
POP3_AUTH = {
    "plain": AUTH_PLAIN_ENABLED,
    "apop": AUTH_APOP_ENABLED,
    "cram-md5": AUTH_CRAM_MD5_ENABLED,
    "external": AUTH_EXTERNAL_ENABLED,
}
SMTP_AUTH = {
    "plain": AUTH_PLAIN_ENABLED,
    "login": AUTH_LOGIN_ENABLED,
    "cram-md5": AUTH_CRAM_MD5_ENABLED,
    "external": AUTH_EXTERNAL_ENABLED,
    "none": AUTH_NONE_ENABLED,
}
SSL_PROTOCOLS = {
    "SSLv2": 0x0002,
    "SSLv3": 0x0004,
    "TLSv1": 0x0008,
    "TLSv1.1": 0x0010,
    "TLSv1.2": 0x0020,
    "TLSv1.3": 0x0040,
}
VERIFY_CLIENT = {
    "off": VerifyClient.OFF,
    "on": VerifyClient.ON,
    "optional": VerifyClient.OPTIONAL,
    "optional_no_ca": VerifyClient.OPTIONAL_NO_CA,
}
PROXY_PROTOCOL = {"off": 0, "on": 1, "v2": 2}


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    ctx: Ctx
    arity: Arity
    handler: Handler | None  # None for blocks, which the loader opens itself
    module: str  # nginx's module (its merge step sets the default), or "mailfront"
    syntax: str  # for the documentation: the arguments
    default: str = ""
    block: bool = False
    supported: bool = True
    ignored: bool = False  # nginx core setting that mailfront accepts and ignores
    origin: str = "nginx"  # "nginx" or "mailfront" (an extension)
    note: str = ""


def _row(
    name: str,
    ctx: Ctx,
    arity: Arity,
    handler: Handler | None,
    module: str,
    syntax: str,
    default: str = "",
    **kw: object,
) -> Directive:
    return Directive(name, ctx, arity, handler, module, syntax, default, **kw)  # type: ignore[arg-type]


# fmt: off
TABLE: tuple[Directive, ...] = (
    # --- nginx core (main level) ------------------------------------------------
    _row("daemon", MAIN, FLAG, flag("daemon"), "core", "on | off", "on"),
    _row("master_process", MAIN, FLAG, flag("master_process"), "core", "on | off", "on"),
    _row("worker_processes", MAIN, TAKE1, h.worker_processes, "core", "number | auto", "1"),
    _row("pid", MAIN, TAKE1, string("pid"), "core", "file", "logs/mailfront.pid",
         note="Relative to the prefix (-p)."),
    _row("error_log", MAIN, ONEMORE, h.error_log, "core", "file | stderr | syslog:... [level]",
         "logs/error.log error", note="Relative to the prefix (-p). May repeat."),
    _row("worker_rlimit_nofile", MAIN, TAKE1, num("worker_rlimit_nofile"), "core", "number"),
    _row("worker_shutdown_timeout", MAIN, TAKE1, msec("worker_shutdown_timeout"), "core",
         "time"),
    _row("env", MAIN, TAKE1, h.env, "core", "variable[=value]", "",
         note="May repeat."),
    _row("user", MAIN, TAKE12, h.user, "core", "user [group]", "nobody nogroup",
         note="The workers' user and group, when the master runs as root (nginx's "
         "compiled-in default when the directive is absent); one process "
         "(`master_process off`) keeps its user, as nginx."),
    _row("events", MAIN, NOARGS, None, "events", "{ ... }", "", block=True,
         note="Required, as in nginx."),
    _row("worker_connections", EV, TAKE1, h.worker_connections, "events", "number", "512"),
    _row("mail", MAIN, NOARGS, None, "mail", "{ ... }", "", block=True),
    # nginx core settings that mean nothing to mailfront: accepted and ignored
    _row("timer_resolution", MAIN, TAKE1, ignore, "core", "interval", ignored=True),
    _row("lock_file", MAIN, TAKE1, ignore, "core", "file", ignored=True),
    _row("debug_points", MAIN, TAKE1, ignore, "core", "abort | stop", ignored=True),
    _row("worker_priority", MAIN, TAKE1, ignore, "core", "number", ignored=True),
    _row("worker_cpu_affinity", MAIN, ONEMORE, ignore, "core", "cpumask ...", ignored=True),
    _row("worker_rlimit_core", MAIN, TAKE1, ignore, "core", "size", ignored=True),
    _row("working_directory", MAIN, TAKE1, ignore, "core", "directory", ignored=True),
    _row("load_module", MAIN, TAKE1, ignore, "core", "file", ignored=True),
    _row("thread_pool", MAIN, TAKE23, ignore, "core", "name threads=number [max_queue=number]",
         ignored=True),
    _row("pcre_jit", MAIN, FLAG, ignore, "core", "on | off", ignored=True),
    _row("ssl_engine", MAIN, TAKE1, ignore, "core", "device", ignored=True),
    _row("google_perftools_profiles", MAIN, TAKE1, ignore, "core", "file", ignored=True),
    _row("http", MAIN, NOARGS, None, "http", "{ ... }", block=True, ignored=True,
         note="Skipped, except for include."),
    _row("stream", MAIN, NOARGS, None, "stream", "{ ... }", block=True, ignored=True,
         note="Skipped, except for include."),
    _row("use", EV, TAKE1, ignore, "events", "method", ignored=True),
    _row("multi_accept", EV, FLAG, ignore, "events", "on | off", ignored=True),
    _row("accept_mutex", EV, FLAG, ignore, "events", "on | off", ignored=True),
    _row("accept_mutex_delay", EV, TAKE1, ignore, "events", "time", ignored=True),
    _row("debug_connection", EV, TAKE1, ignore, "events", "address | CIDR | unix:",
         ignored=True),
    _row("worker_aio_requests", EV, TAKE1, ignore, "events", "number", ignored=True),
    _row("epoll_events", EV, TAKE1, ignore, "events", "number", ignored=True),
    # --- ngx_mail_core_module ---------------------------------------------------
    _row("server", M, NOARGS, None, "mail_core", "{ ... }", block=True),
    _row("listen", S, ONEMORE, h.listen, "mail_core",
         "address:port [ssl] [proxy_protocol] [backlog=number] [rcvbuf=size] [sndbuf=size] "
         "[bind] [ipv6only=on|off] [so_keepalive=on|off|[keepidle]:[keepintvl]:[keepcnt]] "
         "[multipath]"),
    _row("protocol", S, TAKE1, h.protocol, "mail_core", "imap | pop3 | smtp",
         "from the listen port"),
    _row("timeout", MS, TAKE1, msec("timeout"), "mail_core", "time", "60s"),
    _row("server_name", MS, TAKE1, string("server_name"), "mail_core", "name", "hostname"),
    _row("error_log", MS, ONEMORE, h.error_log, "mail_core",
         "file | stderr | syslog:... [level]", "the main error_log"),
    _row("resolver", MS, ONEMORE, h.resolver, "mail_core",
         "address ... [valid=time] [ipv4=on|off] [ipv6=on|off] | off", "off"),
    _row("resolver_timeout", MS, TAKE1, msec("resolver_timeout"), "mail_core", "time", "30s"),
    _row("max_errors", MS, TAKE1, num("max_errors"), "mail_core", "number", "5"),
    # --- ngx_mail_auth_http_module ---------------------------------------------
    _row("auth_http", MS, TAKE1, h.auth_http, "mail_auth_http", "URL", "",
         note="Required unless auth_file is set."),
    _row("auth_http_timeout", MS, TAKE1, msec("auth_http_timeout"), "mail_auth_http", "time",
         "60s"),
    _row("auth_http_header", MS, TAKE2, h.auth_http_header, "mail_auth_http", "header value"),
    _row("auth_http_pass_client_cert", MS, FLAG, flag("auth_http_pass_client_cert"),
         "mail_auth_http", "on | off", "off"),
    # --- ngx_mail_proxy_module --------------------------------------------------
    _row("proxy", MS, FLAG, flag("proxy"), "mail_proxy", "on | off", "off",
         note="No effect, as in nginx."),
    _row("proxy_buffer", MS, TAKE1, size("proxy_buffer"), "mail_proxy", "size", "page size (4k)"),
    _row("proxy_timeout", MS, TAKE1, msec("proxy_timeout"), "mail_proxy", "timeout", "24h"),
    _row("proxy_pass_error_message", MS, FLAG, flag("proxy_pass_error_message"), "mail_proxy",
         "on | off", "off"),
    _row("xclient", MS, FLAG, flag("xclient"), "mail_proxy", "on | off", "on"),
    _row("proxy_smtp_auth", MS, FLAG, flag("proxy_smtp_auth"), "mail_proxy", "on | off",
         "off"),
    _row("proxy_protocol", MS, TAKE1, enum_slot("proxy_protocol", PROXY_PROTOCOL),
         "mail_proxy", "on | off | v2", "off"),
    # --- ngx_mail_realip_module -------------------------------------------------
    _row("set_real_ip_from", MS, TAKE1, h.set_real_ip_from, "mail_realip",
         "address | CIDR | unix:"),
    # --- ngx_mail_imap_module ---------------------------------------------------
    _row("imap_client_buffer", MS, TAKE1, size("imap_client_buffer"), "mail_imap", "size",
         "page size (4k)"),
    _row("imap_capabilities", MS, ONEMORE, capabilities("imap_capabilities"), "mail_imap",
         "extension ...", "IMAP4 IMAP4rev1 UIDPLUS"),
    _row("imap_auth", MS, ONEMORE, bitmask("imap_auth", IMAP_AUTH), "mail_imap",
         "method ...", "plain"),
    # --- ngx_mail_pop3_module ---------------------------------------------------
    _row("pop3_capabilities", MS, ONEMORE, capabilities("pop3_capabilities"), "mail_pop3",
         "extension ...", "TOP USER UIDL"),
    _row("pop3_auth", MS, ONEMORE, bitmask("pop3_auth", POP3_AUTH), "mail_pop3", "method ...",
         "plain"),
    # --- ngx_mail_smtp_module ---------------------------------------------------
    _row("smtp_client_buffer", MS, TAKE1, size("smtp_client_buffer"), "mail_smtp", "size",
         "page size (4k)"),
    _row("smtp_greeting_delay", MS, TAKE1, msec("smtp_greeting_delay"), "mail_smtp", "time",
         "0"),
    _row("smtp_capabilities", MS, ONEMORE, capabilities("smtp_capabilities"), "mail_smtp",
         "extension ..."),
    _row("smtp_auth", MS, ONEMORE, bitmask("smtp_auth", SMTP_AUTH), "mail_smtp", "method ...",
         "plain login"),
    # --- ngx_mail_ssl_module ----------------------------------------------------
    _row("starttls", MS, TAKE1, h.starttls, "mail_ssl", "on | off | only", "off"),
    _row("ssl_certificate", MS, TAKE1, str_array("ssl_certificate"), "mail_ssl", "file",
         note="May repeat, for RSA and ECDSA keys. Relative to the folder of the main "
         "configuration file."),
    _row("ssl_certificate_key", MS, TAKE1, str_array("ssl_certificate_key"), "mail_ssl",
         "file", note="One per ssl_certificate, in the same order."),
    _row("ssl_password_file", MS, TAKE1, h.ssl_password_file, "mail_ssl", "file",
         note="Each line is tried in turn."),
    _row("ssl_certificate_compression", MS, FLAG, flag("ssl_certificate_compression"),
         "mail_ssl", "on | off", "off"),
    _row("ssl_dhparam", MS, TAKE1, string("ssl_dhparam"), "mail_ssl", "file"),
    _row("ssl_ecdh_curve", MS, TAKE1, string("ssl_ecdh_curve"), "mail_ssl", "curve", "auto",
         note="`auto`, one curve or a list (`X25519:prime256v1`)."),
    _row("ssl_protocols", MS, ONEMORE, bitmask("ssl_protocols", SSL_PROTOCOLS), "mail_ssl",
         "[SSLv2] [SSLv3] [TLSv1] [TLSv1.1] [TLSv1.2] [TLSv1.3]", "TLSv1.2 TLSv1.3"),
    _row("ssl_ciphers", MS, TAKE1, string("ssl_ciphers"), "mail_ssl", "ciphers",
         "HIGH:!aNULL:!MD5", note="TLSv1.2 and older only, as in nginx."),
    _row("ssl_prefer_server_ciphers", MS, FLAG, flag("ssl_prefer_server_ciphers"), "mail_ssl",
         "on | off", "off"),
    _row("ssl_session_cache", MS, TAKE12, h.ssl_session_cache, "mail_ssl",
         "off | none | [builtin[:size]] [shared:name:size]", "none",
         note="A `shared:` zone is kept by every worker and across reloads (docs/tls.md)."),
    _row("ssl_session_tickets", MS, FLAG, flag("ssl_session_tickets"), "mail_ssl", "on | off",
         "on"),
    _row("ssl_session_ticket_key", MS, TAKE1, str_array("ssl_session_ticket_key"), "mail_ssl",
         "file", note="48 or 80 bytes; the first file's key seals new tickets, every "
         "file's key opens them, as in nginx."),
    _row("ssl_session_timeout", MS, TAKE1, sec("ssl_session_timeout"), "mail_ssl", "time",
         "5m"),
    _row("ssl_verify_client", MS, TAKE1, enum_slot("ssl_verify_client", VERIFY_CLIENT),
         "mail_ssl", "on | off | optional | optional_no_ca", "off",
         note="The handshake completes; then nginx's cert_error or no_cert line."),
    _row("ssl_verify_depth", MS, TAKE1, num("ssl_verify_depth"), "mail_ssl", "number", "1"),
    _row("ssl_client_certificate", MS, TAKE1, string("ssl_client_certificate"), "mail_ssl",
         "file", note="The CA names are sent to the client."),
    _row("ssl_trusted_certificate", MS, TAKE1, string("ssl_trusted_certificate"), "mail_ssl",
         "file"),
    _row("ssl_crl", MS, TAKE1, string("ssl_crl"), "mail_ssl", "file"),
    _row("ssl_conf_command", MS, TAKE2, keyval("ssl_conf_command"), "mail_ssl", "name value",
         note="Every command of OpenSSL's `SSL_CONF_cmd`, applied last, as in nginx."),
    # --- mailfront extensions (not in nginx) ------------------------------------
    _row("auth_file", MS, TAKE1, string("auth_file"), "mailfront", "file", "",
         origin="mailfront",
         note="Checks logins against a Dovecot passwd-file instead of asking auth_http. "
         "Relative to the folder of the main configuration file."),
)
# fmt: on

# include is nginx's NGX_CONF_MODULE directive, valid in every block (TAKE1)
INCLUDE = Directive(
    "include",
    Ctx.MAIN | Ctx.EVENTS | MS | Ctx.SKIP,
    TAKE1,
    None,
    "core",
    "file | mask",
    note="Relative to the folder of the main configuration file.",
)

_BY_KEY: dict[tuple[str, Ctx], Directive] = {}
for _d in TABLE:
    for _c in (Ctx.MAIN, Ctx.EVENTS, Ctx.MAIL, Ctx.SERVER):
        if _d.ctx & _c:
            if (_d.name, _c) in _BY_KEY:
                raise RuntimeError(f"directive {_d.name} listed twice for {_c}")
            _BY_KEY[(_d.name, _c)] = _d
NAMES: frozenset[str] = frozenset(d.name for d in TABLE) | {"include"}


def lookup(name: str, ctx: Ctx) -> Directive | None:
    """The row for ``name`` in a block of kind ``ctx``, if it is allowed there."""
    return _BY_KEY.get((name, ctx))


__all__ = [
    "INCLUDE",
    "NAMES",
    "SUPPORTED_VALUES_ONLY",
    "TABLE",
    "UNSUPPORTED_LISTEN_PARAMS",
    "Directive",
    "lookup",
]
