"""Micro benchmark of the pure protocol work of one login (a developer tool, not a test).

For each protocol, one login's sans-IO work, as the session does it:
machine creation, greeting, the client's auth commands, the auth_http
request, the auth_http answer parsed, the backend login through its replies,
and the leftover.  No sockets, no event loop: this is the CPU the protocol
code costs per login, in microseconds.

    .venv/bin/python bench/micro_protocol.py [-n LOGINS] [-r REPEATS] [--profile imap|pop3|smtp]

Prints the best of ``REPEATS`` runs of ``LOGINS`` logins, per protocol.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from mailfront.auth.base import SessionInfo
from mailfront.conf.model import AuthHttpUrl, Listen, Protocol, ServerConf
from mailfront.protocol import auth_http
from mailfront.protocol.imap import ImapMachine, ImapUpstream
from mailfront.protocol.pop3 import Pop3Machine, Pop3Upstream
from mailfront.protocol.smtp import SmtpMachine, SmtpUpstream

AUTH = AuthHttpUrl(host_header="127.0.0.1", addr="127.0.0.1", port=9000, uri="/auth")


def _conf(protocol: Protocol, port: int, **kw: object) -> ServerConf:
    listen = Listen(family="inet", host="127.0.0.1", port=port, addr_text=f"127.0.0.1:{port}")
    return ServerConf(
        file="bench", line=1, listen=(listen,), protocol=protocol, server_name="m",
        auth_http=AUTH, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


IMAP_CONF = _conf(Protocol.IMAP, 16143)
POP3_CONF = _conf(Protocol.POP3, 16110)
SMTP_CONF = _conf(Protocol.SMTP, 16025, xclient=False)

AUTH_OK = (
    b"HTTP/1.1 204 No Content\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 01:55:37 GMT\r\n"
    b"Connection: close\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: %d\r\n\r\n"
)


def _auth(conf: ServerConf, protocol: str, req: object, port: int) -> None:
    info = SessionInfo(protocol, "127.0.0.1")
    auth_http.build_request(conf, info, req, 1)  # type: ignore[arg-type]
    parser = auth_http.ResponseParser()
    parser.feed(AUTH_OK % port)
    parser.result(protocol=protocol, has_passwd=auth_http.holds_password(req))  # type: ignore[arg-type]


def imap_login() -> None:
    conf = IMAP_CONF
    m = ImapMachine(conf, b"")
    m.greeting()
    m.receive(b"a1 LOGIN user pass\r\n")
    m.out.clear()
    req = m.auth
    assert req is not None
    _auth(conf, "imap", req, 21143)
    up = ImapUpstream(conf, req.login, req.passwd, m.tag)
    for data in (b"* OK ready\r\n", b"+ OK\r\n", b"+ OK\r\n", b"a1 OK logged in\r\n"):
        up.receive(data)
        up.to_upstream.clear()
        up.to_client.clear()
    m.leftover()


def pop3_login() -> None:
    conf = POP3_CONF
    m = Pop3Machine(conf, b"")
    m.greeting()
    m.receive(b"USER user\r\n")
    m.out.clear()
    m.receive(b"PASS pass\r\n")
    m.out.clear()
    req = m.auth
    assert req is not None
    _auth(conf, "pop3", req, 21110)
    up = Pop3Upstream(conf, req.login, req.passwd)
    for data in (b"+OK ready\r\n", b"+OK\r\n", b"+OK logged in\r\n"):
        up.receive(data)
        up.to_upstream.clear()
        up.to_client.clear()
    m.leftover()


def smtp_login() -> None:
    conf = SMTP_CONF
    m = SmtpMachine(conf, b"")
    m.greeting()
    m.receive(b"EHLO client.example.org\r\n")
    m.out.clear()
    m.receive(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n")
    m.out.clear()
    req = m.auth
    assert req is not None
    _auth(conf, "smtp", req, 21025)
    up = SmtpUpstream(conf, m, req.login, req.passwd, "127.0.0.1", b"[UNAVAILABLE]")
    for data in (b"220 mx ESMTP\r\n", b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"):
        up.receive(data)
        up.to_upstream.clear()
        up.to_client.clear()
    m.leftover()


LOGINS: dict[str, Callable[[], None]] = {"imap": imap_login, "pop3": pop3_login, "smtp": smtp_login}


def measure(fn: Callable[[], None], n: int, repeats: int) -> float:
    """Best CPU time per call in microseconds."""
    for _ in range(min(n, 1000)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="logins per run")
    ap.add_argument("-r", type=int, default=5, help="runs (the best is kept)")
    ap.add_argument("--profile", choices=sorted(LOGINS), help="cProfile one protocol instead")
    args = ap.parse_args()
    if args.profile:
        fn = LOGINS[args.profile]
        prof = cProfile.Profile()
        prof.runcall(lambda: [fn() for _ in range(args.n)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return
    for name, fn in LOGINS.items():
        print(f"{name}: {measure(fn, args.n, args.r):6.2f} us per login")


if __name__ == "__main__":
    main()
