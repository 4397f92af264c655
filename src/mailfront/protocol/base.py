"""What every protocol machine shares: the contract with the session driver.

A front-end machine (``imap.ImapMachine``, ``pop3.Pop3Machine``,
``smtp.SmtpMachine``) is sans-IO.  The session driver

1. sends ``machine.greeting()``;
2. calls ``nxt = machine.receive(data)`` for each chunk read from the client;
   the machine parses and handles as many buffered commands as it can, and
   collects its replies in ``machine.out`` (a list of ``bytes``) and its log
   lines in ``machine.logs`` (a list of ``(level, message)``);
3. writes ``b"".join(machine.out)`` (and clears it), logs ``machine.logs``
   with the session's context, and acts on ``nxt``:

   - ``Next.READ``: read more;
   - ``Next.AUTH``: stop reading and authenticate ``machine.auth`` (an
     ``AuthRequest``); then call ``machine.auth_failed(...)`` or take
     ``machine.leftover()`` for the backend once logged in;
   - ``Next.STARTTLS``: upgrade the client connection (the machine has
     already discarded buffered input, CVE-2014-3556), then call
     ``machine.tls_started()``;
   - ``Next.CLOSE``: close once the output is written.

A back-end (upstream) login machine in ``upstream.py`` has the same shape
with ``UpNext`` and two outputs (``to_upstream``, ``to_client``).

Nothing here does I/O, reads a clock, or logs: log lines are data.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from mailfront.conf.model import AuthMethod, ServerConf, Starttls
from mailfront.protocol import sasl

# nginx log levels used by the machines (see conf.model.LOG_LEVELS)
ERR = 4
WARN = 5
INFO = 7
DEBUG = 8


class Next(enum.IntEnum):
    READ = 0
    AUTH = 1
    STARTTLS = 2
    CLOSE = 3


class UpNext(enum.IntEnum):
    READ = 0  # send to_upstream / to_client, read more from the backend
    DONE = 1  # logged in: send to_client, then relay
    FAIL = 2  # send to_client, close both sides


# What auth_http sends in Auth-Method, by AuthMethod
AUTH_METHOD_NAMES = (b"plain", b"plain", b"plain", b"apop", b"cram-md5", b"external", b"none")


class AuthRequest:
    """The client finished an authentication command: what auth_http is asked."""

    __slots__ = ("helo", "login", "method", "passwd", "salt", "smtp_from", "smtp_to")

    def __init__(
        self,
        login: bytes,
        passwd: bytes,
        method: AuthMethod,
        salt: bytes = b"",
        helo: bytes = b"",
        smtp_from: bytes = b"",
        smtp_to: bytes = b"",
    ) -> None:
        self.login = login
        self.passwd = passwd
        self.method = method
        self.salt = salt  # the exact salt bytes, CRLF included (APOP, CRAM-MD5)
        self.helo = helo  # SMTP: the client's HELO/EHLO argument
        self.smtp_from = smtp_from  # SMTP "none": the whole MAIL command line
        self.smtp_to = smtp_to  # SMTP "none": the whole RCPT command line

    def __repr__(self) -> str:  # never shows the password
        return f"AuthRequest(login={self.login!r}, method={self.method.name})"


# What a command handler returns (nginx's NGX_OK, NGX_MAIL_PARSE_INVALID_COMMAND, NGX_DONE)
STEP_OK = 0
STEP_INVALID = 2
STEP_DONE = 3


class SaslSteps:
    """The SASL steps IMAP and POP3 share (nginx's ``ngx_mail_auth_plain`` and friends).

    The machine provides ``_arg(n)`` (its n-th argument), ``login``, ``logs``,
    ``auth`` and ``salt``.  A step that decodes the client's response logs
    nginx's info line and returns ``STEP_INVALID`` when it cannot; one that
    completes the exchange sets ``auth`` and returns ``STEP_DONE``.
    """

    __slots__ = ("auth", "login", "logs", "salt")

    login: bytes
    salt: bytes
    auth: AuthRequest | None
    logs: list[tuple[int, str]]

    def _arg(self, n: int) -> bytes:
        raise NotImplementedError

    def _auth_login_username(self, n: int) -> int:
        try:
            self.login = sasl.auth_login_username(self._arg(n))
        except sasl.SaslError as exc:
            self.logs.append((INFO, str(exc)))
            return STEP_INVALID
        return STEP_OK

    def _auth_login_password(self) -> int:
        try:
            passwd = sasl.auth_login_password(self._arg(0))
        except sasl.SaslError as exc:
            self.logs.append((INFO, str(exc)))
            return STEP_INVALID
        self.auth = AuthRequest(self.login, passwd, AuthMethod.LOGIN)
        return STEP_DONE

    def _auth_plain(self, n: int) -> int:
        try:
            login, passwd = sasl.auth_plain(self._arg(n))
        except sasl.SaslError as exc:
            self.logs.append((INFO, str(exc)))
            return STEP_INVALID
        self.login = login
        self.auth = AuthRequest(login, passwd, AuthMethod.PLAIN)
        return STEP_DONE

    def _auth_cram_md5(self) -> int:
        try:
            login, digest = sasl.auth_cram_md5(self._arg(0))
        except sasl.SaslError as exc:
            if exc.login is not None:  # the "invalid CRAM-MD5 hash" line carries it
                self.login = exc.login
            self.logs.append((INFO, str(exc)))
            return STEP_INVALID
        self.login = login
        self.auth = AuthRequest(login, digest, AuthMethod.CRAM_MD5, salt=self.salt)
        return STEP_DONE

    def _auth_external(self, n: int) -> int:
        try:
            login = sasl.auth_external(self._arg(n))
        except sasl.SaslError as exc:
            self.logs.append((INFO, str(exc)))
            return STEP_INVALID
        self.login = login
        self.auth = AuthRequest(login, b"", AuthMethod.EXTERNAL)
        return STEP_DONE


# nginx's c->log->action texts shared by the protocols (ngx_mail_*_handler.c,
# ngx_mail_proxy_module.c)
ACTION_GREETING = "sending client greeting line"
ACTION_AUTH = "in auth state"
ACTION_STARTTLS = "in starttls state"
ACTION_HTTP_AUTH = "in http auth state"
ACTION_CONNECTING = "connecting to upstream"
ACTION_READING = "reading response from upstream"
ACTION_SEND_USER = "sending user name to upstream"
ACTION_SEND_PASS = "sending password to upstream"


def log_text(data: bytes | bytearray) -> str:
    """Client or backend bytes for a log line (nginx writes them raw)."""
    return bytes(data).decode("utf-8", "backslashreplace")


def c_string(data: bytes | bytearray) -> str:
    """What nginx's ``%s`` prints of a buffer: up to the first NUL."""
    return log_text(bytes(data).split(b"\0", 1)[0])


# Where a line machine is: reading commands, waiting for the auth answer, for
# the STARTTLS handshake, or closed
PHASE_AUTH = 0
PHASE_WAIT = 1
PHASE_STARTTLS = 2
PHASE_CLOSED = 3


class LineMachine(SaslSteps):
    """What the IMAP and POP3 machines share around their own parsers.

    A subclass sets ``_START_STATE`` (its ``mail_state`` enum's START) and
    implements ``_run()`` (handle what is buffered) and ``_arg(n)``.
    """

    __slots__ = ("_args", "_buf", "_phase", "_pos", "_state", "action", "conf", "mail_state", "tls")

    _START_STATE: ClassVar[Any]
    _args: list[Any]
    _buf: bytearray | None
    _phase: int
    _pos: int
    _state: int
    action: str
    conf: ServerConf
    mail_state: Any
    tls: bool

    @property
    def buffered(self) -> int:
        """Bytes held in the command window (at most the protocol's client buffer)."""
        return len(self._buf) if self._buf is not None else 0

    def tls_started(self) -> None:
        """The STARTTLS/STLS upgrade is done (``init_protocol`` again)."""
        self.tls = True
        self.action = ACTION_AUTH
        self.mail_state = self._START_STATE
        if self._phase == PHASE_STARTTLS:
            self._phase = PHASE_AUTH

    def resume(self) -> Next:
        """After Auth-Wait: back to the start state, then handle buffered input."""
        if self._phase == PHASE_CLOSED:
            return Next.CLOSE
        self._phase = PHASE_AUTH
        self.mail_state = self._START_STATE
        self.auth = None
        self.action = ACTION_AUTH
        return self._run()

    def _run(self) -> Next:
        raise NotImplementedError

    def _starttls_only(self) -> bool:
        return not self.tls and self.conf.starttls == Starttls.ONLY

    def _start_auth(self) -> Next:
        """``ngx_mail_auth``: keep what follows the command, ask the auth service."""
        self._args.clear()
        buf = self._buf
        if buf is not None and self._pos >= len(buf):
            self._buf = None
            self._pos = 0
        self._state = 0  # the parsers' start state
        self._phase = PHASE_WAIT
        self.action = ACTION_HTTP_AUTH
        return Next.AUTH


class ProxyLogin:
    """A backend login read as ``ngx_mail_proxy_read_response`` reads it (IMAP, POP3).

    The bytes read are kept in one buffer of ``proxy_buffer`` bytes; a reply
    is complete when what has been read ends with CRLF (at least 4 bytes).
    After each line sent the buffer is emptied, so anything the backend sent
    after a good reply in the same read is dropped.  A subclass gives
    ``INTERNAL_ERROR`` (the protocol's reply) and ``_reply``, which judges a
    complete reply, queues the next line, and ends with :meth:`_done`,
    :meth:`_invalid` or ``None`` (read more: IMAP's untagged line).
    """

    __slots__ = (
        "_buf",
        "_result",
        "action",
        "conf",
        "login",
        "logs",
        "passwd",
        "state",
        "to_client",
        "to_upstream",
    )

    INTERNAL_ERROR = b""

    def __init__(self, conf: ServerConf, login: bytes, passwd: bytes, state: int) -> None:
        self.conf = conf
        self.login = login
        self.passwd = passwd
        self.state = state
        self.action = ACTION_CONNECTING
        self.to_upstream: list[bytes] = []
        self.to_client: list[bytes] = []
        self.logs: list[tuple[int, str]] = []
        self._buf: bytearray | None = None
        self._result = UpNext.READ

    def internal_error(self) -> bytes:
        return self.INTERNAL_ERROR

    # False in a test subclass: every reply goes through the buffer loop
    _fast = True

    def receive(self, data: bytes) -> UpNext:
        if self._result != UpNext.READ:
            return self._result
        self.action = ACTION_READING
        size = self.conf.proxy_buffer
        if self._buf is None and 4 <= len(data) <= size and data[-2:] == b"\r\n" and self._fast:
            # the common case: one whole reply in one read, no copy
            rc = self._reply(data, b"")
            if rc is None:  # an untagged line, the tagged reply to come
                self._buf = bytearray(data)
                return UpNext.READ
            return rc
        while data:
            buf = self._buf
            if buf is None:
                buf = self._buf = bytearray()
            room = size - len(buf)
            if room <= 0:  # a proxy_buffer under 4 bytes: nginx's recv() of 0 bytes
                return self._fail(self.INTERNAL_ERROR)
            buf += data[:room]
            data = data[room:]
            if len(buf) < 4:
                continue
            if buf[-2:] != b"\r\n":
                if len(buf) < size:
                    continue
                line = c_string(buf[:-1])
                self.logs.append((ERR, f'upstream sent too long response line: "{line}"'))
                return self._fail(self.INTERNAL_ERROR)
            rc = self._reply(buf, data)
            if rc is None:
                continue
            if rc is not UpNext.READ:
                return rc
            self._buf = None
        return UpNext.READ

    def _reply(self, buf: bytes | bytearray, rest: bytes) -> UpNext | None:
        raise NotImplementedError

    def _done(self, buf: bytes | bytearray, rest: bytes) -> UpNext:
        """The last reply was good: relay it (and what followed it) to the client."""
        self.to_client.append(bytes(buf) + rest)
        self._buf = None
        self.action = ""
        self._result = UpNext.DONE
        return UpNext.DONE

    def _invalid(self, buf: bytes | bytearray, p: int = 0) -> UpNext:
        """A reply nginx did not expect; ``p`` is where it stopped reading it."""
        if not self.conf.proxy_pass_error_message:
            line = c_string(buf[p:-2])
            self.logs.append((ERR, f'upstream sent invalid response: "{line}"'))
            return self._fail(self.INTERNAL_ERROR)
        self.logs.append((INFO, f'upstream sent invalid response: "{log_text(buf[p:-2])}"'))
        return self._fail(bytes(buf))

    def _fail(self, reply: bytes) -> UpNext:
        self.to_client.append(reply)
        self._buf = None
        self._result = UpNext.FAIL
        return UpNext.FAIL
