"""Load generator of the benchmark (uvloop, callback-driven clients).

One process per phase, started by bench.py on the auxiliary CPU.  It talks to
the harness over stdin/stdout, one JSON line each way:

    generator  READY {...}    once set up (sessions logged in, warm-up done)
    harness    GO             the harness has read the proxy's CPU clock
    generator  RESULT {...}   and exits

``hold`` (memory phase) instead reads ``OPEN K`` (answers ``OPENED {...}``)
and ``CLOSE`` (answers ``RESULT {...}``).  ``--no-barrier`` skips GO, for use
by hand, e.g. ``loadgen.py login --port 25143 -d 2 --no-barrier``.

Phases
  login     -c closed-loop sessions for -d seconds; each session is
            imap: greeting, ``a1 LOGIN user pass``, tagged OK, ``a2 LOGOUT``,
                  tagged OK, then the server closes
            (``--tls full``: each session starts with a full TLSv1.3
            handshake; ``--tls resumed``: each slot first runs one untimed
            session with a full handshake, keeps its session ticket and offers
            the newest one on every later connection)
            pop3: greeting, USER, PASS, QUIT, close
            smtp: greeting, EHLO, AUTH PLAIN (initial response), MAIL, RCPT,
                  DATA, a 4-line message, QUIT, close
  download  one logged-in IMAP session (TLSv1.3 with ``--tls full``): a
            --warmup-mb FETCH (untimed), then ``FETCH 1 BODY[]<0.N>`` of --mb
            MiB, then LOGOUT
  latency   one logged-in IMAP session: 200 NOOPs (untimed), then --count
            sequential NOOPs; RTT percentiles in microseconds
  hold      opens logged-in IMAP sessions, --concurrency logins in flight,
            and keeps them open
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

perf = time.perf_counter

# A session script is a tuple of steps (kind, prefix, reply):
#   LINE  the next line must start with prefix
#   TAG   lines not starting with prefix (an IMAP tag and a space) are skipped;
#         the tagged line must continue with "OK"
#   SMTP  "ddd-" continuation lines are skipped; the last must start with prefix
# once a step matched, reply (bytes, or None) is written.  After the last step
# a login session waits for the server to close; a held session stays open.
LINE, TAG, SMTP = 0, 1, 2
Step = tuple[int, bytes, bytes | None]

USER = b"bench@bench.test"
PASSWORD = b"secret"
SMTP_MESSAGE = (
    b"From: <a@bench.test>\r\nTo: <b@bench.test>\r\nSubject: bench\r\n\r\n"
    b"hello from the benchmark\r\n.\r\n"
)


def login_steps(proto: str, user: bytes = USER, password: bytes = PASSWORD) -> list[Step]:
    """Steps up to and including the proxy's answer to the login."""
    if proto == "imap":
        return [
            (LINE, b"* OK", b"a1 LOGIN " + user + b" " + password + b"\r\n"),
            (TAG, b"a1 ", None),
        ]
    if proto == "pop3":
        return [
            (LINE, b"+OK", b"USER " + user + b"\r\n"),
            (LINE, b"+OK", b"PASS " + password + b"\r\n"),
            (LINE, b"+OK", None),
        ]
    if proto == "smtp":
        plain = base64.b64encode(b"\0" + user + b"\0" + password)
        return [
            (SMTP, b"220", b"EHLO client.bench.test\r\n"),
            (SMTP, b"250", b"AUTH PLAIN " + plain + b"\r\n"),
            (SMTP, b"235", None),
        ]
    raise ValueError(proto)


def session_steps(proto: str) -> tuple[Step, ...]:
    """A whole login session: login, then the protocol's way out."""
    steps = login_steps(proto)
    kind, prefix, _ = steps[-1]
    if proto == "imap":
        rest: list[Step] = [(kind, prefix, b"a2 LOGOUT\r\n"), (TAG, b"a2 ", None)]
    elif proto == "pop3":
        rest = [(kind, prefix, b"QUIT\r\n"), (LINE, b"+OK", None)]
    else:
        rest = [
            (kind, prefix, b"MAIL FROM:<a@bench.test>\r\n"),
            (SMTP, b"250", b"RCPT TO:<b@bench.test>\r\n"),
            (SMTP, b"250", b"DATA\r\n"),
            (SMTP, b"354", SMTP_MESSAGE),
            (SMTP, b"250", b"QUIT\r\n"),
            (SMTP, b"221", None),
        ]
    return (*steps[:-1], *rest)


def step_matches(kind: int, prefix: bytes, line: bytes) -> bool | None:
    """True: the step is done; None: skip the line; False: unexpected reply."""
    if kind == TAG:
        if not line.startswith(prefix):
            return None
        return line[len(prefix) : len(prefix) + 2] == b"OK"
    if kind == SMTP and len(line) > 3 and line[3:4] == b"-":
        return None
    return line.startswith(prefix)


TLS_SERVER_NAME = "mail.bench.test"  # the certificate's name (mailbench.make_cert)


class SlotContext(ssl.SSLContext):
    """A TLSv1.3 client context that offers ``session`` on its next connection.

    The event loop wraps its TLS connections with ``wrap_bio`` and no session
    argument, so the session to resume rides on the context: one context per
    closed-loop slot, and each slot keeps its own newest session (Python only
    resumes a session on the context that made it).
    """

    session: ssl.SSLSession | None = None
    resume = False  # keep the newest session of each connection

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(
            incoming, outgoing, server_side, server_hostname, session or self.session
        )


def client_context(cafile: str | None, resume: bool = False) -> SlotContext:
    """TLSv1.3 only; verifies the server against cafile (the bench's own certificate)."""
    ctx = SlotContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if cafile:
        ctx.load_verify_locations(cafile)
    else:  # by hand, against a server whose certificate is not at hand
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.resume = resume
    return ctx


class TlsStats:
    """What the TLS sessions of a phase negotiated."""

    def __init__(self) -> None:
        self.full = 0
        self.reused = 0
        self.versions: dict[str, int] = {}
        self.ciphers: dict[str, int] = {}
        self.peer_sha256 = ""

    def add(self, obj: ssl.SSLObject) -> None:
        if obj.session_reused:
            self.reused += 1
        else:
            self.full += 1
        v = obj.version() or "?"
        self.versions[v] = self.versions.get(v, 0) + 1
        c = obj.cipher()
        name = c[0] if c else "?"
        self.ciphers[name] = self.ciphers.get(name, 0) + 1
        if not self.peer_sha256:
            der = obj.getpeercert(binary_form=True)
            if der:
                self.peer_sha256 = hashlib.sha256(der).hexdigest()

    def result(self) -> dict[str, Any]:
        n = self.full + self.reused
        return {
            "tls_full": self.full,
            "tls_reused": self.reused,
            "tls_reuse_fraction": self.reused / n if n else None,
            "tls_versions": self.versions,
            "tls_ciphers": self.ciphers,
            "tls_peer_sha256": self.peer_sha256,
        }


def error_kind(e: BaseException) -> str:
    """A short key for counting failed sessions: the text, or the type when it has none."""
    return (str(e) or type(e).__name__)[:100]


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (index round(p/100 * (n-1)) of the sorted values)."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100.0 * (len(s) - 1))))]


class Script(asyncio.Protocol):
    """One session driven by callbacks: cheap enough for thousands per second."""

    __slots__ = ("buf", "err", "fut", "hold", "i", "steps", "t")

    def __init__(self, steps: tuple[Step, ...], fut: asyncio.Future[Any], hold: bool = False):
        self.steps = steps
        self.fut = fut
        self.hold = hold
        self.i = 0
        self.buf = b""
        self.t: Any = None
        self.err = ""

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        pos = 0
        steps = self.steps
        while True:
            j = data.find(b"\r\n", pos)
            if j < 0:
                break
            line = data[pos:j]
            pos = j + 2
            if self.i >= len(steps):
                continue
            kind, prefix, reply = steps[self.i]
            ok = step_matches(kind, prefix, line)
            if ok is None:
                continue
            if not ok:
                self.err = f"unexpected reply {line[:80]!r} at step {self.i}"
                if not self.fut.done():
                    self.fut.set_exception(RuntimeError(self.err))
                self.t.abort()
                return
            self.i += 1
            if reply is not None:
                self.t.write(reply)
            if self.hold and self.i == len(steps) and not self.fut.done():
                self.fut.set_result(self)
        self.buf = data[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut.done():
            return
        if self.i == len(self.steps) and not self.hold:
            self.fut.set_result(self)
        else:
            msg = self.err or f"connection closed at step {self.i} ({exc})"
            self.fut.set_exception(RuntimeError(msg))


class TlsScript(Script):
    """A Script over TLS: counts the handshake kinds and keeps the slot's newest session.

    The session is taken once the greeting has arrived: a TLSv1.3 server sends
    its tickets right after the handshake, so they have been read by then.
    """

    __slots__ = ("ctx", "obj", "stats")

    def __init__(
        self, steps: tuple[Step, ...], fut: asyncio.Future[Any], ctx: SlotContext, stats: TlsStats
    ) -> None:
        super().__init__(steps, fut)
        self.ctx = ctx
        self.stats = stats
        self.obj: ssl.SSLObject | None = None

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.obj = transport.get_extra_info("ssl_object")
        if self.obj is not None:
            self.stats.add(self.obj)

    def data_received(self, data: bytes) -> None:
        before = self.i
        super().data_received(data)
        if before == 0 and self.i > 0 and self.ctx.resume and self.obj is not None:
            self.ctx.session = self.obj.session


class Bulk(asyncio.BufferedProtocol):
    """A coroutine-driven IMAP connection that discards literals in place."""

    def __init__(self) -> None:
        self.mv = memoryview(bytearray(1 << 20))
        self.t: Any = None
        self.lines: deque[bytes] = deque()
        self.partial = b""
        self.skip = 0  # literal bytes still to discard
        self.skipped = 0
        self.waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_line: Callable[[bytes], None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.mv

    def buffer_updated(self, nbytes: int) -> None:
        start = 0
        if self.skip:
            start = min(self.skip, nbytes)
            self.skip -= start
            self.skipped += start
            if start == nbytes:
                return
        data = self.partial + bytes(self.mv[start:nbytes])
        pos = 0
        while True:
            j = data.find(b"\r\n", pos)
            if j < 0:
                break
            line = data[pos:j]
            pos = j + 2
            if self.on_line is not None:
                self.on_line(line)
                continue
            self.lines.append(line)
            if line.endswith(b"}") and b"{" in line:  # an IMAP literal follows
                n = int(line[line.rindex(b"{") + 1 : -1])
                k = min(n, len(data) - pos)
                pos += k
                self.skipped += k
                self.skip = n - k
        self.partial = data[pos:]
        if self.waiter is not None and self.lines and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def readline(self) -> bytes:
        while not self.lines:
            if self.closed.done():
                raise ConnectionError("connection closed")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.lines.popleft()

    async def run(self, steps: list[Step] | tuple[Step, ...]) -> None:
        for kind, prefix, reply in steps:
            while True:
                line = await self.readline()
                ok = step_matches(kind, prefix, line)
                if ok is None:
                    continue
                if not ok:
                    raise RuntimeError(f"unexpected reply {line[:80]!r}")
                break
            if reply is not None:
                self.t.write(reply)

    async def fetch(self, tag: bytes, nbytes: int) -> int:
        """FETCH nbytes and discard them; returns the literal bytes received."""
        self.skipped = 0
        self.t.write(tag + b" FETCH 1 BODY[]<0.%d>\r\n" % nbytes)
        await self.run([(LINE, b"* 1 FETCH", None), (TAG, tag + b" ", None)])
        return self.skipped

    def noops(self, count: int) -> asyncio.Future[list[float]]:
        """count sequential NOOPs, driven from the line callback."""
        fut: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        rtts: list[float] = []
        state = {"n": 1, "t0": 0.0}

        def on_line(line: bytes) -> None:
            if not line.startswith(b"n%d " % state["n"]):
                return
            now = perf()
            rtts.append(now - state["t0"])
            if len(rtts) >= count:
                self.on_line = None
                fut.set_result(rtts)
                return
            state["n"] += 1
            state["t0"] = perf()
            self.t.write(b"n%d NOOP\r\n" % state["n"])

        self.on_line = on_line
        state["t0"] = perf()
        self.t.write(b"n1 NOOP\r\n")
        return fut


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def emit(tag: str, obj: dict[str, Any]) -> None:
    sys.stdout.write(tag + " " + json.dumps(obj) + "\n")
    sys.stdout.flush()


async def barrier(args: argparse.Namespace, reader: asyncio.StreamReader) -> None:
    emit("READY", {})
    if not args.no_barrier and (await reader.readline()).strip() != b"GO":
        raise SystemExit(3)


def slot_contexts(args: argparse.Namespace) -> list[SlotContext | None]:
    """One client context per slot with --tls, none without."""
    if not args.tls:
        return [None] * args.concurrency
    resume = args.tls == "resumed"
    return [client_context(args.cafile, resume) for _ in range(args.concurrency)]


async def prime(
    contexts: list[SlotContext | None],
    session: Callable[[SlotContext | None], Awaitable[None]],
    attempts: int = 5,
) -> None:
    """One completed session per slot (each slot's context then holds a ticket)."""
    for ctx in contexts:
        assert ctx is not None
        ctx.session = None
    todo = list(contexts)
    for _ in range(attempts):
        done = await asyncio.gather(*(session(ctx) for ctx in todo), return_exceptions=True)
        failed = [x for x in done if isinstance(x, BaseException)]
        todo = [c for c, x in zip(todo, done, strict=True) if isinstance(x, BaseException)]
        todo += [c for c in contexts if c is not None and c.session is None and c not in todo]
        if not todo:
            return
        await asyncio.sleep(0.05)
    why = error_kind(failed[0]) if failed else "no session ticket"
    raise SystemExit(f"priming the TLS sessions failed for {len(todo)} slots: {why}")


async def login_phase(args: argparse.Namespace, reader: asyncio.StreamReader) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    steps = session_steps(args.proto)
    ok = 0
    errors: dict[str, int] = {}
    lat: list[float] = []
    stop = [0.0]
    contexts = slot_contexts(args)
    stats = TlsStats()
    tls_kw: dict[str, Any] = {"server_hostname": TLS_SERVER_NAME} if args.tls else {}

    def factory(fut: asyncio.Future[Any], ctx: SlotContext | None) -> Script:
        if ctx is None:
            return Script(steps, fut)
        return TlsScript(steps, fut, ctx, stats)

    async def session(ctx: SlotContext | None) -> None:
        fut: asyncio.Future[Any] = loop.create_future()
        await loop.create_connection(
            partial(factory, fut, ctx), args.host, args.port, ssl=ctx, **tls_kw
        )
        await fut

    async def slot(ctx: SlotContext | None) -> None:
        nonlocal ok
        while perf() < stop[0]:
            t0 = perf()
            try:
                await session(ctx)
            except (OSError, RuntimeError) as e:
                k = error_kind(e)
                errors[k] = errors.get(k, 0) + 1
                await asyncio.sleep(0.01)
                continue
            ok += 1
            lat.append(perf() - t0)

    if args.tls == "resumed":  # untimed: one full handshake per slot gets its first ticket
        await prime(contexts, session)
        stats = TlsStats()
    await barrier(args, reader)
    c0, t0 = cpu_self(), perf()
    stop[0] = t0 + args.duration
    tasks = [loop.create_task(slot(ctx)) for ctx in contexts]
    _, pending = await asyncio.wait(tasks, timeout=args.duration + 10)
    for task in pending:
        task.cancel()
    if pending:
        errors["session still running at the end"] = len(pending)
    elapsed = perf() - t0
    res = {
        "ok": ok,
        "err": sum(errors.values()),
        "errors": errors,
        "elapsed": elapsed,
        "gen_cpu": cpu_self() - c0,
        "lat_p50_ms": (pct(lat, 50) or 0.0) * 1e3,
        "lat_p99_ms": (pct(lat, 99) or 0.0) * 1e3,
        "lat_ms": [round(x * 1e3, 3) for x in lat] if args.lat_samples else [],
    }
    if args.tls:
        res.update(stats.result())
    return res


async def logged_in(args: argparse.Namespace, stats: TlsStats | None = None) -> Bulk:
    loop = asyncio.get_running_loop()
    kw: dict[str, Any] = {}
    if getattr(args, "tls", None):
        kw = {"ssl": client_context(args.cafile), "server_hostname": TLS_SERVER_NAME}
    t, conn = await loop.create_connection(Bulk, args.host, args.port, **kw)
    obj = t.get_extra_info("ssl_object")
    if stats is not None and obj is not None:
        stats.add(obj)
    await conn.run(login_steps("imap"))
    return conn


async def logout(conn: Bulk) -> None:
    conn.t.write(b"z9 LOGOUT\r\n")
    try:
        await asyncio.wait_for(conn.closed, 10)
    except TimeoutError:
        conn.t.abort()


async def download_phase(args: argparse.Namespace, reader: asyncio.StreamReader) -> dict[str, Any]:
    nbytes = args.mb << 20
    stats = TlsStats()
    conn = await logged_in(args, stats)
    if args.warmup_mb:  # the same path as the timed transfer: grows the socket buffers
        await conn.fetch(b"w1", args.warmup_mb << 20)
    await barrier(args, reader)
    c0, t0 = cpu_self(), perf()
    got = await conn.fetch(b"a3", nbytes)
    elapsed = perf() - t0
    gen_cpu = cpu_self() - c0
    await logout(conn)
    res = {
        "bytes": got,
        "elapsed": elapsed,
        "gen_cpu": gen_cpu,
        "ok": int(got == nbytes),
        "err": int(got != nbytes),
    }
    if args.tls:
        res.update(stats.result())
    return res


async def latency_phase(args: argparse.Namespace, reader: asyncio.StreamReader) -> dict[str, Any]:
    conn = await logged_in(args)
    await conn.noops(min(200, args.count))
    await barrier(args, reader)
    c0, t0 = cpu_self(), perf()
    rtts = await asyncio.wait_for(conn.noops(args.count), 120)
    elapsed = perf() - t0
    await logout(conn)
    us = [x * 1e6 for x in rtts]
    return {
        "count": len(us),
        "elapsed": elapsed,
        "gen_cpu": cpu_self() - c0,
        "p50_us": pct(us, 50),
        "p90_us": pct(us, 90),
        "p99_us": pct(us, 99),
        "max_us": max(us),
        "mean_us": sum(us) / len(us),
        "ok": len(us),
        "err": 0,
    }


async def hold_phase(args: argparse.Namespace, reader: asyncio.StreamReader) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    steps = tuple(login_steps("imap"))
    held: list[Script] = []
    failed = [0]

    async def one(sem: asyncio.Semaphore) -> None:
        async with sem:
            fut: asyncio.Future[Any] = loop.create_future()
            try:
                await loop.create_connection(
                    lambda: Script(steps, fut, hold=True), args.host, args.port
                )
                held.append(await asyncio.wait_for(fut, 30))
            except (OSError, RuntimeError, TimeoutError):
                failed[0] += 1

    emit("READY", {})
    while True:
        words = (await reader.readline()).decode().split()
        if not words or words[0] == "CLOSE":
            break
        if words[0] == "OPEN":
            need = max(0, int(words[1]) - len(held))
            sem = asyncio.Semaphore(args.concurrency)
            c0, t0 = cpu_self(), perf()
            await asyncio.gather(*(one(sem) for _ in range(need)))
            emit(
                "OPENED",
                {
                    "held": len(held),
                    "err": failed[0],
                    "opened": need,
                    "elapsed": perf() - t0,
                    "gen_cpu": cpu_self() - c0,
                },
            )
    for s in held:
        s.t.close()
    await asyncio.sleep(0.2)
    return {"held": len(held), "err": failed[0], "ok": len(held)}


PHASES = {
    "login": login_phase,
    "download": download_phase,
    "latency": latency_phase,
    "hold": hold_phase,
}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    if args.phase == "hold" or not args.no_barrier:  # by hand, stdin may be a terminal
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return await PHASES[args.phase](args, reader)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="load generator of mailfront's bench/")
    ap.add_argument("phase", choices=sorted(PHASES))
    ap.add_argument("--proto", default="imap", choices=["imap", "pop3", "smtp"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-c", "--concurrency", type=int, default=50)
    ap.add_argument("-d", "--duration", type=float, default=3.0)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--warmup-mb", type=int, default=16)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument(
        "--tls",
        choices=["full", "resumed"],
        help="TLSv1.3 from the first byte (login: full or resumed handshakes; download: full)",
    )
    ap.add_argument("--cafile", help="CA certificate that verifies the server (TLS)")
    ap.add_argument("--lat-samples", action="store_true", help="login: every latency in RESULT")
    ap.add_argument("--timeout", type=float, default=300.0, help="hard limit (s)")
    ap.add_argument("--cpu", type=int, help="pin to this CPU")
    ap.add_argument("--no-barrier", action="store_true")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGALRM, lambda *_: os._exit(124))
    signal.alarm(max(1, int(args.timeout)))
    loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        res = loop.run_until_complete(amain(args))
    finally:
        loop.close()
    res["phase"] = args.phase
    emit("RESULT", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
