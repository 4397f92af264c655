"""Run mailfront for real: ``python -m mailfront -c CONF -p PREFIX`` in a child process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, deadline: float = 10.0, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class Mailfront:
    """A mailfront process running ``mail_block`` (the text inside ``mail { }``)."""

    def __init__(
        self, workdir: Path, mail_block: str, ports: list[int], main: str = "", level: str = "info"
    ) -> None:
        self.dir = workdir
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mailfront.conf"
        self.log_path = workdir / "logs" / "error.log"
        self.conf.write_text(
            "daemon off;\nmaster_process off;\n"
            f"error_log {self.log_path} {level};\npid {workdir}/mailfront.pid;\n"
            f"events {{}}\n{main}\nmail {{\n{mail_block}\n}}\n"
        )
        self.ports = ports
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mailfront:
        with open(self.dir / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mailfront",
                    "-c",
                    str(self.conf),
                    "-p",
                    str(self.dir) + "/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            for p in self.ports:
                wait_port(p)
        except TimeoutError:
            self.stop()
            raise RuntimeError("mailfront did not start:\n" + self.output()) from None
        return self

    def output(self) -> str:
        out = (self.dir / "stdout.log").read_text(errors="replace")
        if self.log_path.exists():
            out += self.log_path.read_text(errors="replace")
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, needle: str, deadline: float = 5.0) -> str:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not in the log:\n{self.log()}")

    @staticmethod
    def wait_file(path: Path, needle: str, deadline: float = 5.0) -> str:
        end = time.monotonic() + deadline
        text = ""
        while time.monotonic() < end:
            text = path.read_text(errors="replace") if path.exists() else ""
            if needle in text:
                return text
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not in {path}:\n{text}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> Mailfront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
