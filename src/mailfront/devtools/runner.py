"""What the private Dovecot and Postfix runners share.

A server started by the devtools runs as a child in a session of its own
(its process group), writes its pid file under ``root``, and may keep
directories outside ``root`` (under the system temp dir, recorded in
``root/private-dirs`` so that the next start removes what a killed run
left).  ``PrivateServer`` holds that life cycle: start with retries when a
free port was lost to another process, stop the whole group, clean up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_sbin(name: str) -> str | None:
    """The path of a server's binary: on PATH, else in the sbin dirs (PATH may lack them)."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str) -> int:
    """A TCP port nobody listens on right now (a start retries when it was taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def first_line(host: str, port: int, timeout: float, bye: bytes = b"") -> bytes:
    """The first line the server sends (then ``bye``), or b"" when it cannot be read yet."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            if bye:
                with contextlib.suppress(OSError):
                    sock.sendall(bye)
            return data
    except OSError:
        return b""


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the group ``proc`` leads (``start_new_session``); SIGKILL what is left after
    ``timeout``, and whatever of the group outlives its leader."""
    if proc.poll() is None:
        # the whole group at once: SIGTERM to the leader alone may make it wait
        # for its children
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    signal_group(proc.pid, signal.SIGKILL)  # no process of the group may outlive it


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaps yet does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


class PrivateServer:
    """The life cycle of one private server; the subclass sets the attributes below."""

    PRIVATE_PREFIX = "mailfront-"  # of the private directories under the temp dir
    root: Path
    pid_path: Path
    private_dirs_path: Path
    stderr_path: Path  # what the server wrote to stderr (startup errors)
    log_path: Path  # the server's own log file
    _private_dirs: list[Path]
    _proc: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """The server's log so far: what it wrote to stderr, then its log file."""
        parts = []
        for path in (self.stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def _start_attempts(
        self,
        attempts: int,
        once: Callable[[], None],
        lost_race: Callable[[BaseException, str], bool],
    ) -> None:
        """Run ``once`` up to ``attempts`` times while it loses a free port to a race."""
        for attempt in range(attempts):
            try:
                once()
                return
            except BaseException as exc:  # Ctrl-C included: never leave the server behind
                log = self.log_text()
                self.stop()
                if not lost_race(exc, log) or attempt == attempts - 1:
                    raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group ``start()`` created; SIGKILL what is left after
        ``timeout``.  Idempotent; removes the private directories."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, timeout)
            with contextlib.suppress(OSError):
                self.pid_path.unlink()
        for directory in self._private_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._private_dirs.clear()
        self.private_dirs_path.unlink(missing_ok=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _private_dir(self, kind: str = "", mode: int | None = None) -> Path:
        """A fresh directory under the system temp dir, recorded under ``root``
        so that the next start removes it if this process dies before ``stop()``."""
        prefix = f"{self.PRIVATE_PREFIX}{kind}-" if kind else self.PRIVATE_PREFIX
        directory = Path(tempfile.mkdtemp(prefix=prefix))
        if mode is not None:
            directory.chmod(mode)
        self._private_dirs.append(directory)
        with open(self.private_dirs_path, "a") as record:
            record.write(f"{directory}\n")
        return directory

    def _remove_recorded_private_dirs(self) -> None:
        try:
            recorded = self.private_dirs_path.read_text().splitlines()
        except OSError:
            return
        temp = Path(tempfile.gettempdir())
        for line in recorded:
            directory = Path(line)
            if directory.parent == temp and directory.name.startswith(self.PRIVATE_PREFIX):
                shutil.rmtree(directory, ignore_errors=True)
        self.private_dirs_path.unlink(missing_ok=True)

    def _stop_stale(self, marker: Any) -> None:
        """Stop a server left running by a killed parent: the pid file's process, if its
        command line names ``marker`` (its config) and it leads its own group."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(marker).encode() not in cmdline or os.getpgid(pid) != pid:
                return
        except (OSError, ValueError):
            return
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal_group(pid, signal.SIGKILL)
