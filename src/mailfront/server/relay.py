"""The relay: transports straight to transports, no task parked per session.

Each side's transport gets a ``Pipe`` as its protocol; a pipe writes what its
transport reads to the other side (``dst``).  When a side's write buffer goes
over its high-water mark (``proxy_buffer`` towards the client, the client
buffer towards the backend), asyncio calls ``pause_writing`` on that side's
pipe, which pauses reading on the other side: nothing is held beyond the mark
plus one read.  Reads are as large as the loop makes them (uvloop: 256 KiB).
An EOF or an error on either side ends the session once what is pending has
been written (``transport.close()`` flushes).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailfront.server.session import Session


class Pipe(asyncio.Protocol):
    __slots__ = ("dst", "session")

    def __init__(self, session: Session, dst: asyncio.Transport) -> None:
        self.session = session
        self.dst = dst

    def data_received(self, data: bytes) -> None:
        self.dst.write(data)
        self.session.active = True  # proxy_timeout starts again (see Session._relay_timer)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.dst.pause_reading()

    def resume_writing(self) -> None:
        self.dst.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.relay_done()
