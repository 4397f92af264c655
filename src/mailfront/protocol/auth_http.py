"""The auth_http exchange, sans-IO and nginx-exact (``ngx_mail_auth_http_module.c``).

Request: ``build_request(conf, info, req, attempt)`` returns the whole
``HTTP/1.0`` GET request, header for header as nginx writes it.

Response: feed the bytes read from the auth server to a ``ResponseParser``
until ``feed()`` returns True (the header block is complete; anything after
it is ignored, as nginx ignores the body), then call ``result()``.  Both raise
``AuthHttpError`` for a broken answer; ``str(exc)`` is nginx's text, which the
caller logs at error level as ``auth http server <peer> <text>`` (``<peer>``
is the auth server's address text, e.g. ``127.0.0.1:9000``), then it sends the
protocol's internal error and closes.  Nothing else escapes, whatever the
auth server sends.

What the caller does with the result (nginx's order, section 1.6):

- ``Status.ERROR``: log ``client login failed: "<errmsg>"`` at info and send
  the protocol's error line (POP3 ``-ERR <errmsg>``, IMAP ``<tag>NO <errmsg>``,
  SMTP ``<error_code or 535 5.7.0> <errmsg>``).  ``wait`` None or 0: send and
  close; ``wait`` N > 0: stay silent N seconds, then send it and go back to the
  auth state.
- ``Status.WAIT``: after ``wait`` seconds (at once when None/0) ask again
  with ``requery_request(prev, result)``, same attempt number; the client
  sees nothing.
- ``Status.OK``: connect to ``server``:``port``; ``user``/``passwd`` (when not
  None) replace the login and password for the backend login.

nginx quirks the caller may want to copy (``ResponseParser.wait_seen``):

- nginx's "WAIT seen" flag lives in the session (``s->auth_wait``), and it is
  cleared only when an Auth-Wait sleep ends.  After a WAIT with no (or a zero)
  Auth-Wait the flag stays set, so every later answer without an error is
  treated as WAIT again: nginx re-queries forever.  Pass
  ``wait_pending=True`` to ``result()`` to reproduce that; mailfront's session
  should not.
- An answer with both an error text and ``Auth-Status: WAIT`` and an
  Auth-Wait N > 0 is an error for the log line, but when the sleep ends nginx
  re-queries instead of sending the error (``wait_seen`` is True then).

The 1024-byte limit: nginx reads the answer into one 1024-byte buffer; when
the header block is not complete once it is full, the next read returns 0 and
nginx closes with an internal error *without* an error-level log line.  The
parser raises ``AuthHttpTooLarge`` (an ``AuthHttpError``) with a mailfront
text for it.  An auth server that closes before the header block is complete
is treated the same way by nginx (internal error, no log line); that is the
caller's business (``feed()`` has returned False so far).

Fast paths: a whole header block (CRLF line ends, a status line) in the first
``feed()`` is checked with one regex and its ``Auth-*`` lines read with
another, with the state machines' exact results (``_fast = False`` in a
subclass forces the state machines); the constant parts of a request are
built once per configuration object; a canonical IPv4 Auth-Server needs no
parsing.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from mailfront.auth.base import AuthResult, SessionInfo, Status
from mailfront.conf.model import AuthMethod, ServerConf, VerifyClient
from mailfront.conf.values import INADDR_NONE, inet6_addr, inet_addr
from mailfront.protocol.base import AUTH_METHOD_NAMES, AuthRequest, log_text

_STATUS_OK = Status.OK

# The response header buffer (ngx_create_temp_buf(ctx->pool, 1024))
RESPONSE_LIMIT = 1024

# SMTP's default error code when the answer has no Auth-Error-Code
SMTP_ERRCODE = b"535 5.7.0"

# nginx's log texts, after "auth http server <peer> "
SENT_INVALID_RESPONSE = "sent invalid response"
SENT_INVALID_HEADER = "sent invalid header in response"
DID_NOT_SEND_SERVER_OR_PORT = "did not send server or port"
DID_NOT_SEND_PASSWORD = "did not send password"
SENT_INVALID_ADDRESS = 'sent invalid server address:"%s"'
SENT_INVALID_PORT = 'sent invalid server port:"%s"'
TIMED_OUT = "timed out"
# not an nginx text: nginx logs nothing at error level for this case
SENT_TOO_LARGE = "sent too large header in response"

# Auth-SSL-* values in SessionInfo.ssl (a dict present for every TLS session,
# ``Auth-SSL: on``).  Values are raw bytes; an empty or missing value omits
# its header.  ``Auth-SSL-Verify`` .. ``Auth-SSL-Fingerprint`` are sent only
# when ``ssl_verify_client`` is not off, ``Auth-SSL-Cert`` (the PEM text,
# unescaped: build_request escapes it) only when, moreover,
# ``auth_http_pass_client_cert`` is on; the TLS code may fill them all.
SSL_PROTOCOL = "Auth-SSL-Protocol"
SSL_CIPHER = "Auth-SSL-Cipher"
SSL_VERIFY = "Auth-SSL-Verify"
SSL_SUBJECT = "Auth-SSL-Subject"
SSL_ISSUER = "Auth-SSL-Issuer"
SSL_SERIAL = "Auth-SSL-Serial"
SSL_FINGERPRINT = "Auth-SSL-Fingerprint"
SSL_CERT = "Auth-SSL-Cert"
_SSL_ALWAYS = (SSL_PROTOCOL, SSL_CIPHER)
_SSL_VERIFY = (SSL_VERIFY, SSL_SUBJECT, SSL_ISSUER, SSL_SERIAL, SSL_FINGERPRINT)

CRLF = b"\r\n"


class AuthHttpError(Exception):
    """The auth server's answer is unusable; ``str(exc)`` is nginx's log text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthHttpTooLarge(AuthHttpError):
    """The header block did not fit in 1024 bytes (nginx logs nothing)."""


# ---------------------------------------------------------------- request

# ngx_escape_uri(..., NGX_ESCAPE_MAIL_AUTH): the "memcached" map, i.e. only
# %00-%1F, space and "%" are escaped, with upper-case hex.
_ESCAPE_RE = re.compile(rb"[\x00-\x20%]")
_ESCAPED = {bytes([c]): b"%%%02X" % c for c in (*range(0x21), 0x25)}


def escape(data: bytes) -> bytes:
    """nginx's mail_auth escaping (Auth-User, Auth-Pass, Auth-SSL-Cert)."""
    if data.isalnum() or _ESCAPE_RE.search(data) is None:
        return data
    return _ESCAPE_RE.sub(lambda m: _ESCAPED[m.group()], data)


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


_PLAIN_OR_LOGIN = AuthMethod.LOGIN_USERNAME
_APOP = AuthMethod.APOP
_CRAM_MD5 = AuthMethod.CRAM_MD5
_EXTERNAL = AuthMethod.EXTERNAL
_NONE = AuthMethod.NONE

# Auth-Method lines, by AuthMethod
_METHOD_LINES = {m: b"Auth-Method: " + AUTH_METHOD_NAMES[m] + CRLF for m in AuthMethod}


class _RequestParts:
    """The bytes of a request that depend on the configuration only."""

    __slots__ = ("conf", "head", "protocol", "ssl_names", "tail")

    def __init__(self, conf: ServerConf) -> None:
        url = conf.auth_http
        if url is None:
            raise ValueError("no auth_http in this server")
        self.conf = conf
        # "GET <uri> HTTP/1.0", Host
        self.head = b"GET " + _b(url.uri) + b" HTTP/1.0\r\nHost: " + _b(url.host_header) + CRLF
        # Auth-Protocol, then the start of Auth-Login-Attempt
        self.protocol = b"Auth-Protocol: " + _b(conf.protocol.value) + b"\r\nAuth-Login-Attempt: "
        names: tuple[str, ...] = _SSL_ALWAYS
        if conf.ssl_verify_client != VerifyClient.OFF:
            names += _SSL_VERIFY
            if conf.auth_http_pass_client_cert:
                names += (SSL_CERT,)
        self.ssl_names = names
        # auth_http_header lines and the empty line
        self.tail = b"".join(_b(k) + b": " + _b(v) + CRLF for k, v in conf.auth_http_header) + CRLF


_parts_cache: dict[int, _RequestParts] = {}


def _request_parts(conf: ServerConf) -> _RequestParts:
    """The constant parts of ``conf``'s requests, built once per configuration object."""
    parts = _parts_cache.get(id(conf))
    if parts is not None and parts.conf is conf:
        return parts
    if len(_parts_cache) >= 256:  # old configurations after many reloads
        _parts_cache.clear()
    parts = _parts_cache[id(conf)] = _RequestParts(conf)
    return parts


def build_request(conf: ServerConf, info: SessionInfo, req: AuthRequest, attempt: int) -> bytes:
    """``ngx_mail_auth_http_create_request``: the request bytes, headers in nginx's order."""
    parts = _request_parts(conf)
    method = req.method
    method_line = _METHOD_LINES.get(method)
    if method_line is None:
        method = AuthMethod(method)  # raises ValueError
        method_line = _METHOD_LINES[method]
    head = b"%s%sAuth-User: %s\r\nAuth-Pass: %s\r\n" % (
        parts.head,
        method_line,
        escape(req.login),
        escape(req.passwd),
    )
    if req.salt and method in (_APOP, _CRAM_MD5):
        head += b"Auth-Salt: " + req.salt  # the salt ends in CRLF
    out = [
        head,
        b"%s%d\r\nClient-IP: %s\r\n" % (parts.protocol, attempt, _b(info.client_addr)),
    ]
    if info.client_host:
        out += (b"Client-Host: ", info.client_host, CRLF)
    if info.proxy_src_addr is not None:
        out += (
            b"Proxy-Protocol-Addr: ", _b(info.proxy_src_addr), CRLF,
            b"Proxy-Protocol-Port: %d\r\n" % info.proxy_src_port,
            b"Proxy-Protocol-Server-Addr: ", _b(info.proxy_dst_addr or ""), CRLF,
            b"Proxy-Protocol-Server-Port: %d\r\n" % info.proxy_dst_port,
        )  # fmt: skip
    if method == _NONE:
        # HELO, MAIL FROM and RCPT TO cannot hold a CRLF: sent raw
        out += (
            b"Auth-SMTP-Helo: ", req.helo, CRLF,
            b"Auth-SMTP-From: ", req.smtp_from, CRLF,
            b"Auth-SMTP-To: ", req.smtp_to, CRLF,
        )  # fmt: skip
    if info.ssl is not None:
        out.append(b"Auth-SSL: on\r\n")
        for name in parts.ssl_names:
            value = info.ssl.get(name)
            if value:
                if name == SSL_CERT:
                    value = escape(value)
                out += (_b(name), b": ", value, CRLF)
    out.append(parts.tail)
    return b"".join(out)


def holds_password(req: AuthRequest) -> bool:
    """Whether nginx still holds a password once ``req`` has been sent.

    After APOP and CRAM-MD5 nginx clears the password when it sends the
    request with Auth-Salt; EXTERNAL never had one (unless a WAIT answer gave
    one).  The answer must then carry Auth-Pass (IMAP and POP3).  Pass this
    to ``ResponseParser.result(has_passwd=...)``.  (nginx tells an empty
    Auth-Pass from none after EXTERNAL + WAIT; this does not.)
    """
    method = req.method
    if method <= _PLAIN_OR_LOGIN:  # PLAIN, LOGIN, LOGIN_USERNAME: the usual case
        return True
    if method in (_APOP, _CRAM_MD5):
        return not req.salt
    if method == _EXTERNAL:
        return req.passwd != b""
    return True


def requery_request(prev: AuthRequest, wait: AuthResult) -> AuthRequest:
    """The request nginx sends again after a WAIT answer.

    nginx rebuilds it from the session: Auth-User / Auth-Pass from the WAIT
    answer replace the login and password; after APOP / CRAM-MD5 the password
    was cleared when the first request went out, so the re-query carries an
    empty Auth-Pass (and the same Auth-Salt) unless WAIT gave one.
    """
    login = prev.login if wait.user is None else wait.user
    if wait.passwd is not None:
        passwd = wait.passwd
    elif prev.method in (AuthMethod.APOP, AuthMethod.CRAM_MD5) and prev.salt:
        passwd = b""
    else:
        passwd = prev.passwd
    return AuthRequest(
        login, passwd, prev.method, prev.salt, prev.helo, prev.smtp_from, prev.smtp_to
    )


# --------------------------------------------------------------- response

# ngx_mail_auth_http_ignore_status_line states
_S_START, _S_H, _S_HT, _S_HTT, _S_HTTP, _S_SKIP, _S_ALMOST_DONE = range(7)
_PREFIX = b"HTTP/"

# ngx_mail_auth_http_parse_header_line states
(
    _H_START,
    _H_NAME,
    _H_SPACE_BEFORE_VALUE,
    _H_VALUE,
    _H_SPACE_AFTER_VALUE,
    _H_ALMOST_DONE,
    _H_HEADER_ALMOST_DONE,
) = range(7)

_CR = 0x0D
_LF = 0x0A
_SP = 0x20

_MAX_INT = (1 << 63) - 1  # NGX_MAX_INT_T_VALUE on 64-bit


def _atoi(text: bytes) -> int | None:
    """``ngx_atoi``: decimal digits only, no sign, no overflow; None when invalid."""
    if not text or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_INT else None


# Fast paths for whole lines (the common case: the answer arrives in one read).
# They accept exactly what the byte state machines accept for a complete line
# and leave anything else (partial or odd lines) to them.
_STATUS_LINE = re.compile(rb"HTTP/[^\r\n]*\r?\n")
_HEADER_LINE = re.compile(rb"([A-Za-z0-9][A-Za-z0-9-]*)(?::[ ]*([^\r\n]*?)[ ]*)?\r?\n")
# A whole header block in the first read, CRLF line ends: the status line,
# header lines as the state machines accept them, the empty line.  Then the
# Auth-* lines of such a block: the name, and the value after its leading
# spaces (its trailing spaces are stripped by the caller).
_WHOLE_BLOCK = re.compile(
    rb"HTTP/[^\r\n]*+\r\n(?:[A-Za-z0-9][A-Za-z0-9-]*+(?::[^\r\n]*+)?+\r\n)*+\r\n"
)
_AUTH_LINE = re.compile(rb"\n([Aa][Uu][Tt][Hh]-[A-Za-z0-9-]*+)(?::[ ]*+([^\r\n]*+))?+\r")


def _is_alnum(c: int) -> bool:
    c2 = c | 0x20
    return 0x61 <= c2 <= 0x7A or 0x30 <= c <= 0x39


class ResponseParser:
    """Incremental parser of the auth server's answer, bounded to 1024 bytes."""

    __slots__ = (
        "_addr",
        "_buf",
        "_errcode",
        "_errmsg",
        "_failed",
        "_hstate",
        "_name_end",
        "_name_start",
        "_passwd",
        "_port",
        "_pos",
        "_sleep",
        "_sstate",
        "_status_phase",
        "_user",
        "_value_end",
        "_value_start",
        "done",
        "wait_seen",
    )

    # False in a test subclass: every answer goes through the state machines
    _fast = True

    def __init__(self) -> None:
        # the slow path's state (_buf, _pos, ...) is set up by _start_slow()
        self._buf: bytearray | None = None
        self._failed: AuthHttpError | None = None
        self.done = False
        self.wait_seen = False  # an "Auth-Status: WAIT" line was seen
        self._errmsg: bytes | None = None  # the last Auth-Status that is not OK/WAIT
        self._addr = b""
        self._port = b""
        self._user: bytes | None = None
        self._passwd: bytes | None = None
        self._sleep: int | None = None
        self._errcode = b""

    def _start_slow(self) -> bytearray:
        buf = self._buf = bytearray()
        self._pos = 0
        self._status_phase = True  # skipping an "HTTP/" status line
        self._sstate = _S_START
        self._hstate = _H_START
        self._name_start = self._name_end = 0
        self._value_start = self._value_end = 0
        return buf

    def feed(self, data: bytes) -> bool:
        """Parse more of the answer; True once the header block is complete."""
        if self._failed is not None:
            raise self._failed
        if self.done:
            return True
        buf = self._buf
        if buf is None:
            if self._fast:
                # the whole header block in the first read (the common case)
                m = _WHOLE_BLOCK.match(data, 0, RESPONSE_LIMIT)
                if m is not None:
                    for name, value in _AUTH_LINE.findall(data, 0, m.end()):
                        self._header(name.lower(), value.rstrip(b" "))
                    self.done = True
                    return True
            buf = self._start_slow()
        buf += data[: RESPONSE_LIMIT - len(buf)]
        try:
            if self._status_phase:
                self._status_line(buf)
            if not self._status_phase:
                self._headers(buf)
            if not self.done and len(buf) >= RESPONSE_LIMIT:
                raise AuthHttpTooLarge(SENT_TOO_LARGE)
        except AuthHttpError as exc:
            self._failed = exc
            raise
        return self.done

    def _status_line(self, buf: bytearray) -> None:
        state = self._sstate
        pos = self._pos
        if state == _S_START and pos == 0:
            m = _STATUS_LINE.match(buf)
            if m is not None:
                self._pos = m.end()
                self._status_phase = False
                return
        end = len(buf)
        while pos < end:
            ch = buf[pos]
            if state < _S_SKIP:
                if ch != _PREFIX[state]:
                    # no status line: parse the headers from byte 0
                    self._pos = 0
                    self._status_phase = False
                    return
                state += 1
            elif state == _S_SKIP:
                if ch == _CR:
                    state = _S_ALMOST_DONE
                elif ch == _LF:
                    self._pos = pos + 1
                    self._status_phase = False
                    return
            else:  # _S_ALMOST_DONE
                if ch == _LF:
                    self._pos = pos + 1
                    self._status_phase = False
                    return
                raise AuthHttpError(SENT_INVALID_RESPONSE)
            pos += 1
        self._pos = pos
        self._sstate = state

    def _headers(self, buf: bytearray) -> None:
        state = self._hstate
        pos = self._pos
        end = len(buf)
        while pos < end:
            if state == _H_START:
                m = _HEADER_LINE.match(buf, pos)
                if m is not None:
                    value = m.group(2)
                    self._header(bytes(m.group(1)).lower(), bytes(value) if value else b"")
                    pos = m.end()
                    continue
            ch = buf[pos]
            line_done = False
            if state == _H_START:
                if ch == _CR:
                    state = _H_HEADER_ALMOST_DONE
                elif ch == _LF:
                    self._pos = pos + 1
                    self.done = True
                    return
                else:
                    if not _is_alnum(ch):
                        raise AuthHttpError(SENT_INVALID_HEADER)
                    self._name_start = pos
                    state = _H_NAME
            elif state == _H_NAME:
                if _is_alnum(ch) or ch == 0x2D:  # "-"
                    pass
                elif ch == 0x3A:  # ":"
                    self._name_end = pos
                    state = _H_SPACE_BEFORE_VALUE
                elif ch in (_CR, _LF):
                    self._name_end = self._value_start = self._value_end = pos
                    if ch == _CR:
                        state = _H_ALMOST_DONE
                    else:
                        line_done = True
                else:
                    raise AuthHttpError(SENT_INVALID_HEADER)
            elif state == _H_SPACE_BEFORE_VALUE:
                if ch == _SP:
                    pass
                elif ch in (_CR, _LF):
                    self._value_start = self._value_end = pos
                    if ch == _CR:
                        state = _H_ALMOST_DONE
                    else:
                        line_done = True
                else:
                    self._value_start = pos
                    state = _H_VALUE
            elif state == _H_VALUE:
                if ch == _SP:
                    self._value_end = pos
                    state = _H_SPACE_AFTER_VALUE
                elif ch == _CR:
                    self._value_end = pos
                    state = _H_ALMOST_DONE
                elif ch == _LF:
                    self._value_end = pos
                    line_done = True
            elif state == _H_SPACE_AFTER_VALUE:
                if ch == _SP:
                    pass
                elif ch == _CR:
                    state = _H_ALMOST_DONE
                elif ch == _LF:
                    line_done = True
                else:
                    state = _H_VALUE
            elif state == _H_ALMOST_DONE:
                if ch != _LF:
                    raise AuthHttpError(SENT_INVALID_HEADER)
                line_done = True
            else:  # _H_HEADER_ALMOST_DONE
                if ch != _LF:
                    raise AuthHttpError(SENT_INVALID_HEADER)
                self._pos = pos + 1
                self.done = True
                return
            pos += 1
            if line_done:
                state = _H_START
                self._header(
                    bytes(buf[self._name_start : self._name_end]).lower(),
                    bytes(buf[self._value_start : self._value_end]),
                )
        self._pos = pos
        self._hstate = state

    def _header(self, name: bytes, value: bytes) -> None:
        """``ngx_mail_auth_http_process_headers``: the last of a repeated header wins."""
        if name == b"auth-status":
            if value == b"OK":
                return
            if value == b"WAIT":
                self.wait_seen = True
                return
            self._errmsg = value
        elif name == b"auth-server":
            self._addr = value
        elif name == b"auth-port":
            self._port = value
        elif name == b"auth-user":
            self._user = value
        elif name == b"auth-pass":
            self._passwd = value
        elif name == b"auth-wait":
            n = _atoi(value)
            if n is not None:
                self._sleep = n
        elif name == b"auth-error-code":
            self._errcode = value

    @property
    def peer_name(self) -> bytes:
        """nginx's name for the backend in logs: the raw Auth-Server:Auth-Port text."""
        return self._addr + b":" + self._port

    def result(
        self, protocol: str, has_passwd: bool = True, wait_pending: bool = False
    ) -> AuthResult:
        """The decision once the header block is complete, in nginx's order.

        ``protocol`` is "imap", "pop3" or "smtp"; ``has_passwd`` whether the
        session holds a password for the backend without Auth-Pass (see
        ``holds_password``); ``wait_pending`` reproduces nginx's sticky WAIT
        flag (module docstring).
        """
        if not self.done:
            raise ValueError("the auth_http header block is not complete")
        errmsg = self._errmsg
        # nginx's SMTP branch keeps the bare text, so an empty one is no error
        if errmsg is not None and (protocol != "smtp" or errmsg):
            return AuthResult(
                Status.ERROR,
                errmsg=errmsg,
                user=self._user,
                passwd=self._passwd,
                wait=self._sleep,
                error_code=self._errcode or None,
            )
        if self.wait_seen or wait_pending:
            return AuthResult(Status.WAIT, user=self._user, passwd=self._passwd, wait=self._sleep)
        addr = self._addr
        port_text = self._port
        if not addr or not port_text:
            raise AuthHttpError(DID_NOT_SEND_SERVER_OR_PORT)
        if self._passwd is None and not has_passwd and protocol != "smtp":
            raise AuthHttpError(DID_NOT_SEND_PASSWORD)
        server = parse_addr(addr)
        if server is None:
            raise AuthHttpError(SENT_INVALID_ADDRESS % log_text(addr))
        port = _atoi(port_text)
        if port is None or not 1 <= port <= 65535:
            raise AuthHttpError(SENT_INVALID_PORT % log_text(port_text))
        # positional: errmsg, server, port, user, passwd, wait, error_code
        return AuthResult(
            _STATUS_OK, b"", server, port, self._user, self._passwd, self._sleep,
            self._errcode or None,
        )  # fmt: skip


# ------------------------------------------------------ ngx_parse_addr


def _inet_addr(text: bytes) -> int | None:
    """``ngx_inet_addr``: empty octets count as 0; 255.255.255.255 is INADDR_NONE."""
    addr = inet_addr(text.decode("latin-1"))
    return None if addr == INADDR_NONE else addr


def _inet6_addr(text: bytes) -> bytes | None:
    """``ngx_inet6_addr``, with its leniencies (a lone leading ":" is skipped)."""
    return inet6_addr(text.decode("latin-1"))


# An IPv4 address already in canonical text (no empty octet, no leading zero)
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rb"(?:%s\.){3}%s" % (_OCTET, _OCTET))


def parse_addr(text: bytes) -> str | None:
    """``ngx_parse_addr``: an IPv4 or IPv6 literal as nginx reads it, in canonical text."""
    return _parse_addr(bytes(text))


@lru_cache(maxsize=256)  # a handful of backends answer every login
def _parse_addr(text: bytes) -> str | None:
    if _CANONICAL_IPV4.fullmatch(text) is not None and text != b"255.255.255.255":
        return text.decode("ascii")  # what _inet_addr and IPv4Address would make of it
    v4 = _inet_addr(text)
    if v4 is not None:
        return str(ipaddress.IPv4Address(v4))
    v6 = _inet6_addr(text)
    if v6 is not None:
        return str(ipaddress.IPv6Address(v6))
    return None
