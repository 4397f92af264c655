"""From configuration files to :class:`~mailfront.conf.model.Config`.

The :class:`Loader` walks the directive tree in file order, as nginx does:
``-g`` directives first, then the main file, each ``include`` read (again)
where it appears.  Each directive is looked up in the command table for the
block it is in; the checks and their messages are ``ngx_conf_handler``'s:
unknown directive, not allowed here, not terminated by ";", no opening "{",
invalid number of arguments, then the handler's own verdict.

At the end of ``mail { }`` the merge step of each module runs over every
server, module by module in nginx's module order (core, ssl, pop3, imap, smtp,
auth_http, proxy, realip), so the first error reported is nginx's.  Defaults
live only here.  Files named in directives are made absolute here: include,
certificates and auth_file against the main file's folder, pid and log files
against the prefix.

Name resolution (``auth_http``, ``listen``, ``resolver`` and ``syslog`` host
names) goes through the ``resolver`` function the caller passes; nothing in
this package opens a socket.  Without one, host names are looked up in
``/etc/hosts`` only.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from typing import Any

from mailfront.conf import directives as d
from mailfront.conf.ast import ErrorNode, Node, Nodes, parse
from mailfront.conf.errors import COMMAND_LINE, ConfError
from mailfront.conf.handlers import full_name
from mailfront.conf.known_names import NGINX_DIRECTIVES
from mailfront.conf.model import (
    AUTH_LOGIN_ENABLED,
    AUTH_PLAIN_ENABLED,
    Config,
    Listen,
    MailConf,
    MainConf,
    ServerConf,
    Starttls,
    VerifyClient,
)
from mailfront.conf.slots import Call, Ctx, Level
from mailfront.conf.values import ResolvedAddr, ResolveError, Resolver, inet6_addr, page_size

DEFAULT_PID = "logs/mailfront.pid"
MAX_INCLUDE_DEPTH = 200  # nginx runs out of file descriptors somewhere around here

IMAP_CAPABILITIES = ("IMAP4", "IMAP4rev1", "UIDPLUS")
POP3_CAPABILITIES = ("TOP", "USER", "UIDL")
SSL_PROTOCOLS_DEFAULT = 0x0020 | 0x0040  # TLSv1.2 TLSv1.3 (nginx 1.27.3)


def hosts_file_resolver(path: str = "/etc/hosts") -> Resolver:
    """A resolver that knows only the names of ``path`` (no network)."""

    def resolve(name: str) -> list[ResolvedAddr]:
        found: list[ResolvedAddr] = []
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except OSError:
            raise ResolveError(name) from None
        for raw in lines:
            fields = raw.split("#", 1)[0].split()
            if len(fields) < 2 or name.lower() not in (n.lower() for n in fields[1:]):
                continue
            addr = fields[0]
            family = "inet6" if ":" in addr else "inet"
            if family == "inet6" and inet6_addr(addr.split("%", 1)[0]) is None:
                continue
            if (family, addr) not in found:
                found.append((family, addr))
        if not found:
            raise ResolveError(name)
        return found

    return resolve


def default_hostname() -> str:
    """nginx's ``cycle->hostname``: gethostname(), lower-cased."""
    return os.uname().nodename.lower()


class Loader:
    """One configuration load; see :func:`mailfront.conf.load`."""

    def __init__(
        self,
        conf_file: str,
        prefix: str,
        directives: str | None = None,
        *,
        resolver: Resolver | None = None,
        hostname: str | None = None,
        read_file: Callable[[str], bytes] | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self.conf_file = full_name(prefix, conf_file)
        slash = self.conf_file.rfind("/")
        self.conf_prefix = self.conf_file[: slash + 1] if slash > 0 else prefix
        self.params = directives
        self.resolver: Resolver | None = resolver if resolver is not None else hosts_file_resolver()
        self.hostname = hostname if hostname is not None else default_hostname()
        self._read = read_file or _read_file
        self.warnings: list[str] = []
        self.files: list[str] = []
        self.depth = 0
        self.main = Level("main", "", 0)
        self.events: Level | None = None
        self.mail: Level | None = None
        self.servers: list[Level] = []
        self.listen_registry: list[Listen] = []
        self.shared_zones: dict[str, int] = {}  # ngx_shared_memory_add: name -> size
        self.mail_conf: MailConf | None = None

    # --- services offered to handlers -------------------------------------------

    def read_file(self, path: str) -> bytes:
        """A file a directive names (``ssl_password_file``), through the loader's reader."""
        return self._read(path)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def mail_listen(self) -> list[Any]:
        return self.listen_registry

    # --- loading ----------------------------------------------------------------

    def load(self) -> Config:
        try:
            if self.params:
                nodes = parse(
                    self.params.encode("utf-8", "surrogateescape"), COMMAND_LINE, param=True
                )
                self.process(nodes, Ctx.MAIN, self.main)
            data = self.read(self.conf_file, None)
            self.process(parse(data, self.conf_file), Ctx.MAIN, self.main)
            if self.events is None:
                raise ConfError('no "events" section in configuration', late=True)
            main = self.main_conf()
        except ConfError as e:
            e.warnings = tuple(self.warnings)
            raise
        return Config(
            conf_file=self.conf_file,
            prefix=self.prefix,
            main=main,
            mail=self.mail_conf,
            files=tuple(self.files),
            warnings=tuple(self.warnings),
        )

    def read(self, path: str, at: Node | None) -> bytes:
        """A file's bytes; nginx's open() error at the include (or nowhere for the main file)."""
        file = at.file if at is not None else None
        line = at.line if at is not None else 0
        if self.depth >= MAX_INCLUDE_DEPTH:
            raise ConfError(f'open() "{path}" failed (24: Too many open files)', file, line)
        try:
            data = self._read(path)
        except IsADirectoryError as e:  # nginx opens it, then fails to read it
            raise ConfError(
                f'pread() "{path}" failed ({e.errno}: {e.strerror})', level="crit"
            ) from None
        except OSError as e:
            raise ConfError(
                f'open() "{path}" failed ({e.errno}: {e.strerror})', file, line
            ) from None
        if path not in self.files:
            self.files.append(path)
        return data

    def process(self, nodes: Nodes, ctx: Ctx, level: Level) -> None:
        for node in nodes:
            if isinstance(node, ErrorNode):
                raise ConfError(node.msg, node.file, node.line)
            self.directive(node, ctx, level)

    def directive(self, node: Node, ctx: Ctx, level: Level) -> None:
        name = node.name
        if name == "include":
            self.include(node, ctx, level)
            return
        if ctx is Ctx.SKIP:
            if node.block is not None:
                self.process(node.block, Ctx.SKIP, level)
            return
        row = d.lookup(name, ctx)
        if row is None:
            if name in d.NAMES or name in NGINX_DIRECTIVES:
                raise ConfError(f'"{name}" directive is not allowed here', node.file, node.line)
            raise ConfError(f'unknown directive "{name}"', node.file, node.line)
        self.check_shape(row, node)
        if row.block:
            self.open_block(row, node, level)
        else:
            assert row.handler is not None
            rv = row.handler(Call(node, level, self))
            if rv:
                raise ConfError(f'"{name}" directive {rv}', node.file, node.line)
        self.check_supported(row, node)

    @staticmethod
    def check_shape(row: d.Directive, node: Node) -> None:
        name = node.name
        if not row.block and node.is_block:
            raise ConfError(f'directive "{name}" is not terminated by ";"', node.file, node.line)
        if row.block and not node.is_block:
            raise ConfError(f'directive "{name}" has no opening "{{"', node.file, node.line)
        if not row.arity.ok(len(node.args) - 1):
            raise ConfError(
                f'invalid number of arguments in "{name}" directive', node.file, node.line
            )

    @staticmethod
    def check_supported(row: d.Directive, node: Node) -> None:
        """Refuse what mailfront does not implement yet (see the command table)."""
        name = node.name
        if not row.supported:
            raise ConfError(f'"{name}" directive is not supported yet', node.file, node.line)
        if row.ctx & (Ctx.MAIL | Ctx.SERVER):
            only = d.SUPPORTED_VALUES_ONLY.get(name)
            if only is not None and node.args[1].lower() not in only:
                raise ConfError(
                    f'"{" ".join(node.args)}" is not supported yet', node.file, node.line
                )
        if name == "listen":
            for param in node.args[2:]:
                if param in d.UNSUPPORTED_LISTEN_PARAMS:
                    raise ConfError(
                        f'the "{param}" parameter of the "listen" directive is not supported yet',
                        node.file,
                        node.line,
                    )

    def include(self, node: Node, ctx: Ctx, level: Level) -> None:
        self.check_shape(d.INCLUDE, node)
        pattern = full_name(self.conf_prefix, node.args[1])
        globbing = any(ch in pattern for ch in "*?[")
        paths = sorted(glob.glob(pattern)) if globbing else [pattern]
        for path in paths:
            data = self.read(path, node)
            self.depth += 1
            try:
                self.process(parse(data, path), ctx, level)
            finally:
                self.depth -= 1

    # --- blocks -----------------------------------------------------------------

    def open_block(self, row: d.Directive, node: Node, level: Level) -> None:
        name = row.name
        if name in ("http", "stream"):
            assert node.block is not None
            self.process(node.block, Ctx.SKIP, level)
        elif name == "events":
            if self.events is not None:
                raise ConfError('"events" directive is duplicate', node.file, node.line)
            self.events = Level("events", node.file, node.line)
            assert node.block is not None
            self.process(node.block, Ctx.EVENTS, self.events)
        elif name == "mail":
            if self.mail is not None:
                raise ConfError('"mail" directive is duplicate', node.file, node.line)
            self.mail = Level("mail", node.file, node.line)
            assert node.block is not None
            self.process(node.block, Ctx.MAIL, self.mail)
            self.mail_conf = self.merge_mail(self.mail, self.servers)
        elif name == "server":
            server = Level("server", node.file, node.line)
            self.servers.append(server)
            assert node.block is not None
            self.process(node.block, Ctx.SERVER, server)
            if not server.v.get("listen_seen"):
                raise ConfError('no "listen" is defined for server', server.file, server.line)
        else:  # pragma: no cover - the table has no other block
            raise AssertionError(name)

    # --- merge --------------------------------------------------------------------

    def merge_mail(self, mail: Level, servers: list[Level]) -> MailConf:
        out: list[dict[str, Any]] = [{"file": s.file, "line": s.line} for s in servers]
        for merge in (
            self.merge_core,
            self.merge_ssl,
            self.merge_pop3,
            self.merge_imap,
            self.merge_smtp,
            self.merge_auth_http,
            self.merge_proxy,
            self.merge_realip,
        ):
            for server, kw in zip(servers, out, strict=True):
                merge(mail.v, server, kw)
        return MailConf(servers=tuple(ServerConf(**kw) for kw in out))

    @staticmethod
    def pick(prev: dict[str, Any], conf: dict[str, Any], key: str, default: Any) -> Any:
        """``ngx_conf_merge_*_value``: the server's value, else mail{}'s, else the default."""
        if key in conf:
            return conf[key]
        if key in prev:
            return prev[key]
        return default

    @staticmethod
    def pick_list(prev: dict[str, Any], conf: dict[str, Any], key: str) -> list[Any] | None:
        """Arrays: a server's list replaces mail{}'s entirely."""
        if conf.get(key):
            return list(conf[key])
        if prev.get(key):
            return list(prev[key])
        return None

    def merge_core(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v
        kw["timeout"] = self.pick(prev, conf, "timeout", 60.0)
        kw["resolver_timeout"] = self.pick(prev, conf, "resolver_timeout", 30.0)
        kw["max_errors"] = self.pick(prev, conf, "max_errors", 5)
        kw["server_name"] = self.pick(prev, conf, "server_name", "") or self.hostname
        if "protocol" not in conf:
            raise ConfError("unknown mail protocol for server", server.file, server.line)
        kw["protocol"] = conf["protocol"]
        kw["error_log"] = tuple(self.pick_list(prev, conf, "error_log") or ())
        kw["resolver"] = self.pick(prev, conf, "resolver", None)
        kw["listen"] = tuple(conf.get("listen", ()))

    def merge_ssl(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v

        def path(name: str) -> str:
            return full_name(self.conf_prefix, name)

        def opt_path(key: str) -> str | None:
            value = self.pick(prev, conf, key, "")
            return path(value) if value else None

        starttls = self.pick(prev, conf, "starttls", Starttls.OFF)
        kw["starttls"] = starttls
        certs = self.pick_list(prev, conf, "ssl_certificate")
        keys = self.pick_list(prev, conf, "ssl_certificate_key")
        kw["ssl_certificate"] = tuple(path(c) for c in certs or ())
        kw["ssl_certificate_key"] = tuple(path(k) for k in keys or ())
        pw = self.pick(prev, conf, "ssl_password_file", None)
        kw["ssl_password_file"] = path(pw[0]) if pw else None
        kw["ssl_passwords"] = pw[1] if pw else None
        kw["ssl_certificate_compression"] = self.pick(
            prev, conf, "ssl_certificate_compression", False
        )
        kw["ssl_dhparam"] = opt_path("ssl_dhparam")
        kw["ssl_ecdh_curve"] = self.pick(prev, conf, "ssl_ecdh_curve", "auto")
        protocols = self.pick(prev, conf, "ssl_protocols", SSL_PROTOCOLS_DEFAULT)
        kw["ssl_protocols"] = tuple(n for n, bit in d.SSL_PROTOCOLS.items() if protocols & bit)
        kw["ssl_ciphers"] = self.pick(prev, conf, "ssl_ciphers", "HIGH:!aNULL:!MD5")
        kw["ssl_prefer_server_ciphers"] = self.pick(prev, conf, "ssl_prefer_server_ciphers", False)
        kw["ssl_session_cache"] = self.pick(prev, conf, "ssl_session_cache", "none")
        kw["ssl_session_tickets"] = self.pick(prev, conf, "ssl_session_tickets", True)
        kw["ssl_session_ticket_key"] = tuple(
            path(k) for k in self.pick_list(prev, conf, "ssl_session_ticket_key") or ()
        )
        kw["ssl_session_timeout"] = self.pick(prev, conf, "ssl_session_timeout", 300.0)
        verify = self.pick(prev, conf, "ssl_verify_client", VerifyClient.OFF)
        kw["ssl_verify_client"] = verify
        kw["ssl_verify_depth"] = self.pick(prev, conf, "ssl_verify_depth", 1)
        kw["ssl_client_certificate"] = opt_path("ssl_client_certificate")
        kw["ssl_trusted_certificate"] = opt_path("ssl_trusted_certificate")
        kw["ssl_crl"] = opt_path("ssl_crl")
        kw["ssl_conf_command"] = tuple(self.pick_list(prev, conf, "ssl_conf_command") or ())

        if conf.get("ssl_listen"):
            mode = "listen ... ssl"
        elif starttls != Starttls.OFF:
            mode = "starttls"
        else:
            return
        file, line = conf.get("ssl_at") or prev.get("ssl_at") or (server.file, server.line)
        if not certs:
            raise ConfError(
                f'no "ssl_certificate" is defined for the "{mode}" directive', file, line
            )
        if not keys:
            raise ConfError(
                f'no "ssl_certificate_key" is defined for the "{mode}" directive', file, line
            )
        if len(keys) < len(certs):
            raise ConfError(
                f'no "ssl_certificate_key" is defined for certificate "{certs[-1]}" and '
                f'the "{mode}" directive',
                file,
                line,
            )
        if (
            verify != VerifyClient.OFF
            and verify != VerifyClient.OPTIONAL_NO_CA
            and kw["ssl_client_certificate"] is None
            and kw["ssl_trusted_certificate"] is None
        ):
            raise ConfError(
                "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client"
            )

    def merge_pop3(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v
        auth = self.pick(prev, conf, "pop3_auth", AUTH_PLAIN_ENABLED)
        if auth & AUTH_PLAIN_ENABLED:
            auth |= AUTH_LOGIN_ENABLED
        kw["pop3_auth"] = auth
        kw["pop3_capabilities"] = tuple(
            self.pick_list(prev, conf, "pop3_capabilities") or POP3_CAPABILITIES
        )

    def merge_imap(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v
        kw["imap_client_buffer"] = self.pick(prev, conf, "imap_client_buffer", page_size())
        kw["imap_auth"] = self.pick(prev, conf, "imap_auth", AUTH_PLAIN_ENABLED)
        kw["imap_capabilities"] = tuple(
            self.pick_list(prev, conf, "imap_capabilities") or IMAP_CAPABILITIES
        )

    def merge_smtp(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v
        kw["smtp_client_buffer"] = self.pick(prev, conf, "smtp_client_buffer", page_size())
        kw["smtp_greeting_delay"] = self.pick(prev, conf, "smtp_greeting_delay", 0.0)
        kw["smtp_auth"] = self.pick(
            prev, conf, "smtp_auth", AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED
        )
        kw["smtp_capabilities"] = tuple(self.pick_list(prev, conf, "smtp_capabilities") or ())

    def merge_auth_http(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v
        # the innermost level that names an auth source decides: a server's auth_http
        # is not overridden by an auth_file of mail{}
        if "auth_http" in conf or "auth_file" in conf:
            auth_http = conf.get("auth_http")
            auth_file = conf.get("auth_file")
        else:
            auth_http = prev.get("auth_http")
            auth_file = prev.get("auth_file")
        if auth_http is None and auth_file is None:
            raise ConfError('no "auth_http" is defined for server', server.file, server.line)
        kw["auth_http"] = auth_http
        kw["auth_file"] = full_name(self.conf_prefix, auth_file) if auth_file else None
        kw["auth_http_timeout"] = self.pick(prev, conf, "auth_http_timeout", 60.0)
        kw["auth_http_pass_client_cert"] = self.pick(
            prev, conf, "auth_http_pass_client_cert", False
        )
        kw["auth_http_header"] = tuple(self.pick_list(prev, conf, "auth_http_header") or ())

    def merge_proxy(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        conf = server.v
        kw["proxy_buffer"] = self.pick(prev, conf, "proxy_buffer", page_size())
        kw["proxy_timeout"] = self.pick(prev, conf, "proxy_timeout", 86400.0)
        kw["proxy_pass_error_message"] = self.pick(prev, conf, "proxy_pass_error_message", False)
        kw["xclient"] = self.pick(prev, conf, "xclient", True)
        kw["proxy_smtp_auth"] = self.pick(prev, conf, "proxy_smtp_auth", False)
        kw["proxy_protocol"] = self.pick(prev, conf, "proxy_protocol", 0)

    def merge_realip(self, prev: dict[str, Any], server: Level, kw: dict[str, Any]) -> None:
        kw["set_real_ip_from"] = tuple(self.pick_list(prev, server.v, "set_real_ip_from") or ())

    def main_conf(self) -> MainConf:
        v = self.main.v
        events = self.events.v if self.events is not None else {}
        return MainConf(
            daemon=v.get("daemon", True),
            master_process=v.get("master_process", True),
            worker_processes=v.get("worker_processes", 1),
            pid=full_name(self.prefix, v.get("pid", DEFAULT_PID)),
            error_log=tuple(v.get("error_log", ())),
            worker_rlimit_nofile=v.get("worker_rlimit_nofile", 0),
            worker_shutdown_timeout=v.get("worker_shutdown_timeout", 0.0),
            worker_connections=events.get("worker_connections", 512),
            env=tuple(v.get("env", ())),
            user=tuple(v.get("user", ())),
        )


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
