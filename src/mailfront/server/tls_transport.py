"""TLS over memory BIOs on a plain uvloop transport (the OpenSSL engine).

:class:`TLSTransport` takes over a connected plain transport: it becomes that
transport's protocol, runs the server side of an OpenSSL connection
(:mod:`mailfront.server.libssl`) between two memory BIOs, and offers the
session the ``asyncio.Transport`` calls it uses, in plaintext. The session
creates it where nginx starts its handshake: on accept for ``listen ... ssl``
(after the PROXY header, if any), and after the STARTTLS/STLS reply. So the
session logs ``connected`` before the handshake, logs a failed handshake in
nginx's words, and the TLS alert of a failed handshake reaches the client
before the close.

The relay path stays short: a read decrypts everything the read brought
(one ``BIO_write``, then ``SSL_read`` until OpenSSL wants more) and hands it on
in one call; a write encrypts in one ``SSL_write`` (partial writes are off,
so a large write is all its records at once) and passes the records to the
plain transport in one write.  Nothing is buffered here beyond OpenSSL's own
record buffers, which ``SSL_MODE_RELEASE_BUFFERS`` frees while a session is
idle.  Flow control is the plain transport's: its high-water mark and its
``pause_writing``/``resume_writing`` calls reach the session unchanged.

How the connection ends follows ``ngx_ssl_handle_recv`` and
``ngx_ssl_shutdown``: records that arrived before a broken one are handed
over, then OpenSSL's fatal alert goes out and the connection is aborted (the
error reaches the session as ``connection_lost``'s argument); the client's
close_notify, or its EOF, reach the session as ``eof_received`` once what
came before them has been handed over (held while the session has paused
reading); ``close()`` sends close_notify only when the handshake completed
and the client has not ended the connection itself.  A connection that
breaks during the handshake (a reset, an EOF) reports to ``on_handshake``.

``get_extra_info("ssl_object")`` returns the transport itself: it answers
the questions the session asks about the TLS connection (``version``,
``cipher``, ``getpeercert``, ``selected_alpn_protocol``, ``session_reused``,
``verify_result``), the same names as ``ssl.SSLObject`` where both have one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mailfront.server import libssl as L
from mailfront.server.libssl import NULL, ffi, lib
from mailfront.server.tls_openssl import OpenSSLContext, ssl_error_text

_SSL_read = lib.SSL_read
_SSL_get_error = lib.SSL_get_error
_BIO_read = lib.BIO_read
_BIO_write = lib.BIO_write
_BIO_ctrl = lib.BIO_ctrl
_unpack = ffi.unpack
_WANT_READ = L.SSL_ERROR_WANT_READ
_ZERO_RETURN = L.SSL_ERROR_ZERO_RETURN
_PENDING = L.BIO_CTRL_PENDING


class _Buffer:
    """One buffer of the process for what OpenSSL hands out (decrypted data, records):
    each use copies what it needs out of it at once, so no session holds one."""

    size = 262144
    data: Any = ffi.new("char[]", size)

    @classmethod
    def at_least(cls, size: int) -> Any:
        if size > cls.size:
            data = ffi.new("char[]", size)
            cls.data, cls.size = data, size
        return cls.data


HandshakeDone = Callable[[BaseException | None], None]


class SSLReadError(ConnectionError):
    """A record OpenSSL refused: its text is what nginx logs after ``SSL_read() failed``."""


class TLSTransport(asyncio.Transport):
    """The server side of a TLS connection on a plain transport, as a transport."""

    __slots__ = (
        "_app",
        "_closing",
        "_eof",
        "_error",
        "_handshaking",
        "_loop",
        "_notify",
        "_on_handshake",
        "_paused",
        "_raw",
        "_rbio",
        "_ssl",
        "_wbio",
    )

    def __init__(
        self,
        raw: asyncio.Transport,
        tls: OpenSSLContext,
        app: asyncio.Protocol,
        on_handshake: HandshakeDone,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._app = app
        self._on_handshake: HandshakeDone | None = on_handshake
        self._handshaking = True
        self._closing = False
        self._paused = False  # the session paused reading: records wait in the BIO
        self._eof = False  # the client's close_notify or EOF, not yet handed to the session
        self._notify = False  # close() sends close_notify (set once the handshake is done)
        self._error: Exception | None = None  # the SSL error that ended the connection
        self._loop = loop
        self._ssl, self._rbio, self._wbio = tls.connection()
        raw.set_protocol(self)  # type: ignore[arg-type]

    # -- the plain transport's protocol -------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        pass  # the plain transport is connected before it is handed over

    def data_received(self, data: bytes) -> None:
        _BIO_write(self._rbio, data, len(data))
        if self._handshaking:
            ssl = self._ssl
            lib.ERR_clear_error()
            ret = lib.SSL_do_handshake(ssl)
            if ret != 1:
                if _SSL_get_error(ssl, ret) == _WANT_READ:
                    self._flush()
                    return
                e = L.error()
                self._flush()  # the alert goes out before the close
                self._handshake_done(e)
                return
            # what a handshake may leave in the queue goes: from here on it holds
            # only the errors of the call that just failed (the relay does not clear it
            # before each call, as every failure drains it)
            lib.ERR_clear_error()
            # the last flight (TLSv1.3: the session tickets) waits for the session's
            # first words (the greeting), so that both leave in one write
            self._notify = True
            self._handshake_done(None)
            if self._closing:
                return  # close() has flushed
            self._flush()
        if not self._paused:
            self._read()

    def _read(self) -> None:
        """Decrypt what the incoming BIO holds and hand it to the session in one call."""
        ssl = self._ssl
        buf = _Buffer.data
        size = _Buffer.size
        chunks: list[bytes] = []
        while True:
            n = _SSL_read(ssl, buf, size)
            if n > 0:
                chunks.append(_unpack(buf, n))
                continue
            err = _SSL_get_error(ssl, n)
            if err == _WANT_READ:
                break
            if err == _ZERO_RETURN:  # the client's close_notify
                self._eof = True
                self._notify = False  # nginx answers it with none (ngx_ssl_handle_recv)
                break
            self._failed(L.error(), chunks)  # a broken record
            return
        self._deliver(chunks)
        if self._eof and not self._paused and not self._closing:
            self._ended()

    def _failed(self, e: L.Error, chunks: list[bytes]) -> None:
        """A record OpenSSL refused: as nginx, what came before it still counts, the
        client gets the fatal alert, and the connection ends (the session learns why
        from ``connection_lost``)."""
        self._error = SSLReadError(ssl_error_text(e))
        self._closing = True  # what the session answers is dropped: SSL_write fails now
        self._notify = False
        self._flush()
        self._deliver(chunks)
        self._raw.abort()

    def _deliver(self, chunks: list[bytes]) -> None:
        """Decrypted records to the session, in one call."""
        if chunks:
            self._app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _ended(self) -> None:
        """The client's close_notify or EOF, after all it sent before it."""
        self._eof = False
        if not self._app.eof_received():
            self.close()

    def eof_received(self) -> bool | None:
        if self._handshaking:
            self._handshake_done(ConnectionResetError())
            return None
        self._eof = True
        self._notify = False  # the client ended: no close_notify (ngx_ssl_handle_recv)
        if not self._paused and not self._closing:
            self._read()  # what the BIO still holds goes first, then the EOF
        # keep the plain transport: close() closes it once the session has the EOF
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._quiet()
        if self._handshaking and self._on_handshake is not None:
            # a reset in the handshake: nginx's "peer closed connection in SSL handshake"
            self._handshake_done(exc if exc is not None else ConnectionResetError())
        self._app.connection_lost(exc if exc is not None else self._error)

    def pause_writing(self) -> None:
        self._app.pause_writing()

    def resume_writing(self) -> None:
        self._app.resume_writing()

    # -- TLS ------------------------------------------------------------------

    def _handshake_done(self, exc: BaseException | None) -> None:
        self._handshaking = False
        done, self._on_handshake = self._on_handshake, None
        if done is not None:
            done(exc)

    def _flush(self) -> None:
        """Pass what OpenSSL wrote to the outgoing BIO on to the plain transport, in one write."""
        wbio = self._wbio
        pending = _BIO_ctrl(wbio, _PENDING, 0, NULL)
        if pending > 0:
            buf = _Buffer.at_least(pending)
            n = _BIO_read(wbio, buf, pending)
            if n > 0:
                self._raw.write(_unpack(buf, n))

    # -- the transport the session sees ----------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._handshaking or not data:
            return  # (SSL_write of nothing is an error)
        if type(data) is not bytes:
            data = bytes(data)
        if lib.SSL_write(self._ssl, data, len(data)) <= 0:
            self._error = L.error()
            self.abort()
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._on_handshake = None  # the session ends it: nothing to report
        if self._notify:  # ngx_ssl_shutdown
            self._notify = False
            lib.ERR_clear_error()
            if lib.SSL_shutdown(self._ssl) < 0:
                L.drain()
            self._flush()
        else:
            self._quiet()
        self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._on_handshake = None
        self._quiet()
        self._raw.abort()

    def _quiet(self) -> None:
        """An end without our close_notify (the client ended first, a timeout, an error):
        as ``ngx_ssl_shutdown`` (``SSL_set_shutdown`` both ways), so that ``SSL_free``
        does not take the session out of the caches, where nginx keeps it."""
        if not self._handshaking:
            lib.SSL_set_shutdown(self._ssl, L.SSL_SENT_SHUTDOWN | L.SSL_RECEIVED_SHUTDOWN)

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self._paused = True
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if not self._eof:  # after its EOF, the plain transport has nothing more to read
            self._raw.resume_reading()
        if not self._handshaking:
            # what was read before the pause waits in the BIO: hand it over
            # from the loop, as a plain transport would, not from inside the caller
            self._loop.call_soon(self._resume_read)

    def _resume_read(self) -> None:
        if not self._paused and not self._closing:
            self._read()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol  # type: ignore[assignment]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self
        return self._raw.get_extra_info(name, default)

    # -- what the session asks about the TLS connection ---------------------------

    def version(self) -> str | None:
        v = L.text(lib.SSL_get_version(self._ssl))
        return v if v and v.lower() != "unknown" else None

    def cipher(self) -> tuple[str, str, int] | None:
        c = lib.SSL_get_current_cipher(self._ssl)
        if c == NULL:
            return None
        name = L.text(lib.SSL_CIPHER_get_name(c))
        return name, L.text(lib.SSL_CIPHER_get_version(c)), int(lib.SSL_CIPHER_get_bits(c, NULL))

    def getpeercert(self, binary_form: bool = True) -> bytes | None:
        cert = lib.SSL_get0_peer_certificate(self._ssl)
        return None if cert == NULL else L.der_of(cert)

    def selected_alpn_protocol(self) -> str | None:
        data = ffi.new("const unsigned char **")
        size = ffi.new("unsigned int *")
        lib.SSL_get0_alpn_selected(self._ssl, data, size)
        if not size[0]:
            return None
        return bytes(ffi.buffer(data[0], size[0])).decode("ascii", "replace")

    def servername(self) -> str | None:
        """The SNI name the client sent, if any."""
        name = lib.SSL_get_servername(self._ssl, L.TLSEXT_NAMETYPE_host_name)
        return None if name == NULL else str(ffi.string(name).decode("ascii", "replace"))

    def own_cert_algorithms(self) -> tuple[str | None, str | None]:
        """PROXY v2's SIG_ALG and KEY_ALG of the certificate this side presented (RSA or
        ECDSA, as the client chose): OpenSSL's short name of its signature
        (``RSA-SHA256``), and its key's type with its size (``RSA2048``, ``EC256``) or
        OpenSSL's name for it (``ED25519``)."""
        cert = lib.SSL_get_certificate(self._ssl)
        if cert == NULL:
            return None, None
        sig = L.text(lib.OBJ_nid2sn(lib.X509_get_signature_nid(cert)))
        key = lib.X509_get0_pubkey(cert)
        kind = lib.EVP_PKEY_get_base_id(key)
        if kind == L.EVP_PKEY_RSA:
            alg = f"RSA{lib.EVP_PKEY_get_bits(key)}"
        elif kind == L.EVP_PKEY_EC:
            alg = f"EC{lib.EVP_PKEY_get_bits(key)}"
        else:
            alg = L.text(lib.OBJ_nid2sn(kind))
        return sig, alg

    @property
    def session_reused(self) -> bool:
        return bool(lib.SSL_session_reused(self._ssl))

    @property
    def verify_result(self) -> int:
        return int(lib.SSL_get_verify_result(self._ssl))


__all__ = ["HandshakeDone", "SSLReadError", "TLSTransport"]
