"""error_log: nginx's line format, per-server logs, syslog targets, levels."""

from __future__ import annotations

import imaplib
import re
import socket
from pathlib import Path

from mailfront.devtools.dovecot import DEMO_USERS
from support.authserver import AuthServer, route_to
from support.proxy import Mailfront, free_port

LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (\d+)#0: (\*\d+ )?(.*)$")


def test_main_server_and_syslog_logs(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(5)
    sport = syslog.getsockname()[1]
    p1, p2 = free_port(), free_port()
    own = tmp_path / "logs" / "p2.log"
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        block = (
            f"auth_http {auth.url};\n"
            f"server {{ listen 127.0.0.1:{p1}; protocol imap; }}\n"
            f"server {{ listen 127.0.0.1:{p2}; protocol imap;\n"
            f"  error_log {own} info;\n"
            f"  error_log syslog:server=127.0.0.1:{sport},facility=mail,tag=mf info; }}\n"
        )
        with Mailfront(tmp_path, block, [p1, p2], level="notice") as mf:
            for port in (p1, p2):
                with imaplib.IMAP4("127.0.0.1", port) as m:
                    m.login("alice", DEMO_USERS["alice"])
                    m.logout()
            text = mf.log()
            # the main log is at notice: no info lines of either server
            assert "client logged in" not in text
            lines = Mailfront.wait_file(own, "proxied session done")
            assert all(LINE.match(ln) for ln in lines.splitlines())
            m0 = LINE.match(lines.splitlines()[0])
            assert m0 is not None and m0.group(1) == "info"
            assert "client 127.0.0.1:" in lines and f"connected to 127.0.0.1:{p2}" in lines
            assert f"127.0.0.1:{p1}" not in lines
            assert DEMO_USERS["alice"] not in lines
            got = b""
            while b"proxied session done" not in got:
                got += syslog.recv(4096) + b"\n"
            first = got.split(b"\n")[0].decode()
            # <facility mail (2) * 8 + info (6)>Mmm dd hh:mm:ss host mf: <nginx line>
            assert re.match(r"^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ mf: ", first), first
            assert LINE.match(first.split(" mf: ", 1)[1])
    syslog.close()
