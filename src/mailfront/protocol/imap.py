"""IMAP: the client's auth phase and the backend login, as nginx does them.

``ImapMachine`` is ``ngx_mail_imap_handler.c`` plus ``ngx_mail_imap_parse_command``
(``ngx_mail_parse.c``) and ``ngx_mail_read_command`` (``ngx_mail_handler.c``);
``ImapUpstream`` is ``ngx_mail_proxy_imap_handler`` with
``ngx_mail_proxy_read_response`` (``ngx_mail_proxy_module.c``).  Both are
sans-IO: bytes in, replies, log lines and an outcome out.

The command buffer is nginx's: a window of ``imap_client_buffer`` bytes that
is only rewound to its start when every byte in it has been handled (and kept
as it is while an ``AUTHENTICATE`` exchange goes on).  A command, its literals
included, must fit in what is left of the window, and ``client sent too long
command`` logs the whole window.  ``_buf`` holds the window (``None`` when
empty); ``_pending`` holds what was received but does not fit yet: nginx
leaves those bytes in the socket and reads them as soon as there is room.

nginx quirks kept on purpose (each is what nginx 1.29.x answers):

- a missing tag (a line starting with a space) is the tag ``" "``;
- only invalid commands found by the parser count toward ``max_errors``;
  a bad ``LOGIN`` argument count or bad base64 does not;
- a bad base64 user name after ``AUTHENTICATE LOGIN``'s prompt gets an
  untagged ``BAD invalid command``;
- an unterminated quoted string leaves the parser "in quotes" for the next
  command (its spaces then do not separate arguments);
- ``{0}`` takes one byte as its content;
- ``AUTHENTICATE EXTERNAL <initial response>`` skips the ``imap_auth`` check;
- an invalid command ending in ``+}`` closes the connection (nginx cannot
  skip the non-synchronising literal it announces);
- after a failed login and Auth-Wait, the failed command's tag is still the
  tag of a following command that is invalid before its own tag ends.

Fast paths (the per-login common case, same state slot for slot, checked by
``tests/test_protocol_fast_paths.py``): a read that is exactly one simple
``LOGIN`` or ``AUTHENTICATE PLAIN <response>`` line into an empty window is
matched with one regex; a backend reply that arrives whole is handled without
a copy.  Anything else goes through the byte parser and the buffer loop.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache

from mailfront.conf.model import (
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

# Replies, worded as ngx_mail_imap_handler.c / ngx_mail_imap_module.c word them
IMAP_GREETING = b"* OK IMAP4 ready\r\n"
IMAP_STAR = b"* "
IMAP_OK = b"OK completed\r\n"
IMAP_NEXT = b"+ OK\r\n"
IMAP_PLAIN_NEXT = b"+ \r\n"
IMAP_USERNAME = b"+ " + sasl.USERNAME_PROMPT + b"\r\n"
IMAP_PASSWORD = b"+ " + sasl.PASSWORD_PROMPT + b"\r\n"
IMAP_BYE = b"* BYE\r\n"
IMAP_INVALID_COMMAND = b"BAD invalid command\r\n"
IMAP_INTERNAL_SERVER_ERROR = b"* BAD internal server error\r\n"
IMAP_CERT_ERROR = b"* BYE SSL certificate error\r\n"
IMAP_NO_CERT = b"* BYE No required SSL certificate\r\n"

# c->log->action texts
ACTION_SEND_LOGIN = "sending LOGIN command to upstream"


class ImapState(enum.IntEnum):
    """nginx's ``ngx_imap_state_e`` (``s->mail_state``)."""

    START = 0
    AUTH_LOGIN_USERNAME = 1
    AUTH_LOGIN_PASSWORD = 2
    AUTH_PLAIN = 3
    AUTH_CRAM_MD5 = 4
    AUTH_EXTERNAL = 5
    LOGIN = 6  # backend login: LOGIN sent, waiting for "+"
    USER = 7  # user name sent, waiting for "+"
    PASSWD = 8  # password sent, waiting for the tagged OK


_START = ImapState.START
_LOGIN_SENT = ImapState.LOGIN
_USER_SENT = ImapState.USER
_PASSWD = ImapState.PASSWD
_UP_READ = UpNext.READ
_UP_DONE = UpNext.DONE
_PLAIN = AuthMethod.PLAIN
_NEXT_AUTH = Next.AUTH

# s->command
_LOGIN, _LOGOUT, _CAPABILITY, _NOOP, _STARTTLS, _AUTHENTICATE = range(1, 7)
_COMMANDS = {
    b"LOGIN": _LOGIN,
    b"LOGOUT": _LOGOUT,
    b"CAPABILITY": _CAPABILITY,
    b"NOOP": _NOOP,
    b"STARTTLS": _STARTTLS,
    b"AUTHENTICATE": _AUTHENTICATE,
}

# parser states (s->state), as in ngx_mail_imap_parse_command
_SW_START = 0
_SW_TAG = 1
_SW_INVALID = 2
_SW_SPACES_BEFORE_COMMAND = 3
_SW_COMMAND = 4
_SW_SPACES_BEFORE_ARGUMENT = 5
_SW_ARGUMENT = 6
_SW_BACKSLASH = 7
_SW_LITERAL = 8
_SW_NO_SYNC_LITERAL_ARGUMENT = 9
_SW_START_LITERAL_ARGUMENT = 10
_SW_LITERAL_ARGUMENT = 11
_SW_END_LITERAL_ARGUMENT = 12
_SW_ALMOST_DONE = 13

# parse and handler results
_OK = 0
_AGAIN = 1
_INVALID = 2
_DONE = 3
_NEXT = 4  # NGX_IMAP_NEXT: a synchronising literal wants "+ OK"

_SP, _CR, _LF, _DQUOTE, _BACKSLASH = 0x20, 0x0D, 0x0A, 0x22, 0x5C
_LBRACE, _RBRACE, _PLUS = 0x7B, 0x7D, 0x2B
_TAG_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")
_MAX_TAG = 32
# A literal's length may not overflow nginx's size_t counter (1.29.6).
_MAX_LITERAL = (1 << 63) - 1

# The fast path: one whole, simple LOGIN or AUTHENTICATE PLAIN command (atoms
# only: no quoted string, no literal) as the whole of a read into an empty
# window.  Groups: the tag with its space, the command (its start is
# _cmd_start), LOGIN's user name, the last argument (its start is _arg_start).
_ATOM = rb'[^ \r\n"{][^ \r\n]*'
_FAST_COMMAND = re.compile(
    rb"([A-Za-z0-9._-]{1,32} ) *((?i:login) +(" + _ATOM + rb")|(?i:authenticate) +(?i:plain))"
    rb" +(" + _ATOM + rb") *\r?\n"
)

# session phases
_PHASE_AUTH, _PHASE_WAIT, _PHASE_STARTTLS, _PHASE_CLOSED = (
    PHASE_AUTH,
    PHASE_WAIT,
    PHASE_STARTTLS,
    PHASE_CLOSED,
)

# imap_auth bits and their CAPABILITY names, in nginx's fixed order
# (NGX_MAIL_AUTH_PLAIN_ENABLED up to NGX_MAIL_AUTH_EXTERNAL_ENABLED; APOP has
# no IMAP name and cannot be set by imap_auth)
_AUTH_NAMES = (
    (AUTH_PLAIN_ENABLED, b"AUTH=PLAIN"),
    (AUTH_LOGIN_ENABLED, b"AUTH=LOGIN"),
    (AUTH_CRAM_MD5_ENABLED, b"AUTH=CRAM-MD5"),
    (AUTH_EXTERNAL_ENABLED, b"AUTH=EXTERNAL"),
)


@lru_cache(maxsize=64)
def _build_capabilities(caps: tuple[str, ...], mask: int) -> tuple[bytes, bytes, bytes]:
    head = b"* CAPABILITY" + b"".join(b" " + c.encode("utf-8", "surrogateescape") for c in caps)
    auth = b"".join(b" " + name for bit, name in _AUTH_NAMES if mask & bit)
    capability = head + auth + b"\r\n"
    starttls = head + auth + b" STARTTLS\r\n"
    starttls_only = head + b" STARTTLS LOGINDISABLED\r\n"
    return capability, starttls, starttls_only


def capabilities(conf: ServerConf) -> tuple[bytes, bytes, bytes]:
    """The CAPABILITY lines built by ``ngx_mail_imap_merge_srv_conf``.

    ``(capability, starttls_capability, starttls_only_capability)``: the
    configured capabilities then the ``AUTH=`` names (PLAIN LOGIN CRAM-MD5
    EXTERNAL, as enabled); the same plus ``STARTTLS`` (``starttls on``, before
    TLS); the configured capabilities plus ``STARTTLS LOGINDISABLED`` and no
    ``AUTH=`` name (``starttls only``, before TLS).
    """
    return _build_capabilities(conf.imap_capabilities, conf.imap_auth)


class ImapMachine(LineMachine):
    """The IMAP auth phase of one client connection (see ``protocol.base``).

    ``tag`` is nginx's ``s->tag`` of the last command: the client's tag with
    its trailing space (``b"a1 "``), as the backend login reuses it.
    """

    _START_STATE = ImapState.START

    __slots__ = (
        "_arg_start",
        "_backslash",
        "_cmd_start",
        "_command",
        "_literal_len",
        "_no_sync",
        "_pending",
        "_pending_pos",
        "_quit",
        "_quoted",
        "_tag_start",
        "errors",
        "out",
        "tag",
    )

    @staticmethod
    def needs_salt(conf: ServerConf) -> bool:
        """CRAM-MD5 enabled: its challenge is the salt (nginx makes it lazily)."""
        return bool(conf.imap_auth & AUTH_CRAM_MD5_ENABLED)

    def __init__(self, conf: ServerConf, salt: bytes = b"", tls: bool = False) -> None:
        self.conf = conf
        self.salt = salt
        self.tls = tls
        self.out: list[bytes] = []
        self.logs: list[tuple[int, str]] = []
        self.action = ACTION_GREETING
        self.login = b""
        self.tag = b""
        self.auth: AuthRequest | None = None
        self.errors = 0
        self.mail_state = ImapState.START
        self._phase = _PHASE_AUTH
        self._buf: bytearray | None = None  # the command window, from its start
        self._pos = 0  # s->buffer->pos, an index into _buf
        self._pending = b""  # received but not yet in the window ("in the socket")
        self._pending_pos = 0  # how much of _pending went into the window
        self._state = _SW_START
        self._quoted = False
        self._backslash = False
        self._no_sync = False
        self._literal_len = 0
        self._quit = False
        self._tag_start = 0
        self._cmd_start = 0
        self._arg_start = 0
        self._command = 0
        self._args: list[bytes] = []

    # -- the session's interface ---------------------------------------------

    def greeting(self) -> bytes:
        # nginx sets "in auth state" on the first read event, before it logs
        # anything (a timeout included), so that is the action from now on.
        self.action = ACTION_AUTH
        return IMAP_GREETING

    # False in a test subclass: every command goes through the byte parser
    _fast = True

    def receive(self, data: bytes) -> Next:
        phase = self._phase
        if phase != _PHASE_AUTH:
            if phase == _PHASE_CLOSED:
                return Next.CLOSE
            if phase == _PHASE_WAIT and data:
                self._add_pending(data)  # nginx leaves it in the socket meanwhile
            return Next.READ
        if (
            self._buf is None
            and not self._pending
            and self._state == _SW_START
            and not self._quoted
            and self.mail_state == _START
            and self._fast
        ):
            m = _FAST_COMMAND.fullmatch(data)
            if m is not None and len(data) <= self.conf.imap_client_buffer:
                nxt = self._fast_auth(m)
                if nxt is not None:
                    return nxt
        if data:
            self._add_pending(data)
        return self._run()

    def _fast_auth(self, m: re.Match[bytes]) -> Next | None:
        """A whole LOGIN or AUTHENTICATE PLAIN line: what the parser and the
        handler would do, state for state; None to leave it to them."""
        if not self.tls and self.conf.starttls == Starttls.ONLY:
            return None
        login = m.group(3)
        arg = m.group(4)
        if login is None:  # AUTHENTICATE PLAIN <initial response>
            try:
                login, passwd = sasl.auth_plain(arg)
            except sasl.SaslError:
                return None  # the slow path logs it
            self._command = _AUTHENTICATE
        else:
            passwd = arg
            self._command = _LOGIN
        self.tag = m.group(1)
        self._tag_start = 0
        self._cmd_start = m.start(2)
        self._arg_start = m.start(4)
        self.login = login
        self.auth = AuthRequest(login, passwd, _PLAIN)
        self._phase = _PHASE_WAIT
        self.action = ACTION_HTTP_AUTH
        return _NEXT_AUTH

    def auth_failed(self, text: bytes, error_code: bytes | None = None) -> None:
        """``<tag>NO <text>``: nginx's stored tag keeps its trailing space."""
        self.out.append(self.tag + b"NO " + text + b"\r\n")

    def internal_error(self) -> bytes:
        return IMAP_INTERNAL_SERVER_ERROR

    def leftover(self) -> bytes:
        """The client's bytes after the auth command, for the backend."""
        buf = self._buf
        data = bytes(buf[self._pos :]) if buf is not None else b""
        if self._pending:
            data += self._pending[self._pending_pos :]
        self._buf = None
        self._pos = 0
        self._drop_pending()
        return data

    def close(self) -> None:
        """Forget buffered input; every later call is a no-op."""
        self._phase = _PHASE_CLOSED
        self._buf = None
        self._pos = 0
        self._drop_pending()
        self._args = []

    # -- the read loop (ngx_mail_imap_auth_state + ngx_mail_read_command) -----

    def _add_pending(self, data: bytes) -> None:
        if self._pending:
            self._pending = self._pending[self._pending_pos :] + data
        else:
            self._pending = data
        self._pending_pos = 0

    def _drop_pending(self) -> None:
        self._pending = b""
        self._pending_pos = 0

    def _fill(self) -> None:
        """Move what fits of the pending input into the window (nginx's recv)."""
        pending = self._pending
        if not pending:
            return
        start = self._pending_pos
        buf = self._buf
        room = self.conf.imap_client_buffer - (len(buf) if buf is not None else 0)
        n = min(len(pending) - start, room)
        if n <= 0:
            return
        if buf is None:
            self._buf = bytearray(pending[start : start + n])
        else:
            buf += pending[start : start + n]
        if start + n >= len(pending):
            self._drop_pending()
        else:
            self._pending_pos = start + n

    def _run(self) -> Next:
        size = self.conf.imap_client_buffer
        while True:
            self._fill()
            buf = self._buf
            if buf is None:
                if size > 0 or not self._pending:
                    return Next.READ
                buf = self._buf = bytearray()  # a zero-byte window is always full
            self._quit = False
            rc = self._parse(buf)
            if rc == _AGAIN:
                if len(buf) < size:
                    return Next.READ
                self.logs.append((INFO, f'client sent too long command "{log_text(buf)}"'))
                self._quit = True
                rc = _INVALID
            elif rc == _INVALID:
                self.errors += 1
                if self.errors >= self.conf.max_errors:
                    self.logs.append((INFO, "client sent too many invalid commands"))
                    self._quit = True

            tagged = True
            text = b""
            reply = IMAP_OK
            if rc == _OK:
                rc, tagged, text, reply = self._dispatch()
            elif rc == _NEXT:
                tagged = False
                reply = IMAP_NEXT

            if rc == _DONE:
                return self._start_auth()

            if rc == _INVALID:
                self._state = _SW_START
                reply = IMAP_INVALID_COMMAND
                self.mail_state = ImapState.START

            if tagged:
                if not self.tag:
                    self.tag = IMAP_STAR
                reply = text + self.tag + reply

            if rc != _NEXT:
                self._args.clear()
                if self._state:
                    # an AUTHENTICATE exchange goes on: keep the tag, and the
                    # next line is an argument starting where the buffer is
                    self._arg_start = self._pos
                else:
                    buf = self._buf  # STARTTLS dropped it
                    if buf is not None and self._pos >= len(buf):
                        self._buf = None
                        self._pos = 0
                    self.tag = b""
            self.out.append(reply)

            if self._quit:
                self.close()
                return Next.CLOSE
            if self._phase == _PHASE_STARTTLS:
                self.action = ACTION_STARTTLS
                return Next.STARTTLS

    # -- the parser (ngx_mail_imap_parse_command) -----------------------------

    def _parse(self, buf: bytearray) -> int:
        state = self._state
        p = self._pos
        last = len(buf)
        args = self._args
        while p < last:
            ch = buf[p]
            if state == _SW_START:
                self._tag_start = p
                state = _SW_TAG
            if state == _SW_TAG:
                if ch == _SP:
                    self.tag = bytes(buf[self._tag_start : p + 1])
                    state = _SW_SPACES_BEFORE_COMMAND
                elif ch not in _TAG_CHARS or p - self._tag_start >= _MAX_TAG:
                    return self._invalid(buf, p)
            elif state == _SW_INVALID:
                return self._invalid(buf, p)
            elif state == _SW_SPACES_BEFORE_COMMAND:
                if ch in (_CR, _LF):
                    return self._invalid(buf, p)
                if ch != _SP:
                    self._cmd_start = p
                    state = _SW_COMMAND
            elif state == _SW_COMMAND:
                if ch in (_SP, _CR, _LF):
                    cmd = _COMMANDS.get(bytes(buf[self._cmd_start : p]).upper())
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
            elif state == _SW_SPACES_BEFORE_ARGUMENT:
                if ch == _SP:
                    pass
                elif ch == _CR:
                    state = _SW_ALMOST_DONE
                elif ch == _LF:
                    return self._done(p)
                elif len(args) > 2:
                    return self._invalid(buf, p)
                elif ch == _DQUOTE:
                    self._quoted = True
                    self._arg_start = p + 1
                    state = _SW_ARGUMENT
                elif ch == _LBRACE:
                    state = _SW_LITERAL
                else:
                    self._arg_start = p
                    state = _SW_ARGUMENT
            elif state == _SW_ARGUMENT:
                if ch == (_SP if self._quoted else _DQUOTE):
                    pass  # a space in quotes, or a quote in an atom, is data
                elif ch in (_DQUOTE, _SP, _CR, _LF):
                    if ch == _DQUOTE:
                        self._quoted = False
                    self._push_arg(buf, p)
                    if ch == _CR:
                        state = _SW_ALMOST_DONE
                    elif ch == _LF:
                        return self._done(p)
                    else:
                        state = _SW_SPACES_BEFORE_ARGUMENT
                elif ch == _BACKSLASH and self._quoted:
                    self._backslash = True
                    state = _SW_BACKSLASH
            elif state == _SW_BACKSLASH:
                if ch in (_CR, _LF):
                    return self._invalid(buf, p)
                state = _SW_ARGUMENT
            elif state == _SW_LITERAL:
                if 0x30 <= ch <= 0x39:
                    n = self._literal_len * 10 + (ch - 0x30)
                    if n > _MAX_LITERAL:
                        return self._invalid(buf, p)
                    self._literal_len = n
                elif ch == _RBRACE:
                    state = _SW_START_LITERAL_ARGUMENT
                elif ch == _PLUS:
                    state = _SW_NO_SYNC_LITERAL_ARGUMENT
                else:
                    return self._invalid(buf, p)
            elif state == _SW_NO_SYNC_LITERAL_ARGUMENT:
                if ch != _RBRACE:
                    return self._invalid(buf, p)
                self._no_sync = True
                state = _SW_START_LITERAL_ARGUMENT
            elif state == _SW_START_LITERAL_ARGUMENT:
                if ch == _LF:
                    self._arg_start = p + 1
                    if not self._no_sync:
                        self._pos = p + 1
                        self._state = _SW_LITERAL_ARGUMENT
                        return _NEXT
                    self._no_sync = False
                    state = _SW_LITERAL_ARGUMENT
                elif ch != _CR:
                    return self._invalid(buf, p)
            elif state == _SW_LITERAL_ARGUMENT:
                n = self._literal_len
                if n > 1:
                    # every byte but the last of the literal is just counted
                    k = min(n - 1, last - p)
                    self._literal_len = n - k
                    p += k
                    continue
                # the literal's last byte ({0} too takes one byte, as nginx)
                self._literal_len = 0
                args.append(bytes(buf[self._arg_start : p + 1]))
                state = _SW_END_LITERAL_ARGUMENT
            elif state == _SW_END_LITERAL_ARGUMENT:
                # 1.29.6: a literal is followed by SP or CRLF
                if ch == _SP:
                    state = _SW_SPACES_BEFORE_ARGUMENT
                elif ch == _CR:
                    state = _SW_ALMOST_DONE
                elif ch == _LF:
                    return self._done(p)
                else:
                    return self._invalid(buf, p)
            else:  # _SW_ALMOST_DONE
                if ch == _LF:
                    return self._done(p)
                return self._invalid(buf, p)
            p += 1
        self._pos = p
        self._state = state
        return _AGAIN

    def _push_arg(self, buf: bytearray, p: int) -> None:
        """End an atom or quoted string at ``p``; unescape it in place as nginx."""
        start = self._arg_start
        end = p
        if self._backslash:
            dst = src = start
            while src < end:
                c = buf[src]
                src += 1
                if c == _BACKSLASH and src < end:
                    c = buf[src]
                    src += 1
                buf[dst] = c
                dst += 1
            end = dst
            self._backslash = False
        self._args.append(bytes(buf[start:end]))

    def _done(self, p: int) -> int:
        self._pos = p + 1
        self._state = _SW_ARGUMENT if self._command == _AUTHENTICATE else _SW_START
        return _OK

    def _invalid(self, buf: bytearray, p: int) -> int:
        """Skip the invalid command up to its LF; spot a ``{n+}`` ending it."""
        self._state = _SW_INVALID
        self._quoted = False
        self._backslash = False
        self._no_sync = False
        self._literal_len = 0
        lf = buf.find(b"\n", p)
        if lf < 0:
            self._pos = len(buf)
            return _AGAIN
        self._state = _SW_START
        self._pos = lf + 1
        if lf > 4:  # nginx: p - start > sizeof("{1+}") - 1
            q = lf - 1
            if buf[q] == _CR:
                q -= 1
            if buf[q] == _RBRACE and buf[q - 1] == _PLUS:
                self._quit = True  # it cannot skip the literal that follows
        return _INVALID

    def _arg(self, i: int) -> bytes:
        args = self._args
        return args[i] if i < len(args) else b""

    # -- the handlers -----------------------------------------------------------

    def _dispatch(self) -> tuple[int, bool, bytes, bytes]:
        """One parsed command: ``(rc, tagged, text before the tag, reply)``."""
        state = self.mail_state
        if state == ImapState.START:
            cmd = self._command
            if cmd == _LOGIN:
                return self._login(), True, b"", IMAP_OK
            if cmd == _AUTHENTICATE:
                rc, reply = self._authenticate()
                return rc, rc != _OK, b"", reply
            if cmd == _CAPABILITY:
                return _OK, True, self._capability(), IMAP_OK
            if cmd == _LOGOUT:
                self._quit = True
                return _OK, True, IMAP_BYE, IMAP_OK
            if cmd == _NOOP:
                return _OK, True, b"", IMAP_OK
            return self._starttls(), True, b"", IMAP_OK
        if state == ImapState.AUTH_LOGIN_USERNAME:
            rc = self._auth_login_username(0)
            self.mail_state = ImapState.AUTH_LOGIN_PASSWORD
            # untagged even when the user name is refused, as nginx
            return rc, False, b"", IMAP_PASSWORD
        if state == ImapState.AUTH_LOGIN_PASSWORD:
            return self._auth_login_password(), True, b"", IMAP_OK
        if state == ImapState.AUTH_PLAIN:
            return self._auth_plain(0), True, b"", IMAP_OK
        if state == ImapState.AUTH_CRAM_MD5:
            return self._auth_cram_md5(), True, b"", IMAP_OK
        return self._auth_external(0), True, b"", IMAP_OK

    def _login(self) -> int:
        if self._starttls_only():
            return _INVALID
        args = self._args
        if len(args) != 2 or not args[0]:
            return _INVALID
        self.login = args[0]
        self.auth = AuthRequest(args[0], args[1], AuthMethod.PLAIN)
        return _DONE

    def _capability(self) -> bytes:
        capability, starttls, starttls_only = capabilities(self.conf)
        if not self.tls:
            if self.conf.starttls == Starttls.ON:
                return starttls
            if self.conf.starttls == Starttls.ONLY:
                return starttls_only
        return capability

    def _starttls(self) -> int:
        if self.tls or self.conf.starttls == Starttls.OFF:
            return _INVALID
        # CVE-2014-3556: nothing pipelined after STARTTLS survives the upgrade
        self._buf = None
        self._pos = 0
        self._drop_pending()
        self._phase = _PHASE_STARTTLS
        return _OK

    def _authenticate(self) -> tuple[int, bytes]:
        """``ngx_mail_imap_authenticate`` with ``ngx_mail_auth_parse``: (rc, prompt)."""
        if self._starttls_only():
            return _INVALID, IMAP_OK
        args = self._args
        nargs = len(args)
        if nargs == 0:
            return _INVALID, IMAP_OK
        mech = args[0].upper()
        mask = self.conf.imap_auth
        if mech == b"LOGIN":
            if nargs == 1:
                self.mail_state = ImapState.AUTH_LOGIN_USERNAME
                return _OK, IMAP_USERNAME
            if nargs == 2:
                self.mail_state = ImapState.AUTH_LOGIN_PASSWORD
                return self._auth_login_username(1), IMAP_PASSWORD
            return _INVALID, IMAP_OK
        if mech == b"PLAIN":
            if nargs == 1:
                self.mail_state = ImapState.AUTH_PLAIN
                return _OK, IMAP_PLAIN_NEXT
            if nargs == 2:
                return self._auth_plain(1), IMAP_OK
            return _INVALID, IMAP_OK
        if mech == b"CRAM-MD5":
            if nargs != 1 or not mask & AUTH_CRAM_MD5_ENABLED:
                return _INVALID, IMAP_OK
            self.mail_state = ImapState.AUTH_CRAM_MD5
            return _OK, sasl.cram_md5_challenge(b"+ ", self.salt)
        if mech == b"EXTERNAL":
            if nargs == 1:
                if not mask & AUTH_EXTERNAL_ENABLED:
                    return _INVALID, IMAP_OK
                self.mail_state = ImapState.AUTH_EXTERNAL
                return _OK, IMAP_USERNAME
            if nargs == 2:
                # as nginx: an initial response skips the imap_auth check
                return self._auth_external(1), IMAP_OK
        return _INVALID, IMAP_OK


class ImapUpstream(ProxyLogin):
    """Log in to an IMAP backend with ``LOGIN`` and synchronising literals.

    ``<tag>LOGIN {len(login)}`` after the ``* OK`` greeting, then
    ``<login> {len(passwd)}`` and ``<passwd>`` after each ``+``; the client's
    tag is reused.  The answer must be ``<tag>OK``, which may follow one
    untagged line (``* CAPABILITY ...``, sent by SmarterMail and Gmail,
    accepted since nginx 1.27.3); everything read then is relayed to the
    client.  Replies are read as
    :class:`~mailfront.protocol.base.ProxyLogin` reads them.
    """

    __slots__ = ("tag",)

    INTERNAL_ERROR = IMAP_INTERNAL_SERVER_ERROR

    def __init__(self, conf: ServerConf, login: bytes, passwd: bytes, tag: bytes) -> None:
        super().__init__(conf, login, passwd, ImapState.START)
        self.tag = tag

    def _reply(self, buf: bytes | bytearray, rest: bytes) -> UpNext | None:
        """A reply that ends with CRLF (``rest``: what follows it in this read).

        Sends the next line (``UpNext.READ``), ends the login, or returns None
        to read more (an untagged line before the tagged reply).
        """
        p = 0
        state = self.state
        if state == _START:
            ok = buf[:4] == b"* OK"
        elif state == _PASSWD:
            if buf[:2] == b"* ":
                # one untagged line (CAPABILITY) before the tagged reply
                p = buf.find(b"\r\n", 2)
                p = p + 2 if p >= 0 else len(buf)
                if len(buf) - p < 4:
                    return None
            tag = self.tag
            ok = False
            if buf[p : p + len(tag)] == tag:
                p += len(tag)
                ok = buf[p : p + 2] == b"OK"
        else:  # LOGIN, USER: a continuation request
            ok = buf[0] == 0x2B
        if not ok:
            return self._invalid(buf, p)
        if state == _START:
            self.action = ACTION_SEND_LOGIN
            self.to_upstream.append(b"%sLOGIN {%d}\r\n" % (self.tag, len(self.login)))
            self.state = _LOGIN_SENT
        elif state == _LOGIN_SENT:
            self.action = ACTION_SEND_USER
            self.to_upstream.append(b"%s {%d}\r\n" % (self.login, len(self.passwd)))
            self.state = _USER_SENT
        elif state == _USER_SENT:
            self.action = ACTION_SEND_PASS
            self.to_upstream.append(self.passwd + b"\r\n")
            self.state = _PASSWD
        else:
            return self._done(buf, rest)
        return _UP_READ
