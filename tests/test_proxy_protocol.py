"""PROXY protocol v1/v2 (protocol.proxy_protocol): nginx's reading, the headers we write,
CRC32C and the set_real_ip_from match. Input is fed whole and byte by byte."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront.conf.model import Cidr
from mailfront.conf.values import ptocidr
from mailfront.protocol import proxy_protocol as pp
from mailfront.protocol.base import ERR
from mailfront.protocol.proxy_protocol import (
    MAX_HEADER,
    V2_SIGNATURE,
    ParseResult,
    ProxyProtocolError,
    build_v1,
    build_v2,
    crc32c,
    inet6_ntop,
    parse,
    realip_addr,
    trusted,
)
from support.noio import top_levels


def feed(data: bytes) -> ParseResult:
    """Byte by byte with final=False: None until the whole header is there."""
    for i in range(len(data)):
        assert parse(data[:i]) is None, data[:i]
    res = parse(data)
    assert res is not None
    assert parse(data, final=True) == res
    return res


def broken(data: bytes) -> str | None:
    with pytest.raises(ProxyProtocolError) as e:
        parse(data, final=True)
    return e.value.message


# --- v1 ---------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    h = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 143\r\n"
    assert feed(h) == ParseResult(len(h), "192.0.2.1", 51000, "198.51.100.2", 143)
    res = parse(h + b"a001 LOGIN x y\r\n", final=True)
    assert res is not None and res.length == len(h)


def test_v1_tcp6_text_kept_as_sent() -> None:
    h = b"PROXY TCP6 2001:DB8:0:0::1 ::ffff:1.2.3.4 1 65535\r\n"
    assert feed(h) == ParseResult(len(h), "2001:DB8:0:0::1", 1, "::ffff:1.2.3.4", 65535)
    # nginx checks only the characters, not the family
    h = b"PROXY TCP4 ::1 1.2.3.4 0 0\r\n"
    assert feed(h) == ParseResult(len(h), "::1", 0, "1.2.3.4", 0)


def test_v1_unknown() -> None:
    for h in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN TCP4 1.2.3.4 5.6.7.8 1 2\r\n"):
        assert feed(h) == ParseResult(len(h))


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"", ""),
        (b"GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.0"),
        (b"a001 LOGIN a b\r\n", "a001 LOGIN a b"),
        (b"PROXY\r\n", "PROXY"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 x 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1  2"),
        (b"PROXY TCP4 1.2.3.g 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.g 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4", "PROXY TCP4 1.2.3.4"),
        (b"PROXY UNKNOWN", "PROXY UNKNOWN"),
        (b"PROXY UNKNOWN\n", "PROXY UNKNOWN"),
        (b"\xffPROXY\n", "\\xffPROXY"),
        (b"\r\n\r\n\x00\r\nQUI", ""),  # a v2 signature cut short
    ],
)
def test_v1_broken(data: bytes, shown: str) -> None:
    assert broken(data) == f'broken header: "{shown}"'
    with pytest.raises(ProxyProtocolError) as e:
        parse(data, final=True)
    assert e.value.level == ERR


def test_broken_waits_for_the_line_when_not_final() -> None:
    # nginx prints up to the first CR/LF of what it peeked: wait for it, or 4096 bytes
    assert parse(b"GET / HT") is None
    with pytest.raises(ProxyProtocolError, match='broken header: "GET / HT"'):
        parse(b"GET / HT\r")
    big = b"x" * (MAX_HEADER + 10)
    with pytest.raises(ProxyProtocolError) as e:
        parse(big)
    assert e.value.message == f'broken header: "{"x" * MAX_HEADER}"'


def test_v1_quirks_as_nginx() -> None:
    # empty addresses are accepted by nginx's reader
    h = b"PROXY TCP4   1 2\r\n"
    assert feed(h) == ParseResult(len(h), "", 1, "", 2)
    # leading zeros in ports
    h = b"PROXY TCP4 1.2.3.4 5.6.7.8 00080 0000143\r\n"
    assert feed(h) == ParseResult(len(h), "1.2.3.4", 80, "5.6.7.8", 143)


# --- v2 ---------------------------------------------------------------------------


def v2(cmd: int, fam: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes((cmd, fam)) + len(body).to_bytes(2, "big") + body


def test_v2_inet() -> None:
    body = (
        bytes((192, 0, 2, 1, 10, 0, 0, 1)) + (51000).to_bytes(2, "big") + (993).to_bytes(2, "big")
    )
    h = v2(0x21, 0x11, body)
    assert feed(h) == ParseResult(28, "192.0.2.1", 51000, "10.0.0.1", 993)


def test_v2_inet6_with_tlvs_skipped() -> None:
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("00000000000000000000ffff01020304")
    tlvs = bytes((0x02, 0, 3)) + b"a.b" + bytes((0x04, 0, 2, 0, 0))
    h = v2(0x21, 0x21, src + dst + b"\x00\x01\x00\x02" + tlvs)
    res = feed(h)
    assert res == ParseResult(len(h), "2001:db8::1", 1, "::ffff:1.2.3.4", 2)
    assert parse(h + b"* OK", final=True) == res


def test_v2_without_addresses() -> None:
    # LOCAL, UNSPEC family, UNIX family, DGRAM transport: accepted, no address
    for cmd, fam, body in (
        (0x20, 0x00, b""),
        (0x20, 0x11, b"\x00" * 12),
        (0x21, 0x00, b"xyz"),
        (0x21, 0x31, b"\x00" * 216),
        (0x21, 0x12, b"\x00" * 12),
    ):
        h = v2(cmd, fam, body)
        assert feed(h) == ParseResult(len(h))


def test_v2_errors() -> None:
    assert broken(v2(0x11, 0x11, b"\x00" * 12)) == "unknown PROXY protocol version: 1"
    assert broken(v2(0xF1, 0x11, b"")) == "unknown PROXY protocol version: 15"
    h = v2(0x21, 0x11, b"\x00" * 12)
    assert broken(h[:-1]) == "header is too large"
    assert parse(h[:-1]) is None
    # more than nginx ever peeks: too large at once
    big = V2_SIGNATURE + b"\x21\x11" + (MAX_HEADER - 15).to_bytes(2, "big")
    with pytest.raises(ProxyProtocolError, match="header is too large"):
        parse(big)
    # an address block shorter than its family: nginx closes without a log line
    assert broken(v2(0x21, 0x11, b"\x00" * 11)) is None
    assert broken(v2(0x21, 0x21, b"\x00" * 35)) is None


@pytest.mark.parametrize(
    ("hexaddr", "text"),
    [
        ("00000000000000000000000000000000", "::"),
        ("00000000000000000000000000000001", "::1"),
        ("00000000000000000000000000000002", "::2"),
        ("00000000000000000000000001020304", "::1.2.3.4"),
        ("00000000000000000000ffff01020304", "::ffff:1.2.3.4"),
        ("00000000000000000001000000000000", "::1:0:0:0"),
        ("20010db8000000000000000000000001", "2001:db8::1"),
        ("20010db8000100000001000000000001", "2001:db8:1:0:1::1"),
        ("20010db8000000010000000000000000", "2001:db8:0:1::"),
        ("20010db8000100010001000100010001", "2001:db8:1:1:1:1:1:1"),
        ("fe800000000000000000000000000000", "fe80::"),
        ("00010000000000000000000000000000", "1::"),
        ("000100000002000000030000000400ab", "1:0:2:0:3:0:4:ab"),
    ],
)
def test_inet6_ntop(hexaddr: str, text: str) -> None:
    assert inet6_ntop(bytes.fromhex(hexaddr)) == text


# --- properties -------------------------------------------------------------------

HEADERS = [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(0x21, 0x11, b"\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"),
    v2(0x20, 0x00, b""),
]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes(data: bytes, final: bool) -> None:
    try:
        res = parse(data, final)
    except ProxyProtocolError:
        return
    if res is not None:
        assert 0 < res.length <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([*HEADERS, b"PROXY TCP", b"GET", b"\r\n\r\n\x00"]), st.binary(max_size=80))
def test_prefix_then_noise(head: bytes, tail: bytes) -> None:
    """Any split gives what parse(whole, final=True) gives, once it answers."""
    data = head + tail
    try:
        whole: ParseResult | str | None = parse(data, final=True)
    except ProxyProtocolError as e:
        whole = e.message
    for i in range(len(data) + 1):
        try:
            part: ParseResult | str | None = parse(data[:i])
        except ProxyProtocolError as e:
            part = e.message
        if part is not None:
            assert part == whole
            break
    else:  # no prefix was enough, not even the whole: then it is too short a header
        assert not isinstance(whole, ParseResult), whole


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
def test_round_trip(a: object, b: object, sport: int, dport: int) -> None:
    src, dst = (str(a), sport), (str(b), dport)
    h1 = build_v1(src, dst)
    r1 = feed(h1)
    assert r1.length == len(h1)
    assert (r1.src_addr, r1.src_port) == (_ntop(str(a)), sport)
    assert (r1.dst_addr, r1.dst_port) == (_ntop(str(b)), dport)
    h2 = build_v2(src, dst, {"sni": "x", "version": "TLSv1.3"})
    r2 = feed(h2)
    assert r2.length == len(h2)
    assert r2.src_port == sport and r2.dst_port == dport
    # families may be promoted or demoted, but the address survives
    assert _v4ish(r2.src_addr) == _v4ish(_ntop(str(a)))
    assert _v4ish(r2.dst_addr) == _v4ish(_ntop(str(b)))
    assert _crc_ok(h2)


def _ntop(text: str) -> str:
    if ":" not in text:
        return text
    return inet6_ntop(ipaddress.IPv6Address(text).packed)


def _v4ish(text: str | None) -> str | None:
    return text.removeprefix("::ffff:") if text else text


def _crc_ok(h: bytes) -> bool:
    assert h[-7:-4] == b"\x03\x00\x04"
    return crc32c(h[:-4] + b"\x00\x00\x00\x00") == int.from_bytes(h[-4:], "big")


# --- writing ----------------------------------------------------------------------


def test_build_v1() -> None:
    assert build_v1(("192.0.2.1", 5000), ("10.0.0.1", 143)) == (
        b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 143\r\n"
    )
    assert build_v1(("2001:DB8::0:1", 5000), ("::1", 143)) == (
        b"PROXY TCP6 2001:db8::1 ::1 5000 143\r\n"
    )
    assert build_v1(None, ("10.0.0.1", 143)) == b"PROXY UNKNOWN\r\n"
    assert build_v1(("unix:", 0), ("10.0.0.1", 143)) == b"PROXY UNKNOWN\r\n"


def test_build_v2_hand_made_vector() -> None:
    tls = {
        "sni": "mail.example.org",
        "alpn": "imap",
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "key_alg": "RSA2048",
        "cert_present": False,
        "reused": False,
        "cn": "ignored without a certificate",
    }
    got = build_v2(("192.0.2.1", 51000), ("10.0.0.1", 993), tls)
    ssl_body = (
        b"\x03"  # client: SSL | not reused
        + b"\x00\x00\x00\x01"  # verify: 1 without a client certificate
        + b"\x21\x00\x07TLSv1.3"
        + b"\x23\x00\x16TLS_AES_256_GCM_SHA384"
        + b"\x25\x00\x07RSA2048"
    )
    body = (
        b"\xc0\x00\x02\x01\x0a\x00\x00\x01\xc7\x38\x03\xe1"
        + b"\x02\x00\x10mail.example.org"
        + b"\x01\x00\x04imap"
        + b"\x20"
        + len(ssl_body).to_bytes(2, "big")
        + ssl_body
        + b"\x03\x00\x04"
    )
    head = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + (len(body) + 4).to_bytes(2, "big")
    expected_zeroed = head + body + b"\x00\x00\x00\x00"
    assert got[:-4] == expected_zeroed[:-4]
    assert int.from_bytes(got[-4:], "big") == _crc32c_bitwise(expected_zeroed)
    assert feed(got) == ParseResult(len(got), "192.0.2.1", 51000, "10.0.0.1", 993)


def test_build_v2_client_cert() -> None:
    tls = {"cert_present": True, "reused": True, "verify": 0, "cn": "alice", "version": "TLSv1.2"}
    got = build_v2(("192.0.2.1", 1), ("10.0.0.1", 2), tls)
    ssl_body = b"\x05\x00\x00\x00\x00" + b"\x21\x00\x07TLSv1.2" + b"\x22\x00\x05alice"
    assert got[28:-7] == b"\x20" + len(ssl_body).to_bytes(2, "big") + ssl_body
    tls = {"cert_present": True, "reused": False, "verify": 20}
    got = build_v2(("192.0.2.1", 1), ("10.0.0.1", 2), tls)
    assert got[28:-7] == b"\x20\x00\x05\x07\x00\x00\x00\x14"


def test_build_v2_families() -> None:
    # plain connection: addresses and CRC32C only
    got = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
    assert got[12:16] == b"\x21\x11\x00\x13"
    assert got[16:28] == bytes((1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2))
    assert _crc_ok(got)
    # mixed: promoted to IPv6 with ::ffff:
    got = build_v2(("1.2.3.4", 1), ("2001:db8::1", 2))
    assert got[12:16] == b"\x21\x21\x00\x2b"
    assert got[16:32] == bytes.fromhex("00000000000000000000ffff01020304")
    assert feed(got).src_addr == "::ffff:1.2.3.4"
    # two v4-mapped: demoted to IPv4
    got = build_v2(("::ffff:1.2.3.4", 1), ("::ffff:5.6.7.8", 2))
    assert got[12:16] == b"\x21\x11\x00\x13"
    assert feed(got) == ParseResult(35, "1.2.3.4", 1, "5.6.7.8", 2)
    # non-INET: LOCAL, AF_UNSPEC, no address block, still the CRC32C
    for src, dst in (
        (None, ("1.2.3.4", 1)),
        (("unix:", 0), ("1.2.3.4", 1)),
        (("1.2.3.4", 1), None),
    ):
        got = build_v2(src, dst)
        assert got[12:16] == b"\x20\x00\x00\x07"
        assert _crc_ok(got)
        assert feed(got) == ParseResult(len(got))


# --- CRC32C -----------------------------------------------------------------------


def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def test_crc32c_vectors() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # RFC 3720 B.4
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"456789", crc32c(b"123")) == 0xE3069283


@given(st.binary(max_size=64))
def test_crc32c_table_matches_bitwise(data: bytes) -> None:
    assert crc32c(data) == _crc32c_bitwise(data)


# --- realip -----------------------------------------------------------------------


def cidrs(*words: str) -> tuple[Cidr, ...]:
    out = []
    for w in words:
        if w == "unix:":
            out.append(Cidr("unix"))
            continue
        parsed = ptocidr(w)
        assert parsed is not None
        c = parsed[0]
        out.append(Cidr(c.family, c.network, c.mask))
    return tuple(out)


def test_trusted() -> None:
    lst = cidrs("192.0.2.0/24", "2001:db8::/32", "10.0.0.1")
    assert trusted("192.0.2.77", lst)
    assert not trusted("192.0.3.1", lst)
    assert trusted("10.0.0.1", lst)
    assert not trusted("10.0.0.2", lst)
    assert trusted("::ffff:192.0.2.5", lst)  # v4-mapped peers match as IPv4
    assert trusted("2001:db8:1::5", lst)
    assert not trusted("2001:db9::5", lst)
    assert not trusted("unix:", lst)
    assert trusted("unix:", cidrs("unix:"))
    assert trusted("unix:/run/x.sock", cidrs("10.0.0.0/8", "unix:"))
    assert trusted("1.2.3.4", cidrs("0.0.0.0/0"))
    assert not trusted("::1", cidrs("0.0.0.0/0"))
    assert trusted("::1", cidrs("::/0"))
    assert not trusted("not an address", cidrs("0.0.0.0/0"))
    assert not trusted("1.2.3.4", ())


def test_realip_addr() -> None:
    assert realip_addr("1.2.3.4") == "1.2.3.4"
    assert realip_addr("001.002.003.004") == "1.2.3.4"
    assert realip_addr("2001:DB8:0:0::1") == "2001:db8::1"
    assert realip_addr("::FFFF:1.2.3.4") == "::ffff:1.2.3.4"
    assert realip_addr("") is None
    assert realip_addr("1.2.3") is None
    assert realip_addr("255.255.255.255") is None  # INADDR_NONE in ngx_parse_addr


def test_no_io_imports() -> None:
    banned = {"asyncio", "socket", "ssl", "time", "logging", "random", "selectors"}
    assert not top_levels(pp.__file__) & banned


def test_broadcast_peer_is_an_address() -> None:
    # a real sockaddr 255.255.255.255 matches and is written; only ngx_parse_addr refuses it
    assert trusted("255.255.255.255", cidrs("0.0.0.0/0"))
    assert build_v1(("255.255.255.255", 1), ("1.2.3.4", 2)).startswith(b"PROXY TCP4 255.")
