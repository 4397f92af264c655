"""nginx's auth_http: one HTTP/1.0 request per attempt, on a new connection.

The request bytes and the response parsing are sans-IO
(``protocol.auth_http``); this module only moves them: connect (TCP or
``unix:``), send, read until the header block is complete, close.  It works
on a plain non-blocking socket in an epoll set of its own (``_Poller``), as
nginx does, so an exchange costs no task, transport or protocol object and
no loop registration: the login's coroutine awaits one future.
``auth_http_timeout`` bounds the whole exchange.  Failures become
``AuthError`` with nginx's log text (``auth http server 127.0.0.1:9000 timed
out``, ...), or an empty text where nginx logs nothing of its own (the
server closed early).
"""

from __future__ import annotations

import _socket  # the C socket: no Python wrapper around creation and close
import asyncio
import errno
import os
import select
import socket

from mailfront.auth.base import AuthError, AuthResult, SessionInfo
from mailfront.conf.model import ServerConf
from mailfront.protocol import auth_http
from mailfront.protocol.base import AuthRequest

_RECV_SIZE = 1024  # nginx reads the answer into one 1024-byte buffer


class _Poller:
    """One epoll set for every auth_http socket of a loop, watched by the loop as one fd.

    nginx registers a new connection's socket once and lets ``close()`` take
    it out of epoll.  Registering each socket with the loop instead
    (``add_reader``) costs libuv seven syscalls per socket (a probe
    ADD/DEL, ioctl, the batched ADD, three DELs on removal); here a socket
    costs one ``epoll_ctl`` and the ``epoll_wait`` is shared by every
    exchange under way.
    """

    __slots__ = ("ep", "exchanges", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.exchanges: dict[int, _Exchange] = {}
        loop.add_reader(self.ep.fileno(), self._ready)

    def watch(self, ex: _Exchange, events: int) -> None:
        if ex.watched:
            self.ep.modify(ex.fd, events)
        else:
            self.ep.register(ex.fd, events)
            self.exchanges[ex.fd] = ex
            ex.watched = True

    def forget(self, ex: _Exchange) -> None:
        """Before the socket is closed (which takes it out of the epoll set)."""
        if ex.watched:
            ex.watched = False
            del self.exchanges[ex.fd]

    def _ready(self) -> None:
        exchanges = self.exchanges
        for fd, events in self.ep.poll(0):
            ex = exchanges.get(fd)
            if ex is None:
                continue
            if events & select.EPOLLOUT and not ex.reading:
                ex._writable()
            else:
                ex._readable()

    def close(self) -> None:
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()


_pollers: dict[asyncio.AbstractEventLoop, _Poller] = {}


def _poller(loop: asyncio.AbstractEventLoop) -> _Poller:
    poller = _pollers.get(loop)
    if poller is None or poller.ep.closed:
        poller = _pollers[loop] = _Poller(loop)
    return poller


class _Exchange:
    """One request/response on a non-blocking socket."""

    __slots__ = (
        "fd",
        "fut",
        "parser",
        "peer_name",
        "poller",
        "reading",
        "request",
        "sock",
        "timer",
        "watched",
    )

    def __init__(
        self, poller: _Poller, request: bytes, peer_name: str, fut: asyncio.Future[None]
    ) -> None:
        self.poller = poller
        self.request = request
        self.peer_name = peer_name
        self.fut = fut
        self.parser = auth_http.ResponseParser()
        self.sock: _socket.socket | None = None
        self.fd = -1
        self.reading = False
        self.watched = False
        self.timer: asyncio.TimerHandle | None = None

    def start(self, family: int, address: object, timeout: float) -> None:
        # SOCK_NONBLOCK: non-blocking from the start, no ioctl
        sock = self.sock = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.fd = sock.fileno()
        self.timer = self.poller.loop.call_later(timeout, self._timed_out)
        err = sock.connect_ex(address)  # type: ignore[arg-type]
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._fail(AuthError(f"connect() failed ({err}: {os.strerror(err)})"))
            return
        # On loopback the handshake is done by now: send at once and skip a
        # wait for writability.  Where it is not done yet, send() says EAGAIN
        # and we wait.
        try:
            n = sock.send(self.request)
        except (BlockingIOError, InterruptedError):
            self.poller.watch(self, select.EPOLLOUT)
            return
        except OSError as e:
            self._fail(AuthError(f"connect() failed ({e.errno}: {e.strerror})"))
            return
        self._sent(n)

    def _writable(self) -> None:
        sock = self.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(AuthError(f"connect() failed ({err}: {os.strerror(err)})"))
            return
        try:
            n = sock.send(self.request)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(AuthError(f"send() failed ({e.errno}: {e.strerror})"))
            return
        self._sent(n)

    def _sent(self, n: int) -> None:
        self.request = self.request[n:]
        if self.request:
            self.poller.watch(self, select.EPOLLOUT)
            return
        self.reading = True
        self.poller.watch(self, select.EPOLLIN)

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(AuthError(f"recv() failed ({e.errno}: {e.strerror})"))
            return
        if not data:  # closed before the header block ended: nginx logs nothing
            self._fail(AuthError(""))
            return
        try:
            complete = self.parser.feed(data)
        except auth_http.AuthHttpError as e:
            self._fail(AuthError(f"auth http server {self.peer_name} {e}"))
            return
        if complete:
            self._close()
            if not self.fut.done():
                self.fut.set_result(None)

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(
            AuthError(
                f"auth http server {self.peer_name} timed out"
                f" ({errno.ETIMEDOUT}: {os.strerror(errno.ETIMEDOUT)})"
            )
        )

    def _fail(self, exc: AuthError) -> None:
        self._close()
        if not self.fut.done():
            self.fut.set_exception(exc)

    def _close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        sock = self.sock
        if sock is not None:
            self.sock = None
            self.poller.forget(self)
            sock.close()


class HttpAuth:
    """The ``auth_http`` backend of one ``server{}``."""

    def __init__(self, conf: ServerConf) -> None:
        assert conf.auth_http is not None
        self.conf = conf
        url = self.url = conf.auth_http
        self.address: object
        if url.unix:
            self.peer_name = "unix:" + url.addr
            self.family = socket.AF_UNIX
            self.address = url.addr
        elif ":" in url.addr:
            self.peer_name = f"[{url.addr}]:{url.port}"
            self.family = socket.AF_INET6
            self.address = (url.addr, url.port)
        else:
            self.peer_name = f"{url.addr}:{url.port}"
            self.family = socket.AF_INET
            self.address = (url.addr, url.port)
        self.loop = asyncio.get_event_loop()

    async def authenticate(self, info: SessionInfo, req: AuthRequest, attempt: int) -> AuthResult:
        conf = self.conf
        fut: asyncio.Future[None] = self.loop.create_future()
        exchange = _Exchange(
            _poller(self.loop),
            auth_http.build_request(conf, info, req, attempt),
            self.peer_name,
            fut,
        )
        exchange.start(self.family, self.address, conf.auth_http_timeout)
        try:
            await fut
        finally:
            exchange._close()  # also when the session is cancelled
        try:
            return exchange.parser.result(
                protocol=conf.protocol.value,
                has_passwd=auth_http.holds_password(req),
            )
        except auth_http.AuthHttpError as e:
            raise AuthError(f"auth http server {self.peer_name} {e}") from None

    def close(self) -> None:
        pass
