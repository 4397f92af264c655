"""The real-Dovecot fixture itself: logins, the seeded mail, CRAM-MD5, stop()."""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import os
import poplib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailfront.devtools.dovecot import traversable
from support.dovecot import (
    BIG_MESSAGE_SHA256,
    BIG_MESSAGE_UID,
    DEMO_USERS,
    Dovecot,
    DovecotError,
    big_message,
    demo_messages,
    read_users_file,
    require_dovecot,
)

ALICE = "alice"
ALICE_PASS = DEMO_USERS[ALICE]


@contextmanager
def pop3(server: Dovecot) -> Iterator[poplib.POP3]:
    client = poplib.POP3(*server.pop3_address, timeout=10)
    try:
        yield client
    finally:
        client.close()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp; zombies are gone
            members.append(int(entry))
    return members


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# -- the seeded data -----------------------------------------------------------


def test_big_message_is_deterministic_and_multi_megabyte() -> None:
    data = big_message()
    assert len(data) > 4 * 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == BIG_MESSAGE_SHA256
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert not re.search(rb"\r\n\.", data)  # no dot-stuffing needed in POP3


def test_demo_messages_per_user() -> None:
    for user in DEMO_USERS:
        inbox = [m for m in demo_messages(user) if m.mailbox == "INBOX"]
        assert [m.uid for m in inbox] == [1, 2, BIG_MESSAGE_UID]
        assert inbox[2].sha256 == BIG_MESSAGE_SHA256
        assert f"To: {user}@example.com".encode() in inbox[0].data


# -- IMAP ----------------------------------------------------------------------


def test_imap_login_list_and_fetch(dovecot: Dovecot) -> None:
    with imaplib.IMAP4(*dovecot.imap_address, timeout=10) as imap:
        assert imap.welcome.startswith(b"* OK")
        assert b"AUTH=CRAM-MD5" in imap.welcome
        assert imap.login(ALICE, ALICE_PASS)[0] == "OK"
        typ, boxes = imap.list()
        assert typ == "OK"
        names = {line.rsplit(b" ", 1)[1] for line in boxes if isinstance(line, bytes)}
        assert names == {b"INBOX", b"Archive"}
        typ, count = imap.select("INBOX", readonly=True)
        assert (typ, count) == ("OK", [b"3"])
        expected = [m for m in dovecot.messages(ALICE) if m.mailbox == "INBOX"]
        for msg in expected:
            typ, data = imap.uid("FETCH", str(msg.uid), "(BODY.PEEK[])")
            assert typ == "OK"
            part = data[0]
            assert isinstance(part, tuple)
            assert part[1] == msg.data
        typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        assert typ == "OK"
        assert [b"\\Seen" in line for line in data if isinstance(line, bytes)] == [
            True,
            False,
            False,
        ]
        imap.close()
        imap.logout()


def test_imap_big_message_hash(dovecot: Dovecot) -> None:
    with imaplib.IMAP4(*dovecot.imap_address, timeout=10) as imap:
        imap.login(ALICE, ALICE_PASS)
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("FETCH", str(BIG_MESSAGE_UID), "(BODY.PEEK[])")
        assert typ == "OK"
        part = data[0]
        assert isinstance(part, tuple)
        assert hashlib.sha256(part[1]).hexdigest() == BIG_MESSAGE_SHA256
        imap.logout()


def test_imap_wrong_password_is_refused(dovecot: Dovecot) -> None:
    with imaplib.IMAP4(*dovecot.imap_address, timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(ALICE, "wrong")
        imap.logout()


@pytest.mark.parametrize("user", sorted(DEMO_USERS))
def test_imap_cram_md5(dovecot: Dovecot, user: str) -> None:
    with imaplib.IMAP4(*dovecot.imap_address, timeout=10) as imap:
        typ, _ = imap.login_cram_md5(user, DEMO_USERS[user])
        assert typ == "OK"
        assert imap.select("INBOX", readonly=True) == ("OK", [b"3"])
        imap.logout()


def test_imap_cram_md5_wrong_password(dovecot: Dovecot) -> None:
    with imaplib.IMAP4(*dovecot.imap_address, timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login_cram_md5(ALICE, "wrong")
        imap.logout()


# -- POP3 ----------------------------------------------------------------------


def test_pop3_login_and_retr(dovecot: Dovecot) -> None:
    with pop3(dovecot) as client:
        assert client.getwelcome().startswith(b"+OK")
        client.user(ALICE)
        assert client.pass_(ALICE_PASS).startswith(b"+OK")
        inbox = [m for m in dovecot.messages(ALICE) if m.mailbox == "INBOX"]
        count, _size = client.stat()
        assert count == len(inbox)
        for number, msg in enumerate(inbox, start=1):
            _, lines, _ = client.retr(number)
            data = b"\r\n".join(lines) + b"\r\n"
            assert data == msg.data
        _, lines, _ = client.retr(BIG_MESSAGE_UID)
        assert hashlib.sha256(b"\r\n".join(lines) + b"\r\n").hexdigest() == BIG_MESSAGE_SHA256
        client.rset()
        client.quit()


def test_pop3_cram_md5(dovecot: Dovecot) -> None:
    with pop3(dovecot) as client:
        challenge = client._shortcmd("AUTH CRAM-MD5")  # poplib has no CRAM-MD5 helper
        assert challenge.startswith(b"+ ")
        nonce = base64.b64decode(challenge[2:])
        digest = hmac.new(ALICE_PASS.encode(), nonce, "md5").hexdigest()
        answer = base64.b64encode(f"{ALICE} {digest}".encode()).decode()
        assert client._shortcmd(answer).startswith(b"+OK")
        assert client.stat()[0] == 3
        client.quit()


def test_pop3_wrong_password_is_refused(dovecot: Dovecot) -> None:
    with pop3(dovecot) as client:
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match="AUTH"):
            client.pass_("wrong")


def test_fresh_dovecot_is_private(dovecot: Dovecot, fresh_dovecot: Dovecot) -> None:
    assert fresh_dovecot.root != dovecot.root
    assert fresh_dovecot.imap_port not in (dovecot.imap_port, dovecot.pop3_port)
    with pop3(fresh_dovecot) as client:
        client.user(ALICE)
        client.pass_(ALICE_PASS)
        client.dele(1)
        client.quit()
    for server, left in ((fresh_dovecot, 2), (dovecot, 3)):
        with pop3(server) as client:
            client.user(ALICE)
            client.pass_(ALICE_PASS)
            assert client.stat()[0] == left
            client.quit()


# -- the runner ----------------------------------------------------------------


def test_config_and_files(dovecot: Dovecot) -> None:
    conf = dovecot.conf_path.read_text()
    assert "ssl = no" in conf
    assert "auth_mechanisms = plain login cram-md5" in conf
    assert f"port = {dovecot.imap_port}" in conf and f"port = {dovecot.pop3_port}" in conf
    assert "Dovecot v" in dovecot.log_text()
    users = {user: password for user, password, _ in read_users_file(dovecot.passwd_path)}
    assert users == {user: "{PLAIN}" + password for user, password in DEMO_USERS.items()}
    assert not dovecot.root.is_relative_to(Path(__file__).parent.parent)  # not in the repo


def test_write_auth_file(dovecot: Dovecot, tmp_path: Path) -> None:
    from passlib.hash import sha512_crypt

    path = dovecot.write_auth_file(tmp_path / "users")
    entries = list(read_users_file(path))
    assert [user for user, _, _ in entries] == list(DEMO_USERS)
    for user, password, extra in entries:
        assert password.startswith("{SHA512-CRYPT}$6$")
        assert sha512_crypt.verify(DEMO_USERS[user], password.removeprefix("{SHA512-CRYPT}"))
        assert not sha512_crypt.verify("wrong", password.removeprefix("{SHA512-CRYPT}"))
        assert extra == {
            "host": "127.0.0.1",
            "port": str(dovecot.imap_port),
            "pop3_port": str(dovecot.pop3_port),
        }
    assert path.read_text().count(":") == 7 * len(DEMO_USERS)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    binary = require_dovecot()
    server = Dovecot(tmp_path / "dc", binary=binary).start()
    pid = server.pid
    assert pid is not None and server.running
    assert os.getpgid(pid) == pid  # its own session and group
    imap_address, pop3_address, mail_dir = server.imap_address, server.pop3_address, server.mail_dir
    imap = imaplib.IMAP4(*imap_address, timeout=10)
    try:
        imap.login(ALICE, ALICE_PASS)  # so that a mail process runs too
        assert len(_group_members(pid)) > 2
        server.stop()
        rest = b""
        while chunk := imap.sock.recv(4096):
            rest += chunk
        assert rest in (b"", b"* BYE Server shutting down.\r\n")  # then Dovecot closed it
    finally:
        imap.shutdown()
    assert not server.running
    assert _group_members(pid) == []
    assert _refused(imap_address) and _refused(pop3_address)
    if not mail_dir.is_relative_to(server.root):  # the private dir used as root
        assert not mail_dir.exists()
    server.stop()  # idempotent


def test_start_fails_clearly_when_a_port_is_taken(tmp_path: Path) -> None:
    binary = require_dovecot()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Dovecot(tmp_path / "dc", binary=binary, imap_port=port, pop3_port=port + 1)
        with pytest.raises(DovecotError, match="Address already in use"):
            server.start()
        assert not server.running


def test_custom_users(tmp_path: Path) -> None:
    binary = require_dovecot()
    with Dovecot(tmp_path / "dc", binary=binary, users={"carol": "c4r0l!"}) as server:
        with imaplib.IMAP4(*server.imap_address, timeout=10) as imap:
            imap.login("carol", "c4r0l!")
            assert imap.select("INBOX", readonly=True) == ("OK", [b"3"])
            imap.logout()
        with imaplib.IMAP4(*server.imap_address, timeout=10) as imap:
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(ALICE, ALICE_PASS)
            imap.logout()


@pytest.mark.parametrize("user", ["", "..", "a/b", "a:b", "a b", "50%"])
def test_bad_user_names_are_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(DovecotError, match="no ':'"):
        Dovecot(tmp_path, users={user: "x"})


def test_auth_file_needs_the_ports(tmp_path: Path) -> None:
    with pytest.raises(DovecotError, match="start"):
        Dovecot(tmp_path).write_auth_file(tmp_path / "users")


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DovecotError, match="not installed"):
        Dovecot(tmp_path, binary=str(tmp_path / "no-dovecot")).start()


def test_a_stale_instance_left_by_a_killed_parent_is_stopped(tmp_path: Path) -> None:
    binary = require_dovecot()
    root = tmp_path / "dc"
    script = (
        "import sys, time\n"
        "from mailfront.devtools.dovecot import Dovecot\n"
        f"d = Dovecot({str(root)!r}, binary={binary!r}).start()\n"
        "print(d.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        stale = int(parent.stdout.readline())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert _group_members(stale)  # orphaned, still running
    record = root / "private-dirs"  # only as root: the Maildirs in /tmp
    leaked = [Path(p) for p in record.read_text().splitlines()] if record.exists() else []
    assert all(path.exists() for path in leaked)
    with Dovecot(root, binary=binary) as server:
        assert not any(path.exists() for path in leaked)
        assert server.pid != stale
        deadline = time.monotonic() + 10
        while _group_members(stale) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _group_members(stale) == []
        with imaplib.IMAP4(*server.imap_address, timeout=10) as imap:
            assert imap.login(ALICE, ALICE_PASS)[0] == "OK"
            imap.logout()


_ROOTLESS_SCRIPT = """
import imaplib, poplib, sys
from mailfront.devtools.dovecot import BIG_MESSAGE_SHA256, Dovecot
import hashlib
with Dovecot(sys.argv[1], binary=sys.argv[2]) as d:
    with imaplib.IMAP4(*d.imap_address, timeout=10) as imap:
        imap.login_cram_md5("alice", "alicepass")
        imap.select("INBOX", readonly=True)
        part = imap.uid("FETCH", "3", "(BODY.PEEK[])")[1][0]
        assert hashlib.sha256(part[1]).hexdigest() == BIG_MESSAGE_SHA256
        imap.logout()
    pop = poplib.POP3(*d.pop3_address, timeout=10)
    pop.user("bob")
    pop.pass_("bobpass")
    assert pop.stat()[0] == 3
    pop.quit()
    assert "mail_uid = %d" % d.mail_dir.stat().st_uid in d.conf_path.read_text()
print("rootless ok")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to the user nobody")
def test_runs_rootless_as_an_unprivileged_user() -> None:
    """The non-root branch: run the runner itself as ``nobody`` (setpriv)."""
    import mailfront

    binary = require_dovecot()
    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if setpriv is None or not os.access(python, os.X_OK):
        pytest.skip("needs setpriv and the system's /usr/bin/python3")
    nobody = pwd.getpwnam("nobody")
    src = Path(mailfront.__file__).resolve().parent.parent
    if not traversable(src / "mailfront", nobody.pw_uid, nobody.pw_gid):
        pytest.skip(f"the user nobody cannot read {src}")
    # pytest's own temp dirs are 0700 root: nobody needs one of its own
    top = Path(tempfile.mkdtemp(prefix="mailfront-rootless-"))
    try:
        os.chown(top, nobody.pw_uid, nobody.pw_gid)
        result = subprocess.run(
            [
                setpriv,
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "env",
                "-i",
                "PATH=/usr/bin:/bin:/usr/sbin:/sbin",
                f"PYTHONPATH={src}",
                python,
                "-c",
                _ROOTLESS_SCRIPT,
                str(top / "dc"),
                binary,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "rootless ok"
    finally:
        shutil.rmtree(top, ignore_errors=True)
