"""Nothing a client sends can crash mailfront: random and hostile input on every protocol.

Random bytes, random command lines, huge literals, bytes after the auth command
and abrupt closes are sent to IMAP, POP3 and SMTP servers of one mailfront
process (seeded, so a failure repeats); afterwards the process is alive, its
output holds no traceback, and a normal login still works.
"""

from __future__ import annotations

import imaplib
import random
import socket
from pathlib import Path

from mailfront.devtools.dovecot import DEMO_USERS
from support.authserver import AuthServer, route_to
from support.net import close_all, connect
from support.proxy import Mailfront, free_port

WORDS = [
    b"LOGIN",
    b"AUTHENTICATE",
    b"PLAIN",
    b"LOGIN",
    b"CRAM-MD5",
    b"EXTERNAL",
    b"CAPABILITY",
    b"NOOP",
    b"LOGOUT",
    b"STARTTLS",
    b"USER",
    b"PASS",
    b"APOP",
    b"AUTH",
    b"CAPA",
    b"STLS",
    b"QUIT",
    b"EHLO",
    b"HELO",
    b"MAIL",
    b"FROM:<a@b>",
    b"RCPT",
    b"TO:<c@d>",
    b"RSET",
    b"DATA",
    b"{5}",
    b"{5+}",
    b"{99999999999999999999}",
    b'"quoted',
    b'"\\"',
    b"=",
    b"*",
    b"AGFsaWNl",
    b"\x00",
    b"\xff\xfe",
    b"a1",
    b"*",
    b"+",
]


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 600))
    if kind == 1:
        return b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6))) + b"\r\n"
    if kind == 2:
        return b"a1 LOGIN {" + str(rng.randrange(0, 10_000)).encode() + b"}\r\n" + b"x" * 50
    return b"".join(
        b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 4)))
        + rng.choice([b"\r\n", b"\n"])
        for _ in range(rng.randrange(1, 20))
    )


def test_hostile_input_on_every_protocol(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261124)
    ports = {"imap": free_port(), "pop3": free_port(), "smtp": free_port()}
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        block = (
            f"auth_http {auth.url};\ntimeout 2s;\nsmtp_auth plain login cram-md5 none;\n"
            + "".join(
                f"server {{ listen 127.0.0.1:{port}; protocol {proto}; }}\n"
                for proto, port in ports.items()
            )
        )
        with Mailfront(tmp_path, block, list(ports.values())) as mf:
            for _ in range(150):
                port = rng.choice(list(ports.values()))
                s = connect(port, timeout=2)
                try:
                    s.recv(512)
                    for _ in range(rng.randrange(1, 4)):
                        s.sendall(garbage(rng))
                    if rng.random() < 0.5:
                        s.recv(4096)
                    if rng.random() < 0.3:  # an abrupt close: RST
                        s.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                except OSError:
                    pass
                close_all()
            assert mf.proc is not None and mf.proc.poll() is None
            with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=10) as m:
                assert m.login("alice", DEMO_USERS["alice"])[0] == "OK"
            out = mf.output()
            assert "Traceback" not in out and "Fatal error" not in out, out[-3000:]
