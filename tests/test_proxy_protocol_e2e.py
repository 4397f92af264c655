"""PROXY protocol through mailfront: listen ... proxy_protocol, set_real_ip_from, to backends."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import threading
from collections.abc import Iterator

import pytest

from mailfront.devtools.dovecot import DEMO_USERS, Dovecot
from mailfront.protocol.proxy_protocol import crc32c
from support.authserver import AuthServer
from support.certs import Issued, Pki
from support.dovecot import require_dovecot
from support.net import close_all, connect, read_all, read_line, wait_for
from support.proxy import Mailfront, free_port

PASS = DEMO_USERS["alice"].encode()


class Recorder:
    """A backend that keeps the first bytes it gets (the PROXY header), then closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                with contextlib.suppress(OSError):
                    self.got.append(c.recv(4096))


@pytest.fixture(scope="module")
def env(dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    state: dict[str, object] = {"backend": dovecot.imap_port}

    def handler(h: dict[str, str]) -> list[tuple[str, str]]:
        return [
            ("Auth-Status", "OK"),
            ("Auth-Server", "127.0.0.1"),
            ("Auth-Port", str(state["backend"])),
        ]

    auth = AuthServer(handler)
    rec = Recorder()
    ports = {name: free_port() for name in ("trusted", "untrusted", "v1out", "v2out", "v2tls")}
    pki = Pki(tmp_path_factory.mktemp("pki"))
    server = pki.server("mail.test")
    client = pki.client("alice-client")
    block = f"""
    auth_http {auth.url};
    server {{ listen 127.0.0.1:{ports["trusted"]} proxy_protocol; protocol imap;
             set_real_ip_from 127.0.0.0/8; }}
    server {{ listen 127.0.0.1:{ports["untrusted"]} proxy_protocol; protocol imap;
             set_real_ip_from 10.0.0.0/8; }}
    server {{ listen 127.0.0.1:{ports["v1out"]}; protocol imap; proxy_protocol on; }}
    server {{ listen 127.0.0.1:{ports["v2out"]}; protocol imap; proxy_protocol v2; }}
    server {{ listen 127.0.0.1:{ports["v2tls"]} ssl; protocol imap; proxy_protocol v2;
             ssl_certificate {server.cert}; ssl_certificate_key {server.key};
             ssl_verify_client optional; ssl_client_certificate {pki.ca.path}; }}
    """
    with Mailfront(tmp_path_factory.mktemp("mf-pp"), block, list(ports.values())) as mf:
        state.update(mf=mf, auth=auth, rec=rec, ports=ports, pki=pki, client=client)
        yield state
    auth.close()
    rec.sock.close()


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    close_all()


def login_after(port: int, header: bytes) -> bytes:
    s = connect(port)
    s.sendall(header)
    assert read_line(s) == b"* OK IMAP4 ready\r\n"
    s.sendall(b"a1 LOGIN alice " + PASS + b"\r\n")
    line = read_line(s)
    s.sendall(b"a2 LOGOUT\r\n")
    read_all(s)
    return line


def test_v1_header_from_a_trusted_peer_sets_the_client_address(env) -> None:  # type: ignore[no-untyped-def]
    auth: AuthServer = env["auth"]  # type: ignore[assignment]
    mf: Mailfront = env["mf"]  # type: ignore[assignment]
    port = env["ports"]["trusted"]  # type: ignore[index]
    n = len(auth.requests)
    line = login_after(port, b"PROXY TCP4 192.0.2.10 127.0.0.1 50123 143\r\n")
    assert line.startswith(b"a1 OK")
    req = auth.requests[n]
    assert b"Client-IP: 192.0.2.10\r\n" in req
    assert (
        b"Proxy-Protocol-Addr: 192.0.2.10\r\nProxy-Protocol-Port: 50123\r\n"
        b"Proxy-Protocol-Server-Addr: 127.0.0.1\r\nProxy-Protocol-Server-Port: 143\r\n"
    ) in req
    mf.wait_log(f'client logged in, client: 192.0.2.10, server: 127.0.0.1:{port}, login: "alice"')


def test_v2_header_and_an_untrusted_peer(env) -> None:  # type: ignore[no-untyped-def]
    auth: AuthServer = env["auth"]  # type: ignore[assignment]
    port = env["ports"]["untrusted"]  # type: ignore[index]
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = (
        socket.inet_aton("198.51.100.7")
        + socket.inet_aton("127.0.0.1")
        + struct.pack("!HH", 40000, 993)
    )
    header = sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs
    n = len(auth.requests)
    assert login_after(port, header).startswith(b"a1 OK")
    req = auth.requests[n]
    assert b"Client-IP: 127.0.0.1\r\n" in req  # the TCP peer is not in set_real_ip_from
    assert b"Proxy-Protocol-Addr: 198.51.100.7\r\nProxy-Protocol-Port: 40000\r\n" in req


def test_broken_header_closes_silently(env) -> None:  # type: ignore[no-untyped-def]
    mf: Mailfront = env["mf"]  # type: ignore[assignment]
    s = connect(env["ports"]["trusted"])  # type: ignore[index]
    s.sendall(b"HELLO there\r\n")
    assert read_all(s) == b""
    mf.wait_log("broken header")


@pytest.mark.parametrize(("name", "version"), [("v1out", 1), ("v2out", 2)])
def test_header_to_the_backend(env, name: str, version: int) -> None:  # type: ignore[no-untyped-def]
    rec: Recorder = env["rec"]  # type: ignore[assignment]
    backend, env["backend"] = env["backend"], rec.port
    try:
        n = len(rec.got)
        s = connect(env["ports"][name])  # type: ignore[index]
        read_line(s)
        s.sendall(b"a1 LOGIN alice " + PASS + b"\r\n")
        assert read_all(s) == b"* BAD internal server error\r\n"  # the recorder just closes
        got = rec.got[n]
        client_port = s.getsockname()[1]
        if version == 1:
            assert (
                got
                == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {env['ports'][name]}\r\n".encode()
            )  # type: ignore[index]
        else:
            assert got.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11")
            length = struct.unpack("!H", got[14:16])[0]
            assert len(got) == 16 + length
            src, _dst, sport, dport = struct.unpack("!4s4sHH", got[16:28])
            assert (socket.inet_ntoa(src), sport) == ("127.0.0.1", client_port)
            assert dport == env["ports"][name]  # type: ignore[index]
            assert got[28] == 0x03  # only the CRC32C TLV on a plain connection
    finally:
        env["backend"] = backend


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        kind, length = data[0], struct.unpack("!H", data[1:3])[0]
        out.append((kind, data[3 : 3 + length]))
        data = data[3 + length :]
    return out


def test_v2_header_of_a_tls_client(env) -> None:  # type: ignore[no-untyped-def]
    """``proxy_protocol v2`` behind ``listen ... ssl`` (spec 1.10): AUTHORITY (the SNI),
    ALPN, then the SSL TLV with the client byte (SSL, a certificate in the session and in
    this connection), the verify result and the sub-TLVs VERSION, CN, CIPHER, SIG_ALG and
    KEY_ALG (of mailfront's own ECDSA P-256 certificate), and CRC32C last."""
    rec: Recorder = env["rec"]  # type: ignore[assignment]
    pki: Pki = env["pki"]  # type: ignore[assignment]
    client: Issued = env["client"]  # type: ignore[assignment]
    backend, env["backend"] = env["backend"], rec.port
    try:
        n = len(rec.got)
        ctx = ssl.create_default_context(cafile=str(pki.ca.path))
        ctx.load_cert_chain(str(client.cert), str(client.key))
        ctx.set_alpn_protocols(["imap"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        raw = connect(env["ports"]["v2tls"])  # type: ignore[index]
        s = ctx.wrap_socket(raw, server_hostname="mail.test")
        assert read_line(s) == b"* OK IMAP4 ready\r\n"
        s.sendall(b"a1 LOGIN alice " + PASS + b"\r\n")
        assert read_all(s) == b"* BAD internal server error\r\n"  # the recorder just closes
        cipher = s.cipher()[0]
        s.close()
        got = rec.got[n]
    finally:
        env["backend"] = backend
    length = struct.unpack("!H", got[14:16])[0]
    assert len(got) == 16 + length
    tlvs = _tlvs(got[28:])
    assert [k for k, _ in tlvs] == [0x02, 0x01, 0x20, 0x03]
    assert tlvs[0][1] == b"mail.test" and tlvs[1][1] == b"imap"
    ssl_tlv = tlvs[2][1]
    assert ssl_tlv[0] == 0x01 | 0x02 | 0x04 and ssl_tlv[1:5] == b"\0\0\0\0"
    assert _tlvs(ssl_tlv[5:]) == [
        (0x21, b"TLSv1.3"),
        (0x22, b"alice-client"),
        (0x23, cipher.encode()),
        (0x24, b"ecdsa-with-SHA256"),
        (0x25, b"EC256"),
    ]
    crc = tlvs[3][1]
    zeroed = got[: len(got) - 4] + b"\0\0\0\0"
    assert crc == crc32c(zeroed).to_bytes(4, "big")


# -- to a real peer: Dovecot reading the header mailfront sends ---------------------------------


@pytest.fixture(scope="module")
def haproxy_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A Dovecot whose IMAP listener takes a PROXY header first (``haproxy = yes``), behind
    mailfront servers that take the client's address from its own PROXY header (realip)
    and pass it on with ``proxy_protocol on`` (v1) and ``v2``."""
    binary = require_dovecot()
    with Dovecot(tmp_path_factory.mktemp("dovecot-haproxy"), binary=binary, haproxy=True) as dc:
        auth = AuthServer(
            lambda h: [
                ("Auth-Status", "OK"),
                ("Auth-Server", "127.0.0.1"),
                ("Auth-Port", str(dc.imap_haproxy_port)),
            ]
        )
        ports = {name: free_port() for name in ("v1", "v2")}
        block = f"auth_http {auth.url};\n" + "\n".join(
            f"server {{ listen 127.0.0.1:{ports[name]} proxy_protocol; protocol imap;"
            f" set_real_ip_from 127.0.0.0/8; proxy_protocol {mode}; }}"
            for name, mode in (("v1", "on"), ("v2", "v2"))
        )
        with Mailfront(tmp_path_factory.mktemp("mf-pp-dovecot"), block, list(ports.values())) as mf:
            yield {"dovecot": dc, "ports": ports, "mf": mf}
        auth.close()


@pytest.mark.parametrize(("name", "client_ip"), [("v1", "192.0.2.71"), ("v2", "192.0.2.72")])
def test_dovecot_reads_the_header_mailfront_sends(haproxy_env, name: str, client_ip: str) -> None:  # type: ignore[no-untyped-def]
    """The client's address, from the PROXY header mailfront read, reaches Dovecot in the
    header mailfront writes: Dovecot logs the login with it as the remote address."""
    dc: Dovecot = haproxy_env["dovecot"]
    port = haproxy_env["ports"][name]
    header = f"PROXY TCP4 {client_ip} 127.0.0.1 40000 143\r\n".encode()
    assert login_after(port, header).startswith(b"a1 OK")
    wait_for(lambda: f"rip={client_ip}" in dc.log_text())
    assert re.search(rf"imap-login: Info: Login: user=<alice>, .*rip={client_ip},", dc.log_text())
