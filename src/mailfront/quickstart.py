"""mailfront in front of a real Dovecot, on this machine, in one command.

``mailfront-quickstart`` (or ``python -m mailfront.quickstart``):

1. installs Dovecot (and, as root, Postfix) with apt-get when missing, without
   starting the system's services (as root; otherwise it prints the command);
2. starts a private Dovecot (IMAP + POP3 on free loopback ports) with the demo
   users alice and bob and a few messages, from ``<dir>/dovecot``;
3. as root, starts a private Postfix (``<dir>/postfix``, smtpd on a free
   loopback port, Maildirs for alice and bob at example.com, XCLIENT allowed
   from loopback, AUTH through Dovecot's auth service); Postfix's master runs
   only as root, so any other user gets a note and no SMTP;
4. writes ``<dir>/users`` (mailfront's ``auth_file``: Dovecot passwd-file
   format, SHA512-CRYPT hashes, routed to that Dovecot and that Postfix) and
   ``<dir>/mailfront.conf`` (IMAP on 127.0.0.1:10143, POP3 on 127.0.0.1:10110,
   SMTP submission on 127.0.0.1:10587);
5. prints what to try, then runs ``python -m mailfront -c <dir>/mailfront.conf
   -p <dir>/`` in the foreground until Ctrl-C, and stops Postfix and Dovecot.

``<dir>`` is ``./run/quickstart`` by default; everything there is rewritten
at every run (the mail too).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from mailfront.devtools.dovecot import DEMO_USERS, Dovecot, DovecotError, find_dovecot
from mailfront.devtools.postfix import Postfix, PostfixError, find_postfix

DEFAULT_DIR = os.path.join("run", "quickstart")
IMAP_PORT = 10143
POP3_PORT = 10110
SMTP_PORT = 10587
HOST = "127.0.0.1"
DOVECOT_PACKAGES = ("dovecot-imapd", "dovecot-pop3d")
POSTFIX_PACKAGES = ("postfix",)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# invoke-rc.d (and deb-systemd-invoke) ask it before starting a service; 101: forbidden
POLICY_RC_D_TEXT = (
    "#!/bin/sh\n# written by mailfront-quickstart for the time of an install\nexit 101\n"
)
MAILFRONT_STOP_TIMEOUT = 10.0  # seconds between SIGINT and SIGKILL
NOT_ROOT_NOTE = (
    "Note: no SMTP submission: Postfix's master runs only as root (run the quickstart\n"
    "as root for a private Postfix behind mailfront's SMTP port)."
)


class _Terminated(Exception):
    """SIGTERM arrived: stop like on Ctrl-C."""


def _say(text: str = "") -> None:
    # one write with its newline: a Ctrl-C that lands inside print() between the text
    # and its end (print writes them apart) left the line unterminated
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- 1. packages --------------------------------------------------------------------


def _binary_for(package: str) -> str | None:
    return find_postfix() if package in POSTFIX_PACKAGES else find_dovecot()


def missing_packages(packages: Sequence[str] = DOVECOT_PACKAGES) -> list[str]:
    """The Debian packages of ``packages`` that are not installed.

    Without dpkg (not Debian), the ``dovecot`` or ``postfix`` binary is looked for.
    """
    if shutil.which("dpkg-query") is None:
        return [p for p in packages if _binary_for(p) is None]
    missing = []
    for package in packages:
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


@contextlib.contextmanager
def no_service_starts(policy: Path = POLICY_RC_D) -> Iterator[bool]:
    """While inside, packages do not start their services (like ``.ci/run``): a
    ``policy-rc.d`` that forbids every action, removed on the way out.  One that
    is already there is left as it is; yields whether this one wrote it."""
    if policy.exists() or policy.is_symlink():
        yield False
        return
    policy.write_text(POLICY_RC_D_TEXT)
    try:
        policy.chmod(0o755)
        yield True
    finally:
        policy.unlink(missing_ok=True)


def ensure_packages(smtp: bool, packages: Sequence[str] | None = None) -> bool:
    """Install the missing Dovecot (and, with ``smtp``, Postfix) packages when we can;
    False when one is still missing.  ``packages``: the missing ones, if known."""
    wanted = DOVECOT_PACKAGES + (POSTFIX_PACKAGES if smtp else ())
    missing = missing_packages(wanted) if packages is None else list(packages)
    if not missing:
        return True
    _say(f"Missing packages: {' '.join(missing)}.")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _say("Install them, then run the quickstart again:")
        _say(f"    {install_hint(missing)}")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with no_service_starts():
        for command in install_commands(missing):
            _say(f"+ {shlex.join(command)}")
            if subprocess.run(command, env=env, check=False).returncode != 0:
                _say(f"`{shlex.join(command)}` failed; install {' '.join(missing)} and try again.")
                return False
    for package in missing:
        if _binary_for(package) is None:
            _say(f"apt-get succeeded but {package} brought no usable binary.")
            return False
    groups = (("dovecot", DOVECOT_PACKAGES), ("postfix", POSTFIX_PACKAGES))
    services = " ".join(name for name, group in groups if set(group) & set(missing))
    _say(
        f"Note: apt installed the system's own {services} service(s) without starting them;\n"
        f"the quickstart runs private ones (`systemctl disable {services}` keeps them\n"
        "from starting at boot)."
    )
    return True


# -- 4. mailfront's files -----------------------------------------------------------


def mailfront_config(
    workdir: Path,
    auth_file: Path,
    imap_port: int = IMAP_PORT,
    pop3_port: int = POP3_PORT,
    smtp_port: int | None = None,
) -> str:
    """The quickstart's nginx-style configuration; all paths absolute.

    ``smtp_port`` None: no SMTP server (no Postfix behind it)."""
    smtp = ""
    if smtp_port is not None:
        smtp = (
            "\n"
            "    # submission: the login is checked here, then Postfix gets\n"
            "    # XCLIENT ADDR=<client> LOGIN=<user> (it trusts loopback for that)\n"
            "    server {\n"
            f"        listen {HOST}:{smtp_port};\n"
            "        protocol smtp;\n"
            "        smtp_auth plain login;\n"
            "        xclient on;\n"
            "    }\n"
        )
    return (
        "# Written by mailfront-quickstart; rewritten at every run.\n"
        "# Logins are checked against auth_file (a mailfront extension: Dovecot's\n"
        "# passwd-file format, whose extra fields host/port/pop3_port/smtp_port\n"
        "# route the user).\n"
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
        f"{smtp}"
        "}\n"
    )


def add_smtp_port(auth_file: Path, smtp_port: int) -> None:
    """Route every user of ``auth_file`` to ``smtp_port`` for SMTP (``smtp_port=``,
    appended to the extra fields, which end each line)."""
    lines = auth_file.read_text().splitlines()
    out = [
        line if not line or line.startswith("#") else f"{line} smtp_port={smtp_port}"
        for line in lines
    ]
    auth_file.write_text("".join(f"{line}\n" for line in out))


def mailfront_command(conf: Path, prefix: Path) -> list[str]:
    return [sys.executable, "-m", "mailfront", "-c", str(conf), "-p", f"{prefix}/"]


def smtp_examples(smtp_port: int = SMTP_PORT) -> list[str]:
    """The swaks and curl submissions as alice to bob (also in README.md)."""
    user, password = next(iter(DEMO_USERS.items()))
    server = f"{HOST}:{smtp_port}"
    return [
        f"swaks --server {server} --auth PLAIN --auth-user {user} --auth-password {password}"
        " --from alice@example.com --to bob@example.com --header 'Subject: hello from swaks'",
        "printf 'Subject: hello from curl\\r\\n\\r\\nHi Bob\\r\\n' | "
        f"curl smtp://{server} -u {user}:{password}"
        " --mail-from alice@example.com --mail-rcpt bob@example.com -T -",
    ]


def instructions(
    dovecot: Dovecot,
    workdir: Path,
    conf: Path,
    auth_file: Path,
    imap_port: int,
    pop3_port: int,
    postfix: Postfix | None = None,
    smtp_port: int = SMTP_PORT,
) -> str:
    user, password = next(iter(DEMO_USERS.items()))
    users = ", ".join(f"{name} / {secret}" for name, secret in DEMO_USERS.items())
    imap = f"imap://{HOST}:{imap_port}"
    snippet = (
        f'import imaplib; m = imaplib.IMAP4("{HOST}", {imap_port}); '
        f'm.login("{user}", "{password}"); m.select("INBOX"); '
        'print(m.fetch("1:*", "(BODY[HEADER.FIELDS (SUBJECT)])")[1]); m.logout()'
    )
    proxied = f"IMAP {HOST}:{imap_port}, POP3 {HOST}:{pop3_port}"
    lines = [
        "mailfront quickstart",
        f"  working dir  {workdir}",
        f"  Dovecot      IMAP {HOST}:{dovecot.imap_port}, POP3 {HOST}:{dovecot.pop3_port}"
        f"  (log: {dovecot.log_path})",
    ]
    if postfix is not None:
        proxied += f", SMTP {HOST}:{smtp_port}"
        lines.append(f"  Postfix      SMTP {HOST}:{postfix.smtp_port}  (log: {postfix.log_path})")
    lines += [
        f"  mailfront    {proxied}  (config: {conf})",
        f"  users        {users}  (auth_file: {auth_file})",
        "",
        "Try, from another terminal:",
        f"  curl -v {imap}/INBOX -u {user}:{password}",
        f"  curl '{imap}/INBOX;UID=1' -u {user}:{password}",
        f"  curl pop3://{HOST}:{pop3_port}/1 -u {user}:{password}",
        f"  python3 -c '{snippet}'",
    ]
    if postfix is not None:
        lines += [f"  {line}" for line in smtp_examples(smtp_port)]
        lines += [
            "Postfix delivers bob's mail (not into Dovecot) as files in",
            f"  {postfix.mail_dir / 'bob' / 'new'}",
            "(removed when the quickstart stops).",
        ]
    return "\n".join([*lines, ""])


# -- 5. running ---------------------------------------------------------------------


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _run_mailfront(command: list[str], servers: str) -> int:
    _say(f"+ {shlex.join(command)}")
    _say(f"Press Ctrl-C to stop mailfront and {servers}.")
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


def _wait_for_ctrl_c(dovecot: Dovecot, postfix: Postfix | None, servers: str) -> int:
    _say(f"{servers} run(s) (mailfront was not started: --no-proxy). Press Ctrl-C to stop.")
    try:
        while dovecot.running and (postfix is None or postfix.running):
            time.sleep(0.5)
    except (KeyboardInterrupt, _Terminated):
        return 0
    if not dovecot.running:
        _say("Dovecot exited by itself:\n" + dovecot.log_text()[-2000:])
    elif postfix is not None:
        _say("Postfix exited by itself:\n" + postfix.log_text()[-2000:])
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailfront-quickstart",
        description=(
            "Run mailfront in front of a private Dovecot (IMAP, POP3) and, as root, a private"
            " Postfix (SMTP submission), with demo users and mail."
        ),
    )
    parser.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        help="working directory, rewritten at every run (default: ./%(default)s)",
    )
    parser.add_argument("--imap-port", type=int, default=IMAP_PORT, help="default: %(default)s")
    parser.add_argument("--pop3-port", type=int, default=POP3_PORT, help="default: %(default)s")
    parser.add_argument(
        "--smtp-port",
        type=int,
        default=SMTP_PORT,
        help="mailfront's SMTP submission port, in front of Postfix (default: %(default)s)",
    )
    parser.add_argument(
        "--no-smtp",
        action="store_true",
        help="no Postfix and no SMTP server (without root there is none anyway)",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never run apt-get, only say what is missing"
    )
    parser.add_argument(
        "--no-proxy",
        action="store_true",
        help="set everything up and run Dovecot (and Postfix), but do not start mailfront",
    )
    return parser


def _check_packages(args: argparse.Namespace, smtp: bool) -> tuple[bool, bool]:
    """(go on, smtp): the packages are there, or installed; SMTP dropped when
    ``--no-install`` finds Postfix missing."""
    if not args.no_install:
        return ensure_packages(smtp), smtp
    missing = missing_packages()
    if missing:
        _say(f"Dovecot is not installed (missing: {' '.join(missing)}). Install it with:")
        _say(f"    {install_hint(missing)}")
        return False, smtp
    if smtp:
        missing = missing_packages(POSTFIX_PACKAGES)
        if missing:
            _say("Note: no SMTP submission: Postfix is not installed. Install it with:")
            _say(f"    {install_hint(missing)}")
            return True, False
    return True, smtp


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workdir = Path(args.dir).absolute()

    smtp = not args.no_smtp
    if smtp and os.geteuid() != 0:
        _say(NOT_ROOT_NOTE)
        smtp = False
    ok, smtp = _check_packages(args, smtp)
    if not ok:
        return 1
    if importlib.util.find_spec("passlib") is None:  # the [file] extra: SHA512-CRYPT
        _say(
            "passlib is missing: install mailfront with its [file] extra, pip install -e '.[file]'"
        )
        return 1

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    dovecot = Dovecot(workdir / "dovecot")
    postfix: Postfix | None = None
    servers = "Dovecot"
    try:
        try:
            dovecot.start()
        except DovecotError as exc:
            _say(f"Dovecot did not start: {exc}")
            return 1
        if smtp:
            postfix = Postfix(
                workdir / "postfix", users=tuple(DEMO_USERS), sasl=dovecot.auth_address
            )
            try:
                postfix.start()
            except PostfixError as exc:
                _say(f"Postfix did not start: {exc}\n(--no-smtp runs the quickstart without it)")
                return 1
            servers = "Postfix and Dovecot"
        auth_file = dovecot.write_auth_file(workdir / "users")
        if postfix is not None:
            add_smtp_port(auth_file, postfix.smtp_port)
        smtp_port = args.smtp_port if postfix is not None else None
        conf = workdir / "mailfront.conf"
        (workdir / "logs").mkdir(exist_ok=True)  # nginx's default error log lives there
        conf.write_text(
            mailfront_config(workdir, auth_file, args.imap_port, args.pop3_port, smtp_port)
        )
        text = instructions(
            dovecot,
            workdir,
            conf,
            auth_file,
            args.imap_port,
            args.pop3_port,
            postfix,
            args.smtp_port,
        )
        _say(text)
        if args.no_proxy:
            return _wait_for_ctrl_c(dovecot, postfix, servers)
        return _run_mailfront(mailfront_command(conf, workdir), servers)
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        if postfix is not None:
            postfix.stop()
            _say("Postfix stopped.")
        dovecot.stop()
        signal.signal(signal.SIGTERM, previous)
        _say("Dovecot stopped.")


if __name__ == "__main__":
    sys.exit(main())
