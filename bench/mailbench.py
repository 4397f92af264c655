"""mailfront's benchmark: nginx's mail proxy and mailfront side by side.

Entry point: ``bench/run`` (see bench/README.md).  Both proxies get the SAME
nginx-style config file and run as one process pinned to the proxy CPU; the
mock backend, the auth_http responder and the load generator run on the aux
CPU.  The proxy's CPU (its process tree's CPU clocks, see procstat.py) is read
just before each phase starts and again once it has drained.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import procstat  # noqa: E402

MiB = 1 << 20
PROXIES = ("nginx", "mailfront")
# The TLS phases run last, so that "proxy RSS before the memory phase" is what it
# was before they existed (TLS leaves the proxies' heaps larger).
PHASES = (
    "imap_login",
    "pop3_login",
    "smtp_login",
    "imap_download",
    "latency",
    "memory",
    "imaps_login",
    "imaps_login_resumed",
    "imaps_download",
)
TLS_PHASES = ("imaps_login", "imaps_login_resumed", "imaps_download")
LOGIN_PHASES = ("imap_login", "pop3_login", "smtp_login", "imaps_login", "imaps_login_resumed")
TLS_NAME = "mail.bench.test"  # the certificate's name; loadgen.TLS_SERVER_NAME
TLS_KEYS = {"ecdsa": "ECDSA P-256", "rsa": "RSA 2048"}
MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
MAX_IDLE_SESSIONS = 8000  # the fd limit here is 20000: 2 fds per session in the proxy

STARTED: list[subprocess.Popen[bytes]] = []  # everything we started, stopped by PID
DEADLINE = [float("inf")]


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ configs
@dataclass(frozen=True)
class Ports:
    base: int

    @property
    def proxy(self) -> dict[str, int]:
        """The proxy's listeners; "imaps" is the implicit-TLS IMAP server."""
        return {
            "imap": self.base + 143,
            "pop3": self.base + 110,
            "smtp": self.base + 25,
            "imaps": self.base + 993,
        }

    @property
    def backend(self) -> dict[str, int]:
        return {"imap": self.base + 1143, "pop3": self.base + 1110, "smtp": self.base + 1025}

    @property
    def auth(self) -> int:
        return self.base + 1080

    def all(self) -> list[int]:
        return [*self.proxy.values(), *self.backend.values(), self.auth]


@dataclass(frozen=True)
class TlsFiles:
    """The server certificate and key given to both proxies (absolute paths)."""

    cert: str
    key: str
    kind: str  # "ecdsa" (P-256) or "rsa" (2048 bits)


def cert_command(kind: str, cert: str, key: str, days: int = 7) -> list[str]:
    """openssl req: a self-signed server certificate for TLS_NAME, made once per run."""
    newkey = {"ecdsa": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
              "rsa": ["-newkey", "rsa:2048"]}[kind]  # fmt: skip
    return [
        "openssl", "req", "-x509", "-new", *newkey, "-nodes", "-sha256",
        "-keyout", key, "-out", cert, "-days", str(days),
        "-subj", f"/CN={TLS_NAME}", "-addext", f"subjectAltName=DNS:{TLS_NAME}",
    ]  # fmt: skip


def make_cert(directory: str, kind: str) -> TlsFiles:
    os.makedirs(directory, exist_ok=True)
    files = TlsFiles(
        os.path.join(directory, f"server-{kind}.crt"),
        os.path.join(directory, f"server-{kind}.key"),
        kind,
    )
    r = subprocess.run(
        cert_command(kind, files.cert, files.key), capture_output=True, text=True, timeout=60
    )
    if r.returncode != 0:
        raise RuntimeError(f"openssl req failed: {r.stderr.strip()}")
    return files


def tls_server_block(port: int, tls: TlsFiles) -> str:
    """The implicit-TLS IMAP server: nginx's defaults (ssl_session_cache none), tickets on.

    ssl_protocols is given because nginx before 1.23.4 leaves TLSv1.3 out by default.
    """
    return f"""    server {{
        listen 127.0.0.1:{port} ssl;
        protocol imap;
        ssl_certificate {tls.cert};
        ssl_certificate_key {tls.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
    }}
"""


def mail_conf(
    ports: Ports,
    nofile: int,
    worker_connections: int,
    extra_mail: Sequence[str] = (),
    xclient: str = "off",
    error_log_level: str = "warn",
    mail_module: str = MAIL_MODULE,
    tls: TlsFiles | None = None,
) -> str:
    """The one config file handed to nginx and to mailfront (the shared bench's template).

    With ``tls`` it also has the implicit-TLS IMAP server of the imaps phases.
    """
    p = ports.proxy
    extra = "".join(f"    {x}\n" for x in extra_mail)
    tls_block = tls_server_block(p["imaps"], tls) if tls else ""
    return f"""# Written by bench/run: the SAME file is given to nginx and to mailfront.
load_module {mail_module};

daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid logs/proxy.pid;
error_log logs/error.log {error_log_level};

events {{
    worker_connections {worker_connections};
}}

mail {{
    server_name mail.bench.test;
    auth_http 127.0.0.1:{ports.auth}/auth;
    proxy on;
    proxy_pass_error_message on;
    xclient {xclient};
    imap_auth plain login;
    pop3_auth plain;
    smtp_auth plain login;
{extra}
    server {{
        listen 127.0.0.1:{p["imap"]};
        protocol imap;
    }}
    server {{
        listen 127.0.0.1:{p["pop3"]};
        protocol pop3;
    }}
    server {{
        listen 127.0.0.1:{p["smtp"]};
        protocol smtp;
    }}
{tls_block}}}
"""


def auth_conf(ports: Ports, workdir: str, nofile: int, worker_connections: int) -> str:
    """nginx http{} auth_http responder: Auth-Status OK, backend port by Auth-Protocol."""
    b = ports.backend
    tmp = "".join(
        f"    {k}_temp_path {workdir}/tmp/{k};\n"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# auth_http responder of bench/run (nginx http{{}}): every login is accepted.
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {workdir}/logs/auth.pid;
error_log {workdir}/logs/auth-error.log warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    server_tokens off;
{tmp}
    map $http_auth_protocol $bench_backend_port {{
        imap    {b["imap"]};
        pop3    {b["pop3"]};
        smtp    {b["smtp"]};
        default {b["imap"]};
    }}

    server {{
        listen 127.0.0.1:{ports.auth} backlog=4096;
        location = /auth {{
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $bench_backend_port;
            return 204;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def worker_connections_for(nofile: int, max_k: int) -> int:
    """As the shared bench: room for 2 fds per held session, bounded by the fd limit."""
    return min(max(32768, 2 * max_k + 4096), nofile)


# ---------------------------------------------------------------- processes
def _preexec(cpu: int, nofile: int) -> Callable[[], None]:
    def fn() -> None:
        # die with the harness even if it is SIGKILLed (PR_SET_PDEATHSIG)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
        os.sched_setaffinity(0, {cpu})
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return fn


def spawn(
    argv: Sequence[str],
    cpu: int,
    nofile: int,
    out: IO[bytes] | int | None,
    stdin: int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=out,
        stderr=subprocess.STDOUT if out is not subprocess.PIPE else None,
        preexec_fn=_preexec(cpu, nofile),
        env=env,
        cwd=HERE,
    )
    STARTED.append(p)
    return p


def stop(p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process and its descendants by PID, SIGKILL after grace seconds."""
    if p in STARTED:
        STARTED.remove(p)
    if p.poll() is not None:
        return
    pids = procstat.process_tree(p.pid)
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if p.poll() is not None and not any(procstat.alive(x) for x in pids[1:]):
            break
        time.sleep(0.05)
    for pid in pids:
        if procstat.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(2)


def stop_all() -> None:
    while STARTED:
        stop(STARTED[-1])


def listening(ports: Iterable[int]) -> bool:
    want = set(ports)
    have = set()
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # LISTEN
                        have.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return want <= have


def wait_listening(ports: Iterable[int], p: subprocess.Popen[bytes], timeout: float) -> bool:
    ports = list(ports)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            return False
        if listening(ports):
            return True
        time.sleep(0.05)
    return False


def port_free(port: int) -> bool:
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Gen:
    """A loadgen.py process on the aux CPU, with time-bounded line I/O."""

    def __init__(self, a: argparse.Namespace, args: list[str], cpu: int | None = None) -> None:
        cpu = a.aux_cpu if cpu is None else cpu
        argv = [a.python_gen, os.path.join(HERE, "loadgen.py"), *args]
        argv += ["--cpu", str(cpu), "--timeout", str(int(a.phase_timeout))]
        self.p = spawn(argv, cpu, a.nofile, subprocess.PIPE, stdin=subprocess.PIPE)
        self.buf = b""

    def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        assert self.p.stdout is not None
        fd = self.p.stdout.fileno()
        while True:
            while b"\n" not in self.buf:
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"load generator timed out waiting for {tag}")
                if select.select([fd], [], [], left)[0]:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise RuntimeError(f"load generator exited (rc={self.p.poll()})")
                    self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            word, _, rest = line.decode().partition(" ")
            if word == tag:
                result: dict[str, Any] = json.loads(rest)
                return result

    def send(self, text: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(text.encode() + b"\n")
        self.p.stdin.flush()

    def finish(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(10)
        stop(self.p)


# ------------------------------------------------------------------- phases
def split_concurrency(c: int, procs: int) -> list[int]:
    """c closed-loop slots over procs generator processes (none left empty)."""
    procs = max(1, min(procs, c))
    return [c // procs + (1 if i < c % procs else 0) for i in range(procs)]


def merge_login_results(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One login RESULT from the RESULTs of several generator processes.

    Counts add up; elapsed is the longest; latency percentiles come from every
    process's samples (``--lat-samples``) when there is more than one.
    """
    if len(parts) == 1:
        return dict(parts[0])
    out: dict[str, Any] = {"ok": 0, "err": 0, "errors": {}, "gen_cpu": 0.0}
    for r in parts:
        out["ok"] += r["ok"]
        out["err"] += r["err"]
        out["gen_cpu"] += r["gen_cpu"]
        for k, v in r["errors"].items():
            out["errors"][k] = out["errors"].get(k, 0) + v
    out["elapsed"] = max(r["elapsed"] for r in parts)
    lat = sorted(x for r in parts for x in r.get("lat_ms", []))
    if lat:
        out["lat_p50_ms"] = lat[min(len(lat) - 1, round(0.50 * (len(lat) - 1)))]
        out["lat_p99_ms"] = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    else:
        out["lat_p50_ms"] = max(r["lat_p50_ms"] for r in parts)
        out["lat_p99_ms"] = max(r["lat_p99_ms"] for r in parts)
    if any("tls_full" in r for r in parts):
        full = sum(r.get("tls_full", 0) for r in parts)
        reused = sum(r.get("tls_reused", 0) for r in parts)
        out["tls_full"], out["tls_reused"] = full, reused
        out["tls_reuse_fraction"] = reused / (full + reused) if full + reused else None
        for key in ("tls_versions", "tls_ciphers"):
            merged: dict[str, int] = {}
            for r in parts:
                for k, v in r.get(key, {}).items():
                    merged[k] = merged.get(k, 0) + v
            out[key] = merged
        peers = [r["tls_peer_sha256"] for r in parts if r.get("tls_peer_sha256")]
        out["tls_peer_sha256"] = peers[0] if peers else ""
    return out


def cert_sha256(path: str) -> str:
    """SHA-256 of the (first) certificate of a PEM file, as the generator reports the peer's."""
    import ssl

    with open(path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def tls_checks(r: dict[str, Any], want_sha256: str, resumed: bool) -> list[str]:
    """What is wrong with a TLS phase's RESULT: version, certificate, handshake kind."""
    bad = []
    versions = r.get("tls_versions", {})
    if set(versions) != {"TLSv1.3"}:
        bad.append(f"TLS versions {versions}, not TLSv1.3 only")
    if want_sha256 and r.get("tls_peer_sha256") != want_sha256:
        bad.append("the proxy did not present the bench's certificate")
    if not resumed and r.get("tls_reused"):
        bad.append(f"{r['tls_reused']} handshakes resumed in a full-handshake phase")
    return bad


class Runner:
    def __init__(self, a: argparse.Namespace, aux_pids: list[int]) -> None:
        self.a = a
        self.aux_pids = aux_pids

    def measured(
        self, proxy: subprocess.Popen[bytes] | None, args: list[str]
    ) -> tuple[dict[str, Any], float, float, float]:
        """Run one generator between two readings of the proxy's CPU.

        Returns (result, proxy cpu s, proxy cpu ticks s, aux CPU utilisation).
        """
        parts, cpu, ticks, aux = self.measured_many(proxy, [args])
        return parts[0], cpu, ticks, aux

    def measured_many(
        self,
        proxy: subprocess.Popen[bytes] | None,
        argss: Sequence[list[str]],
        cpus: Sequence[int] | None = None,
    ) -> tuple[list[dict[str, Any]], float, float, float]:
        """Run generators together (all READY, then GO to each) between two CPU readings.

        The aux utilisation is the CPU of the backend, the auth responder and
        every generator over the phase's wall time, per aux CPU used.
        """
        gens: list[Gen] = []
        cpus = list(cpus or [self.a.aux_cpu])
        try:
            for i, args in enumerate(argss):
                gens.append(Gen(self.a, args, cpus[i % len(cpus)]))
            for g in gens:
                g.expect("READY", 60)
            pids = [*self.aux_pids, *(g.p.pid for g in gens)]
            x0 = procstat.cpu_of(pids)
            c0 = procstat.cpu_sample(proxy.pid) if proxy else None
            t0 = time.monotonic()
            for g in gens:
                g.send("GO")
            res = [g.expect("RESULT", self.a.phase_timeout) for g in gens]
            t1 = time.monotonic()
            x1 = procstat.cpu_of(pids)
            for g in gens:
                g.finish()
            time.sleep(self.a.settle)
            c1 = procstat.cpu_sample(proxy.pid) if proxy else None
        finally:
            for g in gens:
                stop(g.p)
        cpu = c1.cpu_s - c0.cpu_s if c0 and c1 else 0.0
        ticks = c1.ticks_s - c0.ticks_s if c0 and c1 else 0.0
        aux_cpus = len({self.a.aux_cpu, *cpus})
        return res, cpu, ticks, (x1 - x0) / max(1e-9, t1 - t0) / aux_cpus

    def login(
        self, proxy: subprocess.Popen[bytes], proto: str, port: int, tls: str | None = None
    ) -> dict[str, Any]:
        """A login phase; tls is None, "full" or "resumed" (implicit TLS, TLSv1.3)."""
        a = self.a
        args = ["login", "--proto", proto, "--port", str(port), "-d", str(a.duration)]
        if tls:
            args += ["--tls", tls, "--cafile", a.tls.cert]
        procs = split_concurrency(a.concurrency, a.gen_procs)
        if len(procs) > 1:
            args.append("--lat-samples")
        parts, cpu, ticks, aux = self.measured_many(
            proxy, [[*args, "-c", str(c)] for c in procs], a.gen_cpus
        )
        r = merge_login_results(parts)
        if not r["ok"]:
            raise RuntimeError(f"no session completed: {r['errors']}")
        if tls:
            bad = tls_checks(r, a.tls_sha256, tls == "resumed")
            if bad:
                raise RuntimeError("; ".join(bad))
        ok = r["ok"]
        extra = {k: v for k, v in r.items() if k.startswith("tls_")}
        return {
            **extra,
            "cpu_us": cpu / ok * 1e6,
            "cpu_ticks_us": ticks / ok * 1e6,
            "rate": r["ok"] / r["elapsed"],
            "sessions": r["ok"],
            "errors": r["err"],
            "error_kinds": r["errors"],
            "proxy_util": cpu / r["elapsed"],
            "aux_util": aux,
            "lat_p50_ms": r["lat_p50_ms"],
            "lat_p99_ms": r["lat_p99_ms"],
            "gen_procs": len(procs),
            "gen_cpu_us": r["gen_cpu"] / ok * 1e6,  # the generator's own CPU per session
        }

    def download(
        self, proxy: subprocess.Popen[bytes], port: int, tls: bool = False
    ) -> dict[str, Any]:
        args = ["download", "--port", str(port), "--mb", str(self.a.download_mb)]
        if tls:
            args += ["--tls", "full", "--cafile", self.a.tls.cert]
        r, cpu, _ticks, aux = self.measured(proxy, args)
        if r["err"]:
            raise RuntimeError(f"FETCH returned {r['bytes']} bytes, not {self.a.download_mb} MiB")
        if tls:
            bad = tls_checks(r, self.a.tls_sha256, False)
            if bad:
                raise RuntimeError("; ".join(bad))
        mb = r["bytes"] / MiB
        extra = {k: v for k, v in r.items() if k.startswith("tls_")}
        return {
            **extra,
            "cpu_ms_per_mb": cpu * 1e3 / max(mb, 1e-9),
            "mb_s": mb / r["elapsed"],
            "mb": mb,
            "errors": r["err"],
            "proxy_util": cpu / r["elapsed"],
            "aux_util": aux,
        }

    def latency(self, proxy: subprocess.Popen[bytes] | None, port: int) -> dict[str, Any]:
        args = ["latency", "--port", str(port), "--count", str(self.a.latency_count)]
        r, cpu, _ticks, _aux = self.measured(proxy, args)
        out = {k: r[k] for k in ("p50_us", "p90_us", "p99_us", "mean_us", "max_us", "count")}
        out["cpu_us_per_noop"] = cpu / max(1, r["count"]) * 1e6
        return out

    def memory(self, proxy: subprocess.Popen[bytes], port: int) -> dict[str, Any]:
        a = self.a
        args = ["hold", "--port", str(port), "-c", str(a.mem_concurrency)]
        g = Gen(a, args)
        levels: dict[str, dict[str, float]] = {}
        try:
            g.expect("READY", 30)
            time.sleep(a.settle)
            m0 = procstat.mem_sample(proxy.pid)
            fd0 = procstat.fd_count(proxy.pid)
            for k in a.mem_levels:
                c0 = procstat.cpu_sample(proxy.pid)
                g.send(f"OPEN {k}")
                r = g.expect("OPENED", a.phase_timeout)
                time.sleep(max(0.5, a.settle))
                c1 = procstat.cpu_sample(proxy.pid)
                m = procstat.mem_sample(proxy.pid)
                held = max(1, r["held"])
                levels[str(k)] = {
                    "held": r["held"],
                    "errors": r["err"],
                    "rss_per_conn": (m.rss - m0.rss) / held,
                    "pss_per_conn": (m.pss - m0.pss) / held,
                    "rss_mb": m.rss / MiB,
                    "fds_per_conn": (procstat.fd_count(proxy.pid) - fd0) / held,
                    "open_rate": r["opened"] / max(1e-9, r["elapsed"]),
                    "open_cpu_us": (c1.cpu_s - c0.cpu_s) / max(1, r["opened"]) * 1e6,
                }
            g.send("CLOSE")
            g.expect("RESULT", 60)
            g.finish()
        finally:
            stop(g.p)
        time.sleep(1.0)
        m2 = procstat.mem_sample(proxy.pid)
        return {
            "rss0_mb": m0.rss / MiB,
            "pss0_mb": m0.pss / MiB,
            "nproc": m0.nproc,
            "levels": levels,
            "rss_after_close_mb": m2.rss / MiB,
        }

    def phase(self, name: str, proxy: subprocess.Popen[bytes], ports: Ports) -> dict[str, Any]:
        p = ports.proxy
        if name == "imaps_login":
            return self.login(proxy, "imap", p["imaps"], "full")
        if name == "imaps_login_resumed":
            return self.login(proxy, "imap", p["imaps"], "resumed")
        if name.endswith("_login"):
            proto = name.split("_")[0]
            return self.login(proxy, proto, p[proto])
        if name == "imap_download":
            return self.download(proxy, p["imap"])
        if name == "imaps_download":
            return self.download(proxy, p["imaps"], tls=True)
        if name == "latency":
            return self.latency(proxy, p["imap"])
        if name == "memory":
            return self.memory(proxy, p["imap"])
        raise ValueError(name)

    def run_proxy(self, name: str, argv: list[str], prefix: str, ports: Ports) -> dict[str, Any]:
        a = self.a
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        busy = [x for x in ports.proxy.values() if not port_free(x)]
        if busy:
            return {"phases": {}, "errors": [f"ports {busy} busy before starting {name}"]}
        env = dict(os.environ)
        if name == "mailfront":  # measure this checkout's source, installed or not
            env["PYTHONPATH"] = os.pathsep.join(
                x for x in (os.path.join(REPO, "src"), env.get("PYTHONPATH")) if x
            )
        log(f"start {name}: {shlex.join(argv)}")
        out_path = os.path.join(prefix, "logs", "stdout-stderr.log")
        out_start = os.path.getsize(out_path) if os.path.exists(out_path) else 0
        with open(out_path, "ab") as out:
            proxy = spawn(argv, a.proxy_cpu, a.nofile, out, env=env)
        res: dict[str, Any] = {"phases": {}, "errors": [], "tracebacks": 0}
        need = {phase_port(ph, ports) for ph in a.phases}
        try:
            if not wait_listening(need, proxy, a.start_timeout):
                res["errors"].append(
                    f"{name} did not listen on {sorted(need)} (rc={proxy.poll()}); "
                    f"see {prefix}/logs; last output: {last_line(out.name)!r}"
                )
                return res
            time.sleep(a.settle)
            res["rss_start_mb"] = procstat.mem_sample(proxy.pid).rss / MiB
            for ph in a.phases:
                if time.monotonic() > DEADLINE[0]:
                    res["errors"].append(f"--max-time reached before {ph}")
                    break
                if proxy.poll() is not None:
                    res["errors"].append(f"{name} exited (rc={proxy.poll()}) before {ph}")
                    break
                try:
                    r = self.phase(ph, proxy, ports)
                except (RuntimeError, KeyError, ValueError, TypeError) as e:
                    res["errors"].append(f"{ph}: {e}")
                    log(f"  {name:9} {ph:13} FAILED: {e}")
                    continue
                r["rss_after_mb"] = procstat.mem_sample(proxy.pid).rss / MiB
                res["phases"][ph] = r
                log(f"  {name:9} {ph:13} {brief(ph, r)}")
        finally:
            stop(proxy)
            res["tracebacks"], res["last_exception"] = tracebacks(out_path, out_start)
        return res


def phase_port(ph: str, ports: Ports) -> int:
    """The proxy port a phase talks to."""
    if ph in TLS_PHASES:
        return ports.proxy["imaps"]
    if ph.endswith("_login"):
        return ports.proxy[ph.split("_")[0]]
    return ports.proxy["imap"]


def count_tracebacks(text: str) -> tuple[int, str]:
    """Python tracebacks in a proxy's output, and the last exception line."""
    n, last, inside = 0, "", False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            n += 1
            inside = True
        elif inside and line and not line.startswith(" "):
            last, inside = line.strip(), False
    return n, last


def tracebacks(path: str, start: int) -> tuple[int, str]:
    """count_tracebacks of what a proxy wrote to path from offset start."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return count_tracebacks(f.read().decode(errors="replace"))
    except OSError:
        return 0, ""


def last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read()[-4096:].decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def brief(ph: str, r: dict[str, Any]) -> str:
    """One log line per phase."""
    tls = ""
    if r.get("tls_reuse_fraction") is not None:
        tls = f"  resumed {100 * r['tls_reuse_fraction']:.0f}%"
    if ph in LOGIN_PHASES:
        return (
            f"{r['rate']:6.0f} sess/s  {r['cpu_us']:6.1f} us/sess  "
            f"util proxy {100 * r['proxy_util']:3.0f}% aux {100 * r['aux_util']:3.0f}%  "
            f"err {r['errors']}{tls}"
        )
    if ph in ("imap_download", "imaps_download"):
        return (
            f"{r['mb_s']:6.0f} MiB/s  {r['cpu_ms_per_mb']:6.3f} ms/MiB  "
            f"util proxy {100 * r['proxy_util']:3.0f}% aux {100 * r['aux_util']:3.0f}%"
        )
    if ph == "latency":
        return (
            f"p50 {r['p50_us']:.0f} us  p99 {r['p99_us']:.0f} us  "
            f"{r['cpu_us_per_noop']:.1f} us CPU/NOOP"
        )
    if ph == "memory":
        return "  ".join(
            f"K={k}: {v['rss_per_conn']:.0f} B/conn RSS ({v['pss_per_conn']:.0f} PSS) "
            f"{v['fds_per_conn']:.1f} fds/conn"
            for k, v in r["levels"].items()
        )
    return ""


# ------------------------------------------------------------------- report
Getter = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True)
class Metric:
    phase: str
    label: str
    unit: str
    better: str  # "lower" or "higher"
    get: Getter
    target: float | None = None  # mailfront/nginx ratio to stay at or under


def _pick(phase: str, key: str) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        value: float = r[phase][key]
        return value

    return get


def _session_pick(phase: str, key: str) -> Getter:
    """A login phase's figure; none when more than 1 % of its sessions failed."""

    def get(r: dict[str, Any]) -> float | None:
        ph = r[phase]
        errors = ph.get("errors", 0)
        if errors > 0.01 * (ph.get("sessions", 0) + errors):
            return None
        value: float = ph[key]
        return value

    return get


def _level(k: int, key: str) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        lv = r["memory"]["levels"][str(k)]
        if lv["errors"] > 0.01 * k:  # more than 1 % of the K sessions failed: no figure
            return None
        value: float = lv[key]
        return value

    return get


def metrics(phases: Sequence[str], a: argparse.Namespace) -> list[Metric]:
    """The table's rows for the selected phases; target = mailfront/nginx ceiling."""
    out: list[Metric] = []
    for ph in phases:
        if ph in ("imaps_login", "imaps_login_resumed"):
            kind = "full" if ph == "imaps_login" else "resumed"
            out.append(
                Metric(
                    ph,
                    f"IMAPS proxy CPU per TLS login ({kind} handshake)",
                    "us",
                    "lower",
                    _session_pick(ph, "cpu_us"),
                    1.3,
                )
            )
            out.append(
                Metric(ph, f"IMAPS {kind} sessions/s (c={a.concurrency})", "1/s", "higher",
                       _pick(ph, "rate"))
            )  # fmt: skip
            if kind == "resumed":
                out.append(
                    Metric(ph, "IMAPS handshakes resumed", "", "higher",
                           _pick(ph, "tls_reuse_fraction"))
                )  # fmt: skip
        elif ph == "imaps_download":
            out.append(
                Metric(ph, "IMAPS FETCH proxy CPU per MiB (TLS)", "ms", "lower",
                       _pick(ph, "cpu_ms_per_mb"), 1.2)
            )  # fmt: skip
            out.append(Metric(ph, "IMAPS FETCH throughput", "MiB/s", "higher", _pick(ph, "mb_s")))
        elif ph.endswith("_login"):
            p = ph.split("_")[0].upper()
            out.append(
                Metric(
                    ph,
                    f"{p} proxy CPU per session",
                    "us",
                    "lower",
                    _session_pick(ph, "cpu_us"),
                    1.5,
                )
            )
            out.append(
                Metric(
                    ph, f"{p} sessions/s (c={a.concurrency})", "1/s", "higher", _pick(ph, "rate")
                )
            )
        elif ph == "imap_download":
            out.append(
                Metric(
                    ph,
                    "IMAP FETCH proxy CPU per MiB",
                    "ms",
                    "lower",
                    _pick(ph, "cpu_ms_per_mb"),
                    0.5,
                )
            )
            out.append(Metric(ph, "IMAP FETCH throughput", "MiB/s", "higher", _pick(ph, "mb_s")))
        elif ph == "latency":
            out.append(Metric(ph, "IMAP NOOP RTT p50", "us", "lower", _pick(ph, "p50_us")))
            out.append(Metric(ph, "IMAP NOOP RTT p99", "us", "lower", _pick(ph, "p99_us")))
            out.append(
                Metric(ph, "proxy CPU per NOOP", "us", "lower", _pick(ph, "cpu_us_per_noop"), 1.1)
            )
        elif ph == "memory":
            top = a.mem_levels[-1]
            for k in a.mem_levels:
                out.append(
                    Metric(
                        ph,
                        f"RSS per idle IMAP session (K={k})",
                        "B",
                        "lower",
                        _level(k, "rss_per_conn"),
                        0.5 if k == top else None,
                    )
                )
            out.append(
                Metric(
                    ph,
                    f"PSS per idle IMAP session (K={top})",
                    "B",
                    "lower",
                    _level(top, "pss_per_conn"),
                )
            )
            out.append(
                Metric(
                    ph,
                    f"fds per idle IMAP session (K={top})",
                    "",
                    "lower",
                    _level(top, "fds_per_conn"),
                )
            )
            out.append(
                Metric(
                    ph,
                    f"proxy CPU per login opening K={top} (c={a.mem_concurrency})",
                    "us",
                    "lower",
                    _level(top, "open_cpu_us"),
                )
            )
            out.append(
                Metric(
                    ph, "proxy RSS before the memory phase", "MiB", "lower", _pick(ph, "rss0_mb")
                )
            )
    return out  # fmt: skip


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    good = [v for v in values if v is not None]
    return {
        "median": statistics.median(good) if good else None,
        "min": min(good) if good else None,
        "max": max(good) if good else None,
        "samples": list(values),
    }


def summarize(
    rounds: dict[str, list[dict[str, Any]]], names: Sequence[str], ms: Sequence[Metric]
) -> list[dict[str, Any]]:
    """One row per metric: median [min, max] per proxy, and the median per-round ratio.

    rounds[name][i] is the phase dict of round i (empty when the run failed);
    the ratio of round i is names[1] / names[0] in that round.
    """
    table = []
    for m in ms:
        per: dict[str, list[float | None]] = {}
        for n in names:
            vals: list[float | None] = []
            for r in rounds.get(n, []):
                try:
                    vals.append(m.get(r))
                except (KeyError, TypeError):
                    vals.append(None)
            per[n] = vals
        row: dict[str, Any] = {
            "metric": m.label,
            "unit": m.unit,
            "better": m.better,
            "target": m.target,
            "values": {n: _stats(per[n]) for n in names},
        }
        if len(names) == 2:
            base, cand = per[names[0]], per[names[1]]
            ratios = [c / b for b, c in zip(base, cand, strict=False) if b and c is not None]
            row["ratio"] = _stats(ratios)
            med = row["ratio"]["median"]
            row["meets_target"] = None if m.target is None or med is None else med <= m.target
        table.append(row)
    return table


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    av = abs(v)
    if av >= 1000:
        return f"{v:.0f}"
    if av >= 100:
        return f"{v:.1f}"
    if av >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _spread(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return "{} [{}-{}]".format(fmt(s["median"]), fmt(s["min"]), fmt(s["max"]))


def render_table(table: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    hdr = ["metric", "unit", *(f"{n} median" for n in names)]
    pair = len(names) == 2
    if pair:
        hdr += [f"ratio {names[1]}/{names[0]}", "target"]
    rows = []
    for line in table:
        row = [line["metric"], line["unit"], *(_spread(line["values"][n]) for n in names)]
        if pair:
            row.append(_spread(line["ratio"]))
            t = line["target"]
            verdict = {True: "ok", False: "MISS", None: ""}[line.get("meets_target")]
            row.append("" if t is None else f"<= {t:g} {verdict}".rstrip())
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(hdr, *rows, strict=False)]
    out = [" | ".join(h.ljust(w) for h, w in zip(hdr, widths, strict=True)).rstrip()]
    out.append("-+-".join("-" * w for w in widths))
    for row in rows:
        out.append(" | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


# --------------------------------------------------------------------- main
def default_python() -> str:
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


# options that --quick shortens (unless given): normal value, quick value
SHORTENED = {
    "rounds": (3, 1),
    "duration": (3.0, 1.0),
    "download_mb": (256, 64),
    "latency_count": (3000, 1000),
    "mem_levels": ("1000,4000,8000", "1000,3000"),
    "max_time": (900.0, 120.0),
    "phase_timeout": (180.0, 60.0),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="mailfront vs nginx's mail proxy, same config, same load (see bench/README.md)",
    )
    ap.add_argument("--rounds", type=int, help="ABBA rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="1 short round (< 60 s)")
    ap.add_argument("--only", choices=PROXIES, help="run just one proxy")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma list of " + ",".join(PHASES))
    ap.add_argument("-c", "--concurrency", type=int, default=50, help="login sessions in flight")
    ap.add_argument("-d", "--duration", type=float, help="seconds per login phase (3)")
    ap.add_argument("--download-mb", type=int, help="MiB of the timed FETCH (256)")
    ap.add_argument("--latency-count", type=int, help="timed NOOPs (3000)")
    ap.add_argument("--mem-levels", help="idle sessions held, <= 8000 (1000,4000,8000)")
    ap.add_argument("--mem-concurrency", type=int, default=200, help="logins in flight")
    ap.add_argument(
        "--extra-mail",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="extra line for mail{}, e.g. 'proxy_buffer 16k;' (repeatable)",
    )
    ap.add_argument("--xclient", choices=["on", "off"], default="off")
    ap.add_argument(
        "--error-log",
        default="warn",
        choices=["debug", "info", "notice", "warn", "error"],
        help="error_log level of both proxies (warn)",
    )
    ap.add_argument(
        "--python",
        default=default_python(),
        help="interpreter that runs mailfront (default: the repo's .venv)",
    )
    ap.add_argument(
        "--mailfront-cmd",
        default="{python} -m mailfront -c {conf} -p {prefix}",
        help="command template; fields {python} {conf} {prefix}",
    )
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--mail-module", default=MAIL_MODULE)
    ap.add_argument(
        "--auth",
        choices=["nginx", "python"],
        default="nginx",
        help="auth_http responder: nginx http{} or a uvloop one (same for both)",
    )
    ap.add_argument(
        "--base-port",
        type=int,
        default=24000,
        help="proxy on base+143/110/25, backend base+1143/1110/1025, auth base+1080",
    )
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--aux-cpu", type=int, default=1, help="generator, backend, auth, harness")
    ap.add_argument("--settle", type=float, default=0.3, help="pause before the closing reading")
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--phase-timeout", type=float, help="per phase (180 s, quick 60 s)")
    ap.add_argument("--max-time", type=float, help="bound on the whole run (900 s)")
    ap.add_argument("--workdir", help="configs, logs and results (default: a new temp dir)")
    ap.add_argument("--json", help="results file (default <workdir>/results.json)")
    ap.add_argument("--print-config", action="store_true", help="print the mail config, exit")
    ap.add_argument(
        "--tls-key",
        choices=["ecdsa", "rsa"],
        default="ecdsa",
        help="server key of the imaps phases: ECDSA P-256 (default) or RSA 2048",
    )
    ap.add_argument(
        "--gen-procs",
        type=int,
        default=1,
        help="generator processes sharing the -c slots of a login phase (1)",
    )
    ap.add_argument(
        "--gen-cpus",
        help="CPUs of the login generators, round-robin (default: --aux-cpu)",
    )
    a = ap.parse_args(argv)
    for k, (normal, quick) in SHORTENED.items():
        if getattr(a, k) is None:
            setattr(a, k, quick if a.quick else normal)
    a.phases = [p.strip() for p in a.phases.split(",") if p.strip()]
    for p in a.phases:
        if p not in PHASES:
            ap.error(f"unknown phase {p!r}")
    a.mem_levels = sorted({int(x) for x in str(a.mem_levels).split(",") if x.strip()})
    a.python_gen = sys.executable
    a.gen_cpus = [int(x) for x in a.gen_cpus.split(",")] if a.gen_cpus else [a.aux_cpu]
    if a.gen_procs < 1:
        ap.error("--gen-procs must be at least 1")
    a.tls = None  # TlsFiles, made by main() when a TLS phase runs
    a.tls_sha256 = ""
    return a


def clamp_levels(levels: Sequence[int], nofile: int) -> list[int]:
    """Idle-session levels that fit: 2 fds per session in the proxy, 1000 spare, <= 8000."""
    top = min(MAX_IDLE_SESSIONS, (nofile - 1000) // 2)
    return sorted({min(k, top) for k in levels})


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.monotonic()
    DEADLINE[0] = t_start + a.max_time
    os.sched_setaffinity(0, {a.aux_cpu})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    a.nofile = hard if hard != resource.RLIM_INFINITY else 1 << 17
    resource.setrlimit(resource.RLIMIT_NOFILE, (a.nofile, hard))
    levels = clamp_levels(a.mem_levels, a.nofile)
    if levels != a.mem_levels:
        log(f"note: memory levels {a.mem_levels} clamped to {levels} (fd limit {a.nofile})")
        a.mem_levels = levels

    ports = Ports(a.base_port)
    workdir = a.workdir or tempfile.mkdtemp(prefix="mailfront-bench.")
    for d in ("logs", "tmp"):
        os.makedirs(os.path.join(workdir, d), exist_ok=True)
    wconn = worker_connections_for(a.nofile, max(a.mem_levels) if "memory" in a.phases else 0)
    if any(ph in TLS_PHASES for ph in a.phases):
        try:
            a.tls = make_cert(os.path.join(workdir, "tls"), a.tls_key)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            log(f"cannot make the TLS certificate: {e}")
            return 1
        a.tls_sha256 = cert_sha256(a.tls.cert)
    conf = os.path.join(workdir, "mail.conf")
    with open(conf, "w") as f:
        f.write(
            mail_conf(
                ports, a.nofile, wconn, a.extra_mail, a.xclient, a.error_log, a.mail_module, a.tls
            )
        )
    if a.print_config:
        with open(conf) as f:
            print(f.read(), end="")
        return 0

    names = [a.only] if a.only else list(PROXIES)

    def argv_for(name: str) -> tuple[list[str], str]:
        prefix = os.path.join(workdir, name)
        if name == "nginx":
            return [
                a.nginx,
                "-p",
                prefix + "/",
                "-c",
                conf,
                "-e",
                prefix + "/logs/error.log",
            ], prefix
        cmd = a.mailfront_cmd.format(python=shlex.quote(a.python), conf=conf, prefix=prefix)
        return shlex.split(cmd), prefix

    busy = [p for p in ports.all() if not port_free(p)]
    if busy:
        log(f"ports already in use: {busy} (use --base-port)")
        return 2

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, interrupted)

    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    direct: dict[str, Any] = {}
    log(
        f"workdir {workdir}; proxy on CPU {a.proxy_cpu}; "
        f"generator, backend, auth on CPU {a.aux_cpu}"
    )
    try:
        backend_argv = [a.python_gen, os.path.join(HERE, "mockbackend.py")]
        for proto, port in ports.backend.items():
            backend_argv += ["--" + proto, f"127.0.0.1:{port}"]
        if a.auth == "python":
            backend_argv += ["--auth", f"127.0.0.1:{ports.auth}"]
        with open(os.path.join(workdir, "logs", "backend.log"), "ab") as out:
            backend = spawn(backend_argv, a.aux_cpu, a.nofile, out)
        aux = [backend]
        if a.auth == "nginx":
            auth_path = os.path.join(workdir, "auth.conf")
            with open(auth_path, "w") as f:
                f.write(auth_conf(ports, workdir, a.nofile, wconn))
            for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                os.makedirs(os.path.join(workdir, "tmp", d), exist_ok=True)
            auth_argv = [a.nginx, "-p", workdir + "/", "-c", auth_path]
            auth_argv += ["-e", os.path.join(workdir, "logs", "auth-error.log")]
            with open(os.path.join(workdir, "logs", "auth.log"), "ab") as out:
                aux.append(spawn(auth_argv, a.aux_cpu, a.nofile, out))
        if not wait_listening(ports.backend.values(), backend, 15):
            log(f"the mock backend did not start; see {workdir}/logs")
            return 1
        if not wait_listening([ports.auth], aux[-1], 15):
            log(f"the auth_http responder did not start; see {workdir}/logs")
            return 1
        runner = Runner(a, [p.pid for p in aux])
        if "latency" in a.phases:
            try:
                direct = runner.latency(None, ports.backend["imap"])
            except RuntimeError as e:
                log(f"direct latency failed: {e}")
        for rnd in range(a.rounds):
            order = names if rnd % 2 == 0 else names[::-1]  # ABBA
            for name in order:
                if time.monotonic() > DEADLINE[0]:
                    log("--max-time reached; stopping")
                    break
                log(f"round {rnd + 1}/{a.rounds}: {name}")
                argv_p, prefix = argv_for(name)
                r = runner.run_proxy(name, argv_p, prefix, ports)
                for err in r["errors"]:
                    log(f"  {name}: {err}")
                raw[name].append(r)
                rounds[name].append(r["phases"])
                time.sleep(a.settle)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
    finally:
        stop_all()

    if not any(rounds.values()):
        return 1
    n = max(len(v) for v in rounds.values())
    for v in rounds.values():  # pad failed/missing rounds so the pairs line up
        v += [{}] * (n - len(v))
    table = summarize(rounds, names, metrics(a.phases, a))
    print()
    print(
        f"mailfront bench: {n} round(s), each proxy one process on CPU {a.proxy_cpu}; "
        f"generator, backend and auth_http ({a.auth}) on CPU {a.aux_cpu}; "
        f"c={a.concurrency}, {a.duration:g}s per login phase"
        + (f"; TLS: {TLS_KEYS[a.tls.kind]} key, TLSv1.3" if a.tls else "")
    )
    print(render_table(table, names))
    if direct:
        print(
            "\nreference: NOOP RTT straight to the mock backend: p50 {} us, p99 {} us".format(
                fmt(direct["p50_us"]), fmt(direct["p99_us"])
            )
        )
    failed = False
    for name, runs in raw.items():
        for i, r in enumerate(runs):
            if r.get("tracebacks"):
                print(
                    f"WARNING {name} round {i + 1}: {r['tracebacks']} Python tracebacks in "
                    f"its output, the last: {r['last_exception'][:200]}"
                )
            for err in r["errors"]:
                failed = True
                print(f"ERROR {name} round {i + 1}: {err}")
            for ph, pr in r["phases"].items():
                if pr.get("errors"):
                    print(
                        f"WARNING {name} round {i + 1} {ph}: {pr['errors']} session errors "
                        f"{pr.get('error_kinds', '')}"
                    )
                for k, lv in pr.get("levels", {}).items():
                    if lv["errors"]:
                        print(
                            f"WARNING {name} round {i + 1} memory K={k}: "
                            f"{lv['held']} held, {lv['errors']} failed"
                        )
    result = {
        "args": vars(a),
        "names": names,
        "table": table,
        "rounds": raw,
        "direct_latency": direct,
        "workdir": workdir,
        "elapsed_s": time.monotonic() - t_start,
    }
    path = a.json or os.path.join(workdir, "results.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"\nJSON: {path}   (run took {time.monotonic() - t_start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
