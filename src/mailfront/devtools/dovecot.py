"""A private Dovecot (IMAP + POP3) for the tests and the quickstart.

``Dovecot(root)`` writes a self-contained ``dovecot.conf`` under ``root``
(base_dir, state, log file, users, Maildirs), seeds demo users with known
passwords and messages, starts ``dovecot -F -c <conf>`` as a child in its own
session, waits until both ports send their greeting, and ``stop()`` signals
only that child's process group.  Nothing outside ``root`` is touched, except
in one case described below.

Privileges.  Dovecot never runs mail processes as uid 0 ("userdb returned 0
as uid", "Mail access not allowed for root"), whatever ``first_valid_uid``
says.  So:

- as root, the mail processes run as the ``mail`` system user (``nobody`` if
  there is none), the auth process runs as root (it reads the users file under
  ``root``, which may sit in a 0700 directory such as pytest's), login
  processes as ``dovenull``.  When the ``mail`` user cannot traverse the
  directories above ``root`` (pytest's ``/tmp/pytest-of-root`` is 0700), the
  Maildirs go to a fresh private directory under the system temp dir instead,
  owned by that user and removed by ``stop()``;
- as any other user, everything runs as that user (Dovecot's "rootless"
  mode): the internal and login users are the current user and the chroots
  of anvil and the login processes are turned off.

The users file holds ``{PLAIN}`` passwords so that CRAM-MD5 works.

Dovecot's auth service also listens on loopback TCP (``auth_port``) with its
client protocol, so that another server can check passwords against the same
users: Postfix's ``smtpd_sasl_type = dovecot`` with ``smtpd_sasl_path =
inet:127.0.0.1:<auth_port>`` (see ``mailfront.devtools.postfix``).  TCP rather
than a unix socket because the socket would sit under ``root``, which other
users may not be able to reach.
"""

from __future__ import annotations

import base64
import functools
import grp
import hashlib
import importlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mailfront.devtools.runner import PrivateServer, find_sbin, first_line, free_port, tail

__all__ = [
    "BIG_MESSAGE_SHA256",
    "BIG_MESSAGE_UID",
    "DEMO_USERS",
    "DemoMessage",
    "Dovecot",
    "DovecotError",
    "big_message",
    "demo_messages",
    "find_dovecot",
    "read_users_file",
    "traversable",
    "write_auth_file",
]

# The demo users and their passwords.
DEMO_USERS: Mapping[str, str] = {"alice": "alicepass", "bob": "bobpass"}

# INBOX UID of the multi-megabyte message, and the SHA-256 of its bytes as
# IMAP's BODY[] returns them (CRLF line ends).  The same for every user.
BIG_MESSAGE_UID = 3
BIG_MESSAGE_SHA256 = "387de3609f11504fca13b67d82f34496a52afafe549ba65f0d58e558add9df38"
_BIG_ATTACHMENT_SIZE = 3 * 1024 * 1024

DEFAULT_HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds until both greetings must have arrived

_MAX_BASE_DIR = 70  # unix socket paths are limited to 107 bytes
_UNSAFE_PATH_CHARS = frozenset(' \t\n"%\\#')


class DovecotError(RuntimeError):
    """Dovecot could not be configured or started; the message says why."""


def find_dovecot() -> str | None:
    """The path of the ``dovecot`` binary, also looked up in sbin dirs."""
    return find_sbin("dovecot")


# ---------------------------------------------------------------------------
# demo messages


@dataclass(frozen=True, slots=True)
class DemoMessage:
    """One seeded message: ``data`` is exactly what IMAP ``BODY[]`` returns."""

    mailbox: str  # "INBOX" or "Archive"
    uid: int  # the UID Dovecot gives it (seeding order within the mailbox)
    subject: str
    data: bytes  # CRLF line ends
    seen: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _message(headers: list[tuple[str, str]], body: list[str]) -> bytes:
    lines = [f"{name}: {value}" for name, value in headers]
    lines.append("")
    lines.extend(body)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


@functools.cache
def big_message() -> bytes:
    """The multi-megabyte message (a 3 MiB base64 attachment), deterministic."""
    payload = hashlib.shake_256(b"mailfront demo attachment").digest(_BIG_ATTACHMENT_SIZE)
    encoded = base64.b64encode(payload).decode("ascii")
    b64_lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    boundary = "mailfront-demo-boundary"
    return _message(
        [
            ("From", "Photo Service <photos@example.net>"),
            ("To", "undisclosed-recipients:;"),
            ("Subject", "Holiday photos (3 MiB attachment)"),
            ("Date", "Wed, 03 Jan 2024 12:00:00 +0000"),
            ("Message-ID", "<big-1@mailfront.example>"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
        ],
        [
            "This is a multi-part message in MIME format.",
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            "The photos are attached.",
            "",
            f"--{boundary}",
            "Content-Type: application/octet-stream",
            'Content-Disposition: attachment; filename="photos.bin"',
            "Content-Transfer-Encoding: base64",
            "",
            *b64_lines,
            "",
            f"--{boundary}--",
        ],
    )


def demo_messages(user: str) -> tuple[DemoMessage, ...]:
    """The messages every demo user starts with, in UID order per mailbox."""
    to = f"{user}@example.com"
    welcome = _message(
        [
            ("From", "mailfront <postmaster@example.com>"),
            ("To", to),
            ("Subject", "Welcome to mailfront"),
            ("Date", "Mon, 01 Jan 2024 09:00:00 +0000"),
            ("Message-ID", f"<welcome-{user}@mailfront.example>"),
            ("Content-Type", "text/plain; charset=us-ascii"),
        ],
        [
            f"Hello {user},",
            "",
            "this message is stored in a private Dovecot. If you read it on",
            "mailfront's port, it came through the proxy.",
        ],
    )
    lunch = _message(
        [
            ("From", "Carol <carol@example.org>"),
            ("To", to),
            ("Subject", "Lunch on Friday?"),
            ("Date", "Tue, 02 Jan 2024 11:30:00 +0000"),
            ("Message-ID", f"<lunch-{user}@mailfront.example>"),
            ("Content-Type", "text/plain; charset=us-ascii"),
        ],
        ["Noon at the usual place?", "", "Carol"],
    )
    newsletter = _message(
        [
            ("From", "News <news@example.org>"),
            ("To", to),
            ("Subject", "Old newsletter"),
            ("Date", "Fri, 01 Dec 2023 08:00:00 +0000"),
            ("Message-ID", f"<news-{user}@mailfront.example>"),
            ("Content-Type", "text/plain; charset=us-ascii"),
        ],
        ["Nothing new this month."],
    )
    return (
        DemoMessage("INBOX", 1, "Welcome to mailfront", welcome, seen=True),
        DemoMessage("INBOX", 2, "Lunch on Friday?", lunch, seen=False),
        DemoMessage(
            "INBOX", BIG_MESSAGE_UID, "Holiday photos (3 MiB attachment)", big_message(), False
        ),
        DemoMessage("Archive", 1, "Old newsletter", newsletter, seen=True),
    )


def _seed_maildir(home: Path, messages: tuple[DemoMessage, ...]) -> None:
    """Write Maildir++ files directly; the name's timestamp fixes UID order."""
    maildir = home / "Maildir"
    for number, msg in enumerate(messages, start=1):
        folder = maildir if msg.mailbox == "INBOX" else maildir / f".{msg.mailbox}"
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if folder is not maildir:
            (folder / "maildirfolder").touch()
        stamp = 1_704_067_200 + number  # 2024-01-01, one second apart
        base = f"{stamp}.M{number}P1.mailfront"
        path = folder / "cur" / f"{base}:2,S" if msg.seen else folder / "new" / base
        path.write_bytes(msg.data)
        os.utime(path, (stamp, stamp))
    subscriptions = sorted({m.mailbox for m in messages if m.mailbox != "INBOX"})
    (maildir / "subscriptions").write_text("".join(f"{name}\n" for name in subscriptions))


# ---------------------------------------------------------------------------
# privileges


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who runs which Dovecot process (see the module docstring)."""

    root: bool
    mail_uid: int
    mail_gid: int
    login_user: str
    internal_user: str
    internal_group: str


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _identity() -> _Identity:
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        try:
            user = pwd.getpwuid(uid).pw_name
            group = grp.getgrgid(gid).gr_name
        except KeyError as exc:
            raise DovecotError(
                f"uid {uid} or gid {gid} has no name (no /etc/passwd or /etc/group entry): "
                "Dovecot needs one for default_internal_user"
            ) from exc
        return _Identity(False, uid, gid, user, user, group)
    mail_user = "mail" if _user_exists("mail") else "nobody"
    pw = pwd.getpwnam(mail_user)
    login = "dovenull" if _user_exists("dovenull") else "nobody"
    internal = "dovecot" if _user_exists("dovecot") else "nobody"
    group = grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name
    return _Identity(True, pw.pw_uid, pw.pw_gid, login, internal, group)


def traversable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` may search every directory down to ``path``."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid)


# ---------------------------------------------------------------------------
# the runner


def _check_path(path: Path) -> None:
    bad = _UNSAFE_PATH_CHARS.intersection(str(path))
    if bad:
        raise DovecotError(
            f"{path}: Dovecot's config cannot hold this path (it contains {sorted(bad)!r})"
        )


class Dovecot(PrivateServer):
    """A private Dovecot on loopback; see the module docstring.

    ``imap_port``/``pop3_port`` 0 means a free port, picked at ``start()``.
    ``users`` maps user name to password (default: ``DEMO_USERS``); every
    user gets ``demo_messages(user)``.  ``root`` is (re)populated at every
    start: previous mail there is replaced.
    """

    PRIVATE_PREFIX = "mailfront-dovecot-"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        host: str = DEFAULT_HOST,
        imap_port: int = 0,
        pop3_port: int = 0,
        auth_port: int = 0,
        users: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        binary: str | None = None,
        haproxy: bool = False,
    ) -> None:
        self.root = Path(root).absolute()
        # haproxy: one more IMAP listener, whose clients send a PROXY header first
        # (v1 or v2, from 127.0.0.0/8), on a free port picked at start()
        self.haproxy = haproxy
        self.imap_haproxy_port = 0
        self.host = host
        self.imap_port = imap_port
        self.pop3_port = pop3_port
        self.auth_port = auth_port
        self.users: dict[str, str] = dict(DEMO_USERS if users is None else users)
        for user, password in self.users.items():
            bad_user = user in ("", ".", "..") or any(c in user for c in ":/\n\t %")
            if bad_user or any(c in password for c in ":\n"):
                raise DovecotError(f"user {user!r}: no ':', '/', '%' or white space, please")
        self.start_timeout = start_timeout
        self.binary = binary
        self.conf_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.stderr_path = self.root / "dovecot.stderr"
        self.passwd_path = self.root / "users.passwd"
        self.pid_path = self.root / "dovecot.pid"
        self.private_dirs_path = self.root / "private-dirs"  # see _private_dir()
        self.mail_dir = self.root / "mail"  # may move to a private temp dir, see start()
        self.base_dir = self.root / "run"
        self._fixed_ports = (imap_port, pop3_port, auth_port)
        self._proc: subprocess.Popen[bytes] | None = None
        self._private_dirs: list[Path] = []

    # -- public --------------------------------------------------------------

    @property
    def imap_address(self) -> tuple[str, int]:
        return (self.host, self.imap_port)

    @property
    def pop3_address(self) -> tuple[str, int]:
        return (self.host, self.pop3_port)

    @property
    def auth_address(self) -> tuple[str, int]:
        """Dovecot's auth service (client protocol, as Postfix's SASL speaks it)."""
        return (self.host, self.auth_port)

    def messages(self, user: str) -> tuple[DemoMessage, ...]:
        """What ``user``'s mailboxes held at start."""
        return demo_messages(user)

    def start(self) -> Dovecot:
        if self._proc is not None:
            raise DovecotError("this Dovecot is already started")
        binary = self.binary or find_dovecot()
        if binary is None or not os.access(binary, os.X_OK):
            raise DovecotError(
                "dovecot is not installed (Debian: apt-get install dovecot-imapd dovecot-pop3d)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        _check_path(self.root)
        self._stop_stale(self.conf_path)
        ident = _identity()

        def once() -> None:
            self._prepare(ident)
            self._launch(binary)
            self._wait_ready()

        self._start_attempts(
            1 if all(self._fixed_ports) else 3,
            once,
            lambda exc, log: isinstance(exc, DovecotError) and "Address already in use" in log,
        )
        return self

    def __enter__(self) -> Dovecot:
        return self.start()

    def write_auth_file(self, path: str | os.PathLike[str], *, rounds: int = 5000) -> Path:
        """Write a users file for mailfront's ``auth_file`` pointing at this Dovecot.

        Dovecot passwd-file format, SHA512-CRYPT hashes (passlib; 5000 rounds
        like ``doveadm pw -s SHA512-CRYPT``), extra fields ``host``, ``port``
        (IMAP) and ``pop3_port``.  Needs ``pip install -e '.[file]'``.  Call it
        after ``start()``, which fixes the ports.
        """
        if not (self.imap_port and self.pop3_port):
            raise DovecotError("start() first: the ports are not known yet")
        return write_auth_file(
            path,
            self.users,
            host=self.host,
            imap_port=self.imap_port,
            pop3_port=self.pop3_port,
            rounds=rounds,
        )

    # -- internals -----------------------------------------------------------

    def _prepare(self, ident: _Identity) -> None:
        self._remove_recorded_private_dirs()
        for name in ("mail", "state", "run"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
        self.base_dir = self.root / "run"
        if len(str(self.base_dir)) > _MAX_BASE_DIR:
            self.base_dir = self._private_dir("run")
        state_dir = self.root / "state"
        for directory in (self.base_dir, state_dir):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)

        self.mail_dir = self.root / "mail"
        self.mail_dir.mkdir(mode=0o700)
        if ident.root:
            os.chown(self.mail_dir, ident.mail_uid, ident.mail_gid)
        if ident.root and not traversable(self.mail_dir, ident.mail_uid, ident.mail_gid):
            self.mail_dir.rmdir()
            self.mail_dir = self._private_dir("mail")
            os.chown(self.mail_dir, ident.mail_uid, ident.mail_gid)
            if not traversable(self.mail_dir, ident.mail_uid, ident.mail_gid):
                raise DovecotError(
                    f"the mail user (uid {ident.mail_uid}) cannot reach {self.mail_dir}"
                )
        for user in self.users:
            _seed_maildir(self.mail_dir / user, demo_messages(user))
        if ident.root:
            _chown_tree(self.mail_dir, ident.mail_uid, ident.mail_gid)

        lines = [f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.users.items()]
        self.passwd_path.write_text("".join(lines))
        self.passwd_path.chmod(0o600)

        if not self._fixed_ports[0]:
            self.imap_port = free_port(self.host)
        if not self._fixed_ports[1]:
            self.pop3_port = free_port(self.host)
            while self.pop3_port == self.imap_port:
                self.pop3_port = free_port(self.host)
        if not self._fixed_ports[2]:
            self.auth_port = free_port(self.host)
            while self.auth_port in (self.imap_port, self.pop3_port):
                self.auth_port = free_port(self.host)
        if self.haproxy:
            taken = (self.imap_port, self.pop3_port, self.auth_port)
            self.imap_haproxy_port = free_port(self.host)
            while self.imap_haproxy_port in taken:
                self.imap_haproxy_port = free_port(self.host)
        self.conf_path.write_text(self._conf_text(ident, state_dir))

    def _conf_text(self, ident: _Identity, state_dir: Path) -> str:
        if ident.root:
            privileges = (
                "# Dovecot refuses mail access as root: mail processes run as\n"
                "# this system user, which owns the Maildirs.\n"
                f"mail_uid = {ident.mail_uid}\n"
                f"mail_gid = {ident.mail_gid}\n"
                f"first_valid_uid = {ident.mail_uid}\n"
                f"first_valid_gid = {min(ident.mail_gid, 1)}\n"
                f"default_login_user = {ident.login_user}\n"
                f"default_internal_user = {ident.internal_user}\n"
                f"default_internal_group = {ident.internal_group}\n"
                "# reads the users file, which may sit in a 0700 directory\n"
            )
            auth_user = "  user = root\n"
            anvil_chroot = login_chroot = ""
        else:
            privileges = (
                "# rootless: every process runs as the current user\n"
                f"mail_uid = {ident.mail_uid}\n"
                f"mail_gid = {ident.mail_gid}\n"
                f"first_valid_uid = {ident.mail_uid}\n"
                f"first_valid_gid = {min(ident.mail_gid, 1)}\n"
                f"default_login_user = {ident.login_user}\n"
                f"default_internal_user = {ident.internal_user}\n"
                f"default_internal_group = {ident.internal_group}\n"
            )
            anvil_chroot = "  chroot =\n"
            login_chroot = "  chroot =\n"
            auth_user = ""
        haproxy_listener = (
            f"  inet_listener imap_haproxy {{\n    port = {self.imap_haproxy_port}\n"
            "    haproxy = yes\n  }\n"
            if self.haproxy
            else ""
        )
        return (
            "# Written by mailfront.devtools.dovecot: a private Dovecot for mailfront's\n"
            "# tests and quickstart.  Regenerated at every start.\n"
            "protocols = imap pop3\n"
            f"listen = {self.host}\n"
            f"base_dir = {self.base_dir}\n"
            f"state_dir = {state_dir}\n"
            "instance_name = mailfront-dovecot\n"
            f"log_path = {self.log_path}\n"
            "auth_verbose = yes\n"
            "# answer failed logins at once\n"
            "auth_failure_delay = 0\n"
            "ssl = no\n"
            "disable_plaintext_auth = no\n"
            "auth_mechanisms = plain login cram-md5\n"
            "login_trusted_networks = 127.0.0.0/8 ::1/128\n"
            "haproxy_trusted_networks = 127.0.0.0/8 ::1/128\n"
            "mail_location = maildir:~/Maildir\n"
            "passdb {\n"
            "  driver = passwd-file\n"
            f"  args = scheme=PLAIN {self.passwd_path}\n"
            "}\n"
            "userdb {\n"
            "  driver = static\n"
            f"  args = home={self.mail_dir}/%u\n"
            "}\n"
            f"{privileges}"
            "service auth {\n"
            f"{auth_user}"
            "  # the client protocol on TCP, for Postfix's SASL (smtpd_sasl_type = dovecot)\n"
            f"  inet_listener sasl {{\n    address = {self.host}\n"
            f"    port = {self.auth_port}\n  }}\n"
            "}\n"
            "service anvil {\n"
            f"{anvil_chroot}"
            "  # no auth penalty: tests fail logins on purpose and must not slow down\n"
            "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n"
            "}\n"
            "service imap-login {\n"
            f"{login_chroot}"
            f"  inet_listener imap {{\n    port = {self.imap_port}\n  }}\n"
            f"{haproxy_listener}"
            "  inet_listener imaps {\n    port = 0\n  }\n"
            "}\n"
            "service pop3-login {\n"
            f"{login_chroot}"
            f"  inet_listener pop3 {{\n    port = {self.pop3_port}\n  }}\n"
            "  inet_listener pop3s {\n    port = 0\n  }\n"
            "}\n"
        )

    def _launch(self, binary: str) -> None:
        with open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = {self.imap_port: b"* OK", self.pop3_port: b"+OK", self.auth_port: b"VERSION"}
        while pending:
            proc = self._proc
            assert proc is not None
            if proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {proc.returncode} at startup:\n"
                    + tail(self.log_text())
                )
            for port, expected in list(pending.items()):
                if first_line(self.host, port, timeout=1.0).startswith(expected):
                    del pending[port]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot did not greet on {self.host} port(s) {sorted(pending)} "
                    f"within {self.start_timeout:g}s:\n" + tail(self.log_text())
                )
            time.sleep(0.05)


def write_auth_file(
    path: str | os.PathLike[str],
    users: Mapping[str, str],
    *,
    host: str,
    imap_port: int,
    pop3_port: int,
    rounds: int = 5000,
) -> Path:
    """A users file for mailfront's ``auth_file``: see ``Dovecot.write_auth_file``."""
    # the [file] extra; imported by name because passlib ships no type hints
    sha512_crypt = importlib.import_module("passlib.hash").sha512_crypt
    hasher = sha512_crypt.using(rounds=rounds)
    out = Path(path)
    lines = [
        f"{user}:{{SHA512-CRYPT}}{hasher.hash(password)}::::::"
        f"host={host} port={imap_port} pop3_port={pop3_port}\n"
        for user, password in users.items()
    ]
    out.write_text("".join(lines))
    out.chmod(0o600)
    return out


def read_users_file(path: str | os.PathLike[str]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(user, password field, extra fields) of a passwd-file; for tests."""
    for line in Path(path).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":", 7)
        extra = fields[7] if len(fields) > 7 else ""
        yield fields[0], fields[1], dict(kv.split("=", 1) for kv in extra.split() if "=" in kv)
