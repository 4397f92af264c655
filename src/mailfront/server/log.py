"""nginx's error_log: ``2026/11/24 12:00:00 [info] PID#TID: *N message``.

Targets are files (opened for append, written with one ``os.write`` per line
so that several processes can share one file), ``stderr``, and
``syslog:server=ADDR[:PORT][,facility=F][,severity=S][,tag=T][,nohostname]``
(RFC 3164 over UDP, as nginx sends it).  Each target has its own level; a
line goes to every target whose level admits it.  ``Log.level`` is the most
verbose level of all targets, so a caller checks ``level >= INFO`` before it
formats anything.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterable

from mailfront.conf.model import LOG_LEVELS, LogTarget

EMERG, ALERT, CRIT, ERR, WARN, NOTICE, INFO, DEBUG = range(1, 9)

_FACILITIES = {
    name: code
    for code, name in enumerate(
        [
            "kern",
            "user",
            "mail",
            "daemon",
            "auth",
            "intern",
            "lpr",
            "news",
            "uucp",
            "clock",
            "authpriv",
            "ftp",
            "ntp",
            "audit",
            "alert",
            "cron",
        ]
    )
}
_FACILITIES.update({f"local{i}": 16 + i for i in range(8)})


def _hostname() -> str:
    """nginx's ngx_cycle->hostname: gethostname(), lower-cased."""
    return socket.gethostname().lower()


_time_cache: list[object] = [0, ""]


def timestamp() -> str:
    """``2026/11/24 12:00:00`` in local time, as nginx writes it; cached per second."""
    now = int(time.time())
    if _time_cache[0] != now:
        _time_cache[0] = now
        _time_cache[1] = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
    return _time_cache[1]  # type: ignore[return-value]


class _Target:
    __slots__ = ("fd", "level", "path", "syslog", "tag")

    def __init__(self, spec: LogTarget) -> None:
        self.level = spec.level
        self.path = spec.target
        self.fd = -1
        self.syslog: tuple[socket.socket, object, int, bool] | None = None
        self.tag = "nginx"
        if spec.target == "stderr":
            self.fd = 2
        elif spec.target.startswith("syslog:"):
            self._open_syslog(spec.target[7:])
        else:
            self.open()

    def _open_syslog(self, params: str) -> None:
        """``syslog:server=ADDR[:PORT],facility=F,tag=T,nohostname`` (UDP or unix datagram)."""
        host, port = "127.0.0.1", 514
        facility = _FACILITIES["local7"]
        nohostname = False
        for item in params.split(","):
            key, _, value = item.partition("=")
            if key == "server":
                if value.startswith("unix:"):
                    host, port = value, 0
                elif value.startswith("["):
                    host, _, rest = value[1:].partition("]")
                    port = int(rest[1:]) if rest.startswith(":") else 514
                elif value.count(":") == 1:
                    host, _, p = value.partition(":")
                    port = int(p)
                else:
                    host = value
            elif key == "facility":
                facility = _FACILITIES.get(value, facility)
            elif key == "tag":
                self.tag = value
            elif key == "nohostname":
                nohostname = True
        address: object
        if host.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = host[5:]
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            address = (host, port)
        sock.setblocking(False)
        self.syslog = (sock, address, facility, nohostname)

    def open(self) -> None:
        if self.path in ("stderr",) or self.syslog:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        old, self.fd = self.fd, fd
        if old > 2:
            os.close(old)

    def write(self, level: int, line: str) -> None:
        if self.syslog is not None:
            # ngx_syslog_writer: "<PRI>Mmm dd hh:mm:ss host tag: " and the whole
            # log line; the severity is the line's level (severity= is access_log's)
            sock, address, facility, nohostname = self.syslog
            stamp = time.strftime("%b %e %H:%M:%S")
            host = "" if nohostname else _hostname() + " "
            msg = f"<{facility * 8 + level - 1}>{stamp} {host}{self.tag}: {line}"
            with contextlib.suppress(OSError):
                sock.sendto(msg.encode(errors="backslashreplace")[:2048], address)  # type: ignore[call-overload]
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, (line + "\n").encode(errors="backslashreplace"))

    def close(self) -> None:
        if self.syslog is not None:
            self.syslog[0].close()
        elif self.fd > 2:
            os.close(self.fd)
            self.fd = -1


class Log:
    """A set of error_log targets."""

    __slots__ = ("level", "pid", "targets")

    def __init__(self, specs: Iterable[LogTarget]) -> None:
        self.targets = [_Target(s) for s in specs]
        if not self.targets:
            self.targets = [_Target(LogTarget("stderr", ERR))]
        self.level = max(t.level for t in self.targets)
        self.pid = os.getpid()

    def log(self, level: int, msg: str, conn: int = 0) -> None:
        """Write ``msg`` at ``level`` to every target that admits it."""
        if level > self.level:
            return
        head = f"{timestamp()} [{LOG_LEVELS[level]}] {self.pid}#0: "
        line = head + (f"*{conn} {msg}" if conn else msg)
        for t in self.targets:
            if level <= t.level:
                t.write(level, line)

    def file_fd(self) -> int:
        """The descriptor of the first file target, or -1."""
        for t in self.targets:
            if t.fd > 2 and t.syslog is None:
                return t.fd
        return -1

    def reopen(self) -> None:
        """``ngx_reopen_files``: a file that cannot be opened keeps its old descriptor."""
        for t in self.targets:
            try:
                t.open()
            except OSError as e:
                self.log(EMERG, f'open() "{t.path}" failed ({e.errno}: {e.strerror})')

    def file_paths(self) -> list[str]:
        """The paths of the file targets."""
        return [t.path for t in self.targets if t.syslog is None and t.path != "stderr"]

    def close(self) -> None:
        for t in self.targets:
            t.close()


def stderr_log(level: int = NOTICE) -> Log:
    return Log([LogTarget("stderr", level)])


def write_stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
