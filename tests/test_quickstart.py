"""mailfront-quickstart, the README's commands and .ci/run."""

from __future__ import annotations

import base64
import imaplib
import importlib.util
import os
import re
import select
import shutil
import signal
import smtplib
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailfront import quickstart
from mailfront.devtools.postfix import Postfix, find_postfix
from support.dovecot import DEMO_USERS, Dovecot, demo_messages, read_users_file, require_dovecot
from support.proxy import free_port

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
    # the quickstart's three curl lines (other sections have curl lines of their own)
    curl_lines = re.findall(r"^curl .*$", _section(text, "Trying the quickstart"), re.M)
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


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _smtp_lines(section: str) -> list[str]:
    return re.findall(r"^(?:swaks|printf) .*$", section, re.M)


def test_readme_quickstart_smtp_lines_are_the_printed_ones() -> None:
    """The quickstart section's swaks/curl lines are what the quickstart prints, and the
    "SMTP submission" section's (which test_smtp_e2e runs against mailfront)."""
    text = README.read_text()
    lines = _smtp_lines(_section(text, "Trying the quickstart"))
    assert lines == quickstart.smtp_examples() == quickstart.smtp_examples(10587)
    assert lines == _smtp_lines(_section(text, "SMTP submission"))
    assert len(lines) == 2
    assert lines[0].startswith("swaks --server 127.0.0.1:10587 --auth PLAIN ")
    assert "| curl smtp://127.0.0.1:10587 -u alice:alicepass " in lines[1]
    # the other port is substituted everywhere
    assert all("10587" not in line and "127.0.0.1:20587" in line for line in
               quickstart.smtp_examples(20587))  # fmt: skip


def test_readme_quickstart_lists_the_options() -> None:
    section = _section(README.read_text(), "Trying the quickstart")
    options = set(re.findall(r"--[a-z][a-z0-9-]+", quickstart._parser().format_help()))
    options.discard("--help")
    assert options == {"--dir", "--imap-port", "--pop3-port", "--smtp-port", "--no-smtp",
                       "--no-install", "--no-proxy"}  # fmt: skip
    for option in options:
        assert f"`{option}`" in section, option


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--smtp-port SMTP_PORT" in out
    assert "(default: 10587)" in out
    assert "--no-smtp" in out


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
    assert "smtp" not in text.replace("smtp_port", "")  # no Postfix, no SMTP server


def test_mailfront_config_with_smtp(tmp_path: Path) -> None:
    text = quickstart.mailfront_config(tmp_path, tmp_path / "users", 20143, 20110, 20587)
    assert text.startswith(quickstart.mailfront_config(tmp_path, tmp_path / "users", 20143,
                                                       20110)[:-2])  # fmt: skip
    assert (
        "    server {\n"
        "        listen 127.0.0.1:20587;\n"
        "        protocol smtp;\n"
        "        smtp_auth plain login;\n"
        "        xclient on;\n"
        "    }\n"
        "}\n"
    ) in text
    assert text.count("{") == text.count("}")


def test_mailfront_reads_the_config(tmp_path: Path) -> None:
    """mailfront's own ``-t`` accepts the configuration, SMTP server included."""
    if importlib.util.find_spec("mailfront.cli") is None:
        pytest.skip("mailfront's command line does not exist yet")
    require_dovecot()
    users = tmp_path / "users"
    from mailfront.devtools.dovecot import write_auth_file

    write_auth_file(users, DEMO_USERS, host="127.0.0.1", imap_port=1143, pop3_port=1110)
    quickstart.add_smtp_port(users, 1025)
    conf = tmp_path / "mailfront.conf"
    conf.write_text(quickstart.mailfront_config(tmp_path, users, 20143, 20110, 20587))
    (tmp_path / "logs").mkdir()
    result = subprocess.run(
        [*quickstart.mailfront_command(conf, tmp_path), "-t"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stderr


def test_add_smtp_port(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(
        "# a comment\n"
        "alice:{PLAIN}a::::::host=127.0.0.1 port=1143 pop3_port=1110\n"
        "\n"
        "bob:{PLAIN}b::::::host=127.0.0.1 port=1143 pop3_port=1110\n"
    )
    quickstart.add_smtp_port(users, 2525)
    assert users.read_text() == (
        "# a comment\n"
        "alice:{PLAIN}a::::::host=127.0.0.1 port=1143 pop3_port=1110 smtp_port=2525\n"
        "\n"
        "bob:{PLAIN}b::::::host=127.0.0.1 port=1143 pop3_port=1110 smtp_port=2525\n"
    )
    assert [extra["smtp_port"] for _, _, extra in read_users_file(users)] == ["2525", "2525"]


def test_no_service_starts(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    with quickstart.no_service_starts(policy) as wrote:
        assert wrote
        assert policy.stat().st_mode & 0o777 == 0o755
        # what invoke-rc.d runs before starting a service: 101 means "forbidden"
        assert subprocess.run([str(policy), "dovecot", "start"], check=False).returncode == 101
    assert not policy.exists()
    with pytest.raises(RuntimeError), quickstart.no_service_starts(policy):
        raise RuntimeError("apt-get failed")
    assert not policy.exists()
    # one that is there already (Docker images ship one) stays as it is
    policy.write_text("#!/bin/sh\nexit 0\n")
    with quickstart.no_service_starts(policy) as wrote:
        assert not wrote
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_ensure_packages_when_nothing_is_missing() -> None:
    assert quickstart.ensure_packages(True, packages=[])


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
    if find_postfix() is None:
        assert quickstart.missing_packages(quickstart.POSTFIX_PACKAGES) == ["postfix"]
    else:
        assert quickstart.missing_packages(quickstart.POSTFIX_PACKAGES) == []


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

    def __init__(self, *args: str, euid: int | None = None) -> None:
        command = [sys.executable, "-m", "mailfront.quickstart", *args]
        if euid is not None:  # the quickstart's root check sees this effective uid
            code = (
                f"import os, sys; os.geteuid = lambda: {euid}; "
                "from mailfront.quickstart import main; sys.exit(main(sys.argv[1:]))"
            )
            command = [sys.executable, "-c", code, *args]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = b""

    def read_until(self, needles: tuple[bytes, ...], timeout: float = 30.0) -> bytes:
        """Output so far, once one of ``needles`` is in it (or the child exited)."""
        return self._read(lambda out: any(n in out for n in needles), repr(needles), timeout)

    def read_line_with(self, needle: bytes, timeout: float = 30.0) -> bytes:
        """Output so far, once a whole line with ``needle`` is in it: a signal sent on
        its first half would stop the child before it ends the line."""

        def whole_line(out: bytes) -> bool:
            at = out.find(needle)
            return at >= 0 and b"\n" in out[at:]

        return self._read(whole_line, f"a line with {needle!r}", timeout)

    def _read(self, done: Callable[[bytes], bool], what: str, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not done(self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} in:\n{self.output.decode(errors='replace')}")
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


def _with_smtp() -> bool:
    """Whether the quickstart runs Postfix here (as root, with Postfix installed)."""
    return os.geteuid() == 0 and find_postfix() is not None


class _Backends:
    """What the quickstart's output and files say about the Dovecot and Postfix it runs."""

    def __init__(self, workdir: Path, output: bytes) -> None:
        self.workdir = workdir
        self.dovecot_imap, self.dovecot_pop3 = _dovecot_ports(output)
        self.dovecot_pid = int((workdir / "dovecot" / "dovecot.pid").read_text())
        self.postfix: Postfix | None = None
        self.postfix_pid = 0
        found = re.search(rb"Postfix +SMTP 127\.0\.0\.1:(\d+)  \(log: (\S+)\)", output)
        if not _with_smtp():
            assert found is None, output
            assert quickstart.NOT_ROOT_NOTE.encode() in output or find_postfix() is None
            return
        assert found, output
        root = workdir / "postfix"
        assert found[2].decode() == str(root / "postfix.log")
        self.postfix_pid = int((root / "master.pid").read_text())
        # bob's Maildir, as printed, in the private dir recorded under root
        maildir = re.search(rb"as files in\n  (\S+)/bob/new\n", output)
        assert maildir, output
        private = Path((root / "private-dirs").read_text().split()[0])
        assert Path(maildir[1].decode()) == private / "mail"
        # a Postfix object over the running one's files, for its log and Maildir readers
        self.postfix = Postfix(root, smtp_port=int(found[1]))
        self.postfix.mail_dir = private / "mail"

    def check_files(self, imap_port: int, pop3_port: int, smtp_port: int) -> None:
        """The users file routes every demo user to Dovecot (and Postfix), with SHA512-CRYPT
        hashes; the config is the quickstart's."""
        from passlib.hash import sha512_crypt

        workdir = self.workdir
        entries = list(read_users_file(workdir / "users"))
        assert {user for user, _, _ in entries} == set(DEMO_USERS)
        routes = {
            "host": "127.0.0.1",
            "port": str(self.dovecot_imap),
            "pop3_port": str(self.dovecot_pop3),
        }
        if self.postfix is not None:
            routes["smtp_port"] = str(self.postfix.smtp_port)
        for user, password, extra in entries:
            assert sha512_crypt.verify(DEMO_USERS[user], password.removeprefix("{SHA512-CRYPT}"))
            assert extra == routes
        conf = (workdir / "mailfront.conf").read_text()
        assert conf == quickstart.mailfront_config(
            workdir,
            workdir / "users",
            imap_port,
            pop3_port,
            smtp_port if self.postfix is not None else None,
        )

    def check_stopped(self, output: bytes) -> None:
        assert b"Dovecot stopped." in output
        assert _gone(self.dovecot_pid)
        if self.postfix is not None:
            assert b"Postfix stopped." in output
            assert _gone(self.postfix_pid)
            assert not self.postfix.mail_dir.parent.exists()  # the private queue and Maildirs


def _submit(port: int, subject: str) -> None:
    """A message from alice to bob, through mailfront's SMTP port, with smtplib."""
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg.set_content("Hi Bob, through mailfront-quickstart.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("auth")
        smtp.login("alice", DEMO_USERS["alice"])
        refused = smtp.send_message(msg)
        assert refused == {}


def _delivered(postfix: Postfix, subject: str) -> bytes:
    """Bob's message with ``subject``, once Postfix delivered it."""
    needle = f"Subject: {subject}\n".encode()
    deadline = time.monotonic() + 20
    while True:
        found = [m for m in postfix.messages("bob") if needle in m]
        if found:
            assert len(found) == 1
            return found[0]
        if time.monotonic() > deadline:
            postfix.wait_messages("bob", 10**6, timeout=0)  # fails, with Postfix's log
        time.sleep(0.05)


def test_quickstart_sets_up_dovecot_and_files(tmp_path: Path, child: list[_Child]) -> None:
    require_dovecot()
    workdir = tmp_path / "qs"
    imap_port, pop3_port, smtp_port = free_port(), free_port(), free_port()
    run = _Child(
        "--dir", str(workdir), "--no-install", "--no-proxy",
        "--imap-port", str(imap_port), "--pop3-port", str(pop3_port),
        "--smtp-port", str(smtp_port),
    )  # fmt: skip
    child.append(run)
    out = run.read_line_with(b"Press Ctrl-C")
    assert b"curl -v imap://127.0.0.1:%d/INBOX -u alice:alicepass" % imap_port in out
    assert b"curl 'imap://127.0.0.1:%d/INBOX;UID=1' -u alice:alicepass" % imap_port in out
    backends = _Backends(workdir, out)
    backends.check_files(imap_port, pop3_port, smtp_port)
    for line in quickstart.smtp_examples(smtp_port):
        assert (f"\n  {line}\n".encode() in out) == (backends.postfix is not None)

    # Dovecot answers with the demo mail
    with imaplib.IMAP4("127.0.0.1", backends.dovecot_imap, timeout=10) as imap:
        imap.login("alice", DEMO_USERS["alice"])
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        part = data[0]
        assert isinstance(part, tuple)
        assert part[1] == demo_messages("alice")[0].data
        imap.logout()
    if backends.postfix is not None:  # Postfix greets
        with smtplib.SMTP(*backends.postfix.smtp_address, timeout=10) as smtp:
            code, text = smtp.ehlo("client.test")
            assert code == 250 and text.startswith(b"postfix.test\n")

    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    backends.check_stopped(run.output)


def test_quickstart_without_root(tmp_path: Path, child: list[_Child]) -> None:
    """Any other user than root gets a note, and Dovecot with no Postfix and no SMTP
    server.  As root, the child's ``os.geteuid`` says 65534: the virtualenv's Python
    often lives where nobody else may run it."""
    require_dovecot()
    workdir = tmp_path / "qs"
    imap_port, pop3_port = free_port(), free_port()
    run = _Child(
        "--dir", str(workdir), "--no-install", "--no-proxy",
        "--imap-port", str(imap_port), "--pop3-port", str(pop3_port),
        euid=65534 if os.geteuid() == 0 else None,
    )  # fmt: skip
    child.append(run)
    out = run.read_line_with(b"Press Ctrl-C")
    note = quickstart.NOT_ROOT_NOTE.encode()
    assert out.startswith(note + b"\n"), out
    rest = out.replace(note, b"").replace(str(workdir).encode(), b"<dir>")
    assert b"Postfix" not in rest
    assert b"smtp" not in rest.lower()
    assert b"Dovecot run(s) (mailfront was not started: --no-proxy)" in rest
    conf = (workdir / "mailfront.conf").read_text()
    assert conf == quickstart.mailfront_config(workdir, workdir / "users", imap_port, pop3_port)
    assert not (workdir / "postfix").exists()
    entries = list(read_users_file(workdir / "users"))
    assert len(entries) == len(DEMO_USERS)
    assert all("smtp_port" not in extra for _, _, extra in entries)
    dovecot_pid = int((workdir / "dovecot" / "dovecot.pid").read_text())
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert run.output.endswith(b"\nDovecot stopped.\n")
    assert b"Postfix stopped." not in run.output
    assert _gone(dovecot_pid)


def test_quickstart_no_smtp(tmp_path: Path, child: list[_Child]) -> None:
    require_dovecot()
    workdir = tmp_path / "qs"
    imap_port, pop3_port = free_port(), free_port()
    run = _Child(
        "--dir", str(workdir), "--no-install", "--no-proxy", "--no-smtp",
        "--imap-port", str(imap_port), "--pop3-port", str(pop3_port),
    )  # fmt: skip
    child.append(run)
    out = run.read_line_with(b"Press Ctrl-C")
    rest = out.replace(str(workdir).encode(), b"<dir>")  # the test's name has "smtp" in it
    assert b"Postfix" not in rest and b"smtp" not in rest.lower()
    assert not (workdir / "postfix").exists()
    conf = (workdir / "mailfront.conf").read_text()
    assert conf == quickstart.mailfront_config(workdir, workdir / "users", imap_port, pop3_port)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert run.output.endswith(b"\nDovecot stopped.\n")


def test_quickstart_runs_mailfront_then_stops_dovecot(tmp_path: Path, child: list[_Child]) -> None:
    require_dovecot()
    workdir = tmp_path / "qs"
    imap_port, pop3_port, smtp_port = free_port(), free_port(), free_port()
    run = _Child(
        "--dir", str(workdir), "--no-install",
        "--imap-port", str(imap_port), "--pop3-port", str(pop3_port),
        "--smtp-port", str(smtp_port),
    )  # fmt: skip
    child.append(run)
    out = run.read_line_with(b"Press Ctrl-C")
    assert b"-m mailfront -c %s" % str(workdir / "mailfront.conf").encode() in out
    backends = _Backends(workdir, out)
    backends.check_files(imap_port, pop3_port, smtp_port)

    if importlib.util.find_spec("mailfront.cli") is None:
        # mailfront's command line does not exist yet: it fails at startup, and the
        # quickstart says so, stops Dovecot and fails too
        assert run.finish() != 0
        assert b"mailfront exited with status" in run.output
        backends.check_stopped(run.output)
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

    postfix = backends.postfix
    if postfix is not None:
        # through mailfront, to Postfix: smtplib as alice, to bob's Maildir
        _submit(smtp_port, "quickstart smtplib")
        got = _delivered(postfix, "quickstart smtplib")
        assert b"Hi Bob, through mailfront-quickstart." in got
        assert b"Received: from client.test (unknown [127.0.0.1])" in got
        postfix.wait_log("client=unknown[127.0.0.1], sasl_method=XCLIENT, sasl_username=alice")
        # a wrong password stops at mailfront, which closes the connection
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=20) as smtp:
            smtp.ehlo("client.test")
            code, _ = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0wrong").decode())
            assert code == 535
        # the README's quickstart lines, as printed, with this run's port
        text = README.read_text()
        lines = _smtp_lines(_section(text, "Trying the quickstart"))
        for number, line in enumerate(lines):
            command = line.replace("10587", str(smtp_port))
            assert f"\n  {command}\n".encode() in out
            tool = command.split("|")[-1].split()[0]
            if shutil.which(tool) is None:
                continue
            tag = f"readme {number} {os.getpid()}"
            command = command.replace("hello from", tag)
            result = subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=60, check=False
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert b"Subject: %s" % tag.encode() in _delivered(postfix, f"{tag} {tool}")

    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    backends.check_stopped(run.output)
