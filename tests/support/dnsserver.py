"""A small DNS server of our own on loopback (UDP, in a thread), for the resolver tests.

``DnsServer(zone)``: ``zone`` maps ``(name, type)`` (name without the final
dot, type ``"PTR"``, ``"A"`` or ``"AAAA"``) to the answer:

- a list of record texts (``["a.example.net."]``, ``["127.0.0.1"]``), or
  ``dns.name.Name`` objects for PTR targets with raw label bytes (CRLF...);
- ``"NXDOMAIN"``, ``"SERVFAIL"``, ``"REFUSED"``: that rcode, no answer;
- ``"EMPTY"``: NOERROR with no answer;
- ``"DROP"``: no reply at all (the client times out);
- ``"BROKEN"``: a PTR record with zero-length RDATA (nginx's tests use it).

A name missing from the zone gets NXDOMAIN.  ``queries`` records every
``(name, type)`` asked, in order.  Messages are built with dnspython.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Mapping, Sequence

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Answer = Sequence["str | dns.name.Name"] | str

_RCODES = {"NXDOMAIN": dns.rcode.NXDOMAIN, "SERVFAIL": dns.rcode.SERVFAIL,
           "REFUSED": dns.rcode.REFUSED}  # fmt: skip


class DnsServer:
    def __init__(self, zone: Mapping[tuple[str, str], Answer], ttl: int = 3600) -> None:
        self.zone = dict(zone)
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            try:
                reply = self._reply(data)
            except Exception:  # a query we cannot parse: no answer
                continue
            if reply is not None:
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, peer)

    def _reply(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        answer = self.zone.get((name, rdtype), "NXDOMAIN")
        response = dns.message.make_response(query)
        if answer == "DROP":
            return None
        if answer == "BROKEN":
            wire = response.to_wire()
            # one answer: a pointer to the question's name, PTR IN, TTL, RDLENGTH 0
            header = bytearray(wire[:12])
            header[6:8] = struct.pack("!H", 1)
            rr = struct.pack("!HHHIH", 0xC00C, dns.rdatatype.PTR, dns.rdataclass.IN, self.ttl, 0)
            return bytes(header) + wire[12:] + rr
        if isinstance(answer, str):
            if answer in _RCODES:
                response.set_rcode(_RCODES[answer])
            return response.to_wire()
        rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
        rrset.update_ttl(self.ttl)
        for item in answer:
            if isinstance(item, dns.name.Name):
                rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.PTR, "x.")
                rdata = rdata.replace(target=item)
            else:
                rdata = dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, item)
            rrset.add(rdata)
        response.answer.append(rrset)
        return response.to_wire()

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
