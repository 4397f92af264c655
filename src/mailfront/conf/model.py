"""The configuration as the rest of mailfront sees it: frozen dataclasses.

Field names are nginx's C field names (``ngx_mail_core_srv_conf_t`` and
friends).  Times are float seconds, sizes int bytes.  Every field of a
``ServerConf`` is already merged (main -> server, nginx's defaults applied in
``build.py``), so the server code never looks at the ``mail{}`` level.

This module is the contract between the configuration reader (``conf/``) and
the rest of the program: fields may be added, never renamed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Protocol(enum.Enum):
    IMAP = "imap"
    POP3 = "pop3"
    SMTP = "smtp"


class AuthMethod(enum.IntEnum):
    """nginx's NGX_MAIL_AUTH_* numbering; the bit for a mask is ``1 << value``."""

    PLAIN = 0
    LOGIN = 1
    LOGIN_USERNAME = 2
    APOP = 3
    CRAM_MD5 = 4
    EXTERNAL = 5
    NONE = 6


# bitmask values (nginx's NGX_MAIL_AUTH_*_ENABLED)
AUTH_PLAIN_ENABLED = 0x0002
AUTH_LOGIN_ENABLED = 0x0004
AUTH_APOP_ENABLED = 0x0008
AUTH_CRAM_MD5_ENABLED = 0x0010
AUTH_EXTERNAL_ENABLED = 0x0020
AUTH_NONE_ENABLED = 0x0040


class Starttls(enum.IntEnum):
    OFF = 0
    ON = 1
    ONLY = 2


class VerifyClient(enum.IntEnum):
    OFF = 0
    ON = 1
    OPTIONAL = 2
    OPTIONAL_NO_CA = 3


@dataclass(frozen=True, slots=True)
class LogTarget:
    """One ``error_log`` target: a file path, ``stderr``, or ``syslog:...``."""

    target: str  # absolute path, "stderr", or the full "syslog:..." string
    level: int  # see LOG_LEVELS
    file: str = ""  # where it was declared, for messages
    line: int = 0


# nginx's levels, index = severity (lower is more severe)
LOG_LEVELS = ("stderr", "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARN, LOG_NOTICE, LOG_INFO, LOG_DEBUG = range(1, 9)


@dataclass(frozen=True, slots=True)
class Listen:
    """One socket of ``listen``; a port range or a host name yields several."""

    family: str  # "inet", "inet6" or "unix"
    host: str  # "0.0.0.0", "::", "127.0.0.1", or the unix path
    port: int  # 0 for unix
    addr_text: str  # nginx's text: "127.0.0.1:143", "[::1]:143", "unix:/path", "*:143"
    wildcard: bool = False
    ssl: bool = False
    proxy_protocol: bool = False
    bind: bool = False
    backlog: int = 511
    rcvbuf: int = -1
    sndbuf: int = -1
    ipv6only: bool = True
    so_keepalive: int = 0  # 0 unset, 1 on, 2 off
    tcp_keepidle: int = 0
    tcp_keepintvl: int = 0
    tcp_keepcnt: int = 0
    multipath: bool = False
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class AuthHttpUrl:
    """``auth_http``: ``[http://]host[:port][/uri]`` or ``unix:/path[:/uri]``."""

    host_header: str  # the Host header: the URL's host part, "localhost" for unix
    addr: str  # the first resolved address, or the unix socket path
    port: int  # 0 for unix
    uri: str
    unix: bool = False
    url: str = ""  # as written, for log messages (nginx logs the URL's host part)


@dataclass(frozen=True, slots=True)
class Cidr:
    """An address or network of ``set_real_ip_from`` (and mailfront's allow/deny)."""

    family: str  # "inet", "inet6" or "unix"
    network: int = 0
    mask: int = 0


@dataclass(frozen=True, slots=True)
class Resolver:
    addresses: tuple[tuple[str, int], ...]
    valid: float | None = None
    ipv4: bool = True
    ipv6: bool = True


@dataclass(frozen=True, slots=True)
class ServerConf:
    """One ``server{}`` of ``mail{}``, fully merged with nginx's defaults."""

    file: str
    line: int
    listen: tuple[Listen, ...]
    protocol: Protocol

    # ngx_mail_core_module
    timeout: float = 60.0
    server_name: str = ""
    error_log: tuple[LogTarget, ...] = ()
    resolver: Resolver | None = None
    resolver_timeout: float = 30.0
    max_errors: int = 5

    # ngx_mail_auth_http_module
    auth_http: AuthHttpUrl | None = None
    auth_http_timeout: float = 60.0
    auth_http_header: tuple[tuple[str, str], ...] = ()
    auth_http_pass_client_cert: bool = False

    # ngx_mail_proxy_module
    proxy_buffer: int = 4096
    proxy_timeout: float = 86400.0
    proxy_pass_error_message: bool = False
    xclient: bool = True
    proxy_smtp_auth: bool = False
    proxy_protocol: int = 0  # 0 off, 1 v1, 2 v2

    # ngx_mail_realip_module
    set_real_ip_from: tuple[Cidr, ...] = ()

    # ngx_mail_imap_module
    imap_client_buffer: int = 4096
    imap_capabilities: tuple[str, ...] = ("IMAP4", "IMAP4rev1", "UIDPLUS")
    imap_auth: int = AUTH_PLAIN_ENABLED

    # ngx_mail_pop3_module
    pop3_capabilities: tuple[str, ...] = ("TOP", "USER", "UIDL")
    pop3_auth: int = AUTH_PLAIN_ENABLED

    # ngx_mail_smtp_module
    smtp_client_buffer: int = 4096
    smtp_greeting_delay: float = 0.0
    smtp_capabilities: tuple[str, ...] = ()
    smtp_auth: int = AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED

    # ngx_mail_ssl_module
    starttls: Starttls = Starttls.OFF
    ssl_certificate: tuple[str, ...] = ()
    ssl_certificate_key: tuple[str, ...] = ()
    ssl_password_file: str | None = None
    # its passwords, read while parsing (ngx_ssl_read_password_file); kept out of repr
    ssl_passwords: tuple[bytes, ...] | None = field(default=None, repr=False)
    ssl_certificate_compression: bool = False
    ssl_dhparam: str | None = None
    ssl_ecdh_curve: str = "auto"
    ssl_protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ssl_ciphers: str = "HIGH:!aNULL:!MD5"
    ssl_prefer_server_ciphers: bool = False
    ssl_session_cache: str = "none"
    ssl_session_tickets: bool = True
    ssl_session_ticket_key: tuple[str, ...] = ()
    ssl_session_timeout: float = 300.0
    ssl_verify_client: VerifyClient = VerifyClient.OFF
    ssl_verify_depth: int = 1
    ssl_client_certificate: str | None = None
    ssl_trusted_certificate: str | None = None
    ssl_crl: str | None = None
    ssl_conf_command: tuple[tuple[str, str], ...] = ()

    # mailfront extensions (not in nginx)
    auth_file: str | None = None


@dataclass(frozen=True, slots=True)
class MailConf:
    servers: tuple[ServerConf, ...]


@dataclass(frozen=True, slots=True)
class MainConf:
    """Main-context directives that mailfront honours."""

    daemon: bool = True
    master_process: bool = True
    worker_processes: int = 1
    pid: str = ""  # absolute; "" when "pid off" (not in nginx, kept for symmetry)
    error_log: tuple[LogTarget, ...] = ()
    worker_rlimit_nofile: int = 0  # 0 = unset
    worker_shutdown_timeout: float = 0.0  # 0 = unset (wait forever)
    worker_connections: int = 512
    env: tuple[str, ...] = ()
    user: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """What ``conf.load()`` returns."""

    conf_file: str  # absolute path of the main file
    prefix: str  # absolute, ends with "/"
    main: MainConf = field(default_factory=MainConf)
    mail: MailConf | None = None
    files: tuple[str, ...] = ()  # every file read, in order (for -T)
    warnings: tuple[str, ...] = ()  # nginx's [warn] messages, each with " in FILE:LINE"
