"""The command line, as nginx's: ``mailfront [-?hvVtTq] [-s signal] [-p prefix] ...``.

Flags, messages and exit codes are nginx's (``ngx_get_options``,
``ngx_process_options``, ``ngx_signal_process``) with the program name
``mailfront``.  ``main(argv)`` runs in-process and returns the exit code; it
imports the server only to run it, so ``-t`` needs no root, no free port and
no running auth service.

Defaults (compiled into nginx, fixed here):

* prefix ``/usr/local/mailfront/`` (``-p``); pid and log files are relative to it;
* configuration file ``conf/mailfront.conf`` (``-c``), relative to the prefix;
  ``include`` and certificate files are relative to its folder;
* error log ``logs/error.log`` (``-e``), relative to the prefix, used until (and
  unless) the configuration's main-level ``error_log`` takes over.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, field

import mailfront
from mailfront import conf
from mailfront.conf.handlers import full_name
from mailfront.conf.values import ResolvedAddr, atoi

PROGRAM = "mailfront"
DEFAULT_PREFIX = "/usr/local/mailfront/"
DEFAULT_CONF = "conf/mailfront.conf"
DEFAULT_ERROR_LOG = "logs/error.log"

SIGNALS = {
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen": signal.SIGUSR1,
    "reload": signal.SIGHUP,
}

USAGE = f"""\
Usage: {PROGRAM} [-?hvVtTq] [-s signal] [-p prefix]
                 [-e filename] [-c filename] [-g directives]

Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version and configure options then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to a master process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: {DEFAULT_PREFIX})
  -e filename   : set error log file (default: {DEFAULT_ERROR_LOG})
  -c filename   : set configuration file (default: {DEFAULT_CONF})
  -g directives : set global directives out of configuration file

"""


def system_resolver(name: str) -> list[ResolvedAddr]:
    """Host name to addresses with getaddrinfo(), in its order (nginx's ngx_inet_resolve_host)."""
    try:
        infos = socket.getaddrinfo(
            name, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG
        )
    except (OSError, UnicodeError):
        raise conf.ResolveError(name) from None
    out: list[ResolvedAddr] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family == socket.AF_INET:
            out.append(("inet", str(sockaddr[0])))
        elif family == socket.AF_INET6:
            out.append(("inet6", str(sockaddr[0]).split("%", 1)[0]))
    if not out:
        raise conf.ResolveError(name)
    return out


@dataclass
class Options:
    show_help: bool = False
    show_version: bool = False
    show_configure: bool = False
    test_config: bool = False
    dump_config: bool = False
    quiet: bool = False
    prefix: str | None = None
    error_log: str | None = None
    conf_file: str | None = None
    directives: str | None = None
    signal: str | None = None
    extra: list[str] = field(default_factory=list)


def _write(stream_name: str, text: str) -> None:
    """Write to stderr/stdout; bytes of the configuration that are not UTF-8 pass unchanged."""
    stream = getattr(sys, stream_name)
    data = text.encode("utf-8", "surrogateescape")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()
        return
    stream.flush()
    buffer.write(data)
    buffer.flush()


def log_stderr(msg: str) -> None:
    """``ngx_log_stderr``: ``mailfront: msg``."""
    _write("stderr", f"{PROGRAM}: {msg}\n")


def log_level(level: str, msg: str) -> None:
    """What nginx writes to the console for a logged error: ``mailfront: [level] msg``."""
    _write("stderr", f"{PROGRAM}: [{level}] {msg}\n")


def get_options(argv: list[str]) -> Options | None:
    """``ngx_get_options``: flags may be grouped (``-tq``); values attached or separate."""
    o = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            log_stderr(f'invalid option: "{arg}"')
            return None
        p = 1
        while p < len(arg):
            ch = arg[p]
            p += 1
            if ch in "?h":
                o.show_version = o.show_help = True
            elif ch == "v":
                o.show_version = True
            elif ch == "V":
                o.show_version = o.show_configure = True
            elif ch == "t":
                o.test_config = True
            elif ch == "T":
                o.test_config = o.dump_config = True
            elif ch == "q":
                o.quiet = True
            elif ch in "pecgs":
                if p < len(arg):
                    value: str | None = arg[p:]
                elif i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                else:
                    value = None
                if value is None:
                    log_stderr(
                        {
                            "p": 'option "-p" requires directory name',
                            "e": 'option "-e" requires file name',
                            "c": 'option "-c" requires file name',
                            "g": 'option "-g" requires parameter',
                            "s": 'option "-s" requires parameter',
                        }[ch]
                    )
                    return None
                if ch == "p":
                    o.prefix = value
                elif ch == "e":
                    o.error_log = value
                elif ch == "c":
                    o.conf_file = value
                elif ch == "g":
                    o.directives = value
                else:
                    if value not in SIGNALS:
                        log_stderr(f'invalid option: "-s {value}"')
                        return None
                    o.signal = value
                break
            else:
                log_stderr(f'invalid option: "{ch}"')
                return None
        i += 1
    return o


def show_version(o: Options) -> None:
    _write("stderr", f"{PROGRAM} version: {PROGRAM}/{mailfront.__version__}\n")
    if o.show_help:
        _write("stderr", USAGE)
    if o.show_configure:
        from mailfront.server.libssl import version_text  # the TLS engine's OpenSSL

        openssl = version_text()
        _write(
            "stderr",
            f"reads nginx's mail{{}} configuration (as nginx/{mailfront.NGINX_COMPAT})\n"
            f"built with Python {sys.version.split()[0]}, {openssl}\n"
            f"configure arguments: --prefix={DEFAULT_PREFIX} --conf-path={DEFAULT_CONF} "
            f"--pid-path=logs/mailfront.pid --error-log-path={DEFAULT_ERROR_LOG}\n",
        )


def main(argv: list[str] | None = None) -> int:
    """Run mailfront with nginx's command line; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    o = get_options(args)
    if o is None:
        return 1
    if o.show_version:
        show_version(o)
        if not o.test_config:
            return 0

    prefix = o.prefix if o.prefix is not None else DEFAULT_PREFIX
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    conf_file = full_name(prefix, o.conf_file if o.conf_file is not None else DEFAULT_CONF)

    try:
        config = conf.load(conf_file, prefix, o.directives, resolver=system_resolver)
    except conf.ConfError as e:
        for warning in e.warnings:
            log_level("warn", warning)
        if o.test_config and e.late and not o.quiet:
            log_stderr(f"the configuration file {conf_file} syntax is ok")
        log_level(e.level, str(e))
        if o.test_config:
            log_stderr(f"configuration file {conf_file} test failed")
        return 1

    for warning in config.warnings:
        log_level("warn", warning)

    # nginx builds each server's SSL context while it reads the configuration
    # (certificates, keys, ciphers...): so do -t and the start
    try:
        ssl_contexts = build_ssl_contexts(config)
    except conf.ConfError as e:
        log_level(e.level, str(e))
        if o.test_config:
            log_stderr(f"configuration file {conf_file} test failed")
        return 1

    if o.test_config:
        if not o.quiet:
            log_stderr(f"the configuration file {config.conf_file} syntax is ok")
            log_stderr(f"configuration file {config.conf_file} test is successful")
        if o.dump_config:
            dump_config(config)
        return 0

    if o.signal is not None:
        return signal_process(config, o.signal)

    error_log = None
    if o.error_log is not None:
        error_log = "stderr" if o.error_log in ("stderr", "") else full_name(prefix, o.error_log)

    from mailfront.server import process

    return process.run(config, error_log, o.directives, ssl_contexts)


def build_ssl_contexts(config: conf.Config) -> dict[int, object]:
    """The SSL context of every server with TLS, by ``id(server conf)``; ConfError if one fails.

    The server's TLS module is imported only when some server uses TLS, so a
    plain ``-t`` stays free of it.
    """
    from mailfront.conf.tls_support import tls_enabled

    servers = [s for s in (config.mail.servers if config.mail else ()) if tls_enabled(s)]
    if not servers:
        return {}
    # what the workers import for their first TLS session, loaded here, before the fork:
    # a worker that runs as "user" may not be able to read Python's library (root's)
    import mailfront.server.tls
    import mailfront.server.tls_transport  # noqa: F401
    from mailfront.server.tls_openssl import make_context

    return {id(s): make_context(s, s.protocol.value) for s in servers}


def reload_config(
    config: conf.Config, directives: str | None
) -> tuple[conf.Config, dict[int, object]]:
    """What a reload runs: the configuration read anew and the SSL contexts of its
    servers (certificates and keys read now, as nginx reads them at a reload);
    ConfError if either fails, and then the running configuration stays."""
    new = conf.load(config.conf_file, config.prefix, directives, resolver=system_resolver)
    return new, build_ssl_contexts(new)


def dump_config(config: conf.Config) -> None:
    """``-T``: every file read, each preceded by ``# configuration file NAME:``."""
    for name in config.files:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        _write("stdout", f"# configuration file {name}:\n")
        sys.stdout.flush()
        out = getattr(sys.stdout, "buffer", None)
        if out is None:
            sys.stdout.write(data.decode("utf-8", "replace") + "\n")
        else:
            out.write(data + b"\n")
            out.flush()


def signal_process(config: conf.Config, name: str) -> int:
    """``ngx_signal_process``: read the pid file and signal the master process."""
    path = config.main.pid
    try:
        with open(path, "rb") as f:
            raw = f.read(21)  # NGX_INT64_LEN + 2
    except OSError as e:
        log_level("error", f'open() "{path}" failed ({e.errno}: {e.strerror})')
        return 1
    text = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    pid = atoi(text)
    if not pid:  # nginx would signal its own process group for 0; refuse it
        log_level("error", f'invalid PID number "{text}" in "{path}"')
        return 1
    signo = SIGNALS[name]
    try:
        os.kill(pid, signo)
    except OSError as e:
        log_level("alert", f"kill({pid}, {int(signo)}) failed ({e.errno}: {e.strerror})")
        return 1
    return 0
