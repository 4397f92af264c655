"""Value parsers of nginx's configuration: numbers, sizes, times, addresses, URLs.

Each function reproduces one of nginx's core parsers (``ngx_atoi``,
``ngx_parse_size``, ``ngx_parse_time``, ``ngx_inet_addr``, ``ngx_inet6_addr``,
``ngx_ptocidr``, ``ngx_parse_url``) with the same acceptance rules, so that a
value nginx accepts is accepted here and a value nginx refuses is refused with
the same wording.  Nothing here does I/O: where nginx resolves a host name, the
caller passes a ``resolver`` function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# nginx's limits on a 64-bit build
MAX_INT_T = (1 << 63) - 1  # NGX_MAX_INT_T_VALUE
MAX_SIZE_T = (1 << 63) - 1  # NGX_MAX_SIZE_T_VALUE (as ssize_t)
MAX_OFF_T = (1 << 63) - 1  # NGX_MAX_OFF_T_VALUE

# "inet"/"inet6" and the address text, in the order the name service returned them
ResolvedAddr = tuple[str, str]
Resolver = Callable[[str], Sequence[ResolvedAddr]]


def page_size() -> int:
    """``ngx_pagesize``: the default of the mail buffers."""
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 4096


class ResolveError(Exception):
    """Raised by a resolver when a name does not resolve ("host not found")."""


def atoi(text: str) -> int | None:
    """``ngx_atoi``: decimal digits only, at least one, no sign, no overflow."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_INT_T else None


def parse_size(text: str) -> int | None:
    """``ngx_parse_size``: ``N``, ``Nk``/``NK``, ``Nm``/``NM`` (no ``g``)."""
    if not text:
        return None
    unit = text[-1]
    if unit in "kK":
        scale = 1024
        text = text[:-1]
    elif unit in "mM":
        scale = 1024 * 1024
        text = text[:-1]
    else:
        scale = 1
    value = atoi(text)
    if value is None or value > MAX_SIZE_T // scale:
        return None
    return value * scale


def parse_offset(text: str) -> int | None:
    """``ngx_parse_offset``: like sizes, plus ``g``/``G``."""
    if not text:
        return None
    scales = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = scales.get(text[-1].lower(), 1)
    if scale != 1:
        text = text[:-1]
    value = atoi(text)
    if value is None or value > MAX_OFF_T // scale:
        return None
    return value * scale


# steps of ngx_parse_time, in the order units must appear
_ST_START, _ST_YEAR, _ST_MONTH, _ST_WEEK, _ST_DAY = 0, 1, 2, 3, 4
_ST_HOUR, _ST_MIN, _ST_SEC, _ST_MSEC, _ST_LAST = 5, 6, 7, 8, 9

_UNITS: dict[str, tuple[int, int]] = {
    # unit: (step, seconds)
    "y": (_ST_YEAR, 60 * 60 * 24 * 365),
    "M": (_ST_MONTH, 60 * 60 * 24 * 30),
    "w": (_ST_WEEK, 60 * 60 * 24 * 7),
    "d": (_ST_DAY, 60 * 60 * 24),
    "h": (_ST_HOUR, 60 * 60),
    "m": (_ST_MIN, 60),
    "s": (_ST_SEC, 1),
}


def parse_time(text: str, is_sec: bool) -> int | None:
    """``ngx_parse_time``: ``1h30m``, ``500ms``, ``10`` (seconds), ...

    Returns seconds when ``is_sec`` (``ngx_conf_set_sec_slot``), else
    milliseconds (``ngx_conf_set_msec_slot``, where ``y`` and ``M`` are
    refused and ``ms`` is allowed).  Units must come in decreasing order and
    each at most once; a number without unit means seconds.
    """
    valid = False
    value = 0
    total = 0
    step = _ST_START if is_sec else _ST_MONTH
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if "0" <= ch <= "9":
            value = value * 10 + ord(ch) - 48
            if value > MAX_INT_T:
                return None
            valid = True
            i += 1
            continue
        i += 1
        if ch == "m" and i < n and text[i] == "s":
            if is_sec or step >= _ST_MSEC:
                return None
            i += 1
            step = _ST_MSEC
            max_value = MAX_INT_T
            scale = 1
        elif ch in _UNITS:
            new_step, seconds = _UNITS[ch]
            if ch == "y":
                if step > _ST_START:
                    return None
            elif step >= new_step:
                return None
            step = new_step
            max_value = MAX_INT_T // seconds
            scale = seconds
        elif ch == " ":
            if step >= _ST_SEC:
                return None
            step = _ST_LAST
            max_value = MAX_INT_T
            scale = 1
        else:
            return None
        if step != _ST_MSEC and not is_sec:
            scale *= 1000
            max_value //= 1000
        if value > max_value:
            return None
        value *= scale
        if total > MAX_INT_T - value:
            return None
        total += value
        value = 0
        while i < n and text[i] == " ":
            i += 1
    if not valid:
        return None
    if not is_sec:
        if value > MAX_INT_T // 1000:
            return None
        value *= 1000
    if total > MAX_INT_T - value:
        return None
    return total + value


def parse_flag(text: str) -> bool | None:
    """``ngx_conf_set_flag_slot``: ``on``/``off``, case-insensitive."""
    low = text.lower()
    if low == "on":
        return True
    if low == "off":
        return False
    return None


# --- addresses -------------------------------------------------------------


# what ngx_inet_addr returns on failure: 255.255.255.255 is no address to nginx
INADDR_NONE = 0xFFFFFFFF


def inet_addr(text: str) -> int | None:
    """``ngx_inet_addr``: a dotted quad (leading zeros allowed), as an int."""
    addr = 0
    octet = 0
    dots = 0
    for ch in text:
        if "0" <= ch <= "9":
            octet = octet * 10 + ord(ch) - 48
            if octet > 255:
                return None
            continue
        if ch == ".":
            addr = (addr << 8) + octet
            octet = 0
            dots += 1
            continue
        return None
    if dots == 3:
        return ((addr << 8) + octet) & 0xFFFFFFFF
    return None


def inet6_addr(text: str) -> bytes | None:
    """``ngx_inet6_addr``: an IPv6 address (``::``, embedded IPv4), 16 bytes."""
    if not text:
        return None
    out = bytearray()
    zero: int | None = None  # index in out where "::" was seen
    digit: int | None = None  # index in text after the last ':'
    nibbles = 0
    word = 0
    groups_left = 8
    i = 0
    if text[0] == ":":
        i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch == ":":
            if nibbles:
                digit = i
                out += bytes(((word >> 8) & 0xFF, word & 0xFF))
                groups_left -= 1
                if groups_left:
                    nibbles = 0
                    word = 0
                    continue
            elif zero is None:
                digit = i
                zero = len(out)
                continue
            return None
        if ch == "." and nibbles:
            if groups_left < 2 or digit is None:
                return None
            v4 = inet_addr(text[digit:])
            if v4 is None or v4 == INADDR_NONE:  # ngx_inet_addr's failure value
                return None
            out += v4.to_bytes(4, "big")
            groups_left -= 2
            nibbles = -1  # marker: the embedded IPv4 ended the address
            break
        nibbles += 1
        if nibbles > 4:
            return None
        if "0" <= ch <= "9":
            word = word * 16 + ord(ch) - 48
            continue
        low = ch.lower()
        if "a" <= low <= "f":
            word = word * 16 + ord(low) - 87
            continue
        return None
    if nibbles == -1:
        pass
    else:
        if nibbles == 0 and zero is None:
            return None
        out += bytes(((word >> 8) & 0xFF, word & 0xFF))
        groups_left -= 1
    if groups_left:
        if zero is not None:
            return bytes(out[:zero]) + bytes(2 * groups_left) + bytes(out[zero:])
        return None
    if zero is None:
        return bytes(out)
    return None


def inet6_ntop(addr: bytes) -> str:
    """``ngx_inet6_ntop``: nginx's text for an IPv6 address."""
    zero = -1
    last = -1
    best = 1
    run = 0
    for i in range(0, 16, 2):
        if addr[i] or addr[i + 1]:
            if best < run:
                zero = last
                best = run
            run = 0
            continue
        if run == 0:
            last = i
        run += 1
    if best < run:
        zero = last
        best = run
    parts: list[str] = []
    end = 16
    if zero == 0:
        if (
            (best == 5 and addr[10] == 0xFF and addr[11] == 0xFF)
            or best == 6
            or (best == 7 and addr[14] != 0 and addr[15] != 1)
        ):
            end = 12
        parts.append(":")
    i = 0
    while i < end:
        if i == zero:
            parts.append(":")
            i += best * 2
            continue
        parts.append(f"{addr[i] * 256 + addr[i + 1]:x}")
        if i < 14:
            parts.append(":")
        i += 2
    if end == 12:
        parts.append(f"{addr[12]}.{addr[13]}.{addr[14]}.{addr[15]}")
    return "".join(parts)


def inet_ntop(value: int) -> str:
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


@dataclass(frozen=True, slots=True)
class CidrValue:
    family: str  # "inet", "inet6", "unix"
    network: int
    mask: int


def ptocidr(text: str) -> tuple[CidrValue, bool] | None:
    """``ngx_ptocidr``: ``addr[/bits]``; the flag says low bits were set (warning)."""
    addr_text, slash, bits_text = text.partition("/")
    v4 = inet_addr(addr_text)
    if v4 is not None:
        family, width, addr = "inet", 32, v4
    else:
        v6 = inet6_addr(addr_text)
        if v6 is None:
            return None
        family, width, addr = "inet6", 128, int.from_bytes(v6, "big")
    full = (1 << width) - 1
    if not slash:
        return CidrValue(family, addr, full), False
    bits = atoi(bits_text)
    if bits is None or bits > width:
        return None
    mask = (full << (width - bits)) & full if bits else 0
    if addr & mask != addr:
        return CidrValue(family, addr & mask, mask), True
    return CidrValue(family, addr, mask), False


# --- ngx_parse_url -----------------------------------------------------------


class UrlError(Exception):
    """nginx's ``u.err`` text: "invalid host", "invalid port", "host not found", ..."""


@dataclass(slots=True)
class UrlAddr:
    family: str  # "inet", "inet6", "unix"
    host: str  # address text without port ("127.0.0.1", "::1"), or the unix path
    port: int
    name: str  # nginx's address text with port: "127.0.0.1:143", "[::1]:143", "unix:/p"

    @property
    def wildcard(self) -> bool:
        if self.family == "inet":
            return self.host == "0.0.0.0"
        if self.family == "inet6":
            return inet6_addr(self.host) == bytes(16)
        return False


@dataclass(slots=True)
class Url:
    url: str
    family: str = "inet"
    host: str = ""  # the host part as written ("[::1]" keeps its brackets)
    port: int = 0
    last_port: int = 0
    no_port: bool = False
    uri: str = ""
    wildcard: bool = False
    addrs: list[UrlAddr] = field(default_factory=list)


def _addr_name(family: str, host: str, port: int) -> str:
    if family == "inet6":
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _add_addr(u: Url, family: str, host: str) -> None:
    last = u.last_port or u.port
    for port in range(u.port, last + 1):
        u.addrs.append(UrlAddr(family, host, port, _addr_name(family, host, port)))


def parse_url(
    url: str,
    *,
    listen: bool = False,
    uri_part: bool = False,
    default_port: int = 0,
    no_resolve: bool = False,
    resolver: Resolver | None = None,
) -> Url:
    """``ngx_parse_url``; raises :class:`UrlError` with nginx's ``u.err`` text."""
    if len(url) >= 5 and url[:5].lower() == "unix:":
        return _parse_unix_url(url, uri_part)
    if url.startswith("["):
        return _parse_inet6_url(url, listen, uri_part, default_port)
    return _parse_inet_url(url, listen, uri_part, default_port, no_resolve, resolver)


_SUN_PATH_MAX = 108  # sizeof(((struct sockaddr_un *) 0)->sun_path) on Linux


def _parse_unix_url(url: str, uri_part: bool) -> Url:
    u = Url(url, family="unix")
    path = url[5:]
    if uri_part:
        colon = path.find(":")
        if colon >= 0:
            u.uri = path[colon + 1 :]
            path = path[:colon]
    if not path:
        raise UrlError("no path in the unix domain socket")
    if len(path.encode("utf-8", "surrogateescape")) + 1 > _SUN_PATH_MAX:
        raise UrlError("too long path in the unix domain socket")
    u.host = path
    u.addrs.append(UrlAddr("unix", path, 0, url[:5] + path))
    return u


def _parse_port(text: str, listen: bool, u: Url) -> int:
    if listen:
        dash = text.find("-")
        if dash >= 0:
            last = atoi(text[dash + 1 :])
            if last is None or not 1 <= last <= 65535:
                raise UrlError("invalid port")
            u.last_port = last
            text = text[:dash]
    port = atoi(text)
    if port is None or not 1 <= port <= 65535:
        raise UrlError("invalid port")
    if u.last_port and port > u.last_port:
        raise UrlError("invalid port range")
    return port


def _parse_inet_url(
    url: str,
    listen: bool,
    uri_part: bool,
    default_port: int,
    no_resolve: bool,
    resolver: Resolver | None,
) -> Url:
    u = Url(url, family="inet")
    last = len(url)
    port_at = url.find(":")
    uri_at = url.find("/")
    args_at = url.find("?")
    if args_at >= 0 and (uri_at < 0 or args_at < uri_at):
        uri_at = args_at
    if uri_at >= 0:
        if listen or not uri_part:
            raise UrlError("invalid host")
        u.uri = url[uri_at:]
        last = uri_at
        if port_at > uri_at:
            port_at = -1
    if port_at >= 0:
        u.port = _parse_port(url[port_at + 1 : last], listen, u)
        last = port_at
    else:
        done = False
        if uri_at < 0 and listen:
            # the value may be a port (or a port range) alone
            text = url[:last]
            pending_err: str | None = None
            dash = text.find("-")
            range_ok = True
            if dash >= 0:
                end = atoi(text[dash + 1 :])
                if end is None:
                    range_ok = False
                elif not 1 <= end <= 65535:
                    pending_err = "invalid port"
                else:
                    u.last_port = end
                text = text[:dash]
            if range_ok:
                port = atoi(text)
                if port is not None:
                    if pending_err:
                        raise UrlError(pending_err)
                    if not 1 <= port <= 65535:
                        raise UrlError("invalid port")
                    if u.last_port and port > u.last_port:
                        raise UrlError("invalid port range")
                    u.port = port
                    u.wildcard = True
                    _add_addr(u, "inet", "0.0.0.0")
                    done = True
        if done:
            return u
        u.no_port = True
        u.port = default_port
        u.last_port = 0
    host = url[:last]
    if not host:
        raise UrlError("no host")
    u.host = host
    if listen and host == "*":
        u.wildcard = True
        _add_addr(u, "inet", "0.0.0.0")
        return u
    v4 = inet_addr(host)
    if v4 is not None:
        u.wildcard = v4 == 0
        _add_addr(u, "inet", inet_ntop(v4))
        return u
    if no_resolve:
        return u
    if resolver is None:
        raise UrlError("host not found")
    try:
        found = resolver(host)
    except ResolveError:
        raise UrlError("host not found") from None
    if not found:
        raise UrlError("host not found")
    for family, addr in found:
        if family == "inet6":
            raw = inet6_addr(addr)
            _add_addr(u, family, inet6_ntop(raw) if raw is not None else addr)
        else:
            _add_addr(u, family, addr)
    u.family = u.addrs[0].family
    u.wildcard = u.addrs[0].wildcard
    return u


def _parse_inet6_url(url: str, listen: bool, uri_part: bool, default_port: int) -> Url:
    u = Url(url, family="inet6")
    close = url.find("]", 1)
    if close < 0:
        raise UrlError("invalid host")
    last = len(url)
    rest_at = close + 1
    uri_at = url.find("/", rest_at)
    if uri_at >= 0:
        if listen or not uri_part:
            raise UrlError("invalid host")
        u.uri = url[uri_at:]
        last = uri_at
    if rest_at < last:
        if url[rest_at] != ":":
            raise UrlError("invalid host")
        u.port = _parse_port(url[rest_at + 1 : last], listen, u)
    else:
        u.no_port = True
        u.port = default_port
    inner = url[1:close]
    if not inner:
        raise UrlError("no host")
    u.host = url[: close + 1]
    raw = inet6_addr(inner)
    if raw is None:
        raise UrlError("invalid IPv6 address")
    u.wildcard = raw == bytes(16)
    _add_addr(u, "inet6", inet6_ntop(raw))
    return u
