"""mailfront-quickstart, the README's commands and .ci/run."""

from __future__ import annotations

import imaplib
import importlib.util
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailfront import quickstart
from support.dovecot import DEMO_USERS, Dovecot, demo_messages, read_users_file, require_dovecot

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"

QUICKSTART_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[file]' && .venv/bin/mailfront-quickstart"
)
TEST_COMMAND = ".venv/bin/pytest"


# -- README and .ci/run ------------------------------------------------------------


def _code_lines(markdown: str) -> list[str]:
    return [m.strip() for m in re.findall(r"```sh\n(.*?)```", markdown, re.S)]


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    blocks = _code_lines(text)
    assert blocks[:3] == [QUICKSTART_COMMAND, "bash .ci/run", TEST_COMMAND]
    assert text.index(QUICKSTART_COMMAND) < text.index("## ")  # before any section


def test_readme_examples_work_against_dovecot(dovecot: Dovecot) -> None:
    """The README's curl and imaplib examples, pointed at Dovecot instead of mailfront."""
    text = README.read_text()

    def aimed(line: str) -> str:
        return line.replace("10143", str(dovecot.imap_port)).replace(
            "10110", str(dovecot.pop3_port)
        )

    snippet = re.search(r"```python\n(.*?)```", text, re.S)
    assert snippet is not None
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", aimed(snippet[1])],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "Subject: Welcome to mailfront\n\n\n")
    curl_lines = re.findall(r"^curl .*$", text, re.M)
    assert len(curl_lines) == 3
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    welcome = demo_messages("alice")[0].data
    for line in curl_lines:
        out = subprocess.run(
            f"{aimed(line)} -sS", shell=True, capture_output=True, timeout=30, check=True
        ).stdout
        if "UID=1" in line or line.startswith("curl pop3"):
            assert out == welcome
        else:
            assert out == b'* LIST (\\HasNoChildren) "." INBOX\r\n'


def test_ci_runs_the_readme_test_command() -> None:
    script = CI_RUN.read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    commands = [
        line.strip()
        for line in script.splitlines()
        if "bin/pytest" in line and not line.lstrip().startswith("#")
    ]
    assert commands == [f"{TEST_COMMAND} || status=$?"]
    run_tests = script.index(f"\n{TEST_COMMAND} ||")
    assert script.index("\n.venv/bin/ruff check ||") < run_tests
    assert script.index("\n.venv/bin/mypy ||") < run_tests
    assert "-eq 5 ]" in script  # "no tests" is a failure


def test_ci_script_is_valid_bash() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(CI_RUN)], check=True)


def test_the_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    if "mailfront-quickstart" not in scripts:
        pytest.skip('pyproject.toml lacks mailfront-quickstart = "mailfront.quickstart:main"')
    assert scripts["mailfront-quickstart"] == "mailfront.quickstart:main"


# -- the pieces --------------------------------------------------------------------


def test_mailfront_config(tmp_path: Path) -> None:
    text = quickstart.mailfront_config(tmp_path, tmp_path / "users", 20143, 20110)
    assert "daemon off;\nmaster_process off;\nerror_log stderr info;\n" in text
    assert "events {\n}" in text  # nginx refuses a configuration without it
    assert f"    auth_file {tmp_path / 'users'};\n" in text
    assert "listen 127.0.0.1:20143;\n        protocol imap;" in text
    assert "listen 127.0.0.1:20110;\n        protocol pop3;" in text
    assert text.count("{") == text.count("}")


def test_install_commands_and_hint() -> None:
    assert quickstart.install_commands(["dovecot-imapd", "dovecot-pop3d"]) == [
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "dovecot-imapd", "dovecot-pop3d"],
    ]
    assert quickstart.install_hint(["dovecot-imapd"]) == (
        "sudo apt-get update && "
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd"
    )


def test_missing_packages_when_installed() -> None:
    require_dovecot()
    assert quickstart.missing_packages() == []


def test_mailfront_command(tmp_path: Path) -> None:
    conf = tmp_path / "mailfront.conf"
    assert quickstart.mailfront_command(conf, tmp_path) == [
        sys.executable,
        "-m",
        "mailfront",
        "-c",
        str(conf),
        "-p",
        f"{tmp_path}/",
    ]


# -- the whole thing, as a child process ------------------------------------------


class _Child:
    """``python -m mailfront.quickstart ARGS`` with its output read as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailfront.quickstart", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = b""

    def read_until(self, needles: tuple[bytes, ...], timeout: float = 30.0) -> bytes:
        """Output so far, once one of ``needles`` is in it (or the child exited)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not any(n in self.output for n in needles):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needles!r} in:\n{self.output.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.output += chunk
        return self.output

    def finish(self, timeout: float = 20.0) -> int:
        status = self.proc.wait(timeout)
        self.read_until((b"\0never",), timeout=5)  # the rest, up to EOF
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def child() -> Iterator[list[_Child]]:
    started: list[_Child] = []
    yield started
    for c in started:
        c.close()


def _dovecot_ports(output: bytes) -> tuple[int, int]:
    found = re.search(rb"Dovecot +IMAP 127\.0\.0\.1:(\d+), POP3 127\.0\.0\.1:(\d+)", output)
    assert found, output
    return int(found[1]), int(found[2])


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_quickstart_sets_up_dovecot_and_files(tmp_path: Path, child: list[_Child]) -> None:
    require_dovecot()
    workdir = tmp_path / "qs"
    imap_port, pop3_port = _free_port(), _free_port()
    run = _Child(
        "--dir", str(workdir), "--no-install", "--no-proxy",
        "--imap-port", str(imap_port), "--pop3-port", str(pop3_port),
    )  # fmt: skip
    child.append(run)
    out = run.read_until((b"Press Ctrl-C",))
    assert b"curl -v imap://127.0.0.1:%d/INBOX -u alice:alicepass" % imap_port in out
    assert b"curl 'imap://127.0.0.1:%d/INBOX;UID=1' -u alice:alicepass" % imap_port in out
    dovecot_imap, dovecot_pop3 = _dovecot_ports(out)
    dovecot_pid = int((workdir / "dovecot" / "dovecot.pid").read_text())

    # the users file routes every demo user to that Dovecot, with SHA512-CRYPT hashes
    from passlib.hash import sha512_crypt

    entries = list(read_users_file(workdir / "users"))
    assert {user for user, _, _ in entries} == set(DEMO_USERS)
    for user, password, extra in entries:
        assert sha512_crypt.verify(DEMO_USERS[user], password.removeprefix("{SHA512-CRYPT}"))
        assert extra == {
            "host": "127.0.0.1",
            "port": str(dovecot_imap),
            "pop3_port": str(dovecot_pop3),
        }
    conf = (workdir / "mailfront.conf").read_text()
    assert conf == quickstart.mailfront_config(workdir, workdir / "users", imap_port, pop3_port)

    # Dovecot answers with the demo mail
    with imaplib.IMAP4("127.0.0.1", dovecot_imap, timeout=10) as imap:
        imap.login("alice", DEMO_USERS["alice"])
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        part = data[0]
        assert isinstance(part, tuple)
        assert part[1] == demo_messages("alice")[0].data
        imap.logout()

    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert b"Dovecot stopped." in run.output
    assert _gone(dovecot_pid)


def test_quickstart_runs_mailfront_then_stops_dovecot(tmp_path: Path, child: list[_Child]) -> None:
    require_dovecot()
    workdir = tmp_path / "qs"
    imap_port, pop3_port = _free_port(), _free_port()
    run = _Child(
        "--dir", str(workdir), "--no-install",
        "--imap-port", str(imap_port), "--pop3-port", str(pop3_port),
    )  # fmt: skip
    child.append(run)
    out = run.read_until((b"Press Ctrl-C",))
    assert b"-m mailfront -c %s" % str(workdir / "mailfront.conf").encode() in out
    dovecot_pid = int((workdir / "dovecot" / "dovecot.pid").read_text())

    if importlib.util.find_spec("mailfront.cli") is None:
        # mailfront's command line does not exist yet: it fails at startup, and the
        # quickstart says so, stops Dovecot and fails too
        assert run.finish() != 0
        assert b"mailfront exited with status" in run.output
        assert b"Dovecot stopped." in run.output
        assert _gone(dovecot_pid)
        return

    # through mailfront, to Dovecot
    deadline = time.monotonic() + 20
    while True:
        try:
            imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=10)
            break
        except ConnectionRefusedError:
            assert run.proc.poll() is None, run.read_until((b"Dovecot stopped.",))
            assert time.monotonic() < deadline, "mailfront does not listen"
            time.sleep(0.1)
    with imap:
        imap.login("alice", DEMO_USERS["alice"])
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        part = data[0]
        assert isinstance(part, tuple)
        assert part[1] == demo_messages("alice")[0].data
        imap.logout()

    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert b"Dovecot stopped." in run.output
    assert _gone(dovecot_pid)
