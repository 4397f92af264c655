"""Smoke tests of bench/'s pure parts: /proc parsing, the config writer, the
argument defaults, the summary table, the generator's scripts and the mock
backend's parsers; for the TLS phases, the certificate, the TLS server block
(both nginx and mailfront accept it), the merging of generator results, and
session resumption with the generator's per-slot contexts (in memory, and
against the mock backend served over TLS on loopback).  No timing is asserted
and no benchmark is run."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import mailbench  # noqa: E402
import mockbackend  # noqa: E402
import procstat  # noqa: E402

# ------------------------------------------------------------------ procstat
STAT = (
    b"4242 (we ird) (name)) S 17 4242 4242 0 -1 4194560 1200 0 0 0 "
    b"250 75 9 3 20 0 1 0 12345 123456789 2500 18446744073709551615\n"
)


def test_parse_stat_survives_spaces_and_parens_in_comm() -> None:
    st = procstat.parse_stat(STAT)
    assert (st.ppid, st.state) == (17, b"S")
    assert (st.utime, st.stime, st.cutime, st.cstime) == (250, 75, 9, 3)


def test_kb_field_reads_status_and_smaps_rollup() -> None:
    status = b"Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t   15360 kB\nThreads:\t1\n"
    rollup = b"Rss:  15360 kB\nPss:  11264 kB\nPss_Anon:  9000 kB\n"
    assert procstat.kb_field(status, b"VmRSS:") == 15360 * 1024
    assert procstat.kb_field(rollup, b"Pss:") == 11264 * 1024
    assert procstat.kb_field(status, b"Pss:") == 0


def test_tree_from_parents_is_breadth_first_and_ignores_strangers() -> None:
    parents = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert procstat.tree_from_parents(10, parents) == [10, 11, 12, 13]
    assert procstat.tree_from_parents(99, parents) == [99]


def test_cpu_clock_id_matches_linux_layout() -> None:
    # CPUCLOCK_SCHED (2) for the whole process of pid 1: (~1 << 3) | 2 == -14
    assert procstat.cpu_clock_id(1) == -14


def test_live_samples_of_this_process() -> None:
    sum(i * i for i in range(20000))  # burn a little CPU
    cpu = procstat.cpu_sample(os.getpid())
    mem = procstat.mem_sample(os.getpid())
    assert os.getpid() in cpu.pids
    assert cpu.cpu_s > 0 and cpu.ticks_s >= 0
    assert mem.rss > 1 << 20 and mem.nproc >= 1
    assert procstat.fd_count(os.getpid()) >= 3
    assert procstat.alive(os.getpid())


# ------------------------------------------------------------ config writer
PORTS = mailbench.Ports(31000)


def test_mail_conf_is_the_contract() -> None:
    text = mailbench.mail_conf(PORTS, 20000, 20000, ["proxy_buffer 16k;"])
    for line in (
        "load_module /usr/lib/nginx/modules/ngx_mail_module.so;",
        "daemon off;",
        "master_process off;",
        "worker_processes 1;",
        "worker_rlimit_nofile 20000;",
        "error_log logs/error.log warn;",
        "worker_connections 20000;",
        "server_name mail.bench.test;",
        "auth_http 127.0.0.1:32080/auth;",
        "xclient off;",
        "imap_auth plain login;",
        "pop3_auth plain;",
        "smtp_auth plain login;",
        "proxy_buffer 16k;",
        "listen 127.0.0.1:31143;",
        "listen 127.0.0.1:31110;",
        "listen 127.0.0.1:31025;",
    ):
        assert line in text, line
    assert text.count("{") == text.count("}")
    assert "$" not in text


def test_ports_and_connection_sizing() -> None:
    assert PORTS.backend == {"imap": 32143, "pop3": 32110, "smtp": 32025}
    assert PORTS.proxy["imaps"] == 31993
    assert len(set(PORTS.all())) == 8
    assert mailbench.worker_connections_for(20000, 8000) == 20000
    assert mailbench.worker_connections_for(1 << 17, 8000) == 32768
    assert mailbench.clamp_levels([1000, 4000, 8000, 12000], 20000) == [1000, 4000, 8000]
    assert mailbench.clamp_levels([1000, 8000], 5000) == [1000, 2000]


@pytest.mark.skipif(
    not (shutil.which("nginx") and os.path.exists(mailbench.MAIL_MODULE)),
    reason="Debian's nginx with the mail module is not installed",
)
def test_nginx_accepts_both_configs(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "nginx"
    (tmp_path / "logs").mkdir()
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / d).mkdir(parents=True)
    confs = {
        "mail.conf": mailbench.mail_conf(PORTS, 1024, 512),
        "auth.conf": mailbench.auth_conf(PORTS, str(tmp_path), 1024, 512),
    }
    for name, text in confs.items():
        path = tmp_path / name
        path.write_text(text)
        argv = [nginx, "-t", "-q", "-p", f"{tmp_path}/", "-c", str(path)]
        argv += ["-e", str(tmp_path / "logs" / "error.log")]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (name, r.stderr)


# ---------------------------------------------------------------------- TLS
needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl CLI")
TLS = mailbench.TlsFiles("/b/tls/server-ecdsa.crt", "/b/tls/server-ecdsa.key", "ecdsa")


def test_tls_server_block_only_with_tls() -> None:
    plain = mailbench.mail_conf(PORTS, 20000, 20000)
    assert "ssl" not in plain and "31993" not in plain
    text = mailbench.mail_conf(PORTS, 20000, 20000, tls=TLS)
    block = text[text.index("listen 127.0.0.1:31993 ssl;") :]
    for line in (
        "protocol imap;",
        "ssl_certificate /b/tls/server-ecdsa.crt;",
        "ssl_certificate_key /b/tls/server-ecdsa.key;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_session_tickets on;",
    ):
        assert line in block, line
    # what mailfront's stdlib engine refuses (docs/tls.md) is left at nginx's defaults
    for word in ("ssl_session_cache", "ssl_session_timeout", "ssl_ecdh_curve", "shared:"):
        assert word not in text
    assert text.replace(mailbench.tls_server_block(31993, TLS), "") == plain
    assert text.count("{") == text.count("}")


def test_cert_command() -> None:
    ec = mailbench.cert_command("ecdsa", "c.pem", "k.pem")
    assert ec[:3] == ["openssl", "req", "-x509"]
    assert "ec_paramgen_curve:prime256v1" in ec and "-nodes" in ec
    assert "subjectAltName=DNS:mail.bench.test" in ec
    assert "rsa:2048" in mailbench.cert_command("rsa", "c.pem", "k.pem")
    with pytest.raises(KeyError):
        mailbench.cert_command("dsa", "c.pem", "k.pem")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> mailbench.TlsFiles:
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    return mailbench.make_cert(str(tmp_path_factory.mktemp("tls")), "ecdsa")


@needs_openssl
def test_make_cert_is_p256_for_the_bench_name(tls_files: mailbench.TlsFiles) -> None:
    text = subprocess.run(
        ["openssl", "x509", "-in", tls_files.cert, "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "prime256v1" in text and "DNS:mail.bench.test" in text
    sha = mailbench.cert_sha256(tls_files.cert)
    assert len(sha) == 64 and int(sha, 16) >= 0
    ctx = ssl.create_default_context(cafile=tls_files.cert)  # a usable trust anchor
    assert ctx.cert_store_stats()["x509_ca"] == 1


@needs_openssl
@pytest.mark.skipif(
    not (shutil.which("nginx") and os.path.exists(mailbench.MAIL_MODULE)),
    reason="Debian's nginx with the mail module is not installed",
)
def test_nginx_and_mailfront_accept_the_tls_config(
    tmp_path: Path, tls_files: mailbench.TlsFiles
) -> None:
    conf = tmp_path / "mail.conf"
    conf.write_text(mailbench.mail_conf(PORTS, 1024, 512, tls=tls_files))
    for name in ("nginx", "mailfront"):
        (tmp_path / name / "logs").mkdir(parents=True)
    nginx = shutil.which("nginx") or "nginx"
    argv = [nginx, "-t", "-q", "-p", f"{tmp_path}/nginx/", "-c", str(conf)]
    argv += ["-e", str(tmp_path / "nginx" / "logs" / "error.log")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONPATH=str(BENCH.parent / "src"))
    argv = [
        sys.executable,
        "-m",
        "mailfront",
        "-t",
        "-c",
        str(conf),
        "-p",
        str(tmp_path / "mailfront"),
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr


def test_split_concurrency() -> None:
    assert mailbench.split_concurrency(50, 1) == [50]
    assert mailbench.split_concurrency(50, 3) == [17, 17, 16]
    assert mailbench.split_concurrency(2, 4) == [1, 1]
    assert sum(mailbench.split_concurrency(7, 7)) == 7


def _gen_result(ok: int, lat: list[float], reused: int, full: int) -> dict[str, Any]:
    return {
        "ok": ok, "err": 1, "errors": {"ConnectionResetError": 1}, "elapsed": 1.0 + ok / 100,
        "gen_cpu": 0.5, "lat_p50_ms": 0.0, "lat_p99_ms": 0.0, "lat_ms": lat,
        "tls_full": full, "tls_reused": reused, "tls_versions": {"TLSv1.3": full + reused},
        "tls_ciphers": {"TLS_AES_256_GCM_SHA384": full + reused}, "tls_peer_sha256": "ab",
    }  # fmt: skip


def test_merge_login_results() -> None:
    one = _gen_result(3, [1.0, 2.0, 3.0], 3, 0)
    assert mailbench.merge_login_results([one]) == one
    m = mailbench.merge_login_results([one, _gen_result(5, [4.0, 5.0, 6.0, 7.0, 8.0], 4, 1)])
    assert (m["ok"], m["err"], m["errors"]) == (8, 2, {"ConnectionResetError": 2})
    assert m["elapsed"] == 1.05 and m["gen_cpu"] == 1.0
    assert (m["lat_p50_ms"], m["lat_p99_ms"]) == (5.0, 8.0)  # nearest rank over all samples
    assert (m["tls_full"], m["tls_reused"], m["tls_reuse_fraction"]) == (1, 7, 7 / 8)
    assert m["tls_versions"] == {"TLSv1.3": 8} and m["tls_peer_sha256"] == "ab"
    plain = {k: v for k, v in one.items() if not k.startswith("tls_")}
    assert "tls_full" not in mailbench.merge_login_results([plain, plain])


def test_tls_checks() -> None:
    good = _gen_result(3, [], 0, 3)
    assert mailbench.tls_checks(good, "ab", False) == []
    assert mailbench.tls_checks(dict(good, tls_reused=2), "ab", True) == []
    bad = dict(good, tls_versions={"TLSv1.2": 3}, tls_reused=1, tls_peer_sha256="cd")
    assert len(mailbench.tls_checks(bad, "ab", False)) == 3


def test_count_tracebacks() -> None:
    text = (
        "Fatal error on transport TCPTransport\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    g()\n    ^^^\nAttributeError: no early_input\n'
        "Traceback (most recent call last):\n  File \"y\"\nKeyError: 'k'\nlater output\n"
    )
    assert mailbench.count_tracebacks(text) == (2, "KeyError: 'k'")
    assert mailbench.count_tracebacks("all quiet\n") == (0, "")


def test_tls_rows_and_targets() -> None:
    phases = ["imaps_login", "imaps_login_resumed", "imaps_download"]
    ms = mailbench.metrics(phases, _args())
    targets = {m.label: m.target for m in ms}
    assert targets["IMAPS proxy CPU per TLS login (full handshake)"] == 1.3
    assert targets["IMAPS proxy CPU per TLS login (resumed handshake)"] == 1.3
    assert targets["IMAPS FETCH proxy CPU per MiB (TLS)"] == 1.2
    assert targets["IMAPS handshakes resumed"] is None

    def login(cpu: float, errors: int = 0) -> dict[str, Any]:
        return {"cpu_us": cpu, "rate": 500.0, "sessions": 1000, "errors": errors,
                "tls_reuse_fraction": 1.0}  # fmt: skip

    dl = {"cpu_ms_per_mb": 1.5, "mb_s": 700.0}
    rounds = {
        "nginx": [{"imaps_login": login(370.0), "imaps_login_resumed": login(370.0),
                   "imaps_download": dl}],
        "mailfront": [{"imaps_login": login(444.0), "imaps_login_resumed": login(600.0, 11),
                       "imaps_download": dict(dl, cpu_ms_per_mb=0.9)}],
    }  # fmt: skip
    table = mailbench.summarize(rounds, ["nginx", "mailfront"], ms)
    rows = {row["metric"]: row for row in table}
    full = rows["IMAPS proxy CPU per TLS login (full handshake)"]
    assert full["ratio"]["median"] == pytest.approx(1.2) and full["meets_target"] is True
    # more than 1 % of the sessions failed: no figure, no ratio, no verdict
    resumed = rows["IMAPS proxy CPU per TLS login (resumed handshake)"]
    assert resumed["values"]["mailfront"]["median"] is None and resumed["meets_target"] is None
    assert rows["IMAPS FETCH proxy CPU per MiB (TLS)"]["meets_target"] is True
    text = mailbench.render_table(table, ["nginx", "mailfront"])
    assert "<= 1.3 ok" in text and "<= 1.2 ok" in text
    assert "<= 1.3\n" in text  # the resumed row: a target, but no verdict without a figure


def test_phase_ports() -> None:
    assert mailbench.phase_port("imaps_login_resumed", PORTS) == 31993
    assert mailbench.phase_port("imaps_download", PORTS) == 31993
    assert mailbench.phase_port("pop3_login", PORTS) == 31110
    assert mailbench.phase_port("memory", PORTS) == 31143


# ----------------------------------------------------------- args and table
def test_quick_shortens_only_what_was_not_given() -> None:
    a = mailbench.parse_args(["--quick", "-d", "2"])
    assert (a.rounds, a.duration, a.download_mb, a.latency_count) == (1, 2.0, 64, 1000)
    assert a.mem_levels == [1000, 3000] and a.max_time == 120.0
    b = mailbench.parse_args(["--phases", "imap_login,memory", "--mem-levels", "4000,1000"])
    assert (b.rounds, b.duration, b.download_mb) == (3, 3.0, 256)
    assert b.phases == ["imap_login", "memory"] and b.mem_levels == [1000, 4000]
    with pytest.raises(SystemExit):
        mailbench.parse_args(["--phases", "imap_upload"])
    c = mailbench.parse_args([])
    assert c.phases[-3:] == ["imaps_login", "imaps_login_resumed", "imaps_download"]
    assert c.phases.index("memory") < c.phases.index("imaps_login")  # TLS runs last
    assert (c.tls_key, c.gen_procs, c.gen_cpus, c.tls) == ("ecdsa", 1, [1], None)
    d = mailbench.parse_args(["--tls-key", "rsa", "--gen-procs", "2", "--gen-cpus", "1,2"])
    assert (d.tls_key, d.gen_procs, d.gen_cpus) == ("rsa", 2, [1, 2])
    with pytest.raises(SystemExit):
        mailbench.parse_args(["--gen-procs", "0"])


def _args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"concurrency": 50, "mem_concurrency": 200, **kw})


def test_summarize_takes_the_median_of_per_round_ratios() -> None:
    ms = mailbench.metrics(["imap_login"], _args())
    rounds = {
        "nginx": [{"imap_login": {"cpu_us": 100.0, "rate": 7000.0}}] * 2
        + [{"imap_login": {"cpu_us": 200.0, "rate": 7000.0}}],
        "mailfront": [
            {"imap_login": {"cpu_us": 120.0, "rate": 6000.0}},
            {"imap_login": {"cpu_us": 180.0, "rate": 6000.0}},
            {},  # a failed round: no figure, no ratio
        ],
    }
    table = mailbench.summarize(rounds, ["nginx", "mailfront"], ms)
    cpu = table[0]
    assert cpu["metric"] == "IMAP proxy CPU per session"
    assert cpu["values"]["nginx"]["median"] == 100.0
    assert cpu["values"]["mailfront"]["samples"] == [120.0, 180.0, None]
    assert cpu["ratio"]["samples"] == [1.2, 1.8]
    assert cpu["ratio"]["median"] == pytest.approx(1.5)
    assert cpu["meets_target"] is True
    assert table[1]["meets_target"] is None  # sessions/s: report only
    text = mailbench.render_table(table, ["nginx", "mailfront"])
    assert "<= 1.5 ok" in text and "ratio mailfront/nginx" in text


def test_memory_rows_drop_levels_with_failed_sessions() -> None:
    ms = mailbench.metrics(["memory"], _args(mem_levels=[1000, 8000]))
    lv = {"held": 8000, "errors": 0, "rss_per_conn": 9750.0, "pss_per_conn": 9750.0,
          "fds_per_conn": 2.0, "open_cpu_us": 100.0}  # fmt: skip
    bad = dict(lv, errors=200)
    rounds = {
        "nginx": [{"memory": {"rss0_mb": 15.0, "levels": {"1000": lv, "8000": lv}}}],
        "mailfront": [{"memory": {"rss0_mb": 30.0, "levels": {"1000": lv, "8000": bad}}}],
    }
    table = {row["metric"]: row for row in mailbench.summarize(rounds, ["nginx", "mailfront"], ms)}
    top = table["RSS per idle IMAP session (K=8000)"]
    assert top["target"] == 0.5 and top["values"]["mailfront"]["median"] is None
    assert table["RSS per idle IMAP session (K=1000)"]["ratio"]["median"] == 1.0
    assert table["proxy RSS before the memory phase"]["ratio"]["median"] == 2.0
    one = mailbench.summarize(rounds, ["nginx"], ms)
    assert "ratio" not in one[0] and "mailfront" not in mailbench.render_table(one, ["nginx"])


# ------------------------------------------------------------------ loadgen
def test_percentile_is_nearest_rank() -> None:
    assert loadgen.pct([], 50) is None
    assert loadgen.pct([5.0, 1.0, 3.0], 50) == 3.0
    values = [float(i) for i in range(1, 101)]
    assert loadgen.pct(values, 99) == 99.0 and loadgen.pct(values, 100) == 100.0


def test_session_scripts() -> None:
    imap = loadgen.session_steps("imap")
    assert imap[0][2] == b"a1 LOGIN bench@bench.test secret\r\n"
    assert [s[2] for s in imap[1:]] == [b"a2 LOGOUT\r\n", None]
    pop3 = loadgen.session_steps("pop3")
    assert [s[2] for s in pop3] == [
        b"USER bench@bench.test\r\n",
        b"PASS secret\r\n",
        b"QUIT\r\n",
        None,
    ]
    smtp = loadgen.session_steps("smtp")
    assert smtp[1][2] == b"AUTH PLAIN AGJlbmNoQGJlbmNoLnRlc3QAc2VjcmV0\r\n"
    assert smtp[-1] == (loadgen.SMTP, b"221", None)
    m = loadgen.step_matches
    assert m(loadgen.TAG, b"a1 ", b"* CAPABILITY IMAP4rev1") is None
    assert m(loadgen.TAG, b"a1 ", b"a1 OK LOGIN completed") is True
    assert m(loadgen.TAG, b"a1 ", b"a1 NO [AUTHENTICATIONFAILED]") is False
    assert m(loadgen.SMTP, b"250", b"250-PIPELINING") is None
    assert m(loadgen.SMTP, b"250", b"250 8BITMIME") is True
    assert m(loadgen.LINE, b"+OK", b"-ERR no") is False


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.out.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    abort = close

    def set_write_buffer_limits(self, high: int = 0, low: int = 0) -> None:
        pass


def _feed(proto: asyncio.BaseProtocol, data: bytes, bytewise: bool) -> None:
    assert isinstance(proto, asyncio.Protocol)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for c in chunks:
        proto.data_received(c)


@pytest.mark.parametrize("bytewise", [False, True])
def test_script_client_runs_an_imap_session(bytewise: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        fut: asyncio.Future[Any] = loop.create_future()
        client = loadgen.Script(loadgen.session_steps("imap"), fut)
        t = FakeTransport()
        client.connection_made(t)
        server = b"* OK ready\r\n* CAPABILITY X\r\na1 OK done\r\n* BYE\r\na2 OK bye\r\n"
        _feed(client, server, bytewise)
        client.connection_lost(None)
        assert fut.result() is client
        assert t.out == [b"a1 LOGIN bench@bench.test secret\r\n", b"a2 LOGOUT\r\n"]
    finally:
        loop.close()


# -------------------------------------------------------------- mockbackend
@pytest.mark.parametrize("bytewise", [False, True])
def test_mock_imap_takes_nginx_literal_login_noop_fetch_logout(bytewise: bool) -> None:
    s = mockbackend.ImapServer()
    t = FakeTransport()
    s.connection_made(t)
    assert t.out.pop(0).startswith(b"* OK")
    # nginx's backend login: LOGIN with synchronising literals
    _feed(s, b"a1 LOGIN {16}\r\n", bytewise)
    assert t.out == [b"+ OK\r\n"]
    _feed(s, b"bench@bench.test {6}\r\n", bytewise)
    assert t.out == [b"+ OK\r\n"] * 2
    _feed(s, b"secret\r\n", bytewise)
    assert t.out[-1] == b"a1 OK LOGIN completed\r\n"
    t.out.clear()
    _feed(s, b"a2 LOGIN user pass\r\nn1 NOOP\r\n", bytewise)
    assert t.out == [b"a2 OK LOGIN completed\r\n", b"n1 OK NOOP completed\r\n"]
    t.out.clear()
    _feed(s, b"a3 FETCH 1 BODY[]<0.3000000>\r\nn2 NOOP\r\n", bytewise)
    out = b"".join(t.out)
    head = b"* 1 FETCH (BODY[]<0> {3000000}\r\n"
    tail = b")\r\na3 OK FETCH completed\r\nn2 OK NOOP completed\r\n"
    assert out.startswith(head) and out.endswith(tail)
    assert len(out) == len(head) + 3_000_000 + len(tail)
    t.out.clear()
    _feed(s, b"a4 LOGOUT\r\n", bytewise)
    assert t.out == [b"* BYE logging out\r\na4 OK LOGOUT completed\r\n"] and t.closed


def test_mock_imap_pauses_streaming_under_flow_control() -> None:
    s = mockbackend.ImapServer()
    t = FakeTransport()
    s.connection_made(t)
    s.pause_writing()
    s.data_received(b"a FETCH 1 BODY[]<0.4096>\r\nb NOOP\r\n")
    assert b"".join(t.out).endswith(b"{4096}\r\n")
    s.resume_writing()
    assert b"".join(t.out).endswith(b")\r\na OK FETCH completed\r\nb OK NOOP completed\r\n")


@pytest.mark.parametrize("bytewise", [False, True])
def test_mock_pop3_and_smtp(bytewise: bool) -> None:
    p = mockbackend.Pop3Server()
    t = FakeTransport()
    p.connection_made(t)
    _feed(p, b"USER u\r\nPASS p\r\nRETR 2\r\nQUIT\r\n", bytewise)
    out = b"".join(t.out)
    assert out.startswith(b"+OK mock backend ready\r\n+OK\r\n+OK logged in\r\n+OK 2048 octets\r\n")
    assert out.endswith(b"\r\n.\r\n+OK bye\r\n") and t.closed

    s = mockbackend.SmtpServer()
    t = FakeTransport()
    s.connection_made(t)
    session = (
        b"EHLO x\r\nAUTH PLAIN AGJlbmNoAHNlY3JldA==\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
        b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    _feed(s, session, bytewise)
    codes = [line[:4] for line in b"".join(t.out).split(b"\r\n") if line]
    assert codes[0] == b"220 " and codes[-3:] == [b"354 ", b"250 ", b"221 "]
    assert b"235 " in codes and t.closed


def test_mock_auth_http_routes_by_protocol() -> None:
    mockbackend.AuthHttp.ports = {b"imap": 1143, b"smtp": 1025}
    a = mockbackend.AuthHttp()
    t = FakeTransport()
    a.connection_made(t)
    a.data_received(b"GET /auth HTTP/1.0\r\nHost: x\r\nAuth-Protocol: smtp\r\n")
    assert t.out == []
    a.data_received(b"\r\n")
    reply = b"".join(t.out)
    assert reply.startswith(b"HTTP/1.1 204 ") and b"Auth-Status: OK\r\n" in reply
    assert b"Auth-Port: 1025\r\n" in reply and t.closed


# -------------------------------------------------- generator's TLS clients
def test_client_context_is_tls13_only() -> None:
    ctx = loadgen.client_context(None, resume=True)
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE and ctx.resume
    assert loadgen.error_kind(ConnectionResetError()) == "ConnectionResetError"
    assert loadgen.error_kind(RuntimeError("closed at step 1")) == "closed at step 1"


def _server_context(files: mailbench.TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


def _handshake(client: ssl.SSLObject, server: ssl.SSLObject, greeting: bytes) -> bytes:
    """Pump the memory BIOs until the handshake is done and the greeting is read."""
    c_in, c_out = client._sslobj_bios  # type: ignore[attr-defined]
    s_in, s_out = server._sslobj_bios  # type: ignore[attr-defined]
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        c_out_data, s_out_data = c_out.read(), s_out.read()
        s_in.write(c_out_data)
        c_in.write(s_out_data)
        if done["c"] and done["s"] and not c_out_data and not s_out_data:
            break
    server.write(greeting)
    c_in.write(s_out.read())
    return client.read(1024)


def _pair(
    ctx: loadgen.SlotContext, server_ctx: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = ctx.wrap_bio(bios[0], bios[1], server_hostname=loadgen.TLS_SERVER_NAME)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    client._sslobj_bios = (bios[0], bios[1])  # type: ignore[attr-defined]
    server._sslobj_bios = (bios[2], bios[3])  # type: ignore[attr-defined]
    return client, server


@needs_openssl
def test_slot_context_resumes_its_newest_tls13_session(tls_files: mailbench.TlsFiles) -> None:
    server_ctx = _server_context(tls_files)
    ctx = loadgen.client_context(tls_files.cert, resume=True)
    stats = loadgen.TlsStats()
    client, server = _pair(ctx, server_ctx)
    assert _handshake(client, server, b"* OK hello\r\n") == b"* OK hello\r\n"
    stats.add(client)
    assert client.version() == "TLSv1.3" and not client.session_reused
    ctx.session = client.session  # what TlsScript keeps once the greeting arrived
    assert ctx.session is not None and ctx.session.has_ticket
    for _ in range(2):
        client, server = _pair(ctx, server_ctx)  # wrap_bio is given no session: the slot's
        _handshake(client, server, b"* OK again\r\n")
        stats.add(client)
        assert client.session_reused and server.session_reused
        ctx.session = client.session
    res = stats.result()
    assert (res["tls_full"], res["tls_reused"], res["tls_reuse_fraction"]) == (1, 2, 2 / 3)
    assert res["tls_versions"] == {"TLSv1.3": 3}
    assert res["tls_peer_sha256"] == mailbench.cert_sha256(tls_files.cert)


class FakeSslObject:
    def __init__(self, session: object) -> None:
        self.session = session


class FakeTlsTransport(FakeTransport):
    def __init__(self, obj: FakeSslObject) -> None:
        super().__init__()
        self.obj = obj

    def get_extra_info(self, name: str) -> object:
        return self.obj if name == "ssl_object" else None


def test_tls_script_keeps_the_session_seen_with_the_greeting() -> None:
    class Stats(loadgen.TlsStats):
        def add(self, obj: Any) -> None:
            self.full += 1

    loop = asyncio.new_event_loop()
    try:
        ctx = loadgen.client_context(None, resume=True)
        fut: asyncio.Future[Any] = loop.create_future()
        script = loadgen.TlsScript(loadgen.session_steps("imap"), fut, ctx, Stats())
        obj = FakeSslObject("ticket-1")
        script.connection_made(FakeTlsTransport(obj))
        script.data_received(b"* OK re")
        assert ctx.session is None  # no whole line yet
        script.data_received(b"ady\r\n")
        assert ctx.session == "ticket-1"
        obj.session = "ticket-2"
        script.data_received(b"a1 OK done\r\n* BYE\r\na2 OK bye\r\n")
        assert ctx.session == "ticket-1"  # only the greeting's
        script.connection_lost(None)
        assert fut.result() is script and script.stats.full == 1
    finally:
        loop.close()


def test_prime_retries_failed_slots() -> None:
    ctxs: list[loadgen.SlotContext | None] = [loadgen.client_context(None, True) for _ in range(3)]
    calls: list[int] = []

    async def session(ctx: loadgen.SlotContext | None) -> None:
        assert ctx is not None
        calls.append(ctxs.index(ctx))
        if len(calls) == 2:
            raise ConnectionResetError()
        ctx.session = "t"  # type: ignore[assignment]

    asyncio.run(loadgen.prime(ctxs, session))
    assert sorted(calls) == [0, 1, 1, 2]

    async def never(ctx: loadgen.SlotContext | None) -> None:
        raise ConnectionResetError()

    with pytest.raises(SystemExit, match="3 slots: ConnectionResetError"):
        asyncio.run(loadgen.prime(ctxs, never, attempts=2))


def _loop_factories() -> list[Any]:
    out: list[Any] = [asyncio.new_event_loop]
    try:
        import uvloop  # what the bench runs on
    except ImportError:  # pragma: no cover
        return out
    out.append(uvloop.new_event_loop)
    return out


@needs_openssl
@pytest.mark.parametrize("loop_factory", _loop_factories())
@pytest.mark.parametrize("tls", ["full", "resumed"])
def test_tls_login_phase_against_the_mock_backend_over_tls(
    tls: str, loop_factory: Any, tls_files: mailbench.TlsFiles
) -> None:
    """The generator's TLS login phase on loopback: the mock IMAP backend served with ssl=."""

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            mockbackend.ImapServer, "127.0.0.1", 0, ssl=_server_context(tls_files)
        )
        port = server.sockets[0].getsockname()[1]
        ns = argparse.Namespace(
            proto="imap", host="127.0.0.1", port=port, concurrency=3, duration=0.3,
            tls=tls, cafile=tls_files.cert, lat_samples=True, no_barrier=True,
        )  # fmt: skip
        try:
            return await loadgen.login_phase(ns, asyncio.StreamReader())
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        res = runner.run(run())
    assert res["ok"] > 0 and res["err"] == 0, res["errors"]
    assert res["tls_versions"] == {"TLSv1.3": res["ok"]}
    assert len(res["lat_ms"]) == res["ok"]
    assert res["tls_peer_sha256"] == mailbench.cert_sha256(tls_files.cert)
    if tls == "full":
        assert res["tls_reused"] == 0
    else:  # every slot was primed before the barrier: all measured sessions resume
        assert res["tls_full"] == 0 and res["tls_reuse_fraction"] == 1.0
