"""nginx's master process: fork the workers, relay signals, reload by generations.

The master binds the sockets and builds the SSL contexts before it forks, so
every worker shares them (and OpenSSL's ticket keys).  It then waits for
signals with ``sigwait``, as nginx's master sleeps in ``sigsuspend``:

- ``HUP``: read the configuration again; if it fails, log it and keep the
  running workers.  Else open the new sockets, fork a new generation of
  workers with the new configuration, and tell the old ones to stop
  gracefully (``QUIT``): their sessions go on to their end;
- ``QUIT``: graceful stop of every worker, then exit;
- ``TERM``, ``INT``: fast stop of every worker, then exit;
- ``USR1``: reopen the master's logs, hand every log file to the workers'
  user, and tell the workers to reopen theirs;
- ``CHLD``: reap; a worker that died unasked is started again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from mailfront.conf.model import Config
from mailfront.server.app import Listener, listen_text, open_socket, plan_listeners
from mailfront.server.log import ALERT, EMERG, NOTICE, Log

SIGNALS = {
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGCHLD,
}
NAMES: dict[int, str] = {
    signal.SIGHUP: "SIGHUP",
    signal.SIGQUIT: "SIGQUIT",
    signal.SIGTERM: "SIGTERM",
    signal.SIGINT: "SIGINT",
    signal.SIGUSR1: "SIGUSR1",
    signal.SIGCHLD: "SIGCHLD",
}
FAST_STOP_DEADLINE = 10.0  # seconds the master waits for workers after TERM before KILL

# nginx's compiled-in NGX_USER and NGX_GROUP (Debian's build: no --user/--group)
DEFAULT_USER = ("nobody", "nogroup")


def worker_identity(config: Config) -> tuple[str, int, int] | None:
    """Whom the workers run as: None unless the master runs as root.

    ``user name [group]``, else nginx's default (``ngx_core_module_init_conf``).
    Raises ``ValueError`` with nginx's message when a name is unknown.
    """
    from mailfront.conf.handlers import user_ids

    if os.geteuid() != 0:
        return None
    name, group = tuple(config.main.user) if config.main.user else DEFAULT_USER
    uid, gid = user_ids(name, group)
    return name, uid, gid


def own_log_files(config: Config, log: Log, uid: int) -> None:
    """``ngx_reopen_files`` in the master: each log file exists and the workers' user owns it.

    The workers reopen their logs by name after the master's ``USR1``; as
    nginx does, the master first creates a file that was moved away and
    gives it to the workers' user (and read-write to its owner).
    """
    paths = [t.target for t in config.main.error_log]
    if config.mail is not None:
        paths += [t.target for s in config.mail.servers for t in s.error_log]
    for path in dict.fromkeys(p for p in paths if p != "stderr" and not p.startswith("syslog:")):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            log.log(EMERG, f'open() "{path}" failed ({e.errno}: {e.strerror})')
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid != uid:
                os.fchown(fd, uid, -1)
            if st.st_mode & 0o600 != 0o600:
                os.fchmod(fd, st.st_mode | 0o600)
        except OSError as e:
            log.log(EMERG, f'chown("{path}", {uid}) failed ({e.errno}: {e.strerror})')
        finally:
            os.close(fd)


class Master:
    def __init__(
        self,
        config: Config,
        log: Log,
        listeners: dict[Any, Listener],
        directives: str | None,
        ssl_contexts: dict[int, Any],
    ) -> None:
        self.config = config
        self.log = log
        self.listeners = listeners
        self.directives = directives
        self.ssl_contexts = ssl_contexts
        self.workers: dict[int, int] = {}  # pid -> generation
        self.identity: tuple[str, int, int] | None = None  # the workers' user (worker_identity)
        self.generation = 0
        self.stopping = False

    # -- workers --------------------------------------------------------------

    def spawn(self, count: int) -> None:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                    for sig in SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    self.log.pid = os.getpid()
                    from mailfront.server.process import serve

                    code = serve(
                        self.config,
                        self.log,
                        self.listeners,
                        self.directives,
                        self.ssl_contexts,
                        managed=True,
                        identity=self.identity,
                    )
                finally:
                    os._exit(code)
            self.workers[pid] = self.generation
            self.log.log(NOTICE, f"start worker process {pid}")

    def signal_workers(self, sig: int, generation: int | None = None) -> None:
        for pid, gen in list(self.workers.items()):
            if generation is None or gen == generation:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            gen = self.workers.pop(pid, None)
            if gen is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                self.log.log(ALERT, f"worker process {pid} exited on signal {-code}")
            else:
                self.log.log(NOTICE, f"worker process {pid} exited with code {code}")
            if not self.stopping and gen == self.generation and code != 0:
                self.spawn(1)  # nginx respawns a worker that died

    # -- reload ------------------------------------------------------------------

    def reload(self) -> None:
        from mailfront import conf as confmod
        from mailfront.cli import reload_config

        try:
            new, ssl_contexts = reload_config(self.config, self.directives)
            identity = worker_identity(new)
        except (confmod.ConfError, ValueError) as e:
            self.log.log(EMERG, str(e))
            return
        plan = plan_listeners(new)
        listeners: dict[Any, Listener] = {}
        opened: list[Listener] = []
        for key, (ls, _pairs) in plan.items():
            old = self.listeners.get(key)
            if old is not None:
                listeners[key] = Listener(ls, old.sock)
                continue
            try:
                lst = Listener(ls, open_socket(ls))
            except OSError as e:
                self.log.log(EMERG, f"bind() to {listen_text(ls)} failed ({e.errno}: {e.strerror})")
                for lst in opened:
                    lst.sock.close()
                return
            opened.append(lst)
            listeners[key] = lst
        previous = self.generation
        gone = [lst for key, lst in self.listeners.items() if key not in listeners]
        self.config, self.listeners, self.ssl_contexts = new, listeners, ssl_contexts
        self.identity = identity
        self.generation += 1
        self.spawn(max(1, new.main.worker_processes))
        self.signal_workers(signal.SIGQUIT, previous)
        for lst in gone:  # the old workers hold their own copies until they exit
            lst.sock.close()
        self.log.log(NOTICE, "reconfiguring")

    # -- the master's loop -----------------------------------------------------

    def run(self) -> int:
        try:
            self.identity = worker_identity(self.config)
        except ValueError as e:
            self.log.log(EMERG, str(e))
            return 1
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self.spawn(max(1, self.config.main.worker_processes))
        deadline: float | None = None
        while self.workers or not self.stopping:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.signal_workers(signal.SIGKILL)
                    deadline = None
                    continue
                sig = signal.sigtimedwait(SIGNALS, left)
                if sig is None:
                    continue
                signum = sig.si_signo
            else:
                signum = signal.sigwait(SIGNALS)
            name = NAMES.get(signum, str(signum))
            if signum == signal.SIGCHLD:
                self.reap()
                continue
            self.log.log(NOTICE, f"signal {signum} ({name}) received")
            if signum == signal.SIGHUP and not self.stopping:
                self.reload()
            elif signum == signal.SIGUSR1:
                self.log.reopen()
                if self.identity is not None:
                    own_log_files(self.config, self.log, self.identity[1])
                self.signal_workers(signal.SIGUSR1)
            elif signum == signal.SIGQUIT:
                self.stopping = True
                self.log.log(NOTICE, "gracefully shutting down")
                self.signal_workers(signal.SIGQUIT)
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
                self.signal_workers(signal.SIGTERM)
                deadline = time.monotonic() + FAST_STOP_DEADLINE
        for lst in self.listeners.values():
            lst.sock.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        return 0
