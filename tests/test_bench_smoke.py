"""Smoke tests of bench/'s pure parts: /proc parsing, the config writer, the
argument defaults, the summary table, the generator's scripts and the mock
backend's parsers.  No timing is asserted and no benchmark is run."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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
    assert len(set(PORTS.all())) == 7
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
