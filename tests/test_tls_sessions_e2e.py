"""TLS session resumption across processes, end to end with ``openssl s_client``:
``ssl_session_ticket_key`` (beside mailfront, Debian's nginx with the mail module reads
the same key file and certificates), and ``ssl_session_cache shared:`` with several
workers and across a reload.

Tickets are sealed with the first key file's key and opened with any of them
(``ngx_ssl_session_ticket_key_callback``): 80-byte keys are AES-256-CBC with a
32-byte HMAC-SHA256 key, 48-byte keys AES-128-CBC with a 16-byte one.  mailfront's
session id context is nginx's (SHA-1 over "MAIL", each certificate's SHA-1, the
last configured first, and the CA names), so with the same key file a ticket that
nginx issued resumes at mailfront and the other way round: a fleet can move from
one to the other without every client paying a full handshake.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from support.certs import Issued, Pki
from support.proxy import Mailfront, free_port, wait_port

HOST = "127.0.0.1"
NGINX = "/usr/sbin/nginx"
MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
VERSIONS = {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}


@dataclass
class Env:
    mf: Mailfront
    pki: Pki
    ports: dict[str, int]
    keys: dict[str, Path]
    certs: tuple[Issued, Issued]


def key_file(folder: Path, name: str, size: int) -> Path:
    path = folder / f"{name}.key"
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tickets")
    pki = Pki(folder / "pki")
    # two certificates, as nginx's docs suggest (RSA and ECDSA): the session id
    # context hashes both, in nginx's order
    certs = (pki.server("localhost", key_type=trustme.KeyType.RSA), pki.server("localhost"))
    keys = {
        "a": key_file(folder, "a", 80),
        "b": key_file(folder, "b", 80),
        "short": key_file(folder, "short", 48),
    }
    servers = {
        "a": f"ssl_session_ticket_key {keys['a']};",
        # a new key first: it seals; a's tickets are still opened (and renewed)
        "b_then_a": f"ssl_session_ticket_key {keys['b']}; ssl_session_ticket_key {keys['a']};",
        "b": f"ssl_session_ticket_key {keys['b']};",
        "short": f"ssl_session_ticket_key {keys['short']};",
        "random": "",  # OpenSSL's own keys, drawn when the context is made
    }
    ports = {name: free_port() for name in servers}
    pairs = " ".join(f"ssl_certificate {c.cert}; ssl_certificate_key {c.key};" for c in certs)
    block = f"auth_http {HOST}:9/auth;\n{pairs}\n" + "\n".join(
        f"server {{ listen {HOST}:{ports[name]} ssl; protocol imap; {lines} }}"
        for name, lines in servers.items()
    )
    mf = Mailfront(folder / "mf", block, list(ports.values()))
    with mf:
        yield Env(mf, pki, ports, keys, certs)


def s_client(env: Env, port: int, version: str, *args: str) -> str:
    """One ``s_client`` session that logs out once greeted: "New" or "Reused".

    The command waits for the greeting: nginx 1.22.1 does not read a command that
    came with the client's last handshake flight until more data arrives.
    """
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(env.pki.ca.path),
         "-ign_eof", "-crlf", version, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        head = b""
        while b"* OK" not in head:  # raw reads: communicate() goes on from the same fd
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, head.decode("utf-8", "replace")
            head += chunk
        rest, _ = proc.communicate(b"a9 LOGOUT\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (head + rest).decode("utf-8", "replace")
    assert "a9 OK completed" in text, text
    m = re.search(rf"^(New|Reused), {VERSIONS[version]}, Cipher is ", text, re.M)
    assert m, text
    return m.group(1)


def resumes(env: Env, tmp_path: Path, version: str, issuer: int, other: int) -> bool:
    """A ticket of the server on port ``issuer``, offered to the one on ``other``."""
    sess = str(tmp_path / f"sess-{issuer}-{other}{version}.pem")
    assert s_client(env, issuer, version, "-sess_out", sess) == "New"
    return s_client(env, other, version, "-sess_in", sess) == "Reused"


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_key_file_opens_its_own_tickets(env: Env, tmp_path: Path, version: str) -> None:
    for name in ("a", "short", "random"):
        assert resumes(env, tmp_path, version, env.ports[name], env.ports[name]), name


@pytest.mark.parametrize("version", list(VERSIONS))
def test_servers_sharing_a_key_resume_each_other(env: Env, tmp_path: Path, version: str) -> None:
    p = env.ports
    # a's tickets open where a's key is second; the new key's tickets open only there
    assert resumes(env, tmp_path, version, p["a"], p["b_then_a"])
    assert resumes(env, tmp_path, version, p["b_then_a"], p["b"])
    assert not resumes(env, tmp_path, version, p["b_then_a"], p["a"])
    # other keys, or OpenSSL's own: a full handshake
    assert not resumes(env, tmp_path, version, p["a"], p["b"])
    assert not resumes(env, tmp_path, version, p["a"], p["short"])
    assert not resumes(env, tmp_path, version, p["random"], p["a"])


def test_tickets_outlive_a_reload_with_a_key_file(env: Env, tmp_path: Path) -> None:
    """A reload makes new contexts: OpenSSL's own keys change, the file's do not."""
    sess_a = str(tmp_path / "a.pem")
    sess_random = str(tmp_path / "random.pem")
    assert s_client(env, env.ports["a"], "-tls1_3", "-sess_out", sess_a) == "New"
    assert s_client(env, env.ports["random"], "-tls1_3", "-sess_out", sess_random) == "New"
    assert s_client(env, env.ports["random"], "-tls1_3", "-sess_in", sess_random) == "Reused"
    done = ": reconfiguring\n"  # the line after the new configuration took over
    before = env.mf.log().count(done)
    env.mf.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while env.mf.log().count(done) == before:
        assert time.monotonic() < deadline, env.mf.log()
        time.sleep(0.05)
    assert s_client(env, env.ports["a"], "-tls1_3", "-sess_in", sess_a) == "Reused"
    assert s_client(env, env.ports["random"], "-tls1_3", "-sess_in", sess_random) == "New"


# -- with nginx --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_port(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Debian's nginx, mail module, one server like mailfront's "a"."""
    if not (os.access(NGINX, os.X_OK) and os.path.exists(MAIL_MODULE)):
        pytest.skip("nginx with the mail module is not installed")
    folder = tmp_path_factory.mktemp("nginx")
    (folder / "logs").mkdir()
    port = free_port()
    pairs = " ".join(f"ssl_certificate {c.cert}; ssl_certificate_key {c.key};" for c in env.certs)
    conf = folder / "nginx.conf"
    conf.write_text(
        f"load_module {MAIL_MODULE};\ndaemon off;\nmaster_process off;\n"
        f"pid {folder}/nginx.pid;\nerror_log {folder}/logs/error.log info;\nevents {{}}\n"
        f"mail {{ auth_http {HOST}:9/auth; {pairs}\n"
        f"  ssl_protocols TLSv1.2 TLSv1.3;\n"  # 1.22.1 has TLSv1.3 off by default
        f"  server {{ listen {HOST}:{port} ssl; protocol imap;"
        f" ssl_session_ticket_key {env.keys['a']}; }} }}\n"
    )
    proc = subprocess.Popen(
        [NGINX, "-p", f"{folder}/", "-c", str(conf), "-e", f"{folder}/logs/error.log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_nginx_and_mailfront_open_each_other_s_tickets(
    env: Env, nginx_port: int, tmp_path: Path, version: str
) -> None:
    p = env.ports
    assert resumes(env, tmp_path, version, nginx_port, p["a"])
    assert resumes(env, tmp_path, version, p["a"], nginx_port)
    assert resumes(env, tmp_path, version, nginx_port, p["b_then_a"])
    assert not resumes(env, tmp_path, version, nginx_port, p["b"])


# -- ssl_session_cache shared: -----------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A master with four workers: a shared cache with tickets off, and tickets sealed with
    the zone's keys (no ssl_session_ticket_key)."""
    folder = tmp_path_factory.mktemp("workers")
    servers = {
        "cache": "ssl_session_tickets off; ssl_session_cache shared:MAIL:1m;",
        "zone_tickets": "ssl_session_cache shared:MAIL:1m;",
    }
    ports = {name: free_port() for name in servers}
    pairs = " ".join(f"ssl_certificate {c.cert}; ssl_certificate_key {c.key};" for c in env.certs)
    block = f"auth_http {HOST}:9/auth;\n{pairs}\n" + "\n".join(
        f"server {{ listen {HOST}:{ports[name]} ssl; protocol imap; {lines} }}"
        for name, lines in servers.items()
    )
    mf = Mailfront(folder, block, list(ports.values()), main="worker_processes 4;")
    mf.conf.write_text(mf.conf.read_text().replace("master_process off;", "master_process on;"))
    with mf:
        yield Env(mf, env.pki, ports, env.keys, env.certs)


def reload(mf: Mailfront) -> None:
    """SIGHUP to the master; back once the new generation of workers is up."""
    started = mf.log().count("start worker process")
    mf.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while mf.log().count("start worker process") < started + 4:
        assert time.monotonic() < deadline, mf.log()
        time.sleep(0.05)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_shared_cache_resumes_in_every_worker(workers: Env, tmp_path: Path, version: str) -> None:
    """Tickets off: only the session id; every worker finds the session in the zone."""
    port = workers.ports["cache"]
    sess = str(tmp_path / "sess.pem")
    start = len(workers.mf.log())
    assert s_client(workers, port, version, "-sess_out", sess) == "New"
    for _ in range(12):
        assert s_client(workers, port, version, "-sess_in", sess) == "Reused"
    # the sessions were served by more than one worker (else this proves nothing)
    served = re.findall(rf"\] (\d+)#0: \*\d+ client \S+ connected to {HOST}:{port}\n",
                        workers.mf.log()[start:])  # fmt: skip
    assert len(set(served)) >= 2, served


def test_shared_zone_outlives_a_reload(workers: Env, tmp_path: Path) -> None:
    """The zone, its sessions and its ticket keys, stay for the next configuration."""
    cache = str(tmp_path / "cache.pem")
    ticket = str(tmp_path / "ticket.pem")
    assert s_client(workers, workers.ports["cache"], "-tls1_2", "-sess_out", cache) == "New"
    assert s_client(workers, workers.ports["zone_tickets"], "-tls1_3", "-sess_out", ticket) == (
        "New"
    )
    reload(workers.mf)
    assert s_client(workers, workers.ports["cache"], "-tls1_2", "-sess_in", cache) == "Reused"
    assert s_client(workers, workers.ports["zone_tickets"], "-tls1_3", "-sess_in", ticket) == (
        "Reused"
    )
