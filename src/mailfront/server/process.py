"""The process: sockets, daemon mode, pid file, signals, reload, shutdown.

Signals, as nginx's:

- ``QUIT``: graceful stop: close the listening sockets, let the sessions
  finish (at most ``worker_shutdown_timeout`` when set), exit;
- ``TERM``, ``INT``: fast stop: close every session now, exit;
- ``HUP``: reload: read the configuration again; a configuration that fails
  is refused, its error logged, and the old one keeps serving; new sessions
  get the new one, running sessions keep theirs;
- ``USR1``: reopen the log files.

With ``master_process on`` (nginx's default) a master process
(``server/master.py``) forks ``worker_processes`` workers, each running a
``Worker`` on the shared listening sockets, and handles the signals as
nginx's master does; with ``master_process off`` one process does it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import sys
from typing import Any

from mailfront.auth.base import AuthBackend
from mailfront.conf.model import Config, LogTarget, ServerConf
from mailfront.server.app import Listener, ServerRuntime, listen_text, open_socket, plan_listeners
from mailfront.server.log import ALERT, EMERG, ERR, NOTICE, Log
from mailfront.server.session import Session

SIGNAL_NAMES: dict[int, str] = {
    signal.SIGHUP: "SIGHUP",
    signal.SIGQUIT: "SIGQUIT",
    signal.SIGTERM: "SIGTERM",
    signal.SIGINT: "SIGINT",
    signal.SIGUSR1: "SIGUSR1",
}


class StartupError(Exception):
    pass


def make_log(config: Config, override: str | None = None) -> Log:
    targets = config.main.error_log
    if not targets:
        path = override or os.path.join(config.prefix, "logs/error.log")
        targets = (LogTarget(path if path != "stderr" else "stderr", ERR),)
    return Log(targets)


def make_auth(conf: ServerConf, cache: dict[Any, AuthBackend]) -> AuthBackend:
    if conf.auth_file:
        key: Any = ("file", conf.auth_file)
        if key not in cache:
            from mailfront.auth.file import FileAuth

            cache[key] = FileAuth(conf.auth_file)
        return cache[key]
    from mailfront.auth.http import HttpAuth

    key = ("http", id(conf))
    cache[key] = HttpAuth(conf)
    return cache[key]


def drop_privileges(identity: tuple[str, int, int], log: Log) -> bool:
    """``ngx_worker_process_init``: setgid, initgroups, setuid; False (logged) on a failure.

    The worker has read what it needs as root by then (its server logs, the
    auth_file users), as nginx's master reads the configuration's files.
    """
    name, uid, gid = identity
    try:
        os.setgid(gid)
    except OSError as e:
        log.log(EMERG, f"setgid({gid}) failed ({e.errno}: {e.strerror})")
        return False
    try:
        os.initgroups(name, gid)
    except OSError as e:
        log.log(EMERG, f"initgroups({name}, {gid}) failed ({e.errno}: {e.strerror})")
        return False
    try:
        os.setuid(uid)
    except OSError as e:
        log.log(EMERG, f"setuid({uid}) failed ({e.errno}: {e.strerror})")
        return False
    return True


class Worker:
    """The event loop side: listeners, sessions, signals."""

    def __init__(
        self, config: Config, log: Log, listeners: dict[Any, Listener], directives: str | None
    ) -> None:
        self.config = config
        self.log = log
        self.listeners = listeners
        self.directives = directives
        self.sessions: set[Session] = set()
        self.auth_cache: dict[Any, AuthBackend] = {}
        self.loop = asyncio.get_event_loop()
        self.stopped = self.loop.create_future()
        self.logs: list[Log] = []
        # the SSL context of each TLS server, by id(ServerConf): cli.build_ssl_contexts
        self.ssl_contexts: dict[int, Any] = {}
        self.managed = False  # a worker under a master: HUP is the master's
        self.identity: tuple[str, int, int] | None = None  # switch to this user once serving
        self.exit_code = 0

    def bind_runtimes(self, config: Config) -> None:
        """Point every listener at the runtime of its server(s) in ``config``."""
        plan = plan_listeners(config)
        auth_cache: dict[Any, AuthBackend] = {}
        server_logs: dict[Any, Log] = {}
        for key, (_ls, pairs) in plan.items():
            listener = self.listeners[key]
            runtimes: dict[str, ServerRuntime] = {}
            default: ServerRuntime | None = None
            for ls, srvconf in pairs:
                log = self.log
                if srvconf.error_log and srvconf.error_log != config.main.error_log:
                    lkey = srvconf.error_log
                    if lkey not in server_logs:
                        server_logs[lkey] = Log(srvconf.error_log)
                    log = server_logs[lkey]
                rt = ServerRuntime(
                    srvconf,
                    listen_text(ls),
                    log,
                    make_auth(srvconf, auth_cache),
                    self.loop,
                    self.sessions,
                )
                rt.listen_ssl = ls.ssl
                rt.listen_proxy_protocol = ls.proxy_protocol
                rt.ssl_ctx = self.ssl_contexts.get(id(srvconf))
                if ls.wildcard or ls is listener.listen:
                    default = rt
                else:
                    runtimes[ls.host] = rt
            assert default is not None or runtimes
            if default is None:
                default = next(iter(runtimes.values()))
            default.by_addr = runtimes or None
            if runtimes:
                for rt in runtimes.values():
                    rt.by_addr = None
            listener.srv = default
        old_auth, self.auth_cache = self.auth_cache, auth_cache
        for backend in old_auth.values():
            if backend not in auth_cache.values():
                backend.close()
        old_logs, self.logs = self.logs, list(server_logs.values())
        for lg in old_logs:
            lg.close()
        self.config = config

    async def serve(self) -> None:
        loop = self.loop
        self.bind_runtimes(self.config)
        for listener in self.listeners.values():
            await self._start_listener(listener)
        if self.identity is not None and not drop_privileges(self.identity, self.log):
            self.exit_code = 2  # as ngx_worker_process_init's exit(2)
            return
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, self.on_signal, sig)
        await self.stopped

    def on_signal(self, sig: int) -> None:
        name = SIGNAL_NAMES.get(sig, str(sig))
        if sig == signal.SIGHUP:
            if self.managed:
                return
            self.log.log(NOTICE, f"signal {int(sig)} ({name}) received, reconfiguring")
            self.reload()
        elif sig == signal.SIGUSR1:
            self.log.log(NOTICE, f"signal {int(sig)} ({name}) received, reopening logs")
            self.log.reopen()
            for lg in self.logs:
                lg.reopen()
        elif sig == signal.SIGQUIT:
            self.log.log(NOTICE, f"signal {int(sig)} ({name}) received, shutting down")
            self.log.log(NOTICE, "gracefully shutting down")
            self.graceful()
        else:
            self.log.log(NOTICE, f"signal {int(sig)} ({name}) received, exiting")
            self.fast_stop()

    def reload(self) -> None:
        from mailfront import conf as confmod
        from mailfront.cli import reload_config

        try:
            new, ssl_contexts = reload_config(self.config, self.directives)
        except confmod.ConfError as e:
            self.log.log(EMERG, str(e))
            return
        plan = plan_listeners(new)
        opened: dict[Any, Listener] = {}
        try:
            for key, (ls, _pairs) in plan.items():
                if key not in self.listeners:
                    opened[key] = Listener(ls, open_socket(ls))
        except OSError as e:
            self.log.log(EMERG, f"bind() to {listen_text(ls)} failed ({e.errno}: {e.strerror})")
            for lst in opened.values():
                lst.sock.close()
            return
        gone = [k for k in self.listeners if k not in plan]
        for key in gone:
            self.listeners.pop(key).close()
        self.listeners.update(opened)
        self.ssl_contexts = ssl_contexts
        try:
            self.bind_runtimes(new)
        except Exception as e:  # an auth backend that cannot start (bad users file)
            self.log.log(EMERG, str(e))
            return
        for lst in opened.values():
            self.loop.create_task(self._start_listener(lst))
        for key, (ls, _pairs) in plan.items():
            lst = self.listeners[key]
            if key not in opened:
                # a socket that stays: its "ssl" (and the rest) is read at each accept
                lst.listen = ls
        self.log.log(NOTICE, "reconfiguring")

    async def _start_listener(self, lst: Listener) -> None:
        """Serve a listening socket.

        The socket is served in clear: with ``listen ... ssl`` the session
        runs the handshake itself (``Session._start_tls``), with the SSL
        context of the listener's server in the running configuration, so a
        reload that brings new certificates takes effect at the next accept.
        """
        lst.server = await self.loop.create_server(
            lst.make_session,
            sock=lst.sock.dup(),  # the server closes its copy; the bound socket stays ours
            backlog=lst.listen.backlog,
        )

    def close_listeners(self) -> None:
        for lst in self.listeners.values():
            lst.close()

    def graceful(self) -> None:
        self.close_listeners()
        timeout = self.config.main.worker_shutdown_timeout
        if timeout:
            self.loop.call_later(timeout, self._shutdown_timeout)
        self._check_done()

    def _check_done(self) -> None:
        if not self.sessions:
            if not self.stopped.done():
                self.stopped.set_result(None)
            return
        self.loop.call_later(0.1, self._check_done)

    def _shutdown_timeout(self) -> None:
        for s in list(self.sessions):
            s.log(NOTICE, "shutdown timeout")
            s.close()

    def fast_stop(self) -> None:
        self.close_listeners()
        for s in list(self.sessions):
            s.close()
        if not self.stopped.done():
            self.stopped.set_result(None)

    def shutdown(self) -> None:
        for backend in self.auth_cache.values():
            backend.close()


def _daemonize(log: Log) -> None:
    """nginx's ngx_daemon, then ngx_log_redirect_stderr: stderr goes to the log file."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log.file_fd() if log.file_fd() >= 0 else null, 2)
    os.close(null)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(
    config: Config,
    error_log_override: str | None = None,
    directives: str | None = None,
    ssl_contexts: dict[int, Any] | None = None,
) -> int:
    """Serve ``config`` until stopped; the exit code."""
    log = make_log(config, error_log_override)
    if config.mail is None or not config.mail.servers:
        log.log(EMERG, 'no "mail" section in configuration')
        return 1
    nofile = config.main.worker_rlimit_nofile
    if nofile:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        except (ValueError, OSError) as e:
            log.log(
                ALERT,
                f"setrlimit(RLIMIT_NOFILE, {nofile}) failed ({getattr(e, 'errno', 1)}: "
                f"{getattr(e, 'strerror', None) or e})",
            )
    listeners: dict[Any, Listener] = {}
    for key, (ls, _pairs) in plan_listeners(config).items():
        try:
            listeners[key] = Listener(ls, open_socket(ls))
        except OSError as e:
            log.log(EMERG, f"bind() to {listen_text(ls)} failed ({e.errno}: {e.strerror})")
            log.log(EMERG, "still could not bind()")
            for lst in listeners.values():
                lst.sock.close()
            return 1
    if config.main.daemon:
        _daemonize(log)
        log.pid = os.getpid()
    pid_path = config.main.pid
    if pid_path:
        try:
            with open(pid_path, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            log.log(EMERG, f'open() "{pid_path}" failed ({e.errno}: {e.strerror})')
            return 1
    if ssl_contexts is None:
        from mailfront.cli import build_ssl_contexts

        ssl_contexts = build_ssl_contexts(config)
    try:
        if config.main.master_process:
            from mailfront.server.master import Master

            code = Master(config, log, listeners, directives, ssl_contexts).run()
        else:
            code = serve(config, log, listeners, directives, ssl_contexts)
    finally:
        if pid_path:
            with contextlib.suppress(OSError):
                os.unlink(pid_path)
        log.log(NOTICE, "exit")
        sys.stderr.flush()
    return code


def serve(
    config: Config,
    log: Log,
    listeners: dict[Any, Listener],
    directives: str | None,
    ssl_contexts: dict[int, Any],
    managed: bool = False,
    identity: tuple[str, int, int] | None = None,
) -> int:
    """Run the event loop of one process until it is stopped; the exit code.

    ``managed``: a worker under a master, which handles HUP itself.
    ``identity``: the user a worker switches to once it serves (``user``).
    """
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    gc.collect()
    gc.freeze()  # what startup made lives as long as the process: never scan it again
    worker: Worker | None = None
    code = 0
    try:
        worker = Worker(config, log, listeners, directives)
        worker.ssl_contexts = ssl_contexts
        worker.managed = managed
        worker.identity = identity
        loop.run_until_complete(worker.serve())
        code = worker.exit_code
    except Exception as e:
        log.log(EMERG, f"{type(e).__name__}: {e}")
        code = 1
    finally:
        if worker is not None:
            worker.shutdown()
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
    return code
