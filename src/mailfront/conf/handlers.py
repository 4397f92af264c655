"""The directive handlers that are not generic slots, as nginx writes them.

``listen`` (``ngx_mail_core_listen``), ``protocol``, ``error_log``
(``ngx_log_set_log``, syslog parameters included), ``resolver``
(``ngx_resolver_create``), ``auth_http``, ``auth_http_header``,
``ssl_session_cache``, ``set_real_ip_from`` and the main-level ones
(``worker_processes``, ``worker_connections``, ``user``, ``env``).
Their error messages are nginx's, word for word.
"""

from __future__ import annotations

import os
from typing import Any

from mailfront.conf.model import (
    AuthHttpUrl,
    Cidr,
    Listen,
    LogTarget,
    Protocol,
    Resolver,
    Starttls,
)
from mailfront.conf.slots import Call, enum_slot
from mailfront.conf.values import (
    ResolveError,
    UrlError,
    atoi,
    page_size,
    parse_size,
    parse_time,
    parse_url,
    ptocidr,
)

# nginx's mail protocol modules in module order, with the ports that select them
PROTOCOL_PORTS: tuple[tuple[Protocol, tuple[int, ...]], ...] = (
    (Protocol.POP3, (110, 995)),
    (Protocol.IMAP, (143, 993)),
    (Protocol.SMTP, (25, 465, 587)),
)

LOG_LEVEL_NAMES = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
DEBUG_LEVEL_NAMES = (
    "debug_core",
    "debug_alloc",
    "debug_mutex",
    "debug_event",
    "debug_http",
    "debug_mail",
    "debug_stream",
)
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp", "clock",
    "authpriv", "ftp", "ntp", "audit", "alert", "cron", "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
SYSLOG_SEVERITIES = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")


def full_name(prefix: str, name: str) -> str:
    """``ngx_get_full_name``: ``name`` relative to ``prefix`` unless absolute."""
    if name.startswith("/"):
        return name
    return prefix + name


# --- mail core ---------------------------------------------------------------


def listen(c: Call) -> str | None:
    """``listen address[:port] [params]``: one :class:`Listen` per resolved socket."""
    conf = c.conf
    conf["listen_seen"] = True
    url = c.args[0]
    try:
        u = parse_url(url, listen=True, resolver=c.services.resolver)
    except UrlError as e:
        raise c.error(f'{e} in "{url}" of the "listen" directive') from None

    if "protocol" not in conf:
        for proto, ports in PROTOCOL_PORTS:
            if u.port in ports:
                conf["protocol"] = proto

    opts: dict[str, Any] = {
        "bind": False,
        "backlog": 511,  # NGX_LISTEN_BACKLOG on Linux
        "rcvbuf": -1,
        "sndbuf": -1,
        "ipv6only": True,
        "ssl": False,
        "proxy_protocol": False,
        "so_keepalive": 0,
        "tcp_keepidle": 0,
        "tcp_keepintvl": 0,
        "tcp_keepcnt": 0,
        "multipath": False,
    }
    for param in c.args[1:]:
        if param == "bind":
            opts["bind"] = True
        elif param.startswith("backlog="):
            backlog = atoi(param[8:])
            opts["bind"] = True
            if not backlog:
                raise c.error(f'invalid backlog "{param}"')
            opts["backlog"] = backlog
        elif param.startswith(("rcvbuf=", "sndbuf=")):
            which = param[:6]
            value = parse_size(param[7:])
            opts["bind"] = True
            if value is None:
                raise c.error(f'invalid {which} "{param}"')
            opts[which] = value
        elif param.startswith("ipv6only=o"):
            rest = param[10:]
            if rest == "n":
                opts["ipv6only"] = True
            elif rest == "ff":
                opts["ipv6only"] = False
            else:
                raise c.error(f'invalid ipv6only flags "{param[9:]}"')
            opts["bind"] = True
        elif param == "ssl":
            opts["ssl"] = True
            conf["ssl_listen"] = True
            conf["ssl_at"] = (c.node.file, c.node.line)
        elif param.startswith("so_keepalive="):
            _so_keepalive(c, param[13:], opts)
            opts["bind"] = True
        elif param == "proxy_protocol":
            opts["proxy_protocol"] = True
        elif param == "multipath":
            opts["multipath"] = True
            opts["bind"] = True
        else:
            raise c.error(f'invalid parameter "{param}"')

    registry = c.services.mail_listen()
    own: list[Listen] = conf.setdefault("listen", [])
    seen: set[tuple[str, str, int]] = set()
    for addr in u.addrs:
        key = (addr.family, addr.host, addr.port)
        if key in seen:
            continue
        seen.add(key)
        for other in registry:
            if (other.family, other.host, other.port) == key:
                raise c.error(f'duplicate "{addr.name}" address and port pair')
        ls = Listen(
            family=addr.family,
            host=addr.host,
            port=addr.port,
            addr_text=addr.name,
            wildcard=addr.wildcard,
            file=c.node.file,
            line=c.node.line,
            **opts,
        )
        registry.append(ls)
        own.append(ls)
    return None


def _so_keepalive(c: Call, value: str, opts: dict[str, Any]) -> None:
    if value == "on":
        opts["so_keepalive"] = 1
        return
    if value == "off":
        opts["so_keepalive"] = 2
        return
    parts = value.split(":", 2)
    parts += [""] * (3 - len(parts))
    idle_text, intvl_text, cnt_text = parts
    idle = intvl = cnt = 0
    bad = False
    if idle_text:
        v = parse_time(idle_text, True)
        bad = bad or v is None
        idle = v or 0
    if not bad and intvl_text:
        v = parse_time(intvl_text, True)
        bad = bad or v is None
        intvl = v or 0
    if not bad and cnt_text:
        v = atoi(cnt_text)
        bad = bad or v is None
        cnt = v or 0
    if bad or (idle == 0 and intvl == 0 and cnt == 0):
        raise c.error(f'invalid so_keepalive value: "{value}"')
    opts["so_keepalive"] = 1
    opts["tcp_keepidle"] = idle
    opts["tcp_keepintvl"] = intvl
    opts["tcp_keepcnt"] = cnt


def protocol(c: Call) -> str | None:
    word = c.args[0]
    for proto, _ports in PROTOCOL_PORTS:
        if proto.value == word:
            c.conf["protocol"] = proto
            return None
    raise c.error(f'unknown protocol "{word}"')


def error_log(c: Call) -> str | None:
    """``ngx_log_set_log``: ``error_log file|stderr|syslog:... [level]``; repeats add targets."""
    target = c.args[0]
    if target == "stderr" or target == "":
        where = "stderr"
    elif target.startswith("memory:"):
        raise c.error("memory: error log is not supported by mailfront")
    elif target.startswith("syslog:"):
        _syslog(c, target)
        where = target
    else:
        where = full_name(c.services.prefix, target)
    level = _log_level(c)
    c.conf.setdefault("error_log", []).append(LogTarget(where, level, c.node.file, c.node.line))
    return None


def _log_level(c: Call) -> int:
    """``ngx_log_set_levels``: one of emerg..debug, or debug_* keywords (kept as debug)."""
    words = c.args[1:]
    if not words:
        return 4  # error
    level = 0
    debug_bits = False
    for word in words:
        if word in LOG_LEVEL_NAMES:
            if level or debug_bits:
                raise c.error(f'duplicate log level "{word}"')
            level = LOG_LEVEL_NAMES.index(word) + 1
            continue
        if word in DEBUG_LEVEL_NAMES:
            if level:
                raise c.error(f'invalid log level "{word}"')
            debug_bits = True
            continue
        raise c.error(f'invalid log level "{word}"')
    return 8 if debug_bits else level


def _syslog(c: Call, target: str) -> None:
    """``ngx_syslog_process_conf``: validate ``syslog:server=...,facility=...,...``."""
    seen: set[str] = set()
    for part in target[7:].split(","):
        if part.startswith("server="):
            if "server" in seen:
                raise c.error('duplicate syslog "server"')
            url = part[7:]
            try:
                parse_url(url, default_port=514, resolver=c.services.resolver)
            except UrlError as e:
                raise c.error(f'{e} in syslog server "{url}"') from None
            seen.add("server")
        elif part.startswith("facility="):
            if "facility" in seen:
                raise c.error('duplicate syslog "facility"')
            if part[9:] not in SYSLOG_FACILITIES:
                raise c.error(f'unknown syslog facility "{part[9:]}"')
            seen.add("facility")
        elif part.startswith("severity="):
            if "severity" in seen:
                raise c.error('duplicate syslog "severity"')
            if part[9:] not in SYSLOG_SEVERITIES:
                raise c.error(f'unknown syslog severity "{part[9:]}"')
            seen.add("severity")
        elif part.startswith("tag="):
            if "tag" in seen:
                raise c.error('duplicate syslog "tag"')
            tag = part[4:]
            if len(tag.encode("utf-8", "surrogateescape")) > 32:
                raise c.error("syslog tag length exceeds 32")
            for ch in tag.lower():
                if not (ch == "_" or "0" <= ch <= "9" or "a" <= ch <= "z"):
                    raise c.error('syslog "tag" only allows alphanumeric characters and underscore')
            seen.add("tag")
        elif part == "nohostname":
            pass
        else:
            raise c.error(f'unknown syslog parameter "{part}"')
    if "server" not in seen:
        raise c.error("no syslog server specified")


def resolver(c: Call) -> str | None:
    """``resolver address ... [valid=time] [ipv4=on|off] [ipv6=on|off]`` or ``off``."""
    if "resolver" in c.conf:
        return "is duplicate"
    if c.args[0] == "off":
        c.conf["resolver"] = None
        return None
    valid: float | None = None
    ipv4 = ipv6 = True
    addresses: list[tuple[str, int]] = []
    for word in c.args:
        if word.startswith("valid="):
            v = parse_time(word[6:], True)
            if v is None:
                raise c.error(f"invalid parameter: {word}")
            valid = float(v)
            continue
        if word.startswith(("ipv4=", "ipv6=")):
            rest = word[5:]
            if rest not in ("on", "off"):
                raise c.error(f"invalid parameter: {word}")
            if word[3] == "4":
                ipv4 = rest == "on"
            else:
                ipv6 = rest == "on"
            continue
        try:
            u = parse_url(word, default_port=53, resolver=c.services.resolver)
        except UrlError as e:
            raise c.error(f'{e} in resolver "{word}"') from None
        addresses.extend((a.host, a.port) for a in u.addrs)
    if not ipv4 and not ipv6:
        raise c.error('"ipv4" and "ipv6" cannot both be "off"')
    if not addresses:
        raise c.error("no name servers defined")
    c.conf["resolver"] = Resolver(tuple(addresses), valid, ipv4, ipv6)
    return None


# --- auth_http ----------------------------------------------------------------


def auth_http(c: Call) -> str | None:
    """``auth_http [http://]host[:port][/uri]`` or ``unix:/path[:/uri]``; the last one wins."""
    written = c.args[0]
    url = written[7:] if written.startswith("http://") else written
    try:
        u = parse_url(url, uri_part=True, default_port=80, resolver=c.services.resolver)
    except UrlError as e:
        raise c.error(f'{e} in auth_http "{url}"') from None
    first = u.addrs[0]
    unix = u.family == "unix"
    c.conf["auth_http"] = AuthHttpUrl(
        host_header="localhost" if unix else u.host,
        addr=first.host,
        port=first.port,
        uri=u.uri or "/",
        unix=unix,
        url=written,
    )
    return None


def auth_http_header(c: Call) -> str | None:
    c.conf.setdefault("auth_http_header", []).append((c.args[0], c.args[1]))
    return None


# --- ssl ----------------------------------------------------------------------


def starttls(c: Call) -> str | None:
    """``starttls on|off|only``; remembers its place for the missing-certificate error."""
    rv = _starttls_slot(c)
    if rv is None and not c.conf.get("ssl_listen"):
        c.conf["ssl_at"] = (c.node.file, c.node.line)
    return rv


_starttls_slot = enum_slot(
    "starttls", {"off": Starttls.OFF, "on": Starttls.ON, "only": Starttls.ONLY}
)


# ngx_ssl_read_password_file: NGX_SSL_PASSWORD_BUFFER_SIZE
PASSWORD_BUFFER_SIZE = 4096


def ssl_password_file(c: Call) -> str | None:
    """``ngx_mail_ssl_password_file``: the file is read here, while parsing, as nginx does.

    Its non-empty lines (CR LF or LF) are the passwords tried in turn on the
    keys; an empty file gives one empty password.  The errors carry the
    directive's place, as ``ngx_conf_log_error`` gives them.
    """
    if "ssl_password_file" in c.conf:
        return "is duplicate"
    path = full_name(c.services.conf_prefix, c.args[0])
    try:
        data = c.services.read_file(path)
    except OSError as e:
        raise c.error(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    passwords: list[bytes] = []
    for line in data.split(b"\n"):
        line = line.removesuffix(b"\r")
        if len(line) >= PASSWORD_BUFFER_SIZE:
            raise c.error(f'too long line in "{path}"')
        if line:
            passwords.append(line)
    c.conf["ssl_password_file"] = (c.args[0], tuple(passwords) or (b"",))
    return None


def ssl_session_cache(c: Call) -> str | None:
    """``off | none | builtin[:size] | shared:name:size``; a shared cache needs 8 pages."""
    for word in c.args:
        if word in ("off", "none", "builtin"):
            continue
        if word.startswith("builtin:") and len(word) > 8:
            if atoi(word[8:]) is None:
                raise c.error(f'invalid session cache "{word}"')
            continue
        if word.startswith("shared:") and len(word) > 7:
            name, colon, size_text = word[7:].partition(":")
            if not name or not colon:
                raise c.error(f'invalid session cache "{word}"')
            n = parse_size(size_text)
            if n is None:
                raise c.error(f'invalid session cache "{word}"')
            if n < 8 * page_size():
                raise c.error(f'session cache "{word}" is too small')
            # ngx_shared_memory_add: a zone is one size wherever it is named
            declared = c.services.shared_zones.setdefault(name, n)
            if declared != n:
                raise c.error(
                    f'the size {n} of shared memory zone "{name}" conflicts with '
                    f"already declared size {declared}"
                )
            continue
        raise c.error(f'invalid session cache "{word}"')
    c.conf["ssl_session_cache"] = " ".join(c.args)
    return None


# --- realip -------------------------------------------------------------------


def set_real_ip_from(c: Call) -> str | None:
    word = c.args[0]
    lst: list[Cidr] = c.conf.setdefault("set_real_ip_from", [])
    if word == "unix:":
        lst.append(Cidr("unix"))
        return None
    parsed = ptocidr(word)
    if parsed is not None:
        cidr, low_bits = parsed
        if low_bits:
            c.warn(f"low address bits of {word} are meaningless")
        lst.append(Cidr(cidr.family, cidr.network, cidr.mask))
        return None
    found = None
    if c.services.resolver is not None:
        try:
            found = c.services.resolver(word)
        except ResolveError:
            found = None
    if not found:
        raise c.error(f'host not found in set_real_ip_from "{word}"')
    for family, text in found:
        exact = ptocidr(text)
        if exact is not None:
            lst.append(Cidr(family, exact[0].network, exact[0].mask))
    return None


# --- main level ---------------------------------------------------------------


def worker_processes(c: Call) -> str | None:
    if "worker_processes" in c.conf:
        return "is duplicate"
    word = c.args[0]
    if word == "auto":
        try:
            count = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            count = os.cpu_count() or 1
        c.conf["worker_processes"] = count
        return None
    value = atoi(word)
    if value is None:
        return "invalid value"
    c.conf["worker_processes"] = value
    return None


def worker_connections(c: Call) -> str | None:
    if "worker_connections" in c.conf:
        return "is duplicate"
    value = atoi(c.args[0])
    if value is None:
        raise c.error(f'invalid number "{c.args[0]}"')
    c.conf["worker_connections"] = value
    return None


def env(c: Call) -> str | None:
    c.conf.setdefault("env", []).append(c.args[0])
    return None


def user_ids(name: str, group: str) -> tuple[int, int]:
    """The uid and gid of ``user name group``; ValueError with nginx's message
    (``ngx_set_user``) when either is unknown."""
    import grp
    import pwd

    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ValueError(f'getpwnam("{name}") failed') from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f'getgrnam("{group}") failed') from None
    return uid, gid


def user(c: Call) -> str | None:
    """``user name [group]``: checked as nginx does (only root switches user)."""
    if "user" in c.conf:
        return "is duplicate"
    if os.geteuid() != 0:
        c.warn(
            'the "user" directive makes sense only if the master process runs '
            "with super-user privileges, ignored"
        )
        return None
    name = c.args[0]
    group = c.args[1] if len(c.args) == 2 else name
    try:
        user_ids(name, group)
    except ValueError as e:
        raise c.error(str(e)) from None
    c.conf["user"] = (name, group)
    return None
