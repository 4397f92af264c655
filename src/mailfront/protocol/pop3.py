"""POP3: the client's auth phase and the backend login, as nginx does them.

``Pop3Machine`` is ``ngx_mail_pop3_handler.c`` plus ``ngx_mail_pop3_parse_command``
(``ngx_mail_parse.c``) and ``ngx_mail_read_command`` (``ngx_mail_handler.c``);
``Pop3Upstream`` is ``ngx_mail_proxy_pop3_handler`` with
``ngx_mail_proxy_read_response`` (``ngx_mail_proxy_module.c``).  Both are
sans-IO: bytes in, replies, log lines and an outcome out.

nginx's POP3 command buffer is a fixed 128-byte window that is only rewound to
its start when every byte in it has been handled.  A command must therefore fit
in what is left of the window after the commands pipelined before it, and
``client sent too long command`` logs the whole window.  The machine keeps
that window exactly (``_buf``, at most ``POP3_BUFFER_SIZE`` bytes, ``None``
when empty) and holds the bytes of a chunk that did not fit yet in
``_pending``: nginx leaves them in the socket and reads them into the window
as soon as there is room, which is what ``_fill`` does before each command.

Fast paths (same state slot for slot, checked by
``tests/test_protocol_fast_paths.py``): a read that is exactly one ``USER`` or
``PASS`` line into an empty window skips the byte parser; a backend reply that
arrives whole is handled without a copy.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache

from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_PLAIN_ENABLED,
    AuthMethod,
    ServerConf,
    Starttls,
)
from mailfront.protocol import sasl
from mailfront.protocol.base import (
    ACTION_AUTH,
    ACTION_GREETING,
    ACTION_HTTP_AUTH,
    ACTION_SEND_PASS,
    ACTION_SEND_USER,
    ACTION_STARTTLS,
    INFO,
    PHASE_AUTH,
    PHASE_CLOSED,
    PHASE_STARTTLS,
    PHASE_WAIT,
    AuthRequest,
    LineMachine,
    Next,
    ProxyLogin,
    UpNext,
    log_text,
)

# Replies, worded as ngx_mail_pop3_handler.c / ngx_mail_pop3_module.c word them
POP3_GREETING = b"+OK POP3 ready\r\n"
POP3_OK = b"+OK\r\n"
POP3_NEXT = b"+ \r\n"
POP3_USERNAME = b"+ " + sasl.USERNAME_PROMPT + b"\r\n"
POP3_PASSWORD = b"+ " + sasl.PASSWORD_PROMPT + b"\r\n"
POP3_INVALID_COMMAND = b"-ERR invalid command\r\n"
POP3_INTERNAL_SERVER_ERROR = b"-ERR internal server error\r\n"
POP3_CERT_ERROR = b"-ERR SSL certificate error\r\n"
POP3_NO_CERT = b"-ERR No required SSL certificate\r\n"
POP3_CAPA_HEAD = b"+OK Capability list follows\r\n"
POP3_AUTH_HEAD = b"+OK methods supported:\r\n"

POP3_BUFFER_SIZE = 128  # ngx_mail_pop3_init_protocol: ngx_create_temp_buf(c->pool, 128)

# c->log->action texts


class Pop3State(enum.IntEnum):
    """nginx's ``ngx_pop3_state_e`` (``s->mail_state``)."""

    START = 0
    USER = 1
    PASSWD = 2
    AUTH_LOGIN_USERNAME = 3
    AUTH_LOGIN_PASSWORD = 4
    AUTH_PLAIN = 5
    AUTH_CRAM_MD5 = 6
    AUTH_EXTERNAL = 7


# s->command
_USER, _PASS, _CAPA, _QUIT, _NOOP, _APOP, _AUTH, _STLS = range(1, 9)
_COMMANDS = {
    b"USER": _USER,
    b"PASS": _PASS,
    b"APOP": _APOP,
    b"QUIT": _QUIT,
    b"CAPA": _CAPA,
    b"AUTH": _AUTH,
    b"NOOP": _NOOP,
    b"STLS": _STLS,
}

# parser states (s->state), as in ngx_mail_pop3_parse_command
_SW_START = 0
_SW_COMMAND = 1
_SW_INVALID = 2
_SW_SPACES_BEFORE_ARGUMENT = 3
_SW_ARGUMENT = 4
_SW_ALMOST_DONE = 5

# parse and handler results
_OK = 0
_AGAIN = 1
_INVALID = 2
_DONE = 3

_SP, _CR, _LF = 0x20, 0x0D, 0x0A

# The fast path: one whole USER or PASS line as the whole of a read into an
# empty window.  Spaces inside and after the argument belong to it, as in the
# parser.  Groups: the command, the argument.
_FAST_COMMAND = re.compile(rb"([Uu][Ss][Ee][Rr]|[Pp][Aa][Ss][Ss]) +([^ \r\n][^\r\n]*)\r?\n")

_START = Pop3State.START
_USER_STATE = Pop3State.USER
_PLAIN = AuthMethod.PLAIN
_NEXT_READ = Next.READ
_NEXT_AUTH = Next.AUTH
_UP_READ = UpNext.READ
_UP_DONE = UpNext.DONE

# session phases
_PHASE_AUTH, _PHASE_WAIT, _PHASE_STARTTLS, _PHASE_CLOSED = (
    PHASE_AUTH,
    PHASE_WAIT,
    PHASE_STARTTLS,
    PHASE_CLOSED,
)

_AUTH_NAMES = (
    (AUTH_PLAIN_ENABLED, b"PLAIN"),
    (AUTH_LOGIN_ENABLED, b"LOGIN"),
    (AUTH_CRAM_MD5_ENABLED, b"CRAM-MD5"),
    (AUTH_EXTERNAL_ENABLED, b"EXTERNAL"),
)


def auth_methods(conf: ServerConf) -> int:
    """``pop3_auth`` as the merge step leaves it: ``plain`` enables LOGIN too."""
    mask = conf.pop3_auth
    if mask & AUTH_PLAIN_ENABLED:
        mask |= AUTH_LOGIN_ENABLED
    return mask


@lru_cache(maxsize=64)
def _build_capabilities(caps: tuple[str, ...], mask: int) -> tuple[bytes, bytes, bytes, bytes]:
    names = [name for bit, name in _AUTH_NAMES if mask & bit]
    lines = [c.encode("utf-8", "surrogateescape") for c in caps]
    body = b"".join(line + b"\r\n" for line in lines)
    sasl_line = b"SASL" + b"".join(b" " + name for name in names) + b"\r\n"
    capability = POP3_CAPA_HEAD + body + sasl_line + b".\r\n"
    starttls = POP3_CAPA_HEAD + body + sasl_line + b"STLS\r\n.\r\n"
    only_body = b"".join(line + b"\r\n" for line in lines if line.lower() != b"user")
    starttls_only = POP3_CAPA_HEAD + only_body + b"STLS\r\n.\r\n"
    auth = POP3_AUTH_HEAD + b"".join(name + b"\r\n" for name in names) + b".\r\n"
    return capability, starttls, starttls_only, auth


def capabilities(conf: ServerConf) -> tuple[bytes, bytes, bytes, bytes]:
    """The CAPA and AUTH replies built by ``ngx_mail_pop3_merge_srv_conf``.

    ``(capability, starttls_capability, starttls_only_capability,
    auth_capability)``: plain CAPA (with the SASL line, always printed);
    the same plus ``STLS`` (``starttls on``, before TLS); the capabilities
    minus ``USER``, no SASL line, plus ``STLS`` (``starttls only``, before
    TLS); and the ``AUTH`` mechanism list.
    """
    return _build_capabilities(conf.pop3_capabilities, auth_methods(conf))


class Pop3Machine(LineMachine):
    """The POP3 auth phase of one client connection (see ``protocol.base``)."""

    _START_STATE = Pop3State.START

    __slots__ = (
        "_arg_start",
        "_cmd_start",
        "_command",
        "_pending",
        "_reply",
        "errors",
        "out",
    )

    @staticmethod
    def needs_salt(conf: ServerConf) -> bool:
        """APOP or CRAM-MD5 enabled: the greeting carries the salt."""
        return bool(conf.pop3_auth & (AUTH_APOP_ENABLED | AUTH_CRAM_MD5_ENABLED))

    def __init__(self, conf: ServerConf, salt: bytes = b"", tls: bool = False) -> None:
        self.conf = conf
        self.salt = salt
        self.tls = tls
        self.out: list[bytes] = []
        self.logs: list[tuple[int, str]] = []
        self.action = ACTION_GREETING
        self.login = b""
        self.auth: AuthRequest | None = None
        self.errors = 0
        self.mail_state = Pop3State.START
        self._phase = _PHASE_AUTH
        self._buf: bytearray | None = None  # the 128-byte window, from its start
        self._pos = 0  # s->buffer->pos, an index into _buf
        self._pending = b""  # read but not yet in the window (still "in the socket")
        self._state = _SW_START
        self._cmd_start = 0
        self._arg_start = 0
        self._command = 0
        self._args: list[tuple[int, int]] = []
        self._reply = POP3_OK

    # -- the session's interface ---------------------------------------------

    def greeting(self) -> bytes:
        # nginx sets "in auth state" on the first read event, before it logs
        # anything (a timeout included), so that is the action from now on.
        self.action = ACTION_AUTH
        if self.salt and self.needs_salt(self.conf):
            return POP3_GREETING[:-2] + b" " + self.salt
        return POP3_GREETING

    def receive(self, data: bytes) -> Next:
        phase = self._phase
        if phase != _PHASE_AUTH:
            if phase == _PHASE_CLOSED:
                return Next.CLOSE
            if phase == _PHASE_WAIT and data:
                self._pending += data  # nginx leaves it in the socket meanwhile
            return Next.READ
        if (
            self._buf is None
            and not self._pending
            and self._state == _SW_START
            and len(data) <= POP3_BUFFER_SIZE
            and self._fast
        ):
            m = _FAST_COMMAND.fullmatch(data)
            if m is not None:
                nxt = self._fast_command(m)
                if nxt is not None:
                    return nxt
        if data:
            self._pending = self._pending + data if self._pending else data
        return self._run()

    # False in a test subclass: every command goes through the byte parser
    _fast = True

    def _fast_command(self, m: re.Match[bytes]) -> Next | None:
        """A whole USER or PASS line: what the parser and the handler would
        do, state for state; None to leave it to them."""
        arg = m.group(2)
        if m.group(1).upper() == b"USER":
            if self.mail_state != _START or (not self.tls and self.conf.starttls == Starttls.ONLY):
                return None
            self._command = _USER
            self._cmd_start = 0
            self._arg_start = m.start(2)
            self._reply = POP3_OK
            self.login = arg
            self.mail_state = _USER_STATE
            self.out.append(POP3_OK)
            return _NEXT_READ
        if self.mail_state != _USER_STATE:
            return None
        self._command = _PASS
        self._cmd_start = 0
        self._arg_start = m.start(2)
        self._reply = POP3_OK
        self.auth = AuthRequest(self.login, arg, _PLAIN)
        self._phase = _PHASE_WAIT
        self.action = ACTION_HTTP_AUTH
        return _NEXT_AUTH

    def auth_failed(self, text: bytes, error_code: bytes | None = None) -> None:
        self.out.append(b"-ERR " + text + b"\r\n")

    def internal_error(self) -> bytes:
        return POP3_INTERNAL_SERVER_ERROR

    def leftover(self) -> bytes:
        """The client's bytes after the auth command, for the backend."""
        buf = self._buf
        data = bytes(buf[self._pos :]) if buf is not None else b""
        if self._pending:
            data += self._pending
        self._buf = None
        self._pos = 0
        self._pending = b""
        return data

    def close(self) -> None:
        """Forget buffered input; every later call is a no-op."""
        self._phase = _PHASE_CLOSED
        self._buf = None
        self._pos = 0
        self._pending = b""
        self._args = []

    # -- the read loop (ngx_mail_pop3_auth_state + ngx_mail_read_command) -----

    def _fill(self) -> None:
        pending = self._pending
        if not pending:
            return
        buf = self._buf
        if buf is None:
            n = min(len(pending), POP3_BUFFER_SIZE)
            self._buf = bytearray(pending[:n])
        else:
            n = min(len(pending), POP3_BUFFER_SIZE - len(buf))
            if n <= 0:
                return
            buf += pending[:n]
        self._pending = pending[n:]

    def _run(self) -> Next:
        while True:
            self._fill()
            buf = self._buf
            if buf is None:
                return Next.READ
            quit_ = False
            rc = self._parse(buf)
            if rc == _AGAIN:
                if len(buf) < POP3_BUFFER_SIZE:
                    return Next.READ
                self.logs.append((INFO, f'client sent too long command "{log_text(buf)}"'))
                quit_ = True
                rc = _INVALID
            elif rc == _INVALID:
                self.errors += 1
                if self.errors >= self.conf.max_errors:
                    self.logs.append((INFO, "client sent too many invalid commands"))
                    quit_ = True

            self._reply = POP3_OK
            if rc == _OK:
                rc, quit_ = self._dispatch()

            if rc == _DONE:
                return self._start_auth()

            if rc == _INVALID:
                self.mail_state = Pop3State.START
                self._state = _SW_START
                self._reply = POP3_INVALID_COMMAND

            self._args.clear()
            buf = self._buf  # STLS dropped it
            if buf is not None and self._pos >= len(buf):
                self._buf = None
                self._pos = 0
            if self._state:
                self._arg_start = self._pos
            self.out.append(self._reply)

            if quit_:
                self.close()
                return Next.CLOSE
            if self._phase == _PHASE_STARTTLS:
                self.action = ACTION_STARTTLS
                return Next.STARTTLS

    # -- the parser (ngx_mail_pop3_parse_command) -----------------------------

    def _parse(self, buf: bytearray) -> int:
        state = self._state
        p = self._pos
        last = len(buf)
        args = self._args
        while p < last:
            ch = buf[p]
            if state == _SW_START:
                self._cmd_start = p
                state = _SW_COMMAND
            if state == _SW_COMMAND:
                if ch in (_SP, _CR, _LF):
                    start = self._cmd_start
                    cmd = _COMMANDS.get(bytes(buf[start:p]).upper()) if p - start == 4 else None
                    if cmd is None:
                        return self._invalid(buf, p)
                    self._command = cmd
                    if ch == _SP:
                        state = _SW_SPACES_BEFORE_ARGUMENT
                    elif ch == _CR:
                        state = _SW_ALMOST_DONE
                    else:
                        return self._done(p)
                elif not (0x41 <= ch <= 0x5A or 0x61 <= ch <= 0x7A):
                    return self._invalid(buf, p)
            elif state == _SW_INVALID:
                return self._invalid(buf, p)
            elif state == _SW_SPACES_BEFORE_ARGUMENT:
                if ch == _SP:
                    pass
                elif ch == _CR:
                    state = _SW_ALMOST_DONE
                elif ch == _LF:
                    return self._done(p)
                elif len(args) <= 2:
                    state = _SW_ARGUMENT
                    self._arg_start = p
                else:
                    return self._invalid(buf, p)
            elif state == _SW_ARGUMENT:
                if ch == _SP and self._command in (_USER, _PASS):
                    pass  # spaces belong to the user name or password
                elif ch in (_SP, _CR, _LF):
                    args.append((self._arg_start, p))
                    if ch == _SP:
                        state = _SW_SPACES_BEFORE_ARGUMENT
                    elif ch == _CR:
                        state = _SW_ALMOST_DONE
                    else:
                        return self._done(p)
            else:  # _SW_ALMOST_DONE
                if ch == _LF:
                    return self._done(p)
                return self._invalid(buf, p)
            p += 1
        self._pos = p
        self._state = state
        return _AGAIN

    def _done(self, p: int) -> int:
        self._pos = p + 1
        self._state = _SW_ARGUMENT if self._command == _AUTH else _SW_START
        return _OK

    def _invalid(self, buf: bytearray, p: int) -> int:
        """Skip the invalid command up to its LF."""
        lf = buf.find(b"\n", p)
        if lf < 0:
            self._state = _SW_INVALID
            self._pos = len(buf)
            return _AGAIN
        self._state = _SW_START
        self._pos = lf + 1
        return _INVALID

    def _arg(self, i: int) -> bytes:
        start, end = self._args[i]
        assert self._buf is not None
        return bytes(self._buf[start:end])

    # -- the handlers -----------------------------------------------------------

    def _dispatch(self) -> tuple[int, bool]:
        state = self.mail_state
        cmd = self._command
        if state == Pop3State.START:
            if cmd == _USER:
                return self._user(), False
            if cmd == _CAPA:
                return self._capa(True), False
            if cmd == _APOP:
                return self._apop(), False
            if cmd == _AUTH:
                return self._auth_command(), False
            if cmd == _QUIT:
                return _OK, True
            if cmd == _NOOP:
                return _OK, False
            if cmd == _STLS:
                return self._stls(), False
            return _INVALID, False
        if state == Pop3State.USER:
            if cmd == _PASS:
                return self._pass(), False
            if cmd == _CAPA:
                return self._capa(False), False
            if cmd == _QUIT:
                return _OK, True
            if cmd == _NOOP:
                return _OK, False
            return _INVALID, False
        if state == Pop3State.AUTH_LOGIN_USERNAME:
            rc = self._auth_login_username(0)
            self._reply = POP3_PASSWORD
            self.mail_state = Pop3State.AUTH_LOGIN_PASSWORD
            return rc, False
        if state == Pop3State.AUTH_LOGIN_PASSWORD:
            return self._auth_login_password(), False
        if state == Pop3State.AUTH_PLAIN:
            return self._auth_plain(0), False
        if state == Pop3State.AUTH_CRAM_MD5:
            return self._auth_cram_md5(), False
        if state == Pop3State.AUTH_EXTERNAL:
            return self._auth_external(0), False
        return _OK, False  # PASSWD: not reached, as in nginx

    def _user(self) -> int:
        if self._starttls_only() or len(self._args) != 1:
            return _INVALID
        self.login = self._arg(0)
        self.mail_state = Pop3State.USER
        return _OK

    def _pass(self) -> int:
        if len(self._args) != 1:
            return _INVALID
        self.auth = AuthRequest(self.login, self._arg(0), AuthMethod.PLAIN)
        return _DONE

    def _capa(self, stls: bool) -> int:
        capability, starttls, starttls_only, _ = capabilities(self.conf)
        reply = capability
        if stls and not self.tls:
            if self.conf.starttls == Starttls.ON:
                reply = starttls
            elif self.conf.starttls == Starttls.ONLY:
                reply = starttls_only
        self._reply = reply
        return _OK

    def _stls(self) -> int:
        if self.tls or self.conf.starttls == Starttls.OFF:
            return _INVALID
        # CVE-2014-3556: nothing pipelined after STLS survives the upgrade
        self._buf = None
        self._pos = 0
        self._pending = b""
        self._phase = _PHASE_STARTTLS
        return _OK

    def _apop(self) -> int:
        if self._starttls_only() or len(self._args) != 2:
            return _INVALID
        if not auth_methods(self.conf) & AUTH_APOP_ENABLED:
            return _INVALID
        self.login = self._arg(0)
        self.auth = AuthRequest(self.login, self._arg(1), AuthMethod.APOP, salt=self.salt)
        return _DONE

    def _auth_command(self) -> int:
        if self._starttls_only():
            return _INVALID
        nargs = len(self._args)
        if nargs == 0:
            self._reply = capabilities(self.conf)[3]
            self._state = _SW_START
            return _OK
        mech = self._arg(0).upper()
        mask = auth_methods(self.conf)
        if mech == b"LOGIN":
            if nargs == 1:
                self._reply = POP3_USERNAME
                self.mail_state = Pop3State.AUTH_LOGIN_USERNAME
                return _OK
            if nargs == 2:
                self._reply = POP3_PASSWORD
                self.mail_state = Pop3State.AUTH_LOGIN_PASSWORD
                return self._auth_login_username(1)
            return _INVALID
        if mech == b"PLAIN":
            if nargs == 1:
                self._reply = POP3_NEXT
                self.mail_state = Pop3State.AUTH_PLAIN
                return _OK
            if nargs == 2:
                return self._auth_plain(1)
            return _INVALID
        if mech == b"CRAM-MD5":
            if nargs != 1 or not mask & AUTH_CRAM_MD5_ENABLED:
                return _INVALID
            self._reply = sasl.cram_md5_challenge(b"+ ", self.salt)
            self.mail_state = Pop3State.AUTH_CRAM_MD5
            return _OK
        if mech == b"EXTERNAL":
            if nargs == 1:
                if not mask & AUTH_EXTERNAL_ENABLED:
                    return _INVALID
                self._reply = POP3_USERNAME
                self.mail_state = Pop3State.AUTH_EXTERNAL
                return _OK
            if nargs == 2:
                # as nginx: an initial response skips the "external" check
                return self._auth_external(1)
        return _INVALID


class Pop3Upstream(ProxyLogin):
    """Log in to a POP3 backend: ``USER``, then ``PASS``; relay its ``+OK``.

    Replies are read as :class:`~mailfront.protocol.base.ProxyLogin` reads
    them; a reply is good when it starts with ``+OK``.  The last reply (the
    answer to PASS) is relayed to the client as it is.
    """

    __slots__ = ()

    INTERNAL_ERROR = POP3_INTERNAL_SERVER_ERROR

    def __init__(self, conf: ServerConf, login: bytes, passwd: bytes) -> None:
        super().__init__(conf, login, passwd, Pop3State.START)

    def _reply(self, buf: bytes | bytearray, rest: bytes) -> UpNext:
        """A reply that ends with CRLF (``rest``: what follows it in this read)."""
        if buf[:3] != b"+OK":
            return self._invalid(buf)
        state = self.state
        if state == _START:
            self.action = ACTION_SEND_USER
            self.to_upstream.append(b"USER " + self.login + b"\r\n")
            self.state = _USER_STATE
        elif state == _USER_STATE:
            self.action = ACTION_SEND_PASS
            self.to_upstream.append(b"PASS " + self.passwd + b"\r\n")
            self.state = Pop3State.PASSWD
        else:
            return self._done(buf, rest)
        return _UP_READ
