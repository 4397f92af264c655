"""The SMTP client resolver: ``resolver`` and ``resolver_timeout``, as nginx does it.

``ngx_mail_smtp_init_session`` and its handlers: before the greeting, the
client's address is looked up (PTR), then the name it gave is looked up
forward (A and/or AAAA) and must map back to the client's address.  The
result is the ``Client-Host`` header of auth_http and the ``NAME=`` of
XCLIENT:

- the name, when the PTR name is forward-confirmed;
- ``[UNAVAILABLE]`` when ``resolver`` is off, on NXDOMAIN (or an empty
  answer), or when no forward address matches the client;
- ``[TEMPUNAVAIL]`` on any other error (SERVFAIL, REFUSED, a malformed answer,
  ``resolver_timeout`` expired), for unix-socket clients when ``resolver`` is
  set, and when the PTR name has a byte outside ``[A-Za-z0-9.-]``
  (CVE-2026-28753, nginx 1.29.7: the name would reach auth_http and XCLIENT).

The DNS messages are built and parsed by dnspython; the servers are asked the
way nginx's resolver asks them: one at a time, round-robin over the
configured addresses, resent to the next one every 5 seconds without an
answer until ``resolver_timeout`` (per query) expires; an error reply ends
the query at once (no other server is tried).  Answers are cached for their
TTL (or ``valid=``), as nginx caches them, per worker process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.reversename

from mailfront.conf.model import Resolver, ServerConf
from mailfront.protocol.base import ERR
from mailfront.protocol.smtp import (
    ACTION_RESOLVING_ADDRESS,
    ACTION_RESOLVING_HOSTNAME,
    TEMPUNAVAIL,
    UNAVAILABLE,
    valid_host,
)

__all__ = [
    "FORMERR",
    "NXDOMAIN",
    "REFUSED",
    "SERVFAIL",
    "TIMEDOUT",
    "Resolved",
    "clear_cache",
    "resolve_client_host",
    "strerror",
]

# nginx's NGX_RESOLVE_* codes (the DNS rcodes, and ETIMEDOUT for a timeout)
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
TIMEDOUT = 110

RESEND_TIMEOUT = 5.0  # nginx's resolver resends to the next server every 5 s
_CACHE_MAX = 10000

_ERRORS = {
    FORMERR: "Format error",
    SERVFAIL: "Server failure",
    NXDOMAIN: "Host not found",
    NOTIMP: "Unimplemented",
    REFUSED: "Operation refused",
    TIMEDOUT: "Operation timed out",
}


def strerror(code: int) -> str:
    """``ngx_resolver_strerror``."""
    return _ERRORS.get(code, "Unknown error")


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the session needs: the Client-Host value and what to log.

    ``logs`` holds ``(level, action, message)``: the session sets its log
    action to ``action`` (nginx's ``c->log->action`` of that step) and logs
    ``message`` with its usual context suffix.
    """

    host: bytes
    logs: tuple[tuple[int, str, str], ...] = ()


class _Failed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# -- per-process state: the round-robin position and the cache ---------------------------

_rotation: dict[tuple[tuple[str, int], ...], itertools.count[int]] = {}
# (addresses, rdtype, name) -> (expiry on the loop's clock, answer rdatas as text)
_cache: dict[tuple[tuple[tuple[str, int], ...], int, str], tuple[float, tuple[str, ...]]] = {}


def clear_cache() -> None:
    """Forget cached answers (tests; nginx has no such thing)."""
    _cache.clear()


def _next_server(resolver: Resolver) -> int:
    counter = _rotation.get(resolver.addresses)
    if counter is None:
        if len(_rotation) > 256:  # old configurations after many reloads
            _rotation.clear()
        counter = _rotation[resolver.addresses] = itertools.count()
    return next(counter) % len(resolver.addresses)


# -- one query -------------------------------------------------------------------------------


async def _ask(
    resolver: Resolver, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, timeout: float
) -> dns.message.Message:
    """Ask the servers in turn until one answers or ``timeout`` expires."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    query = dns.message.make_query(qname, rdtype)
    query.flags |= dns.flags.RD
    servers = resolver.addresses
    index = _next_server(resolver)
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise _Failed(TIMEDOUT)
        slot = min(RESEND_TIMEOUT, left)
        host, port = servers[index]
        index = (index + 1) % len(servers)
        slot_end = loop.time() + slot
        try:
            try:
                return await dns.asyncquery.udp(
                    query,
                    host,
                    timeout=slot,
                    port=port,
                    ignore_unexpected=True,
                    raise_on_truncation=True,
                )
            except dns.message.Truncated:
                return await dns.asyncquery.tcp(
                    query, host, timeout=max(slot_end - loop.time(), 0.001), port=port
                )
        except dns.exception.Timeout:
            continue
        except OSError:
            # nginx ignores a failed recv() (an ICMP "port unreachable"):
            # it waits for the resend time, then asks the next server
            await asyncio.sleep(max(slot_end - loop.time(), 0))
            continue
        except dns.exception.DNSException:  # a malformed answer
            raise _Failed(FORMERR) from None


async def _lookup(
    conf: ServerConf,
    resolver: Resolver,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
) -> tuple[str, ...]:
    """The answer's records of ``rdtype`` as text (a PTR target as its raw
    bytes in latin-1, an address as its text); none at all is NXDOMAIN, as
    nginx counts an empty answer."""
    loop = asyncio.get_running_loop()
    key = (resolver.addresses, int(rdtype), qname.to_text())
    hit = _cache.get(key)
    if hit is not None:
        if hit[0] > loop.time():
            return hit[1]
        del _cache[key]
    response = await _ask(resolver, qname, rdtype, conf.resolver_timeout)
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise _Failed(int(rcode))
    records: list[str] = []
    ttl: int | None = None
    for rrset in response.answer:
        if rrset.rdtype == rdtype:
            if rdtype == _PTR:
                records.extend(_ptr_text(r) for r in rrset)
            else:
                records.extend(r.to_text() for r in rrset)
            ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
    if not records:
        raise _Failed(NXDOMAIN)
    answer = tuple(records)
    valid = resolver.valid if resolver.valid is not None else float(ttl or 0)
    if valid > 0:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = (loop.time() + valid, answer)
    return answer


def _ptr_text(rdata: dns.rdata.Rdata) -> str:
    """The PTR target's raw bytes (nginx copies labels as they are), as latin-1 text."""
    target: dns.name.Name = rdata.target  # type: ignore[attr-defined]
    labels = target.labels[:-1] if target.is_absolute() else target.labels
    return b".".join(labels).decode("latin-1")


# -- the two steps ---------------------------------------------------------------------------


async def resolve_client_host(conf: ServerConf, addr: str) -> Resolved:
    """Client-Host for a client at ``addr`` (its address text: ``127.0.0.1``,
    ``::1``, ``unix:``), with nginx's semantics and log lines.

    Call it before the SMTP greeting, with the address after realip; the
    session should not read from the client meanwhile.  With
    ``conf.resolver`` None it returns ``[UNAVAILABLE]`` at once (the caller
    may skip the call).  It never raises for a DNS problem; cancelling it
    (the client went away) is safe.
    """
    resolver = conf.resolver
    if resolver is None:
        return Resolved(UNAVAILABLE)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:  # unix: (nginx: any non-IP family)
        return Resolved(TEMPUNAVAIL)

    # 1. PTR ("in resolving client address")
    try:
        ptr = await _lookup(conf, resolver, dns.reversename.from_address(str(ip)), _PTR)
    except _Failed as e:
        msg = f"{addr} could not be resolved ({e.code}: {strerror(e.code)})"
        host = UNAVAILABLE if e.code == NXDOMAIN else TEMPUNAVAIL
        return Resolved(host, ((ERR, ACTION_RESOLVING_ADDRESS, msg),))
    name_text = ptr[0]
    name = name_text.encode("latin-1")
    if not valid_host(name):
        # CVE-2026-28753: a name that could inject into auth_http or XCLIENT
        shown = name.decode("utf-8", "backslashreplace")
        shown = shown.encode("unicode_escape").decode("ascii").replace('"', '\\"')
        msg = f'{addr} resolved to invalid host name "{shown}"'
        return Resolved(TEMPUNAVAIL, ((ERR, ACTION_RESOLVING_ADDRESS, msg),))

    # 2. forward confirmation ("in resolving client hostname")
    try:
        qname = dns.name.from_text(name_text)
    except dns.exception.DNSException:  # e.g. a label too long: nginx's query would fail too
        return Resolved(
            TEMPUNAVAIL, ((ERR, ACTION_RESOLVING_HOSTNAME, _name_error(name, FORMERR)),)
        )
    types = []
    if resolver.ipv4:
        types.append(_A)
    if resolver.ipv6:
        types.append(_AAAA)
    results = await asyncio.gather(
        *(_lookup(conf, resolver, qname, t) for t in types), return_exceptions=True
    )
    addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    errors: list[int] = []
    for result in results:
        if isinstance(result, _Failed):
            errors.append(result.code)
        elif isinstance(result, BaseException):
            raise result
        else:
            addresses.update(ipaddress.ip_address(text) for text in result)
    if ip in addresses:
        return Resolved(name)
    if addresses:  # not forward-confirmed: nginx logs nothing (debug only)
        return Resolved(UNAVAILABLE)
    # no address at all: the worst error decides (NXDOMAIN only if every query said so)
    code = next((c for c in errors if c != NXDOMAIN), NXDOMAIN)
    host = UNAVAILABLE if code == NXDOMAIN else TEMPUNAVAIL
    return Resolved(host, ((ERR, ACTION_RESOLVING_HOSTNAME, _name_error(name, code)),))


def _name_error(name: bytes, code: int) -> str:
    return f'"{name.decode("latin-1")}" could not be resolved ({code}: {strerror(code)})'


_PTR = dns.rdatatype.PTR
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
