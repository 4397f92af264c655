"""nginx's auth_http: one HTTP/1.0 request per attempt, on a new connection.

The request bytes and the response parsing are sans-IO
(``protocol.auth_http``); this module only moves them: connect (TCP or
``unix:``), send, read until the header block is complete, close.  Every wait
is bounded by ``auth_http_timeout``.  Failures become ``AuthError`` with
nginx's log text (``auth http server 127.0.0.1:9000 timed out``, ...), or
an empty text where nginx logs nothing of its own (the server closed early).
"""

from __future__ import annotations

import asyncio

from mailfront.auth.base import AuthError, AuthResult, SessionInfo
from mailfront.conf.model import ServerConf
from mailfront.protocol import auth_http
from mailfront.protocol.base import AuthRequest


class _Exchange(asyncio.Protocol):
    __slots__ = ("fut", "parser", "request", "transport")

    def __init__(self, request: bytes, fut: asyncio.Future[None]) -> None:
        self.request = request
        self.fut = fut
        self.parser = auth_http.ResponseParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.fut.done():
            return
        try:
            complete = self.parser.feed(data)
        except auth_http.AuthHttpError as e:
            self.fut.set_exception(e)
            assert self.transport is not None
            self.transport.close()
            return
        if complete:
            self.fut.set_result(None)
            assert self.transport is not None
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.fut.done():
            if exc is not None:
                self.fut.set_exception(exc)
            else:
                self.fut.set_exception(ConnectionResetError(0, "closed"))


class HttpAuth:
    """The ``auth_http`` backend of one ``server{}``."""

    def __init__(self, conf: ServerConf) -> None:
        assert conf.auth_http is not None
        self.conf = conf
        self.url = conf.auth_http
        if self.url.unix:
            self.peer_name = "unix:" + self.url.addr
        elif ":" in self.url.addr:
            self.peer_name = f"[{self.url.addr}]:{self.url.port}"
        else:
            self.peer_name = f"{self.url.addr}:{self.url.port}"

    async def authenticate(self, info: SessionInfo, req: AuthRequest, attempt: int) -> AuthResult:
        conf = self.conf
        loop = asyncio.get_running_loop()
        request = auth_http.build_request(conf, info, req, attempt)
        fut: asyncio.Future[None] = loop.create_future()
        exchange = _Exchange(request, fut)
        url = self.url
        try:
            async with asyncio.timeout(conf.auth_http_timeout):
                if url.unix:
                    await loop.create_unix_connection(lambda: exchange, url.addr)
                else:
                    await loop.create_connection(lambda: exchange, url.addr, url.port)
                await fut
        except TimeoutError:
            raise AuthError(f"auth http server {self.peer_name} timed out") from None
        except auth_http.AuthHttpError as e:
            raise AuthError(f"auth http server {self.peer_name} {e}") from None
        except OSError as e:
            if e.errno:
                what = "connect()" if exchange.transport is None else "recv()"
                raise AuthError(f"{what} failed ({e.errno}: {e.strerror})") from None
            raise AuthError("") from None
        finally:
            if exchange.transport is not None:
                exchange.transport.close()
        try:
            return exchange.parser.result(
                protocol=conf.protocol.value,
                has_passwd=auth_http.holds_password(req),
            )
        except auth_http.AuthHttpError as e:
            raise AuthError(f"auth http server {self.peer_name} {e}") from None

    def close(self) -> None:
        pass
