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
            pop3: greeting, USER, PASS, QUIT, close
            smtp: greeting, EHLO, AUTH PLAIN (initial response), MAIL, RCPT,
                  DATA, a 4-line message, QUIT, close
  download  one logged-in IMAP session: a --warmup-mb FETCH (untimed), then
            ``FETCH 1 BODY[]<0.N>`` of --mb MiB, then LOGOUT
  latency   one logged-in IMAP session: 200 NOOPs (untimed), then --count
            sequential NOOPs; RTT percentiles in microseconds
  hold      opens logged-in IMAP sessions, --concurrency logins in flight,
            and keeps them open
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
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


async def login_phase(args: argparse.Namespace, reader: asyncio.StreamReader) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    steps = session_steps(args.proto)
    ok = 0
    errors: dict[str, int] = {}
    lat: list[float] = []
    stop = [0.0]

    async def slot() -> None:
        nonlocal ok
        while perf() < stop[0]:
            fut: asyncio.Future[Any] = loop.create_future()
            t0 = perf()
            try:
                await loop.create_connection(partial(Script, steps, fut), args.host, args.port)
                await fut
            except (OSError, RuntimeError) as e:
                k = str(e)[:100]
                errors[k] = errors.get(k, 0) + 1
                await asyncio.sleep(0.01)
                continue
            ok += 1
            lat.append(perf() - t0)

    await barrier(args, reader)
    c0, t0 = cpu_self(), perf()
    stop[0] = t0 + args.duration
    tasks = [loop.create_task(slot()) for _ in range(args.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=args.duration + 10)
    for task in pending:
        task.cancel()
    if pending:
        errors["session still running at the end"] = len(pending)
    elapsed = perf() - t0
    return {
        "ok": ok,
        "err": sum(errors.values()),
        "errors": errors,
        "elapsed": elapsed,
        "gen_cpu": cpu_self() - c0,
        "lat_p50_ms": (pct(lat, 50) or 0.0) * 1e3,
        "lat_p99_ms": (pct(lat, 99) or 0.0) * 1e3,
    }


async def logged_in(args: argparse.Namespace) -> Bulk:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Bulk, args.host, args.port)
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
    conn = await logged_in(args)
    if args.warmup_mb:  # the same path as the timed transfer: grows the socket buffers
        await conn.fetch(b"w1", args.warmup_mb << 20)
    await barrier(args, reader)
    c0, t0 = cpu_self(), perf()
    got = await conn.fetch(b"a3", nbytes)
    elapsed = perf() - t0
    await logout(conn)
    return {
        "bytes": got,
        "elapsed": elapsed,
        "gen_cpu": cpu_self() - c0,
        "ok": int(got == nbytes),
        "err": int(got != nbytes),
    }


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
