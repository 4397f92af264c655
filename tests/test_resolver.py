"""The SMTP client resolver against a DNS server of our own on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import dns.name
import pytest
import uvloop

from mailfront.conf.model import Protocol, Resolver, ServerConf
from mailfront.protocol.smtp import (
    ACTION_RESOLVING_ADDRESS,
    ACTION_RESOLVING_HOSTNAME,
    TEMPUNAVAIL,
    UNAVAILABLE,
)
from mailfront.server import resolver as res
from mailfront.server.log import ERR
from mailfront.server.resolver import Resolved, resolve_client_host
from support.dnsserver import Answer, DnsServer
from support.machines import server_conf

T = TypeVar("T")

PTR4 = "1.0.0.127.in-addr.arpa"
PTR6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"
GOOD = {(PTR4, "PTR"): ["a.example.net."], ("a.example.net", "A"): ["127.0.0.1"]}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    res.clear_cache()
    yield
    res.clear_cache()


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return uvloop.run(main())


def conf(*servers: DnsServer | tuple[str, int], timeout: float = 2.0, **kw: object) -> ServerConf:
    addresses = tuple(s.address if isinstance(s, DnsServer) else s for s in servers)
    return server_conf(
        Protocol.SMTP,
        resolver=Resolver(addresses, **kw),  # type: ignore[arg-type]
        resolver_timeout=timeout,
    )


def resolve(zone: dict[tuple[str, str], Answer], addr: str = "127.0.0.1", **kw: object) -> Resolved:
    with DnsServer(zone) as server:
        return run(resolve_client_host(conf(server, **kw), addr))  # type: ignore[arg-type]


def test_forward_confirmed_name() -> None:
    with DnsServer({**GOOD, ("a.example.net", "AAAA"): ["::2"]}) as server:
        got = run(resolve_client_host(conf(server), "127.0.0.1"))
        assert got == Resolved(b"a.example.net")
        assert server.queries == [(PTR4, "PTR"), ("a.example.net", "A"), ("a.example.net", "AAAA")]


def test_name_keeps_its_case_and_any_matching_address_counts() -> None:
    zone: dict[tuple[str, str], Answer] = {
        (PTR4, "PTR"): ["Mail-1.Example.NET."],
        ("mail-1.example.net", "A"): ["10.0.0.1", "127.0.0.1"],
    }
    assert resolve(zone) == Resolved(b"Mail-1.Example.NET")


def test_ipv6_client() -> None:
    zone: dict[tuple[str, str], Answer] = {
        (PTR6, "PTR"): ["six.example.net."],
        ("six.example.net", "AAAA"): ["::1"],
    }
    assert resolve(zone, "::1") == Resolved(b"six.example.net")


def test_ipv6_off_asks_no_aaaa() -> None:
    with DnsServer(GOOD) as server:
        got = run(resolve_client_host(conf(server, ipv6=False), "127.0.0.1"))
        assert got.host == b"a.example.net"
        assert ("a.example.net", "AAAA") not in server.queries


def test_forward_mismatch_is_unavailable_without_a_log() -> None:
    zone: dict[tuple[str, str], Answer] = {
        (PTR4, "PTR"): ["a.example.net."],
        ("a.example.net", "A"): ["192.0.2.1"],
    }
    assert resolve(zone) == Resolved(UNAVAILABLE)


@pytest.mark.parametrize(
    ("answer", "host", "error"),
    [
        ("NXDOMAIN", UNAVAILABLE, "3: Host not found"),
        ("EMPTY", UNAVAILABLE, "3: Host not found"),
        ("SERVFAIL", TEMPUNAVAIL, "2: Server failure"),
        ("REFUSED", TEMPUNAVAIL, "5: Operation refused"),
        ("BROKEN", TEMPUNAVAIL, "1: Format error"),
    ],
)
def test_ptr_errors(answer: str, host: bytes, error: str) -> None:
    got = resolve({(PTR4, "PTR"): answer})
    msg = f"127.0.0.1 could not be resolved ({error})"
    assert got == Resolved(host, ((ERR, ACTION_RESOLVING_ADDRESS, msg),))


@pytest.mark.parametrize(
    ("a", "aaaa", "host", "error"),
    [
        ("NXDOMAIN", "NXDOMAIN", UNAVAILABLE, "3: Host not found"),
        ("EMPTY", "EMPTY", UNAVAILABLE, "3: Host not found"),
        ("SERVFAIL", "NXDOMAIN", TEMPUNAVAIL, "2: Server failure"),
        ("NXDOMAIN", "REFUSED", TEMPUNAVAIL, "5: Operation refused"),
    ],
)
def test_forward_errors(a: str, aaaa: str, host: bytes, error: str) -> None:
    zone: dict[tuple[str, str], Answer] = {
        (PTR4, "PTR"): ["a.example.net."],
        ("a.example.net", "A"): a,
        ("a.example.net", "AAAA"): aaaa,
    }
    msg = f'"a.example.net" could not be resolved ({error})'
    assert resolve(zone) == Resolved(host, ((ERR, ACTION_RESOLVING_HOSTNAME, msg),))


def test_forward_error_on_one_family_does_not_hide_a_match() -> None:
    zone: dict[tuple[str, str], Answer] = {**GOOD, ("a.example.net", "AAAA"): "SERVFAIL"}
    assert resolve(zone) == Resolved(b"a.example.net")


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        ([b"evil\r\nAuth-Status: OK", b"example", b"net"], "evil\\r\\nAuth-Status: OK.example.net"),
        ([b"two words", b"example"], "two words.example"),
        ([b"under_score", b"example"], "under_score.example"),
        ([b"caf\xc3\xa9", b"example"], "caf\\xe9.example"),
        ([b"x=1", b"example"], "x=1.example"),
        ([b'quo"te'], 'quo\\"te'),
    ],
)
def test_cve_2026_28753_invalid_names_are_tempunavail(labels: list[bytes], shown: str) -> None:
    """No PTR name outside [A-Za-z0-9.-] may reach auth_http or XCLIENT; no forward query."""
    target = dns.name.Name([*labels, b""])
    with DnsServer({(PTR4, "PTR"): [target]}) as server:
        got = run(resolve_client_host(conf(server), "127.0.0.1"))
        assert server.queries == [(PTR4, "PTR")]
    msg = f'127.0.0.1 resolved to invalid host name "{shown}"'
    assert got == Resolved(TEMPUNAVAIL, ((ERR, ACTION_RESOLVING_ADDRESS, msg),))


def test_empty_ptr_name_is_invalid() -> None:
    got = resolve({(PTR4, "PTR"): [dns.name.root]})
    assert got.host == TEMPUNAVAIL
    assert "resolved to invalid host name" in got.logs[0][2]


def test_ptr_timeout() -> None:
    with DnsServer({(PTR4, "PTR"): "DROP"}) as server:
        start = time.monotonic()
        got = run(resolve_client_host(conf(server, timeout=0.3), "127.0.0.1"))
        elapsed = time.monotonic() - start
    msg = "127.0.0.1 could not be resolved (110: Operation timed out)"
    assert got == Resolved(TEMPUNAVAIL, ((ERR, ACTION_RESOLVING_ADDRESS, msg),))
    assert 0.25 < elapsed < 2.0


def test_forward_timeout_is_per_query() -> None:
    zone: dict[tuple[str, str], Answer] = {
        (PTR4, "PTR"): ["a.example.net."],
        ("a.example.net", "A"): "DROP",
        ("a.example.net", "AAAA"): "DROP",
    }
    msg = '"a.example.net" could not be resolved (110: Operation timed out)'
    got = resolve(zone, timeout=0.3)
    assert got == Resolved(TEMPUNAVAIL, ((ERR, ACTION_RESOLVING_HOSTNAME, msg),))


def test_nothing_listens_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    got = run(resolve_client_host(conf(dead, timeout=0.3), "127.0.0.1"))
    assert got.host == TEMPUNAVAIL
    assert got.logs[0][2].endswith("(110: Operation timed out)")


def test_silent_server_then_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """nginx resends to the next server after its resend time (5 s; shortened here)."""
    monkeypatch.setattr(res, "RESEND_TIMEOUT", 0.2)
    with DnsServer({(PTR4, "PTR"): "DROP"}) as silent, DnsServer(GOOD) as good:
        got = run(resolve_client_host(conf(silent, good, timeout=3.0), "127.0.0.1"))
        assert got.host == b"a.example.net"
        assert silent.queries


def test_error_reply_is_final_and_servers_rotate() -> None:
    with DnsServer({**GOOD, (PTR4, "PTR"): "SERVFAIL"}) as bad, DnsServer(GOOD) as good:
        c = conf(bad, good)
        hosts = {run(resolve_client_host(c, "127.0.0.1")).host for _ in range(2)}
        # one lookup met the failing server and stopped there, the other the good one
        assert hosts == {TEMPUNAVAIL, b"a.example.net"}


def test_answers_are_cached_for_their_ttl() -> None:
    with DnsServer({**GOOD, ("a.example.net", "AAAA"): ["::2"]}) as server:
        c = conf(server)
        assert run(resolve_client_host(c, "127.0.0.1")).host == b"a.example.net"
        n = len(server.queries)
        assert run(resolve_client_host(c, "127.0.0.1")).host == b"a.example.net"
        assert len(server.queries) == n


def test_resolver_off_and_unix_clients() -> None:
    plain = server_conf(Protocol.SMTP)
    assert run(resolve_client_host(plain, "127.0.0.1")) == Resolved(UNAVAILABLE)
    assert run(resolve_client_host(plain, "unix:")) == Resolved(UNAVAILABLE)
    with DnsServer(GOOD) as server:
        assert run(resolve_client_host(conf(server), "unix:")) == Resolved(TEMPUNAVAIL)
        assert server.queries == []
