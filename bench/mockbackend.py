"""Mock IMAP/POP3/SMTP backend (and optional auth_http responder) for the benchmark.

Accepts every login.  uvloop Protocols, so that it costs little on the
auxiliary CPU.  Runs as its own process:

    mockbackend.py --imap 127.0.0.1:25143 --pop3 ... --smtp ... [--auth ...]

prints ``READY`` once every listener is bound and exits on SIGTERM.

IMAP  LOGIN with atoms, quoted strings or ``{n}`` literals (a synchronising
      literal gets a ``+ OK`` continuation, as nginx expects), NOOP, LOGOUT,
      CAPABILITY, ``FETCH 1 BODY[]<0.N>`` (streams an N-byte literal with flow
      control), anything else ``tag OK``.
POP3  USER, PASS, RETR n (n KiB of 1 KiB lines), QUIT; others +OK.
SMTP  EHLO/HELO, XCLIENT, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA (swallowed up to
      CRLF.CRLF), RSET, NOOP, QUIT.
AUTH  (only with --auth) a minimal HTTP/1.0 auth_http responder: answers every
      request with Auth-Status OK, Auth-Server 127.0.0.1 and the backend port
      of the Auth-Protocol header, then closes, like the nginx http{} one.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import signal
import sys
from typing import Any, ClassVar

try:
    import uvloop
except ImportError:  # pragma: no cover - works without, slower
    uvloop = None  # type: ignore[assignment]

LINE1K = b"y" * 1022 + b"\r\n"  # no line starts with "."; any k*1024 prefix ends in CRLF
CHUNK = LINE1K * 1024  # 1 MiB
CHUNK_MV = memoryview(CHUNK)

PARTIAL_RE = re.compile(rb"<(\d+)\.(\d+)>")
LITERAL_RE = re.compile(rb"\{(\d+)(\+?)\}$")

IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] mock backend ready\r\n"
IMAP_CAPABILITY = b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n"
POP3_GREETING = b"+OK mock backend ready\r\n"
SMTP_GREETING = b"220 mock.backend ESMTP\r\n"
SMTP_EHLO = (
    b"250-mock.backend\r\n250-PIPELINING\r\n250-XCLIENT ADDR LOGIN NAME HELO PROTO\r\n"
    b"250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
)


class LineServer(asyncio.Protocol):
    """Line-oriented server with literal skipping and a flow-controlled streamer."""

    greeting = b""

    def __init__(self) -> None:
        self.t: Any = None
        self.buf = b""
        self.skip = 0  # bytes of a client literal still to swallow
        self.left = 0  # bytes still to stream
        self.trailer = b""
        self.paused = False
        self.held = b""  # input that arrived while streaming

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.write(self.greeting)

    def data_received(self, data: bytes) -> None:
        if self.left or self.trailer:
            self.held += data
            return
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos, n = 0, len(data)
        while pos < n:
            if self.skip:
                k = min(self.skip, n - pos)
                self.skip -= k
                pos += k
                continue
            i = data.find(b"\r\n", pos)
            if i < 0:
                self.buf = data[pos:]
                return
            line = data[pos:i]
            pos = i + 2
            self.line(line)
            if self.left or self.trailer:
                self.held = data[pos:]
                return

    def line(self, line: bytes) -> None:
        raise NotImplementedError

    def stream(self, head: bytes, n: int, trailer: bytes) -> None:
        self.t.set_write_buffer_limits(high=4 << 20, low=1 << 20)
        self.t.write(head)
        self.left = n
        self.trailer = trailer
        self.pump()

    def pump(self) -> None:
        while self.left and not self.paused:
            k = min(self.left, len(CHUNK))
            self.t.write(CHUNK_MV[:k])
            self.left -= k
        if not self.left and self.trailer:
            self.t.write(self.trailer)
            self.trailer = b""
            if self.held:
                data, self.held = self.held, b""
                self.data_received(data)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.left or self.trailer:
            self.pump()


class ImapServer(LineServer):
    greeting = IMAP_GREETING

    def __init__(self) -> None:
        super().__init__()
        self.partial = b""  # command text before a literal

    def line(self, line: bytes) -> None:
        m = LITERAL_RE.search(line) if line.endswith(b"}") else None
        if m:  # a literal follows: swallow it, the command continues after it
            self.partial += line[: m.start()] + b"<literal>"
            self.skip = int(m.group(1))
            if not m.group(2):
                self.t.write(b"+ OK\r\n")
            return
        if self.partial:
            line, self.partial = self.partial + line, b""
        parts = line.split(b" ", 2)
        tag = parts[0]
        cmd = parts[1].upper() if len(parts) > 1 else b""
        t = self.t
        if cmd == b"NOOP":
            t.write(tag + b" OK NOOP completed\r\n")
        elif cmd == b"LOGIN":
            t.write(tag + b" OK LOGIN completed\r\n")
        elif cmd == b"LOGOUT":
            t.write(b"* BYE logging out\r\n" + tag + b" OK LOGOUT completed\r\n")
            t.close()
        elif cmd == b"FETCH":
            m = PARTIAL_RE.search(line)
            size = int(m.group(2)) if m else 4096
            off = b"<%s>" % m.group(1) if m else b""
            self.stream(
                b"* 1 FETCH (BODY[]%s {%d}\r\n" % (off, size),
                size,
                b")\r\n" + tag + b" OK FETCH completed\r\n",
            )
        elif cmd == b"CAPABILITY":
            t.write(IMAP_CAPABILITY + tag + b" OK CAPABILITY completed\r\n")
        else:
            t.write(tag + b" OK done\r\n")


class Pop3Server(LineServer):
    greeting = POP3_GREETING

    def line(self, line: bytes) -> None:
        parts = line.split(b" ")
        cmd = parts[0].upper()
        t = self.t
        if cmd == b"PASS":
            t.write(b"+OK logged in\r\n")
        elif cmd == b"QUIT":
            t.write(b"+OK bye\r\n")
            t.close()
        elif cmd == b"RETR":
            try:
                size = max(1, int(parts[1])) * 1024
            except (IndexError, ValueError):
                size = 4096
            self.stream(b"+OK %d octets\r\n" % size, size, b".\r\n")
        else:
            t.write(b"+OK\r\n")


class SmtpServer(LineServer):
    greeting = SMTP_GREETING

    def __init__(self) -> None:
        super().__init__()
        self.in_data = False
        self.tail = b""  # last bytes of message data, to find CRLF.CRLF across reads
        self.auth_lines = 0  # AUTH continuation lines still expected

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data, self.buf = self.buf + data, b""
        pos, n = 0, len(data)
        while pos < n:
            if self.in_data:
                joined = self.tail + data[pos:]
                i = joined.find(b"\r\n.\r\n")
                if i < 0:
                    self.tail = joined[-4:]
                    return
                self.in_data = False
                self.t.write(b"250 2.0.0 Ok: queued\r\n")
                data, pos, n = joined, i + 5, len(joined)
                continue
            i = data.find(b"\r\n", pos)
            if i < 0:
                self.buf = data[pos:]
                return
            line = data[pos:i]
            pos = i + 2
            self.line(line)

    def line(self, line: bytes) -> None:
        t = self.t
        if self.auth_lines:
            self.auth_lines -= 1
            t.write(b"334 UGFzc3dvcmQ6\r\n" if self.auth_lines else b"235 2.7.0 Authenticated\r\n")
            return
        verb = line[:4].upper()
        if verb == b"EHLO":
            t.write(SMTP_EHLO)
        elif verb == b"HELO":
            t.write(b"250 mock.backend\r\n")
        elif verb == b"XCLI":
            t.write(SMTP_GREETING)
        elif verb == b"AUTH":
            parts = line.split(b" ")
            mech = parts[1].upper() if len(parts) > 1 else b""
            if mech == b"LOGIN":
                self.auth_lines = 1 if len(parts) > 2 else 2
                t.write(b"334 UGFzc3dvcmQ6\r\n" if len(parts) > 2 else b"334 VXNlcm5hbWU6\r\n")
            elif len(parts) > 2:
                t.write(b"235 2.7.0 Authenticated\r\n")
            else:
                self.auth_lines = 1
                t.write(b"334 \r\n")
        elif verb == b"DATA":
            t.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            self.in_data = True
            self.tail = b"\r\n"  # the terminator may follow the DATA line directly
        elif verb == b"QUIT":
            t.write(b"221 2.0.0 Bye\r\n")
            t.close()
        else:
            t.write(b"250 2.0.0 Ok\r\n")


class AuthHttp(asyncio.Protocol):
    """auth_http responder: one HTTP/1.0 request per connection, 204 + Auth-* headers."""

    ports: ClassVar[dict[bytes, int]] = {}

    def __init__(self) -> None:
        self.t: Any = None
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self.t.close()
            return
        proto = b"imap"
        for h in self.buf[:end].split(b"\r\n"):
            if h[:14].lower() == b"auth-protocol:":
                proto = h[14:].strip().lower()
        port = self.ports.get(proto, self.ports.get(b"imap", 0))
        self.t.write(
            b"HTTP/1.1 204 No Content\r\nServer: mockbackend\r\nConnection: close\r\n"
            b"Auth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: %d\r\n\r\n" % port
        )
        self.t.close()


def hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    ports: dict[bytes, int] = {}
    for name, proto, addr in (
        (b"imap", ImapServer, args.imap),
        (b"pop3", Pop3Server, args.pop3),
        (b"smtp", SmtpServer, args.smtp),
    ):
        if addr:
            host, port = hostport(addr)
            ports[name] = port
            servers.append(
                await loop.create_server(proto, host, port, backlog=4096, reuse_address=True)
            )
    if args.auth:
        AuthHttp.ports = ports
        host, port = hostport(args.auth)
        servers.append(
            await loop.create_server(AuthHttp, host, port, backlog=4096, reuse_address=True)
        )
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    print("READY", flush=True)
    await stop
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mock IMAP/POP3/SMTP backend for bench/")
    ap.add_argument("--imap", help="host:port")
    ap.add_argument("--pop3", help="host:port")
    ap.add_argument("--smtp", help="host:port")
    ap.add_argument("--auth", help="host:port of a Python auth_http responder")
    args = ap.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
