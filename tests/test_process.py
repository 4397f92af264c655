"""The process: pid file, signals (reload, reopen, graceful and fast stop), daemon mode, -s."""

from __future__ import annotations

import imaplib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailfront.devtools.dovecot import DEMO_USERS
from support.authserver import AuthServer, route_to
from support.net import wait_for
from support.proxy import Mailfront, free_port, wait_port

PASS = DEMO_USERS["alice"]


def block(auth: AuthServer, *ports: int) -> str:
    servers = "".join(f"server {{ listen 127.0.0.1:{p}; protocol imap; }}\n" for p in ports)
    return f"auth_http {auth.url};\n{servers}"


def add_server(conf: str, port: int, new_port: int) -> str:
    """``conf`` with one more IMAP server, on ``new_port``, before the one on ``port``."""
    old = f"server {{ listen 127.0.0.1:{port}"
    return conf.replace(old, f"server {{ listen 127.0.0.1:{new_port}; protocol imap; }}\n{old}", 1)


def login(port: int) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    assert m.login("alice", PASS)[0] == "OK"
    return m


def wait_gone(pid_path: Path, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end and pid_path.exists():
        time.sleep(0.05)
    assert not pid_path.exists()


def test_pid_file_reload_and_bad_reload(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        p1, p2 = free_port(), free_port()
        mf = Mailfront(tmp_path, block(auth, p1), [p1])
        with mf:
            assert mf.proc is not None
            pid_path = tmp_path / "mailfront.pid"
            assert pid_path.read_text() == f"{mf.proc.pid}\n"
            held = login(p1)  # a session that lives across the reloads
            # a broken configuration is refused; the old one keeps serving
            good = mf.conf.read_text()
            mf.conf.write_text(
                good.replace("protocol imap;", "protocol imap; bogus_directive 1;", 1)
            )
            mf.signal(signal.SIGHUP)
            mf.wait_log('unknown directive "bogus_directive"')
            login(p1).logout()
            # a good new configuration adds a server; running sessions keep going
            mf.conf.write_text(add_server(good, p1, p2))
            mf.signal(signal.SIGHUP)
            wait_port(p2)
            login(p2).logout()
            assert held.noop()[0] == "OK"
            held.logout()
            # USR1 reopens the log file
            os.rename(mf.log_path, tmp_path / "logs" / "old.log")
            mf.signal(signal.SIGUSR1)
            wait_for(lambda: mf.log_path.exists())
            assert mf.log_path.exists()
            login(p1).logout()
            mf.wait_log("client logged in")
            assert mf.stop() == 0
            assert not pid_path.exists()


def test_graceful_stop_lets_sessions_finish(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        p1 = free_port()
        mf = Mailfront(tmp_path, block(auth, p1), [p1])
        with mf:
            assert mf.proc is not None
            m = login(p1)
            mf.signal(signal.SIGQUIT)
            mf.wait_log("gracefully shutting down")
            time.sleep(0.3)
            with pytest.raises(OSError):
                imaplib.IMAP4("127.0.0.1", p1, timeout=2)
            assert mf.proc.poll() is None  # still serving the session
            assert m.select("INBOX")[0] == "OK"
            m.logout()
            assert mf.proc.wait(10) == 0


def test_fast_stop_closes_sessions(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        p1 = free_port()
        mf = Mailfront(tmp_path, block(auth, p1), [p1])
        with mf:
            assert mf.proc is not None
            m = login(p1)
            mf.signal(signal.SIGTERM)
            assert mf.proc.wait(10) == 0
            with pytest.raises((imaplib.IMAP4.abort, OSError)):
                m.noop()
            m.shutdown()


def test_daemon_and_signal_flag(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        p1 = free_port()
        mf = Mailfront(tmp_path, block(auth, p1), [p1])
        conf = mf.conf.read_text().replace("daemon off;", "daemon on;")
        mf.conf.write_text(conf)
        cmd = [sys.executable, "-m", "mailfront", "-c", str(mf.conf), "-p", str(tmp_path) + "/"]
        out = subprocess.run(cmd, capture_output=True, timeout=20)
        assert out.returncode == 0, out.stderr
        wait_port(p1)
        pid_path = tmp_path / "mailfront.pid"
        pid = int(pid_path.read_text())
        os.kill(pid, 0)  # the daemon runs
        login(p1).logout()
        out = subprocess.run([*cmd, "-s", "reload"], capture_output=True, timeout=20)
        assert out.returncode == 0, out.stderr
        mf.wait_log("reconfiguring")
        out = subprocess.run([*cmd, "-s", "quit"], capture_output=True, timeout=20)
        assert out.returncode == 0, out.stderr
        wait_gone(pid_path)


def test_reload_turns_tls_on_for_a_socket_that_stays(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    from support.certs import Pki

    pki = Pki(tmp_path / "pki")
    server = pki.server("127.0.0.1")
    ctx = ssl.create_default_context(cafile=str(pki.ca.path))
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        p1 = free_port()
        mf = Mailfront(tmp_path, block(auth, p1), [p1])
        with mf:
            login(p1).logout()  # plain
            text = mf.conf.read_text()
            mf.conf.write_text(
                text.replace(f"listen 127.0.0.1:{p1};", f"listen 127.0.0.1:{p1} ssl;").replace(
                    "auth_http ",
                    f"ssl_certificate {server.cert}; ssl_certificate_key {server.key};\nauth_http ",
                )
            )
            mf.signal(signal.SIGHUP)
            mf.wait_log("reconfiguring")
            deadline = time.monotonic() + 5
            while True:  # the same port now speaks TLS from the first byte
                try:
                    m = imaplib.IMAP4_SSL("127.0.0.1", p1, ssl_context=ctx, timeout=5)
                    break
                except (ssl.SSLError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert m.login("alice", PASS)[0] == "OK"
            m.logout()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _stuck(pid: int, mf: Mailfront, logdir: Path) -> str:
    """What there is to know of a worker that did not leave: its state, where it waits,
    the logs (the one before the rotation too) and the processes' stderr."""
    parts = []
    for name in ("status", "wchan", "stack"):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text(errors="replace")
        except OSError as e:
            text = str(e)
        if name == "status":
            text = "".join(ln for ln in text.splitlines(True) if ln.startswith(("State", "Sig")))
        parts.append(f"--- /proc/{pid}/{name}\n{text}")
    for path in sorted(logdir.glob("error.log*")):
        parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
    parts.append(f"--- stdout/stderr\n{mf.output()}")
    return "\n".join(parts)


def test_master_and_workers(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with AuthServer(route_to(dovecot.imap_port)) as auth:
        p1, p2 = free_port(), free_port()
        mf = Mailfront(tmp_path, block(auth, p1), [p1], main="worker_processes 2;")
        mf.conf.write_text(mf.conf.read_text().replace("master_process off;", "master_process on;"))
        with mf:
            assert mf.proc is not None
            master = mf.proc.pid
            assert (tmp_path / "mailfront.pid").read_text() == f"{master}\n"
            mf.wait_log("start worker process")
            wait_for(lambda: len(_children(master)) >= 2)
            first = _children(master)
            assert len(first) == 2
            held = login(p1)
            for _ in range(4):
                login(p1).logout()
            # reload: a new generation of workers with the new server; the old ones
            # finish their sessions
            good = mf.conf.read_text()
            mf.conf.write_text(add_server(good, p1, p2))
            mf.signal(signal.SIGHUP)
            wait_port(p2)
            login(p2).logout()
            assert held.noop()[0] == "OK"  # served by an old worker, still there
            held.logout()
            wait_for(lambda: not set(first) & set(_children(master)), 10)
            assert not set(first) & set(_children(master))  # the old generation is gone
            assert len(_children(master)) == 2
            # a broken configuration keeps the workers
            mf.conf.write_text(good.replace("protocol imap;", "protocol imap; bogus 1;", 1))
            mf.signal(signal.SIGHUP)
            mf.wait_log('unknown directive "bogus"')
            login(p1).logout()
            # a worker killed unasked comes back
            victim = _children(master)[0]
            os.kill(victim, signal.SIGKILL)
            mf.wait_log(f"worker process {victim} exited on signal 9")
            wait_for(lambda: len(_children(master)) >= 2)
            assert len(_children(master)) == 2
            mf.signal(signal.SIGQUIT)
            assert mf.proc.wait(10) == 0
            assert not (tmp_path / "mailfront.pid").exists()


def _uids(pid: int) -> tuple[int, int]:
    """The real and effective uid of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            real, effective = line.split()[1:3]
            return int(real), int(effective)
    raise AssertionError(f"no Uid line for {pid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="the workers switch users only under a root master")
def test_user_switches_the_workers(dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``user``: a root master's workers run as nginx's default user (nobody:nogroup)
    or the one named; the master stays root; USR1 hands a log file that was moved
    away back to the workers' user, so they can reopen it by name."""
    import grp
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody").pw_uid
    nogroup = grp.getgrnam("nogroup").gr_gid
    # the workers reopen their log by name: its folder must be theirs to enter
    logdir = Path(tempfile.mkdtemp(prefix="mailfront-user-"))
    logdir.chmod(0o755)
    try:
        with AuthServer(route_to(dovecot.imap_port)) as auth:
            port = free_port()
            mf = Mailfront(tmp_path, block(auth, port), [port], main="worker_processes 1;")
            text = mf.conf.read_text().replace("master_process off;", "master_process on;")
            mf.conf.write_text(text.replace(str(mf.log_path), str(logdir / "error.log")))
            mf.log_path = logdir / "error.log"
            with mf:
                assert mf.proc is not None
                master = mf.proc.pid
                mf.wait_log("start worker process")
                wait_for(lambda: _children(master))
                (worker,) = _children(master)
                wait_port(port)
                login(port).logout()
                assert _uids(master) == (0, 0)
                assert _uids(worker) == (nobody, nobody)
                status = Path(f"/proc/{worker}/status").read_text()
                assert f"Gid:\t{nogroup}\t{nogroup}" in status
                # log rotation: the file is moved away, USR1 makes a new one for the workers
                (logdir / "error.log").rename(logdir / "error.log.1")
                mf.signal(signal.SIGUSR1)
                wait_for(lambda: (logdir / "error.log").exists())
                assert (logdir / "error.log").stat().st_uid == nobody
                # the worker says so in the old file, then reopens
                wait_for(lambda: "reopening logs" in (logdir / "error.log.1").read_text())
                assert "reopening logs" in (logdir / "error.log.1").read_text()
                login(port).logout()
                mf.wait_log("client logged in")
                assert "failed" not in mf.log()
                # "user root": the workers of the next generation keep root
                text = mf.conf.read_text()
                mf.conf.write_text(text.replace("daemon off;", "daemon off;\nuser root;"))
                mf.signal(signal.SIGHUP)
                wait_for(lambda: set(_children(master)) - {worker}, 10)
                (new,) = set(_children(master)) - {worker}
                assert _uids(new) == (0, 0)
                # the old generation stops gracefully
                wait_for(lambda: worker not in _children(master), 30)
                assert _children(master) == [new], _stuck(worker, mf, logdir)
                mf.signal(signal.SIGQUIT)
                assert mf.proc.wait(10) == 0
    finally:
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)
