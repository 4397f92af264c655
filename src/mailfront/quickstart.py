"""mailfront in front of a real Dovecot, on this machine, in one command.

``mailfront-quickstart`` (or ``python -m mailfront.quickstart``):

1. installs Dovecot with apt-get when it is missing (as root; otherwise it
   prints the command to run);
2. starts a private Dovecot (IMAP + POP3 on free loopback ports) with the demo
   users alice and bob and a few messages, from ``<dir>/dovecot``;
3. writes ``<dir>/users`` (mailfront's ``auth_file``: Dovecot passwd-file
   format, SHA512-CRYPT hashes, routed to that Dovecot) and
   ``<dir>/mailfront.conf`` (IMAP on 127.0.0.1:10143, POP3 on 127.0.0.1:10110);
4. prints what to try, then runs ``python -m mailfront -c <dir>/mailfront.conf
   -p <dir>/`` in the foreground until Ctrl-C, and stops Dovecot.

``<dir>`` is ``./run/quickstart`` by default; everything there is rewritten
at every run (the mail too).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from mailfront.devtools.dovecot import DEMO_USERS, Dovecot, DovecotError, find_dovecot

DEFAULT_DIR = os.path.join("run", "quickstart")
IMAP_PORT = 10143
POP3_PORT = 10110
HOST = "127.0.0.1"
DOVECOT_PACKAGES = ("dovecot-imapd", "dovecot-pop3d")
MAILFRONT_STOP_TIMEOUT = 10.0  # seconds between SIGINT and SIGKILL


class _Terminated(Exception):
    """SIGTERM arrived: stop like on Ctrl-C."""


def _say(text: str = "") -> None:
    print(text, flush=True)


# -- 1. Dovecot ------------------------------------------------------------------


def missing_packages() -> list[str]:
    """The Debian packages of ``DOVECOT_PACKAGES`` that are not installed.

    Without dpkg (not Debian), only the ``dovecot`` binary is looked for.
    """
    if shutil.which("dpkg-query") is None:
        return [] if find_dovecot() is not None else list(DOVECOT_PACKAGES)
    missing = []
    for package in DOVECOT_PACKAGES:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not result.stdout.endswith(" installed"):
            missing.append(package)
    return missing


def install_commands(packages: Sequence[str]) -> list[list[str]]:
    """The apt-get commands that install ``packages``, without a prompt."""
    return [
        ["apt-get", "update"],
        ["apt-get", "install", "-y", *packages],
    ]


def install_hint(packages: Sequence[str]) -> str:
    """What a non-root user is told to run."""
    update, install = install_commands(packages)
    return f"sudo {shlex.join(update)} && sudo DEBIAN_FRONTEND=noninteractive {shlex.join(install)}"


def ensure_dovecot(packages: Sequence[str] | None = None) -> bool:
    """Install the missing Dovecot packages when we can; False when Dovecot is missing."""
    missing = missing_packages() if packages is None else list(packages)
    if not missing:
        return True
    _say(f"Dovecot is not installed (missing: {' '.join(missing)}).")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _say("Install it, then run the quickstart again:")
        _say(f"    {install_hint(missing)}")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in install_commands(missing):
        _say(f"+ {shlex.join(command)}")
        if subprocess.run(command, env=env, check=False).returncode != 0:
            _say(f"`{shlex.join(command)}` failed; install {' '.join(missing)} and try again.")
            return False
    if find_dovecot() is None:
        _say("apt-get succeeded but there is still no `dovecot` binary.")
        return False
    _say(
        "Note: apt may have started the system's own Dovecot (ports 143 and 110); the\n"
        "quickstart runs a private one and does not use it (`systemctl disable --now dovecot`\n"
        "stops it)."
    )
    return True


# -- 3. mailfront's files -----------------------------------------------------------


def mailfront_config(
    workdir: Path, auth_file: Path, imap_port: int = IMAP_PORT, pop3_port: int = POP3_PORT
) -> str:
    """The quickstart's nginx-style configuration; all paths absolute."""
    return (
        "# Written by mailfront-quickstart; rewritten at every run.\n"
        "# Logins are checked against auth_file (a mailfront extension: Dovecot's\n"
        "# passwd-file format, whose extra fields host/port/pop3_port route the user).\n"
        "daemon off;\n"
        "master_process off;\n"
        "error_log stderr info;\n"
        f"pid {workdir / 'mailfront.pid'};\n"
        "\n"
        "events {\n"
        "}\n"
        "\n"
        "mail {\n"
        f"    auth_file {auth_file};\n"
        "\n"
        "    server {\n"
        f"        listen {HOST}:{imap_port};\n"
        "        protocol imap;\n"
        "    }\n"
        "\n"
        "    server {\n"
        f"        listen {HOST}:{pop3_port};\n"
        "        protocol pop3;\n"
        "    }\n"
        "}\n"
    )


def mailfront_command(conf: Path, prefix: Path) -> list[str]:
    return [sys.executable, "-m", "mailfront", "-c", str(conf), "-p", f"{prefix}/"]


def instructions(
    dovecot: Dovecot, workdir: Path, conf: Path, auth_file: Path, imap_port: int, pop3_port: int
) -> str:
    user, password = next(iter(DEMO_USERS.items()))
    users = ", ".join(f"{name} / {secret}" for name, secret in DEMO_USERS.items())
    imap = f"imap://{HOST}:{imap_port}"
    snippet = (
        f'import imaplib; m = imaplib.IMAP4("{HOST}", {imap_port}); '
        f'm.login("{user}", "{password}"); m.select("INBOX"); '
        'print(m.fetch("1:*", "(BODY[HEADER.FIELDS (SUBJECT)])")[1]); m.logout()'
    )
    return "\n".join(
        [
            "mailfront quickstart",
            f"  working dir  {workdir}",
            f"  Dovecot      IMAP {HOST}:{dovecot.imap_port}, POP3 {HOST}:{dovecot.pop3_port}"
            f"  (log: {dovecot.log_path})",
            f"  mailfront    IMAP {HOST}:{imap_port}, POP3 {HOST}:{pop3_port}  (config: {conf})",
            f"  users        {users}  (auth_file: {auth_file})",
            "",
            "Try, from another terminal:",
            f"  curl -v {imap}/INBOX -u {user}:{password}",
            f"  curl '{imap}/INBOX;UID=1' -u {user}:{password}",
            f"  curl pop3://{HOST}:{pop3_port}/1 -u {user}:{password}",
            f"  python3 -c '{snippet}'",
            "",
        ]
    )


# -- 4. running ---------------------------------------------------------------------


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _run_mailfront(command: list[str]) -> int:
    _say(f"+ {shlex.join(command)}")
    _say("Press Ctrl-C to stop mailfront and Dovecot.")
    proc = subprocess.Popen(command)
    try:
        status = proc.wait()
    except (KeyboardInterrupt, _Terminated):
        # a terminal's Ctrl-C reached mailfront too; a lone SIGINT/SIGTERM to us did not
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(MAILFRONT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
    _say(f"mailfront exited with status {status}.")
    return status if status >= 0 else 128 - status  # killed by a signal: the shell's way


def _wait_for_ctrl_c(dovecot: Dovecot) -> int:
    _say("Dovecot runs (mailfront was not started: --no-proxy). Press Ctrl-C to stop it.")
    try:
        while dovecot.running:
            time.sleep(0.5)
    except (KeyboardInterrupt, _Terminated):
        return 0
    _say("Dovecot exited by itself:\n" + dovecot.log_text()[-2000:])
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailfront-quickstart",
        description="Run mailfront in front of a private Dovecot with demo users and mail.",
    )
    parser.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        help="working directory, rewritten at every run (default: ./%(default)s)",
    )
    parser.add_argument("--imap-port", type=int, default=IMAP_PORT, help="default: %(default)s")
    parser.add_argument("--pop3-port", type=int, default=POP3_PORT, help="default: %(default)s")
    parser.add_argument(
        "--no-install", action="store_true", help="never run apt-get, only say what is missing"
    )
    parser.add_argument(
        "--no-proxy",
        action="store_true",
        help="set everything up and run Dovecot, but do not start mailfront",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workdir = Path(args.dir).absolute()

    if args.no_install:
        missing = missing_packages()
        if missing:
            _say(f"Dovecot is not installed (missing: {' '.join(missing)}). Install it with:")
            _say(f"    {install_hint(missing)}")
            return 1
    elif not ensure_dovecot():
        return 1
    if importlib.util.find_spec("passlib") is None:  # the [file] extra: SHA512-CRYPT
        _say(
            "passlib is missing: install mailfront with its [file] extra, pip install -e '.[file]'"
        )
        return 1

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    dovecot = Dovecot(workdir / "dovecot")
    try:
        try:
            dovecot.start()
        except DovecotError as exc:
            _say(f"Dovecot did not start: {exc}")
            return 1
        auth_file = dovecot.write_auth_file(workdir / "users")
        conf = workdir / "mailfront.conf"
        (workdir / "logs").mkdir(exist_ok=True)  # nginx's default error log lives there
        conf.write_text(mailfront_config(workdir, auth_file, args.imap_port, args.pop3_port))
        _say(instructions(dovecot, workdir, conf, auth_file, args.imap_port, args.pop3_port))
        if args.no_proxy:
            return _wait_for_ctrl_c(dovecot)
        return _run_mailfront(mailfront_command(conf, workdir))
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        dovecot.stop()
        signal.signal(signal.SIGTERM, previous)
        _say("Dovecot stopped.")


if __name__ == "__main__":
    sys.exit(main())
