"""A client session: greeting, auth phase, authentication, backend login, relay.

The session drives the sans-IO machines of ``protocol/`` from asyncio
Protocol callbacks.  A login costs one coroutine (``_login``), from the
client's auth command to the backend's TCP connect; the auth phase before it
and the backend login after it run in callbacks.

The relay.  Once logged in, ``relaying`` is set and each side's
``data_received`` writes what it reads straight to the other transport: no
task is parked per session and nothing is buffered beyond the transports'
own write buffers.  When a side's write buffer goes over its high-water mark
(``proxy_buffer`` towards the client, the client buffer towards the
backend), asyncio calls ``pause_writing`` on that side's protocol, which
pauses reading on the other side.  Reads are as large as the loop makes them
(uvloop: 256 KiB).  An EOF or an error on either side ends the session once
what is pending has been written (``transport.close()`` flushes).  The same
two protocol objects serve the login and the relay: swapping protocols
(``set_protocol``) would cost poll changes per login and two objects per
session.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailfront.auth.base import AuthError, AuthResult, SessionInfo, Status
from mailfront.conf.model import Protocol
from mailfront.protocol import sasl
from mailfront.protocol.auth_http import holds_password, requery_request
from mailfront.protocol.base import Next, UpNext
from mailfront.server.log import ERR, INFO

if TYPE_CHECKING:
    from mailfront.server.app import ServerRuntime

_conn_numbers = itertools.count(1)

# nginx logs a timer's expiry with NGX_ETIMEDOUT's text
TIMED_OUT = f" ({errno.ETIMEDOUT}: {os.strerror(errno.ETIMEDOUT)})"


def sockaddr_text(addr: Any, with_port: bool) -> str:
    """nginx's ``ngx_sock_ntop``: ``1.2.3.4[:port]``, ``[::1]:port`` / ``::1``, ``unix:``."""
    if isinstance(addr, tuple):
        host = addr[0]
        if ":" in host:
            return f"[{host}]:{addr[1]}" if with_port else host
        return f"{host}:{addr[1]}" if with_port else host
    return "unix:" + (addr if isinstance(addr, str) else "")


def handshake_error(e: BaseException) -> str:
    """How nginx logs a failed TLS handshake (ngx_ssl_handshake, ngx_ssl_connection_error)."""
    from mailfront.server.tls_openssl import ssl_error_text

    if isinstance(e, ConnectionError):
        code = e.errno if isinstance(e, ConnectionResetError) else None
        if code:
            return f"peer closed connection in SSL handshake ({code}: {os.strerror(code)})"
        return "peer closed connection in SSL handshake"
    return "SSL_do_handshake() failed" + ssl_error_text(e)


def _send(transport: asyncio.Transport | None, out: list[bytes]) -> None:
    """A machine's queued output, in one write; the queue is emptied."""
    assert transport is not None
    transport.write(out[0] if len(out) == 1 else b"".join(out))
    out.clear()


class Session(asyncio.Protocol):
    """One client connection, from accept to the end of the relay."""

    __slots__ = (
        "action",
        "active",
        "attempt",
        "client",
        "client_host",
        "client_port",
        "closed",
        "conn",
        "eof",
        "greeted",
        "held",
        "last",
        "login",
        "machine",
        "pp",
        "pp_rest",
        "proxy",
        "relaying",
        "srv",
        "starttls",
        "task",
        "timer",
        "transport",
        "up_transport",
        "upstream",
        "upstream_text",
        "write_paused",
    )

    def __init__(self, srv: ServerRuntime) -> None:
        self.srv = srv
        self.transport: asyncio.Transport | None = None
        self.up_transport: asyncio.Transport | None = None
        self.machine: Any = None
        self.upstream: Any = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.attempt = 0
        self.closed = False
        self.greeted = False
        self.held = -1  # bytes read from the client during a login, -1 outside one
        self.relaying = False
        self.login = b""
        self.action: str | None = "sending client greeting line"
        self.upstream_text = ""
        self.client = ""
        self.client_host = b"[UNAVAILABLE]"  # SMTP's Client-Host / XCLIENT NAME
        self.client_port = 0
        self.pp: bytes | None = None  # PROXY header bytes read so far (listen ... proxy_protocol)
        self.pp_rest = b""  # what followed the PROXY header, for after the greeting
        self.proxy: Any = None  # the PROXY header's addresses (protocol.proxy_protocol)
        self.starttls = False
        self.conn = 0
        self.last = 0.0
        self.active = False
        self.eof = False  # the client's EOF came during a login: the login goes on (nginx)
        self.write_paused = False  # the client does not read our replies: stop reading it

    # -- logging with nginx's context suffix -------------------------------

    def log(self, level: int, msg: str) -> None:
        log = self.srv.log
        if level > log.level:
            return
        parts = [msg]
        if self.action:
            parts.append(" while ")
            parts.append(self.action)
        parts.append(", client: ")
        parts.append(self.client)
        if self.starttls:
            parts.append(" using starttls")
        parts.append(", server: ")
        parts.append(self.srv.addr_text)
        if self.login:
            parts.append(', login: "')
            parts.append(self.login.decode("utf-8", "backslashreplace"))
            parts.append('"')
            if self.upstream_text:
                parts.append(", upstream: ")
                parts.append(self.upstream_text)
        log.log(level, "".join(parts), self.conn)

    def _flush_logs(self, logs: list[tuple[int, str]]) -> None:
        for level, msg in logs:
            self.log(level, msg)
        logs.clear()

    # -- connection ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        srv = self.srv
        if srv.by_addr is not None:  # a wildcard socket that serves several servers
            local = transport.get_extra_info("sockname")
            srv = self.srv = srv.by_addr.get(local[0] if isinstance(local, tuple) else "", srv)
        srv.sessions.add(self)
        self.conn = next(_conn_numbers)
        peer = transport.get_extra_info("peername")
        self.client = sockaddr_text(peer, False)
        if isinstance(peer, tuple):
            self.client_port = peer[1]
        if srv.log.level >= INFO:
            srv.log.log(
                INFO,
                f"client {sockaddr_text(peer, True)} connected to {srv.addr_text}",
                self.conn,
            )
        conf = srv.conf
        salt = b""
        if srv.needs_salt:
            salt = sasl.make_salt(random.getrandbits(31), int(time.time()), conf.server_name)
        self.machine = srv.machine_cls(conf, salt, srv.listen_ssl)
        if srv.listen_proxy_protocol:  # the PROXY header comes first, in clear
            self.pp = b""
            self.action = "reading PROXY protocol"
            self.timer = srv.loop.call_later(conf.timeout, self._timed_out)
            return
        if srv.listen_ssl:
            self._start_tls()
            return
        self._after_accept()

    def _start_tls(self) -> None:
        """The TLS handshake on the client connection (``listen ... ssl`` or STARTTLS)."""
        from mailfront.server.tls_transport import TLSTransport

        srv = self.srv
        assert self.transport is not None and srv.ssl_ctx is not None
        if self.timer is not None:
            self.timer.cancel()
        self.action = "in starttls state" if self.starttls else "SSL handshaking"
        self.timer = srv.loop.call_later(srv.conf.timeout, self._handshake_timed_out)
        self.transport = TLSTransport(self.transport, srv.ssl_ctx, self, self._tls_done, srv.loop)

    def _handshake_timed_out(self) -> None:
        """nginx closes a handshake that outlives ``timeout`` without a word
        (``ngx_mail_ssl_handshake_handler`` on a timed-out event)."""
        self.timer = None
        self.close(abort=True)

    def _tls_done(self, exc: BaseException | None) -> None:
        """The handshake ended: refuse, or go on where the session left off."""
        if self.closed:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if exc is not None:
            self.log(INFO, handshake_error(exc))
            self.close()
            return
        if not self._check_client_cert():
            return
        if not self.starttls:  # listen ... ssl
            self._after_accept()
            return
        self.machine.tls_started()
        self.action = self.machine.action
        self.timer = self.srv.loop.call_later(self.srv.conf.timeout, self._timed_out)

    def _after_accept(self) -> None:
        srv = self.srv
        if srv.resolver is not None:
            # what an SMTP client says while it is resolved waits, as in nginx
            assert self.transport is not None
            self.transport.pause_reading()
            self.task = srv.loop.create_task(self._prelude())
            return
        self._before_greeting()

    def _proxy_header(self, data: bytes) -> None:
        """``listen ... proxy_protocol``: the header, then realip, then the greeting."""
        from mailfront.protocol.proxy_protocol import (
            ProxyProtocolError,
            parse,
            realip_addr,
            trusted,
        )

        buf = (self.pp or b"") + data
        try:
            res = parse(buf, final=True)  # nginx reads the header from one read
        except ProxyProtocolError as e:
            if e.message:
                self.log(e.level, e.message)
            self.close()
            return
        assert res is not None
        self.pp = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.proxy = res
        srv = self.srv
        if res.src_addr is not None and trusted(self.client, srv.conf.set_real_ip_from):
            addr = realip_addr(res.src_addr)  # ngx_mail_realip_handler
            if addr is not None:
                self.client = addr
                self.client_port = res.src_port
        self.pp_rest = buf[res.length :]
        if srv.listen_ssl:
            # nginx reads the header from one read: what followed it is the ClientHello
            rest, self.pp_rest = self.pp_rest, b""
            self._start_tls()
            if rest:
                self.transport.data_received(rest)  # type: ignore[union-attr]
            return
        self._after_accept()

    async def _prelude(self) -> None:
        """SMTP with ``resolver``: the client's name, before the greeting (reading paused)."""
        srv = self.srv
        self.action = "in resolving client address"
        resolved = await srv.resolver(srv.conf, self.client)
        self.client_host = resolved.host
        for level, action, msg in resolved.logs:
            self.action = action
            self.log(level, msg)
        self.task = None
        assert self.transport is not None
        self.transport.resume_reading()
        self._before_greeting()

    def _check_client_cert(self) -> bool:
        """``ngx_mail_verify_cert`` after a handshake: False if the session was refused."""
        from mailfront.server.tls import check_client_cert, rejection_line

        srv = self.srv
        assert self.transport is not None
        rejected = check_client_cert(self.transport.get_extra_info("ssl_object"), srv.conf)
        if rejected is None:
            return True
        self.log(INFO, rejected.log)  # then answer in the protocol, and close
        self.transport.write(rejection_line(srv.conf.protocol, rejected.kind))
        self.close()
        return False

    def _before_greeting(self) -> None:
        conf = self.srv.conf
        rest, self.pp_rest = self.pp_rest, b""
        if conf.protocol is Protocol.SMTP and conf.smtp_greeting_delay > 0:
            self.action = "sending client greeting line"
            self.timer = self.srv.loop.call_later(conf.smtp_greeting_delay, self._greet)
            if rest:  # sent with the PROXY header: before the greeting
                self.data_received(rest)
            return
        self._greet()
        if rest:  # what followed the PROXY header is read after the greeting
            self.data_received(rest)

    def _greet(self) -> None:
        assert self.transport is not None
        self.greeted = True
        self.transport.write(self.machine.greeting())
        self.action = self.machine.action
        self.timer = self.srv.loop.call_later(self.srv.conf.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        self.log(INFO, "client timed out" + TIMED_OUT)
        self.close(abort=True)

    def data_received(self, data: bytes) -> None:
        if self.relaying:
            self.up_transport.write(data)  # type: ignore[union-attr]
            self.active = True  # proxy_timeout starts again (see _relay_timer)
            return
        machine = self.machine
        if machine is None:
            return
        if self.pp is not None:
            self._proxy_header(data)
            return
        if self.held >= 0:
            # A login is under way: nginx leaves such input in the socket; we
            # let the machine hold it (it goes to the backend after the login)
            # and stop reading only past the client buffer, which saves two
            # poll changes per login.
            self.held += len(data)
            machine.receive(data)
            if self.held > self.srv.client_buffer:
                assert self.transport is not None
                self.transport.pause_reading()
            return
        if not self.greeted:  # only during smtp_greeting_delay: reading is paused otherwise
            machine.early_input(data)
            self._output(machine)
            self.close()
            return
        self._dispatch(machine.receive(data))

    def _output(self, machine: Any) -> None:
        if machine.out:
            _send(self.transport, machine.out)
        self.login = machine.login
        self.action = machine.action
        if machine.logs:
            self._flush_logs(machine.logs)

    def _dispatch(self, nxt: Next) -> None:
        machine = self.machine
        self._output(machine)
        if nxt is Next.READ:
            return
        if nxt is Next.AUTH:
            self.held = 0
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.attempt += 1
            self.task = self.srv.loop.create_task(self._login())
            return
        if nxt is Next.CLOSE:
            self.close()
            return
        # Next.STARTTLS: the machine has dropped what was pipelined (CVE-2014-3556)
        self.starttls = True
        self._start_tls()

    def eof_received(self) -> bool | None:
        if self.held >= 0 and not self.closed:
            # nginx does not read the client while it logs in: the login goes on,
            # and the EOF ends the session once it is relaying
            self.eof = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.closed:
            from mailfront.server.tls_transport import SSLReadError

            if isinstance(exc, SSLReadError):  # a record OpenSSL refused
                if self.relaying:
                    self.action = "proxying and reading from client"
                self.log(INFO, "SSL_read() failed" + str(exc))
        if self.relaying:
            self.relay_done()
        else:
            self.close()

    def pause_writing(self) -> None:
        if self.relaying:  # the client reads slower than the backend sends
            self.up_transport.pause_reading()  # type: ignore[union-attr]
            return
        # before the relay: the client does not read our replies; read no more
        # commands until it does (nginx: "send handler busy")
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.relaying:
            self.up_transport.resume_reading()  # type: ignore[union-attr]
            return
        self.write_paused = False
        if self.transport is not None and self.held <= self.srv.client_buffer:
            self.transport.resume_reading()

    def close(self, abort: bool = False) -> None:
        """Close both sides and forget the session.

        ``abort``: a timeout, after which nginx closes at once, drops what is
        not sent yet and sends no close_notify; else pending output goes first.
        """
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if self.up_transport is not None:
            if abort:
                self.up_transport.abort()
            else:
                self.up_transport.close()
        self.machine = None
        self.upstream = None
        self.srv.sessions.discard(self)

    def internal_error(self) -> None:
        machine = self.machine
        if machine is not None and self.transport is not None:
            self.transport.write(machine.internal_error())
        self.close()

    # -- the login: auth service, then backend connect ----------------------

    def _session_info(self) -> SessionInfo:
        srv = self.srv
        info = SessionInfo(srv.protocol_name, self.client)
        if srv.conf.protocol is Protocol.SMTP:
            info.client_host = self.client_host
        proxy = self.proxy
        if proxy is not None and proxy.src_addr is not None:
            info.proxy_src_addr, info.proxy_src_port = proxy.src_addr, proxy.src_port
            info.proxy_dst_addr, info.proxy_dst_port = proxy.dst_addr, proxy.dst_port
        if srv.ssl_ctx is not None and self.transport is not None:
            sslobj = self.transport.get_extra_info("ssl_object")
            if sslobj is not None:
                from mailfront.server.tls import ssl_info

                info.ssl = ssl_info(sslobj, srv.conf)
        return info

    async def _login(self) -> None:
        srv = self.srv
        conf = srv.conf
        machine = self.machine
        req = machine.auth
        self.action = "in http auth state"
        info = self._session_info()
        loop = srv.loop
        while True:
            try:
                res = await srv.auth.authenticate(info, req, self.attempt)
            except AuthError as e:
                if str(e):
                    self.log(ERR, str(e))
                self.internal_error()
                return
            if res.user is not None:  # nginx takes Auth-User into s->login at once
                machine.login = self.login = res.user
            if res.status is Status.WAIT:
                await asyncio.sleep(res.wait or 0)
                req = machine.auth = requery_request(req, res)
                continue
            break
        if res.status is Status.ERROR:
            self.log(
                INFO, 'client login failed: "{}"'.format(res.errmsg.decode("utf-8", "replace"))
            )
            if not res.wait:
                machine.auth_failed(res.errmsg, res.error_code)
                self._output(machine)
                self.close()
                return
            await asyncio.sleep(res.wait)
            machine.auth_failed(res.errmsg, res.error_code)
            self.task = None
            self.timer = loop.call_later(conf.timeout, self._timed_out)
            assert self.transport is not None
            if self.held > self.srv.client_buffer and not self.write_paused:
                self.transport.resume_reading()
            self.held = -1
            self._dispatch(machine.resume())
            if self.eof and not self.closed:  # the client ended during the login
                self.close()
            return
        await self._connect_backend(res, req)

    async def _connect_backend(self, res: AuthResult, req: Any) -> None:
        login = res.user if res.user is not None else req.login
        passwd: bytes | None = None  # None: nginx holds no password
        if res.passwd is not None:
            passwd = res.passwd
        elif holds_password(req):
            passwd = req.passwd
        if passwd is None and self.srv.conf.protocol is not Protocol.SMTP:
            # APOP, CRAM-MD5, EXTERNAL: the backend needs the real password
            self.log(ERR, "auth backend did not send password")
            self.internal_error()
            return
        srv = self.srv
        self.login = login
        host = res.server
        self.upstream_text = f"[{host}]:{res.port}" if ":" in host else f"{host}:{res.port}"
        self.upstream = srv.make_upstream(srv.conf, self.machine, login, passwd, self)
        self.action = "connecting to upstream"
        self.timer = srv.loop.call_later(srv.conf.timeout, self._upstream_timed_out)
        try:
            await srv.loop.create_connection(lambda: _Backend(self), host, res.port)
        except OSError as e:
            if not self.closed:
                self.log(ERR, f"connect() failed ({e.errno}: {e.strerror})")
                self.internal_error()
            return
        self.task = None

    def _upstream_timed_out(self) -> None:
        self.timer = None
        self.log(INFO, "upstream timed out" + TIMED_OUT)
        self.internal_error()

    def upstream_made(self, transport: asyncio.Transport) -> None:
        if self.closed:
            transport.close()
            return
        self.up_transport = transport
        self.action = self.upstream.action
        if self.srv.conf.proxy_protocol:
            transport.write(self._proxy_header_out())

    def _proxy_header_out(self) -> bytes:
        """``proxy_protocol on|v2``: the header for the backend, written right after connect."""
        from mailfront.protocol.proxy_protocol import build_v1, build_v2

        assert self.transport is not None
        local = self.transport.get_extra_info("sockname")
        src = (self.client, self.client_port) if self.client_port else None
        dst = (local[0], local[1]) if isinstance(local, tuple) else None
        if self.srv.conf.proxy_protocol == 1:
            return build_v1(src, dst)
        tls = None
        sslobj = self.transport.get_extra_info("ssl_object")
        if sslobj is not None:
            from mailfront.server.tls import common_name

            cert = sslobj.getpeercert(binary_form=True)
            cipher = sslobj.cipher()
            sig_alg, key_alg = sslobj.own_cert_algorithms()
            tls = {
                "sni": sslobj.servername(),
                "alpn": sslobj.selected_alpn_protocol(),
                "version": sslobj.version(),
                "cn": common_name(cert) if cert is not None else None,
                "cipher": cipher[0] if cipher else None,
                "sig_alg": sig_alg,
                "key_alg": key_alg,
                "cert_present": cert is not None,
                "reused": sslobj.session_reused,
                "verify": sslobj.verify_result,
            }
        return build_v2(src, dst, tls)

    def upstream_data(self, data: bytes) -> None:
        up = self.upstream
        if up is None:
            return
        nxt = up.receive(data)
        if up.to_upstream:
            _send(self.up_transport, up.to_upstream)
        if up.to_client:
            _send(self.transport, up.to_client)
        self.action = up.action
        if up.logs:
            self._flush_logs(up.logs)
        if nxt is UpNext.READ:
            return
        if nxt is UpNext.DONE:
            self._start_relay()
            return
        self.close()

    def upstream_lost(self) -> None:
        if self.closed:
            return
        self.internal_error()  # nginx logs nothing of its own here

    # -- relay ----------------------------------------------------------------

    def _start_relay(self) -> None:
        client, up = self.transport, self.up_transport
        assert client is not None and up is not None
        conf = self.srv.conf
        leftover = self.machine.leftover()
        self.machine = None
        self.upstream = None
        self.action = None
        if self.timer is not None:
            self.timer.cancel()
        self.log(INFO, "client logged in")
        self.action = "proxying"
        self.relaying = True
        client.set_write_buffer_limits(high=conf.proxy_buffer)
        up.set_write_buffer_limits(high=self.srv.client_buffer)
        if leftover:
            up.write(leftover)
        loop = self.srv.loop
        self.last = loop.time()
        self.timer = loop.call_later(conf.proxy_timeout / 8, self._relay_timer)
        if self.write_paused:
            # the client had not read our replies: the relay's flow control takes over
            self.write_paused = False
            up.pause_reading()
            client.resume_reading()
        elif self.held > self.srv.client_buffer:
            client.resume_reading()
        self.held = -1
        if self.eof:  # the client ended during the login: what it sent first went on
            self.relay_done()

    def _relay_timer(self) -> None:
        """proxy_timeout without a clock read per relayed chunk.

        The relay only sets ``active``; this timer runs every eighth of the
        timeout and takes "active since the last check" as "active now", so
        the session ends between proxy_timeout and 9/8 of it after its last
        byte.
        """
        loop = self.srv.loop
        now = loop.time()
        if self.active:
            self.active = False
            self.last = now
        timeout = self.srv.conf.proxy_timeout
        left = self.last + timeout - now
        if left > 0:
            self.timer = loop.call_later(min(left, timeout / 8), self._relay_timer)
            return
        self.timer = None
        self.log(INFO, "client timed out" + TIMED_OUT)
        self.close(abort=True)

    def relay_done(self) -> None:
        if self.closed:
            return
        self.action = None
        self.log(INFO, "proxied session done")
        self.close()


class _Backend(asyncio.Protocol):
    """The backend connection: the login, then its half of the relay."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.upstream_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session.relaying:
            session.transport.write(data)  # type: ignore[union-attr]
            session.active = True
            return
        session.upstream_data(data)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:  # the backend reads slower than the client sends
        if self.session.relaying:
            self.session.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        if self.session.relaying:
            self.session.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session.relaying:
            self.session.relay_done()
        else:
            self.session.upstream_lost()


SessionFactory = Callable[[], Session]
