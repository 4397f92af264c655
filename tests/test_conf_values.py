"""nginx's value parsers: numbers, sizes, times, addresses, URLs."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfront.conf.values import (
    MAX_INT_T,
    ResolveError,
    UrlError,
    atoi,
    inet6_addr,
    inet6_ntop,
    inet_addr,
    parse_flag,
    parse_offset,
    parse_size,
    parse_time,
    parse_url,
    ptocidr,
)


def test_atoi() -> None:
    assert atoi("0") == 0
    assert atoi("0012") == 12
    assert atoi(str(MAX_INT_T)) == MAX_INT_T
    for bad in ("", "-1", "+1", "1a", " 1", "١", str(MAX_INT_T + 1)):
        assert atoi(bad) is None


def test_parse_size() -> None:
    assert parse_size("0") == 0
    assert parse_size("16k") == parse_size("16K") == 16384
    assert parse_size("2m") == parse_size("2M") == 2 << 20
    for bad in ("", "k", "1g", "1.5k", "-1", "1kk"):
        assert parse_size(bad) is None
    assert parse_offset("1g") == 1 << 30


def test_parse_time_msec() -> None:
    assert parse_time("60", False) == 60_000
    assert parse_time("500ms", False) == 500
    assert parse_time("1h30m", False) == 5_400_000
    assert parse_time("1h 30m", False) == 5_400_000
    assert parse_time("1w2d3h4m5s6ms", False) == (((7 + 2) * 24 + 3) * 60 + 4) * 60_000 + 5006
    assert parse_time("5 ", False) == 5000
    assert parse_time("1 2", False) == 3000  # nginx adds bare numbers up
    for bad in ("", "s", "1y", "1M", "1s1m", "1m1m", "1x", "-1s", "1ms1s"):
        assert parse_time(bad, False) is None


def test_parse_time_sec() -> None:
    assert parse_time("1y", True) == 365 * 86400
    assert parse_time("1M", True) == 30 * 86400
    assert parse_time("5m", True) == 300
    assert parse_time("1ms", True) is None
    assert parse_time(str(MAX_INT_T), True) == MAX_INT_T
    assert parse_time(str(MAX_INT_T) + "0", True) is None


UNITS_MS = [("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
            ("s", 1000), ("ms", 1)]  # fmt: skip


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=6, max_size=6),
       st.lists(st.booleans(), min_size=6, max_size=6))  # fmt: skip
def test_parse_time_combinations(values: list[int], used: list[bool]) -> None:
    parts = [(v, unit, scale) for v, (unit, scale), u in zip(values, UNITS_MS, used, strict=True)
             if u]  # fmt: skip
    text = "".join(f"{v}{unit}" for v, unit, _ in parts)
    expected = sum(v * scale for v, _, scale in parts)
    assert parse_time(text, False) == (expected if parts else None)


@given(st.text(max_size=30))
def test_value_parsers_never_raise(text: str) -> None:
    parse_time(text, False)
    parse_time(text, True)
    parse_size(text)
    parse_offset(text)
    parse_flag(text)
    inet_addr(text)
    inet6_addr(text)
    ptocidr(text)
    for kw in ({"listen": True}, {"uri_part": True, "default_port": 80}, {}):
        with contextlib.suppress(UrlError):
            parse_url(text, **kw)  # type: ignore[arg-type]


def test_inet_addr() -> None:
    assert inet_addr("127.0.0.1") == 0x7F000001
    assert inet_addr("010.0.0.1") == 0x0A000001  # leading zeros are decimal, as in nginx
    for bad in ("1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.x", ""):
        assert inet_addr(bad) is None


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_inet6_parses_what_ipaddress_prints(value: int) -> None:
    addr = ipaddress.IPv6Address(value)
    raw = value.to_bytes(16, "big")
    assert inet6_addr(addr.compressed) == raw
    assert inet6_addr(addr.exploded) == raw
    if not (raw[:10] == bytes(10) and raw[10:12] in (b"\xff\xff", b"\x00\x00")):
        assert inet6_ntop(raw) == addr.compressed


def test_inet6_nginx_forms() -> None:
    assert inet6_ntop(inet6_addr("::ffff:1.2.3.4") or b"") == "::ffff:1.2.3.4"
    assert inet6_ntop(inet6_addr("::1") or b"") == "::1"
    assert inet6_ntop(bytes(16)) == "::"
    for bad in ("", ":", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "::g", "1.2.3.4"):
        assert inet6_addr(bad) is None
    # ngx_inet6_addr takes INADDR_NONE from ngx_inet_addr as a failure
    assert inet6_addr("::ffff:255.255.255.255") is None
    assert inet6_addr("::ffff:255.255.255.254") is not None


def test_ptocidr() -> None:
    exact = ptocidr("10.0.0.0/8")
    assert exact is not None and exact[1] is False
    assert exact[0].mask == 0xFF000000
    low = ptocidr("10.1.2.3/8")
    assert low is not None and low[1] is True and low[0].network == 0x0A000000
    host = ptocidr("::1")
    assert host is not None and host[0].family == "inet6" and host[0].mask == (1 << 128) - 1
    assert ptocidr("0.0.0.0/0") is not None
    for bad in ("1.2.3.4/33", "::/129", "1.2.3.4/", "1.2.3.4/x", "name"):
        assert ptocidr(bad) is None


def test_listen_urls() -> None:
    u = parse_url("143", listen=True)
    assert [a.name for a in u.addrs] == ["0.0.0.0:143"] and u.addrs[0].wildcard
    assert [a.name for a in parse_url("*:143", listen=True).addrs] == ["0.0.0.0:143"]
    assert [a.name for a in parse_url("127.0.0.1:10-12", listen=True).addrs] == [
        "127.0.0.1:10", "127.0.0.1:11", "127.0.0.1:12",
    ]  # fmt: skip
    assert [a.name for a in parse_url("[::1]:143", listen=True).addrs] == ["[::1]:143"]
    assert parse_url("[::]:143", listen=True).addrs[0].wildcard
    assert parse_url("unix:/run/x.sock", listen=True).addrs[0].name == "unix:/run/x.sock"
    errors = {
        "127.0.0.1:0": "invalid port",
        "127.0.0.1:65536": "invalid port",
        "127.0.0.1:20-10": "invalid port range",
        ":25": "no host",
        "1.2.3.4:25/x": "invalid host",
        "[::1:25": "invalid host",
        "[::1]x": "invalid host",
        "[]:25": "no host",
        "[::g]:25": "invalid IPv6 address",
        "unix:": "no path in the unix domain socket",
        "unix:/" + "x" * 200: "too long path in the unix domain socket",
        "nosuchhost:25": "host not found",
    }
    for url, err in errors.items():
        with pytest.raises(UrlError, match=f"^{err}$"):
            parse_url(url, listen=True)


def test_host_names_use_the_resolver() -> None:
    def resolver(name: str) -> list[tuple[str, str]]:
        if name != "mail.test":
            raise ResolveError(name)
        return [("inet6", "0:0::1"), ("inet", "192.0.2.1")]

    u = parse_url("mail.test:25", listen=True, resolver=resolver)
    assert [a.name for a in u.addrs] == ["[::1]:25", "192.0.2.1:25"]
    with pytest.raises(UrlError, match="host not found"):
        parse_url("other.test:25", listen=True, resolver=resolver)


def test_auth_http_urls() -> None:
    u = parse_url("127.0.0.1:9000/auth?x=1", uri_part=True, default_port=80)
    assert (u.host, u.port, u.uri) == ("127.0.0.1", 9000, "/auth?x=1")
    u = parse_url("127.0.0.1", uri_part=True, default_port=80)
    assert (u.host, u.port, u.uri, u.no_port) == ("127.0.0.1", 80, "", True)
    u = parse_url("[::1]/a", uri_part=True, default_port=80)
    assert (u.host, u.port, u.uri) == ("[::1]", 80, "/a")
    u = parse_url("unix:/run/auth.sock:/a", uri_part=True, default_port=80)
    assert (u.family, u.host, u.uri) == ("unix", "/run/auth.sock", "/a")
