"""The PROXY protocol, sans-IO: read v1/v2 (``listen ... proxy_protocol``), write v1/v2
(``proxy_protocol on|v2``), and the ``set_real_ip_from`` match (``ngx_mail_realip_module``).

Reading mirrors ``ngx_proxy_protocol_read``: nginx peeks once into a 4096-byte buffer and
treats a header that is incomplete in those bytes as broken. ``parse(data, final=True)`` is
that behaviour. ``parse(data)`` (``final=False``) is the incremental form: it answers None
while more bytes could still change the outcome, and never answers differently from
``parse(whole, final=True)`` once it answers; past 4096 bytes it behaves as ``final``.

Addresses come out as nginx holds them: v1 keeps the text the client sent (nginx checks only
the characters); v2 prints the binary address as ``ngx_sock_ntop`` does. ``realip_addr``
turns a PROXY source into the text nginx logs after realip (``ngx_parse_addr`` +
``ngx_sock_ntop``), or None when nginx would leave the client address alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailfront.conf.model import Cidr
from mailfront.conf.values import inet6_addr, inet6_ntop, inet_addr
from mailfront.protocol.base import ERR

# nginx peeks at most this many bytes for the header (NGX_PROXY_PROTOCOL_MAX_HEADER)
MAX_HEADER = 4096

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"

# v2 header bytes 12 and 13
V2_CMD_LOCAL = 0x20
V2_CMD_PROXY = 0x21
V2_LOCAL_FAMILY = 0x00  # AF_UNSPEC, transport UNSPEC
V2_INET_STREAM = 0x11
V2_INET6_STREAM = 0x21

# v2 TLV types
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_ADDR_CHARS = frozenset(b":.abcdefABCDEF0123456789")
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class ParseResult:
    """A header that was read: ``length`` bytes to consume; no addresses for
    ``PROXY UNKNOWN``, v2 LOCAL and v2 families/transports nginx does not take."""

    length: int
    src_addr: str | None = None
    src_port: int = 0
    dst_addr: str | None = None
    dst_port: int = 0


class ProxyProtocolError(Exception):
    """A header nginx refuses: log ``message`` at ``level`` (None: nginx closes without
    a log line, as for a v2 address block shorter than its family), then close silently."""

    def __init__(self, message: str | None, level: int = ERR) -> None:
        super().__init__(message)
        self.message = message
        self.level = level


class _Short(Exception):
    """The bytes so far end before nginx could decide."""


# --- reading ---------------------------------------------------------------------


def parse(data: bytes, final: bool = False) -> ParseResult | None:
    """Read a PROXY v1 or v2 header at the start of ``data``.

    Returns None when more bytes are needed (only with ``final=False``), a ParseResult,
    or raises ProxyProtocolError with nginx's log text.
    """
    if len(data) >= MAX_HEADER:
        data = data[:MAX_HEADER]
        final = True
    try:
        return _read(data, final)
    except _Short:
        return None


def _read(data: bytes, final: bool) -> ParseResult:
    n = len(data)
    if n >= 16 and data[:12] == V2_SIGNATURE:
        return _read_v2(data, final)
    if not final and n < 16 and data[:12] == V2_SIGNATURE[: min(n, 12)]:
        raise _Short
    try:
        return _read_v1(data, final)
    except _Invalid:
        pass
    end = len(data)
    for i, ch in enumerate(data):
        if ch in (13, 10):
            end = i
            break
    else:
        if not final:  # nginx would print up to the first CR/LF it peeks
            raise _Short
    text = data[:end].decode("utf-8", "backslashreplace")
    raise ProxyProtocolError(f'broken header: "{text}"')


class _Invalid(Exception):
    pass


def _need(final: bool) -> _Short | _Invalid:
    return _Invalid() if final else _Short()


def _read_v1(data: bytes, final: bool) -> ParseResult:
    n = len(data)
    if n < 8 or data[:6] != b"PROXY ":
        if n < 8 and data[:6] == b"PROXY "[: min(n, 6)]:
            raise _need(final)
        raise _Invalid
    rest = data[6:13]
    if len(rest) >= 7 and rest == b"UNKNOWN":
        crlf = data.find(b"\r\n", 13)
        if crlf < 0:
            raise _need(final)
        return ParseResult(crlf + 2)
    if len(rest) < 7 and rest == b"UNKNOWN"[: len(rest)]:
        raise _need(final)
    head = data[6:11]
    if len(head) < 5 or head[:3] != b"TCP" or head[3] not in b"46" or head[4] != 0x20:
        if len(head) < 5 and head in (b"TCP4 "[: len(head)], b"TCP6 "[: len(head)]):
            raise _need(final)
        raise _Invalid
    p = 11
    src, p = _v1_addr(data, p, final)
    dst, p = _v1_addr(data, p, final)
    sport, p = _v1_port(data, p, 0x20, final)
    dport, p = _v1_port(data, p, 0x0D, final)
    if p == n:
        raise _need(final)
    if data[p] != 0x0A:
        raise _Invalid
    return ParseResult(p + 1, src, sport, dst, dport)


def _v1_addr(data: bytes, p: int, final: bool) -> tuple[str, int]:
    start = p
    n = len(data)
    while True:
        if p == n:
            raise _need(final)
        ch = data[p]
        p += 1
        if ch == 0x20:
            break
        if ch not in _ADDR_CHARS:
            raise _Invalid
    return data[start : p - 1].decode("ascii"), p


def _v1_port(data: bytes, p: int, sep: int, final: bool) -> tuple[int, int]:
    end = data.find(bytes((sep,)), p)
    if end < 0:
        raise _need(final)
    digits = data[p:end]
    if not digits or not digits.isdigit() or int(digits) > 65535:
        raise _Invalid
    return int(digits), end + 1


def _read_v2(data: bytes, final: bool) -> ParseResult:
    version = data[12] >> 4
    if version != 2:
        raise ProxyProtocolError(f"unknown PROXY protocol version: {version}")
    length = data[14] << 8 | data[15]
    if len(data) - 16 < length:
        if final or 16 + length > MAX_HEADER:
            raise ProxyProtocolError("header is too large")
        raise _Short
    end = 16 + length
    if data[12] & 0x0F != 1 or data[13] & 0x0F != 1:  # LOCAL, or not STREAM
        return ParseResult(end)
    family = _V2_FAMILIES.get(data[13] >> 4)
    if family is None:
        return ParseResult(end)  # AF_UNSPEC, AF_UNIX: accepted without addresses
    size, ntop = family
    if length < 2 * size + 4:  # two addresses, two ports
        raise ProxyProtocolError(None)
    ports = 16 + 2 * size
    return ParseResult(
        end,
        ntop(data[16 : 16 + size]),
        data[ports] << 8 | data[ports + 1],
        ntop(data[16 + size : ports]),
        data[ports + 2] << 8 | data[ports + 3],
    )


# --- address text ----------------------------------------------------------------


def inet_ntop4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


# PROXY v2's address families with addresses: the size of one address, its text
_V2_FAMILIES: dict[int, tuple[int, Callable[[bytes], str]]] = {
    1: (4, inet_ntop4),  # AF_INET
    2: (16, inet6_ntop),  # AF_INET6
}


def _binary(addr: str, parse_addr: bool = False) -> bytes | None:
    """4 or 16 bytes for an IP address text, else None. With ``parse_addr``, as
    ``ngx_parse_addr``: 255.255.255.255 is INADDR_NONE there and fails."""
    v4 = inet_addr(addr)
    if v4 is not None and not (parse_addr and v4 == 0xFFFFFFFF):
        return v4.to_bytes(4, "big")
    return inet6_addr(addr)


def realip_addr(src_addr: str) -> str | None:
    """The client text after realip (``ngx_parse_addr`` then ``ngx_sock_ntop``), or None
    when nginx keeps the TCP peer (the PROXY source is not an address)."""
    b = _binary(src_addr, parse_addr=True)
    if b is None:
        return None
    return inet_ntop4(b) if len(b) == 4 else inet6_ntop(b)


def trusted(addr: str, cidrs: tuple[Cidr, ...]) -> bool:
    """``ngx_cidr_match`` of the TCP peer ``addr`` (``1.2.3.4``, ``::1``, ``unix:...``)
    against ``set_real_ip_from``; a v4-mapped IPv6 peer matches as IPv4."""
    if addr.startswith("unix:"):
        family, value = "unix", 0
    else:
        b = _binary(addr)
        if b is None:
            return False
        if len(b) == 16 and b[:12] == _V4_MAPPED:
            b = b[12:]
        family = "inet" if len(b) == 4 else "inet6"
        value = int.from_bytes(b, "big")
    for cidr in cidrs:
        if cidr.family != family:
            continue
        if family == "unix" or value & cidr.mask == cidr.network:
            return True
    return False


# --- writing ---------------------------------------------------------------------


def build_v1(src: tuple[str, int] | None, dst: tuple[str, int] | None) -> bytes:
    """``ngx_proxy_protocol_write``: ``PROXY TCP4|TCP6 src dst sport dport\\r\\n``, the
    family of the source; ``PROXY UNKNOWN\\r\\n`` when either side is not an IP address."""
    sb = _binary(src[0]) if src is not None else None
    db = _binary(dst[0]) if dst is not None else None
    if src is None or dst is None or sb is None or db is None:
        return V1_UNKNOWN
    proto = "TCP4" if len(sb) == 4 else "TCP6"
    s = inet_ntop4(sb) if len(sb) == 4 else inet6_ntop(sb)
    d = inet_ntop4(db) if len(db) == 4 else inet6_ntop(db)
    return f"PROXY {proto} {s} {d} {src[1]} {dst[1]}\r\n".encode("ascii")


def build_v2(
    src: tuple[str, int] | None,
    dst: tuple[str, int] | None,
    tls: dict[str, Any] | None = None,
) -> bytes:
    """The v2 header of ``proxy_protocol v2`` (spec §1.10).

    ``src`` is the client after realip, ``dst`` the local address; a side that is None or
    not an IP address makes a LOCAL header with AF_UNSPEC and no address block. Mixed
    IPv4/IPv6 is promoted to IPv6 (``::ffff:a.b.c.d``); two v4-mapped IPv6 addresses are
    demoted to IPv4.

    ``tls`` is None for a plain client connection, else a dict (missing or None/empty
    values are left out):
      ``sni`` str (AUTHORITY 0x02), ``alpn`` str|bytes (ALPN 0x01), ``version`` str
      (``TLSv1.3``), ``cn`` str (client certificate CN, sent only with ``cert_present``),
      ``cipher`` str, ``sig_alg`` str, ``key_alg`` str (of our own certificate, ``RSA2048``),
      ``cert_present`` bool (client sent a certificate), ``reused`` bool (session resumed),
      ``verify`` int (the verify result with a client certificate; 1 is sent without one).
    The SSL TLV 0x20 carries the client byte (0x01, +0x04 with a client certificate,
    +0x02 when the session was not reused), the 4-byte verify value and the sub-TLVs
    VERSION, CN, CIPHER, SIG_ALG, KEY_ALG. Last comes CRC32C 0x03 over the whole header.
    """
    sb = _binary(src[0]) if src is not None else None
    db = _binary(dst[0]) if dst is not None else None
    if src is None or dst is None or sb is None or db is None:
        cmd, fam, block = V2_CMD_LOCAL, V2_LOCAL_FAMILY, b""
    else:
        sport = src[1].to_bytes(2, "big")
        dport = dst[1].to_bytes(2, "big")
        if len(sb) == 16 and len(db) == 16 and sb[:12] == _V4_MAPPED and db[:12] == _V4_MAPPED:
            sb, db = sb[12:], db[12:]
        if len(sb) == 4 and len(db) == 4:
            cmd, fam, block = V2_CMD_PROXY, V2_INET_STREAM, sb + db + sport + dport
        else:
            if len(sb) == 4:
                sb = _V4_MAPPED + sb
            if len(db) == 4:
                db = _V4_MAPPED + db
            cmd, fam, block = V2_CMD_PROXY, V2_INET6_STREAM, sb + db + sport + dport
    body = bytearray(block)
    if tls is not None:
        body += _tls_tlvs(tls)
    body += bytes((PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0))
    if len(body) > 0xFFFF:
        raise ValueError("PROXY protocol v2 header too long")
    header = bytearray(V2_SIGNATURE + bytes((cmd, fam)) + len(body).to_bytes(2, "big"))
    header += body
    header[-4:] = crc32c(bytes(header)).to_bytes(4, "big")
    return bytes(header)


def _tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind,)) + len(value).to_bytes(2, "big") + value


def _text(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _tls_tlvs(tls: dict[str, Any]) -> bytes:
    out = bytearray()
    sni = _text(tls.get("sni"))
    if sni:
        out += _tlv(PP2_TYPE_AUTHORITY, sni)
    alpn = _text(tls.get("alpn"))
    if alpn:
        out += _tlv(PP2_TYPE_ALPN, alpn)
    cert = bool(tls.get("cert_present"))
    client = PP2_CLIENT_SSL
    if cert:
        client |= PP2_CLIENT_CERT_SESS
    if not tls.get("reused"):
        client |= PP2_CLIENT_CERT_CONN
    verify = int(tls.get("verify") or 0) if cert else 1
    ssl = bytearray((client,)) + (verify & 0xFFFFFFFF).to_bytes(4, "big")
    subs = [
        (PP2_SUBTYPE_SSL_VERSION, _text(tls.get("version"))),
        (PP2_SUBTYPE_SSL_CN, _text(tls.get("cn")) if cert else b""),
        (PP2_SUBTYPE_SSL_CIPHER, _text(tls.get("cipher"))),
        (PP2_SUBTYPE_SSL_SIG_ALG, _text(tls.get("sig_alg"))),
        (PP2_SUBTYPE_SSL_KEY_ALG, _text(tls.get("key_alg"))),
    ]
    for kind, value in subs:
        if value:
            ssl += _tlv(kind, value)
    out += _tlv(PP2_TYPE_SSL, bytes(ssl))
    return bytes(out)


# --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ---------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (``crc`` continues a previous value)."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
