"""The private Postfix runner (``mailfront.devtools.postfix``) on its own."""

from __future__ import annotations

import os
import signal
import smtplib
import time
from pathlib import Path

import pytest

from mailfront.devtools.dovecot import DEMO_USERS
from mailfront.devtools.postfix import PostfixError
from support.postfix import HOSTNAME, Postfix, require_postfix


def _group_alive(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_submission_delivery_relay_and_refusals(postfix: Postfix) -> None:
    subject = f"fixture-{time.monotonic_ns()}"
    with smtplib.SMTP(*postfix.smtp_address, timeout=10) as smtp:
        code, banner = smtp.ehlo("client.test")
        assert code == 250 and banner.startswith(HOSTNAME.encode())
        assert b"XCLIENT" in banner and b"AUTH PLAIN LOGIN CRAM-MD5" in banner
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("x@example.org", ["carol@example.org"], b"Subject: no\r\n\r\nno\r\n")
        assert refused.value.recipients["carol@example.org"][0] == 554  # Relay access denied
        smtp.rset()
        smtp.login("alice", DEMO_USERS["alice"])
        msg = f"Subject: {subject}\r\n\r\nhello\r\n".encode()
        assert (
            smtp.sendmail("alice@example.com", ["bob@example.com", "carol@example.org"], msg) == {}
        )
        with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
            smtp.sendmail("alice@example.com", ["nobody@example.com"], msg)
        assert unknown.value.recipients["nobody@example.com"][0] == 550
    deadline = time.monotonic() + 10
    while not any(subject.encode() in m for m in postfix.messages("bob")):
        assert time.monotonic() < deadline, postfix.log_text()
        time.sleep(0.05)
    postfix.wait_log("to=<carol@example.org>, relay=none")
    assert "sasl_username=alice" in postfix.log_text()


def test_xclient_from_loopback(postfix: Postfix) -> None:
    with smtplib.SMTP(*postfix.smtp_address, timeout=10) as smtp:
        smtp.ehlo("proxy.test")
        code, _ = smtp.docmd("XCLIENT", "ADDR=192.0.2.77 LOGIN=bob NAME=[UNAVAILABLE]")
        assert code == 220
        smtp.ehlo("client.test")
        subject = f"xclient-{time.monotonic_ns()}"
        smtp.sendmail("bob@example.com", ["carol@example.org"], f"Subject: {subject}\r\n\r\n.\r\n")
    postfix.wait_log("client=unknown[192.0.2.77], sasl_method=XCLIENT, sasl_username=bob")


def test_stop_ends_every_process_and_removes_the_queue(tmp_path: Path) -> None:
    binary = require_postfix()
    server = Postfix(tmp_path / "pf", binary=binary).start()
    pid = server.pid
    assert pid is not None and os.getpgid(pid) == pid
    queue = server.queue_dir
    assert queue.is_dir() and not queue.is_relative_to(tmp_path)
    assert "daemon started" in server.wait_log("daemon started")
    assert len(_group_alive(pid)) >= 2  # the master and its daemons
    server.stop()
    assert not server.running
    deadline = time.monotonic() + 5
    while _group_alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not queue.parent.exists()
    server.stop()  # idempotent


def test_a_killed_parent_leaves_nothing_behind(tmp_path: Path) -> None:
    binary = require_postfix()
    first = Postfix(tmp_path / "pf", binary=binary).start()
    pid = first.pid
    assert pid is not None
    left_queue = first.queue_dir.parent
    proc, first._proc = first._proc, None  # as if this process died without stop()
    assert proc is not None
    second = Postfix(tmp_path / "pf", binary=binary)
    try:
        second.start()
        assert not _group_alive(pid) or _wait_gone(pid)
        assert not left_queue.exists()
        with smtplib.SMTP(*second.smtp_address, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        second.stop()
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        proc.wait(10)


def _wait_gone(pgid: int) -> bool:
    deadline = time.monotonic() + 5
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    binary = require_postfix()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Postfix(tmp_path / "pf", binary=binary, smtp_port=port, start_timeout=5)
        with pytest.raises(PostfixError, match="Address already in use"):
            server.start()
        assert not server.running


@pytest.mark.parametrize("user", ["", ".x", "a b", "a@b", "a/b"])
def test_bad_user_names_are_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(PostfixError):
        Postfix(tmp_path, users=[user])
