"""A private Postfix (an SMTP backend) for the tests and the quickstart.

``Postfix(root)`` writes its own ``main.cf`` and ``master.cf`` under
``root/conf``, runs ``postfix -c root/conf check`` (which creates the queue
directories with Postfix's ownerships), then starts Postfix's ``master -d``
as a child in its own session: every Postfix process is in that process
group, and ``stop()`` signals only that group.  Nothing of the system's
Postfix is touched: no ``/etc/postfix/main.cf`` change, no system queue, no
syslog.

What it does:

- ``smtpd`` on ``host:smtp_port`` (a free loopback port by default);
- mail for ``<user>@example.com`` (``users``, default the demo users) is
  delivered by ``virtual(8)`` into ``mail/<user>/`` Maildirs: ``messages(user)``
  reads them; any other ``@example.com`` recipient is refused with
  ``550 5.1.1``;
- mail for any other domain is accepted only from an authenticated client
  (SASL or ``XCLIENT LOGIN=``) and then discarded (``discard:`` transport, logged
  as ``status=sent``); others get ``554 5.7.1 Relay access denied``;
- ``smtpd_authorized_xclient_hosts = 127.0.0.0/8``: a proxy on loopback may
  send XCLIENT (mailfront's ``xclient on``, the default);
- with ``sasl=(host, port)`` of a Dovecot auth service (``Dovecot.auth_address``),
  ``smtpd_sasl_type = dovecot``: AUTH PLAIN/LOGIN/CRAM-MD5 with Dovecot's users
  (mailfront's ``proxy_smtp_auth on``);
- its log goes to ``root/postfix.log`` (``maillog_file``; there is no syslog
  here): ``log_text()`` and ``wait_log()`` read it.

Privileges.  Postfix's ``master`` runs only as root, and its daemons run as
``mail_owner`` (``postfix``) with the ``setgid_group`` (``postdrop``), both
created by Debian's ``postfix`` package.  Those daemons must reach the queue,
which therefore lives outside ``root`` (pytest's temp dirs are 0700): in a
fresh private directory under the system temp dir, recorded under ``root`` so
that the next start removes what a killed run left behind, and removed by
``stop()``.  The Maildirs are there too, owned by ``nobody`` (the user
``virtual(8)`` delivers as).  As any other user, ``start()`` raises
``PostfixError``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from mailfront.devtools.runner import PrivateServer, find_sbin, first_line, free_port, tail

__all__ = [
    "DOMAIN",
    "Postfix",
    "PostfixError",
    "find_postfix",
]

DOMAIN = "example.com"  # the domain whose users have Maildirs here
DEFAULT_USERS = ("alice", "bob")
DEFAULT_HOST = "127.0.0.1"
HOSTNAME = "postfix.test"  # myhostname: the greeting is "220 postfix.test ESMTP Postfix"
START_TIMEOUT = 20.0  # seconds until smtpd must greet

_MAIL_OWNER = "postfix"
_SETGID_GROUP = "postdrop"
_DELIVERY_USER = "nobody"
_UNSAFE_PATH_CHARS = frozenset(' \t\n,=#$"\\')


class PostfixError(RuntimeError):
    """Postfix could not be configured or started; the message says why."""


def find_postfix() -> str | None:
    """The path of the ``postfix`` command, also looked up in sbin dirs."""
    return find_sbin("postfix")


def _postconf_default(postfix: str, name: str) -> str:
    """A built-in default (``postconf -d -h``), e.g. ``daemon_directory``."""
    postconf = os.path.join(os.path.dirname(postfix), "postconf")
    if not os.access(postconf, os.X_OK):
        postconf = shutil.which("postconf") or "postconf"
    try:
        out = subprocess.run(
            [postconf, "-d", "-h", name], capture_output=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostfixError(f"postconf -d {name} failed: {exc}") from exc
    return out.decode().strip()


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _check_path(path: Path) -> None:
    bad = _UNSAFE_PATH_CHARS.intersection(str(path))
    if bad:
        raise PostfixError(
            f"{path}: Postfix's main.cf cannot hold this path (it contains {sorted(bad)!r})"
        )


class Postfix(PrivateServer):
    """A private Postfix on loopback; see the module docstring.

    ``smtp_port`` 0 means a free port, picked at ``start()``.  ``users`` are
    the local parts with a Maildir at ``@example.com``.  ``sasl`` is the
    ``(host, port)`` of a Dovecot auth service, or None for no AUTH.
    ``root`` is (re)populated at every start.
    """

    PRIVATE_PREFIX = "mailfront-postfix-"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        host: str = DEFAULT_HOST,
        smtp_port: int = 0,
        users: tuple[str, ...] | list[str] = DEFAULT_USERS,
        sasl: tuple[str, int] | None = None,
        extra_main_cf: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        binary: str | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.host = host
        self.smtp_port = smtp_port
        self.users = tuple(users)
        for user in self.users:
            if not user or not all(c.isalnum() or c in "._-" for c in user) or user[0] == ".":
                raise PostfixError(f"user {user!r}: letters, digits, '.', '_' and '-' only")
        self.sasl = sasl
        self.extra_main_cf = dict(extra_main_cf or {})
        self.start_timeout = start_timeout
        self.binary = binary
        self.conf_dir = self.root / "conf"
        self.log_path = self.root / "postfix.log"
        self.stderr_path = self.root / "postfix.stderr"
        self.pid_path = self.root / "master.pid"
        self.private_dirs_path = self.root / "private-dirs"
        self.queue_dir = self.root / "queue"  # moved to a private dir at start()
        self.data_dir = self.root / "data"
        self.mail_dir = self.root / "mail"
        self._fixed_port = smtp_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._private_dirs: list[Path] = []

    # -- public --------------------------------------------------------------

    @property
    def smtp_address(self) -> tuple[str, int]:
        return (self.host, self.smtp_port)

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        """The log once it contains ``needle``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in Postfix's log:\n{tail(text, 40)}")
            time.sleep(0.05)

    def messages(self, user: str) -> list[bytes]:
        """The messages delivered to ``user@example.com``, oldest first (as stored: LF ends)."""
        maildir = self.mail_dir / user
        files: list[Path] = []
        for sub in ("new", "cur"):
            with contextlib.suppress(OSError):
                files.extend(p for p in (maildir / sub).iterdir() if p.is_file())
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]

    def wait_messages(self, user: str, count: int, timeout: float = 10.0) -> list[bytes]:
        """``messages(user)`` once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(user)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{user}@{DOMAIN} has {len(found)} message(s), expected {count}:\n"
                    + tail(self.log_text(), 40)
                )
            time.sleep(0.05)

    def start(self) -> Postfix:
        if self._proc is not None:
            raise PostfixError("this Postfix is already started")
        if os.getuid() != 0:
            raise PostfixError("Postfix's master runs only as root")
        binary = self.binary or find_postfix()
        if binary is None or not os.access(binary, os.X_OK):
            raise PostfixError("postfix is not installed (Debian: apt-get install postfix)")
        for name, lookup in ((_MAIL_OWNER, pwd.getpwnam), (_SETGID_GROUP, grp.getgrnam)):
            try:
                lookup(name)
            except KeyError:
                raise PostfixError(
                    f"no {name!r} user/group: Debian's postfix package creates it"
                ) from None
        daemon_dir = _postconf_default(binary, "daemon_directory")
        master = os.path.join(daemon_dir, "master")
        if not os.access(master, os.X_OK):
            raise PostfixError(f"{master} is missing")
        self.root.mkdir(parents=True, exist_ok=True)
        _check_path(self.root)
        self._stop_stale(self.conf_dir)

        def once() -> None:
            self._prepare(binary, daemon_dir)
            self._launch(master)
            self._wait_ready()

        self._start_attempts(
            1 if self._fixed_port else 3,
            once,
            lambda exc, log: "Address already in use" in f"{exc}{log}",
        )
        return self

    def __enter__(self) -> Postfix:
        return self.start()

    # -- internals -----------------------------------------------------------

    def _prepare(self, binary: str, daemon_dir: str) -> None:
        self._remove_recorded_private_dirs()
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
        self.stderr_path.unlink(missing_ok=True)
        private = self._private_dir(mode=0o755)  # Postfix's daemons must traverse it
        self.queue_dir = private / "queue"
        self.data_dir = private / "data"
        self.mail_dir = private / "mail"
        postfix_pw = pwd.getpwnam(_MAIL_OWNER)
        nobody = pwd.getpwnam(_DELIVERY_USER)
        self.queue_dir.mkdir(mode=0o755)
        self.data_dir.mkdir(mode=0o700)
        os.chown(self.data_dir, postfix_pw.pw_uid, postfix_pw.pw_gid)
        self.mail_dir.mkdir(mode=0o700)
        os.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
        self.conf_dir.mkdir(mode=0o755)
        if not self._fixed_port:
            self.smtp_port = free_port(self.host)
        (self.conf_dir / "main.cf").write_text(
            self._main_cf(daemon_dir, nobody.pw_uid, nobody.pw_gid)
        )
        (self.conf_dir / "master.cf").write_text(self._master_cf())
        # creates the queue's subdirectories with Postfix's owners and modes
        check = subprocess.run(
            [binary, "-c", str(self.conf_dir), "check"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if check.returncode != 0:
            raise PostfixError(
                f"postfix check failed ({check.returncode}):\n"
                + check.stderr.decode(errors="replace")
                + tail(self.log_text())
            )

    def _main_cf(self, daemon_dir: str, uid: int, gid: int) -> str:
        # an inline table: virtual(8) looks it up as nobody, who cannot read under root
        mailboxes = ", ".join(f"{u}@{DOMAIN}={u}/" for u in self.users)
        lines = [
            "# Written by mailfront.devtools.postfix: a private Postfix for mailfront's",
            "# tests and quickstart.  Regenerated at every start.",
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue_dir}",
            f"data_directory = {self.data_dir}",
            f"daemon_directory = {daemon_dir}",
            f"mail_owner = {_MAIL_OWNER}",
            f"setgid_group = {_SETGID_GROUP}",
            f"myhostname = {HOSTNAME}",
            f"mydomain = {DOMAIN}",
            f"myorigin = {DOMAIN}",
            f"inet_interfaces = {self.host}",
            "inet_protocols = ipv4",
            "# no local delivery, no aliases: only the virtual Maildirs below",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            "# nobody is trusted by address: relaying needs a login (SASL or XCLIENT)",
            "mynetworks = 192.0.2.1/32",
            "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,"
            " reject_unauth_destination",
            "# mailfront (xclient on) sends XCLIENT from loopback",
            "smtpd_authorized_xclient_hosts = 127.0.0.0/8",
            "# the client's name comes only from XCLIENT NAME; no DNS here",
            "smtpd_peername_lookup = no",
            "smtpd_error_sleep_time = 0",
            "biff = no",
            f"virtual_mailbox_domains = {DOMAIN}",
            f"virtual_mailbox_base = {self.mail_dir}",
            f"virtual_mailbox_maps = inline:{{ {mailboxes} }}",
            f"virtual_uid_maps = static:{uid}",
            f"virtual_gid_maps = static:{gid}",
            f"virtual_minimum_uid = {min(uid, 100)}",
            "# other domains: accepted (when relaying is allowed) and thrown away",
            "default_transport = discard:relayed",
            "relay_transport = discard:relayed",
            "# no syslog here: Postfix's own log file (postlogd)",
            f"maillog_file = {self.log_path}",
            f"maillog_file_prefixes = {self.root}",
        ]
        if self.sasl is not None:
            host, port = self.sasl
            lines += [
                "# AUTH is checked by Dovecot's auth service (its client protocol on TCP)",
                "smtpd_sasl_auth_enable = yes",
                "smtpd_sasl_type = dovecot",
                f"smtpd_sasl_path = inet:{host}:{port}",
            ]
        lines += [f"{name} = {value}" for name, value in self.extra_main_cf.items()]
        return "\n".join(lines) + "\n"

    def _master_cf(self) -> str:
        # service type private unpriv chroot wakeup maxproc command; no chroot anywhere
        rows = [
            (f"{self.host}:{self.smtp_port}", "inet", "n", "-", "n", "-", "-", "smtpd"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        head = "# Written by mailfront.devtools.postfix.  Regenerated at every start.\n"
        return head + "".join(" ".join(row) + "\n" for row in rows)

    def _launch(self, master: str) -> None:
        with open(self.stderr_path, "wb") as err:
            # -d: no detach (it stays our child, in the session we create)
            self._proc = subprocess.Popen(
                [master, "-c", str(self.conf_dir), "-d"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            proc = self._proc
            assert proc is not None
            if proc.poll() is not None:
                # the master's own fatal errors reach no log (postlogd is not up yet)
                hint = ""
                if _port_taken(self.host, self.smtp_port):
                    hint = f" ({self.host}:{self.smtp_port}: Address already in use)"
                raise PostfixError(
                    f"postfix's master exited with status {proc.returncode} at startup{hint}:\n"
                    + tail(self.log_text())
                )
            if first_line(self.host, self.smtp_port, timeout=1.0, bye=b"QUIT\r\n").startswith(
                b"220 "
            ):
                return
            text = self.log_text()
            if "fatal:" in text:
                raise PostfixError("postfix failed at startup:\n" + tail(text))
            if time.monotonic() > deadline:
                raise PostfixError(
                    f"postfix did not greet on {self.host}:{self.smtp_port} "
                    f"within {self.start_timeout:g}s:\n" + tail(text)
                )
            time.sleep(0.05)
