"""SMTP: the client-side auth-phase machine and the backend login, as nginx does them.

``SmtpMachine`` is ``ngx_mail_smtp_handler.c`` with ``ngx_mail_smtp_parse_command``
and the SMTP half of ``ngx_mail_read_command``; ``SmtpUpstream`` is the SMTP
part of ``ngx_mail_proxy_module.c`` (``ngx_mail_proxy_smtp_handler`` and
``ngx_mail_proxy_read_response``).  Both are sans-IO: bytes in, replies, log
lines and an outcome out.

The command buffer is modelled on nginx's: it is filled from its start up to
``smtp_client_buffer`` bytes, commands are consumed from a position inside
it, and it is emptied only once every buffered byte has been consumed (nginx
never compacts it).  Bytes the session hands over beyond the room left are
held back, as the kernel would hold them for nginx, and moved in as room
appears.  So a pipelined batch that does not fit the buffer is rejected as a
too long command exactly when nginx rejects it, which depends (in nginx too)
on how the input arrived.

Log lines are ``(level, text)``; bytes a client or backend sent are decoded
as UTF-8 with ``backslashreplace`` (nginx writes them raw), as the IMAP and
POP3 machines do.

Fast paths (same state slot for slot, checked by
``tests/test_protocol_fast_paths.py``): a read that is exactly one command line
into an empty buffer is handled without the buffer copies; ``parse_command``
splits a line with no stray CR on spaces (``parse_command_slow`` is nginx's
byte parser); a backend reply that arrives whole is handled without a copy.
"""

from __future__ import annotations

import enum
import re

from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_NONE_ENABLED,
    AUTH_PLAIN_ENABLED,
    AuthMethod,
    ServerConf,
    Starttls,
)
from mailfront.protocol import sasl
from mailfront.protocol.base import (
    ACTION_AUTH,
    ACTION_CONNECTING,
    ACTION_GREETING,
    ACTION_HTTP_AUTH,
    ACTION_READING,
    ACTION_STARTTLS,
    ERR,
    INFO,
    AuthRequest,
    Next,
    UpNext,
    c_string,
    log_text,
)

# Replies (ngx_mail_smtp_handler.c, ngx_mail_smtp_module.c, ngx_mail_proxy_module.c)
SMTP_OK = b"250 2.0.0 OK\r\n"
SMTP_BYE = b"221 2.0.0 Bye\r\n"
SMTP_STARTTLS = b"220 2.0.0 Start TLS\r\n"
SMTP_NEXT = b"334 \r\n"
SMTP_USERNAME = b"334 " + sasl.USERNAME_PROMPT + b"\r\n"
SMTP_PASSWORD = b"334 " + sasl.PASSWORD_PROMPT + b"\r\n"
SMTP_INVALID_COMMAND = b"500 5.5.1 Invalid command\r\n"
SMTP_INVALID_PIPELINING = b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
SMTP_INVALID_ARGUMENT = b"501 5.5.4 Invalid argument\r\n"
SMTP_AUTH_REQUIRED = b"530 5.7.1 Authentication required\r\n"
SMTP_BAD_SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
SMTP_AUTH_OK = b"235 2.0.0 OK\r\n"
SMTP_INTERNAL_SERVER_ERROR = b"451 4.3.2 Internal server error\r\n"
SMTP_CERT_ERROR = b"421 4.7.1 SSL certificate error\r\n"
SMTP_NO_CERT = b"421 4.7.1 No required SSL certificate\r\n"
SMTP_ERRCODE = b"535 5.7.0"  # ngx_mail_smtp_errcode: the default Auth-Error-Code

# Client-Host / XCLIENT NAME when there is no (trusted) name
UNAVAILABLE = b"[UNAVAILABLE]"
TEMPUNAVAIL = b"[TEMPUNAVAIL]"

# c->log->action texts of the SMTP phases (the session sets the resolver ones)
ACTION_RESOLVING_ADDRESS = "in resolving client address"
ACTION_RESOLVING_HOSTNAME = "in resolving client hostname"
ACTION_DELAY = "in delay pipelining state"

MAX_ARGS = 11  # ngx_mail_smtp_parse_command accepts a new argument while nelts <= 10


class SmtpState(enum.IntEnum):
    """nginx's ``ngx_smtp_state_e`` (client side and backend side share it)."""

    START = 0
    AUTH_LOGIN_USERNAME = 1
    AUTH_LOGIN_PASSWORD = 2
    AUTH_PLAIN = 3
    AUTH_CRAM_MD5 = 4
    AUTH_EXTERNAL = 5
    HELO = 6
    HELO_XCLIENT = 7
    HELO_AUTH = 8
    HELO_FROM = 9
    XCLIENT = 10
    XCLIENT_FROM = 11
    XCLIENT_HELO = 12
    XCLIENT_AUTH = 13
    FROM = 14
    TO = 15


class SmtpCommand(enum.IntEnum):
    """The verbs ``ngx_mail_smtp_parse_command`` knows (NGX_SMTP_*)."""

    HELO = 1
    EHLO = 2
    AUTH = 3
    QUIT = 4
    NOOP = 5
    MAIL = 6
    RSET = 7
    RCPT = 8
    VRFY = 9
    EXPN = 10
    HELP = 11
    STARTTLS = 12


_VERBS = {
    b"HELO": SmtpCommand.HELO,
    b"EHLO": SmtpCommand.EHLO,
    b"QUIT": SmtpCommand.QUIT,
    b"AUTH": SmtpCommand.AUTH,
    b"NOOP": SmtpCommand.NOOP,
    b"MAIL": SmtpCommand.MAIL,
    b"RSET": SmtpCommand.RSET,
    b"RCPT": SmtpCommand.RCPT,
    b"VRFY": SmtpCommand.VRFY,
    b"EXPN": SmtpCommand.EXPN,
    b"HELP": SmtpCommand.HELP,
    b"STARTTLS": SmtpCommand.STARTTLS,
}

# Enum members as module names: a member lookup costs ~60 ns on Python 3.11
_AM_CRAM_MD5 = AuthMethod.CRAM_MD5
_AM_EXTERNAL = AuthMethod.EXTERNAL
_AM_LOGIN = AuthMethod.LOGIN
_AM_NONE = AuthMethod.NONE
_AM_PLAIN = AuthMethod.PLAIN
_NEXT_AUTH = Next.AUTH
_NEXT_CLOSE = Next.CLOSE
_NEXT_READ = Next.READ
_NEXT_STARTTLS = Next.STARTTLS
_CMD_AUTH = SmtpCommand.AUTH
_CMD_EHLO = SmtpCommand.EHLO
_CMD_HELO = SmtpCommand.HELO
_CMD_MAIL = SmtpCommand.MAIL
_CMD_NOOP = SmtpCommand.NOOP
_CMD_QUIT = SmtpCommand.QUIT
_CMD_RCPT = SmtpCommand.RCPT
_CMD_RSET = SmtpCommand.RSET
_CMD_STARTTLS = SmtpCommand.STARTTLS
_ST_AUTH_CRAM_MD5 = SmtpState.AUTH_CRAM_MD5
_ST_AUTH_EXTERNAL = SmtpState.AUTH_EXTERNAL
_ST_AUTH_LOGIN_PASSWORD = SmtpState.AUTH_LOGIN_PASSWORD
_ST_AUTH_LOGIN_USERNAME = SmtpState.AUTH_LOGIN_USERNAME
_ST_AUTH_PLAIN = SmtpState.AUTH_PLAIN
_ST_FROM = SmtpState.FROM
_ST_HELO = SmtpState.HELO
_ST_HELO_AUTH = SmtpState.HELO_AUTH
_ST_HELO_FROM = SmtpState.HELO_FROM
_ST_HELO_XCLIENT = SmtpState.HELO_XCLIENT
_ST_START = SmtpState.START
_ST_TO = SmtpState.TO
_ST_XCLIENT = SmtpState.XCLIENT
_ST_XCLIENT_AUTH = SmtpState.XCLIENT_AUTH
_ST_XCLIENT_FROM = SmtpState.XCLIENT_FROM
_ST_XCLIENT_HELO = SmtpState.XCLIENT_HELO
_STARTTLS_OFF = Starttls.OFF
_STARTTLS_ON = Starttls.ON
_STARTTLS_ONLY = Starttls.ONLY
_UP_DONE = UpNext.DONE
_UP_FAIL = UpNext.FAIL
_UP_READ = UpNext.READ

_LETTERS = re.compile(rb"[A-Za-z]*")
_SPACES = re.compile(rb" *")
_ARG_END = re.compile(rb"[ \r\n]")
_HOST = re.compile(rb"[A-Za-z0-9.-]+")

# handler outcomes (nginx's NGX_OK, NGX_DONE, NGX_MAIL_PARSE_INVALID_COMMAND, NGX_ERROR),
# and an accepted STARTTLS
_OK, _DONE, _INVALID, _ERROR, _TLS = range(5)


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def parse_command(
    line: bytes, arg_mode: bool
) -> tuple[SmtpCommand | None, list[bytes], int] | None:
    """``ngx_mail_smtp_parse_command`` over one whole line (ending in LF).

    Returns ``(command, args, end)`` where ``end`` is the offset just past the
    last argument (the MAIL/RCPT text nginx keeps is ``line[:end]``), or None
    for an invalid command.  In ``arg_mode`` (nginx's ``sw_argument`` state
    after AUTH) there is no verb: the line starts with an argument and the
    command is None.

    A line with no CR but the one before its LF is split on spaces here;
    anything else goes through ``parse_command_slow`` (the same answers).
    """
    body = line[:-2] if line[-2:] == b"\r\n" else line[:-1]
    if b"\r" in body:
        return parse_command_slow(line, arg_mode)
    words = body.split(b" ")
    args = words[1:]
    if b"" in args:  # runs of spaces between or after the arguments
        args = [w for w in args if w]
    if arg_mode:
        cmd = None
        args.insert(0, words[0])  # the line starts with an argument, even an empty one
    else:
        verb = words[0]
        # letters up to a space or the line's end; nginx knows 4 and 8 letter verbs
        cmd = _VERBS.get(verb.upper()) if verb.isalpha() else None
        if cmd is None:
            return None
    if len(args) > MAX_ARGS:
        return None
    return cmd, args, len(body.rstrip(b" "))


def parse_command_slow(
    line: bytes, arg_mode: bool
) -> tuple[SmtpCommand | None, list[bytes], int] | None:
    """``parse_command`` as nginx's byte parser goes, for any line."""
    args: list[bytes] = []
    end = 0
    if arg_mode:
        cmd = None
        i = 0
    else:
        i = _LETTERS.match(line).end()  # type: ignore[union-attr]
        ch = line[i]
        if ch not in b" \r\n":
            return None
        cmd = _VERBS.get(line[:i].upper()) if i in (4, 8) else None
        if cmd is None:
            return None
        end = i
        if ch == 0x0A:
            return cmd, args, end
        if ch == 0x0D:
            return (cmd, args, end) if line[i + 1] == 0x0A else None
        i = _SPACES.match(line, i + 1).end()  # type: ignore[union-attr]
    while True:
        ch = line[i]
        if not arg_mode:
            if ch == 0x0A:
                return cmd, args, end
            if ch == 0x0D:
                return (cmd, args, end) if line[i + 1] == 0x0A else None
            if len(args) >= MAX_ARGS:
                return None
        arg_mode = False
        stop = _ARG_END.search(line, i).start()  # type: ignore[union-attr]
        args.append(line[i:stop])
        end = stop
        ch = line[stop]
        if ch == 0x0A:
            return cmd, args, end
        if ch == 0x0D:
            return (cmd, args, end) if line[stop + 1] == 0x0A else None
        i = _SPACES.match(line, stop + 1).end()  # type: ignore[union-attr]


def xtext(data: bytes) -> bytes:
    """RFC 3461 xtext, as nginx 1.29.2+ encodes XCLIENT LOGIN: ``+XX`` for
    0x00-0x20, ``+``, ``=`` and 0x7F-0xFF (upper-case hex)."""
    return b"".join(_XTEXT[c] for c in data)


_XTEXT = tuple(
    b"+%02X" % c if c <= 0x20 or c >= 0x7F or c in b"+=" else bytes((c,)) for c in range(256)
)


def valid_host(name: bytes) -> bool:
    """CVE-2026-28753 (1.29.7): a resolved name is used only if it is ``[A-Za-z0-9.-]+``."""
    return _HOST.fullmatch(name) is not None


def rejected_text(data: bytes | bytearray) -> str:
    """``ngx_mail_smtp_log_rejected_command``: the buffer with CR and LF as ``_``."""
    return log_text(bytes(data).replace(b"\r", b"_").replace(b"\n", b"_"))


# -- the replies built from the configuration (ngx_mail_smtp_merge_srv_conf) --------------

_MECH_NAMES = (
    (AUTH_PLAIN_ENABLED, b"PLAIN"),
    (AUTH_LOGIN_ENABLED, b"LOGIN"),
    (AUTH_APOP_ENABLED, b""),
    (AUTH_CRAM_MD5_ENABLED, b"CRAM-MD5"),
    (AUTH_EXTERNAL_ENABLED, b"EXTERNAL"),
)


class SmtpReplies:
    """The per-server reply strings nginx builds once at configuration time."""

    __slots__ = (
        "capability",
        "greeting",
        "server_name",
        "starttls_capability",
        "starttls_only_capability",
    )

    def __init__(self, conf: ServerConf) -> None:
        name = _b(conf.server_name)
        self.greeting = b"220 " + name + b" ESMTP ready\r\n"
        self.server_name = b"250 " + name + b"\r\n"
        lines = [b"250-" + name + b"\r\n"]
        lines += [b"250-" + _b(cap) + b"\r\n" for cap in conf.smtp_capabilities]
        head = b"".join(lines)
        mechs = [mech for bit, mech in _MECH_NAMES if conf.smtp_auth & bit]
        if mechs:
            auth = b"AUTH" + b"".join(b" " + m for m in mechs) + b"\r\n"
            self.capability = head + b"250 " + auth
            self.starttls_capability = head + b"250-" + auth + b"250 STARTTLS\r\n"
        else:  # no AUTH line: the last line becomes the final one
            self.capability = head[: -len(lines[-1])] + b"250 " + lines[-1][4:]
            self.starttls_capability = head + b"250 STARTTLS\r\n"
        self.starttls_only_capability = head + b"250 STARTTLS\r\n"


_replies_cache: dict[int, tuple[ServerConf, SmtpReplies]] = {}


def replies(conf: ServerConf) -> SmtpReplies:
    """The reply strings of ``conf``, built once per configuration object."""
    hit = _replies_cache.get(id(conf))
    if hit is not None and hit[0] is conf:
        return hit[1]
    if len(_replies_cache) >= 256:  # old configurations after many reloads
        _replies_cache.clear()
    built = SmtpReplies(conf)
    _replies_cache[id(conf)] = (conf, built)
    return built


# -- the client side -----------------------------------------------------------------------


class SmtpMachine:
    """The SMTP auth phase of one client session (sans-IO)."""

    __slots__ = (
        "_buf",
        "_closed",
        "_pending",
        "_pos",
        "_tls",
        "_waiting",
        "action",
        "auth",
        "auth_method",
        "conf",
        "errors",
        "esmtp",
        "login",
        "logs",
        "mail_state",
        "out",
        "passwd",
        "quit",
        "salt",
        "smtp_from",
        "smtp_helo",
        "smtp_to",
        "tls",
    )

    def __init__(self, conf: ServerConf, salt: bytes = b"", tls: bool = False) -> None:
        self.conf = conf
        self.salt = salt
        self.tls = tls
        self.out: list[bytes] = []
        self.logs: list[tuple[int, str]] = []
        self.action = ACTION_GREETING
        self.auth: AuthRequest | None = None
        self.auth_method = _AM_PLAIN
        self.mail_state = _ST_START
        self.login = b""
        self.passwd = b""
        self.smtp_helo = b""
        self.smtp_from = b""
        self.smtp_to = b""
        self.esmtp = False
        self.errors = 0
        self.quit = False
        self._buf: bytearray | None = None  # nginx's s->buffer, start..last
        self._pos = 0  # s->buffer->pos, an offset into _buf
        self._pending: bytearray | None = None  # read but not yet in the buffer
        self._waiting = False  # a Next.AUTH is pending
        self._tls = False  # a Next.STARTTLS is pending
        self._closed = False

    @staticmethod
    def needs_salt(conf: ServerConf) -> bool:
        return bool(conf.smtp_auth & AUTH_CRAM_MD5_ENABLED)

    # -- the session's entry points --------------------------------------------------------

    def greeting(self) -> bytes:
        """``220 <server_name> ESMTP ready``; sent after the resolver and the delay."""
        self.action = ACTION_AUTH
        return replies(self.conf).greeting

    def early_input(self, data: bytes) -> None:
        """Client bytes during ``smtp_greeting_delay``: reject them and close.

        nginx reads what fits its buffer, logs it and answers 503; the session
        closes once ``out`` is written.  Empty ``data`` (EOF) just closes.
        """
        self.action = ACTION_DELAY
        self._discard()
        self._closed = True
        if not data:
            return
        limit = max(self.conf.smtp_client_buffer, 1)
        self.logs.append(
            (INFO, f'client was rejected before greeting: "{rejected_text(data[:limit])}"')
        )
        self.out.append(SMTP_INVALID_PIPELINING)
        self.quit = True

    def receive(self, data: bytes) -> Next:
        if self._closed:
            return _NEXT_CLOSE
        if self._tls:  # plaintext after STARTTLS, before the handshake: dropped
            return _NEXT_READ
        if (
            self._buf is None
            and self._pending is None
            and not self._waiting
            and data[-1:] == b"\n"
            and data.find(b"\n") == len(data) - 1  # one whole line
            and len(data) <= self.conf.smtp_client_buffer
            and self._fast
        ):
            return self._one_line(data)
        if data:
            if self._pending is None:
                self._pending = bytearray(data)
            else:
                self._pending += data
        if self._waiting:  # nginx leaves it in the socket meanwhile
            return _NEXT_READ
        return self._run()

    # False in a test subclass: every read goes through the command buffer
    _fast = True

    def _one_line(self, line: bytes) -> Next:
        """A read of one whole command into an empty buffer: ``_run`` without
        the copies (the buffer is the line, and it is consumed)."""
        rc = self._command(line, line)
        if rc == _DONE:
            self._auth_done()
            return _NEXT_AUTH
        if rc == _ERROR:
            self.out.append(SMTP_INTERNAL_SERVER_ERROR)
            return self._close()
        if self.quit:
            return self._close()
        if rc == _TLS:  # CVE-2014-3556
            self._tls = True
            return _NEXT_STARTTLS
        return _NEXT_READ

    def tls_started(self) -> None:
        """The STARTTLS handshake is done (nginx calls init_protocol again)."""
        self.tls = True
        self._tls = False
        self.mail_state = _ST_START
        self.action = ACTION_AUTH

    def auth_failed(self, text: bytes, error_code: bytes | None = None) -> None:
        """``<Auth-Error-Code or 535 5.7.0> <text>``; sent by the session (after Auth-Wait)."""
        self.out.append((error_code or SMTP_ERRCODE) + b" " + text + b"\r\n")

    def resume(self) -> Next:
        """After Auth-Wait: back to the start state, then handle buffered input.

        As in nginx the login stays (it shows in log lines); the password goes.
        """
        if self._closed:
            return _NEXT_CLOSE
        self._waiting = False
        self.auth = None
        self.mail_state = _ST_START
        self.auth_method = _AM_PLAIN
        self.passwd = b""
        self.action = ACTION_AUTH
        return self._run()

    def internal_error(self) -> bytes:
        return SMTP_INTERNAL_SERVER_ERROR

    def close(self) -> None:
        """Forget buffered input; every later call is a no-op."""
        self._discard()
        self._closed = True

    @property
    def buffered(self) -> int:
        """Bytes held in the command buffer (at most ``smtp_client_buffer``)."""
        return len(self._buf) if self._buf is not None else 0

    def leftover(self) -> bytes:
        """The client bytes buffered after the auth command (dropped here)."""
        rest = b""
        if self._buf is not None:
            rest = bytes(self._buf[self._pos :])
        if self._pending:
            rest += self._pending
        self._buf = None
        self._pos = 0
        self._pending = None
        return rest

    # -- the command loop (ngx_mail_smtp_auth_state) ---------------------------------------

    def _discard(self) -> None:
        self._buf = None
        self._pos = 0
        self._pending = None

    def _close(self) -> Next:
        self._discard()
        self._closed = True
        return _NEXT_CLOSE

    def _run(self) -> Next:
        limit = max(self.conf.smtp_client_buffer, 1)
        while True:
            # ngx_mail_read_command: top the buffer up, then parse one command
            pending = self._pending
            buf = self._buf
            if pending:
                room = limit - (len(buf) if buf is not None else 0)
                if room > 0:
                    if buf is None:
                        buf = self._buf = bytearray()
                    buf += pending[:room]
                    del pending[:room]
                if not pending:
                    self._pending = None
            if buf is None:
                return _NEXT_READ
            lf = buf.find(b"\n", self._pos)
            if lf < 0:
                if len(buf) < limit:
                    return _NEXT_READ
                self.logs.append((INFO, f'client sent too long command "{log_text(buf)}"'))
                self.quit = True
                self._invalid()
                return self._close()
            line = bytes(buf[self._pos : lf + 1])
            self._pos = lf + 1
            rc = self._command(line, buf)
            if rc == _DONE:
                self._auth_done()
                return _NEXT_AUTH
            if rc == _ERROR:
                self.out.append(SMTP_INTERNAL_SERVER_ERROR)
                return self._close()
            if self._pos == len(buf):
                self._buf = None
                self._pos = 0
            if self.quit:
                return self._close()
            if rc == _TLS:  # CVE-2014-3556: nothing read before the handshake survives it
                self._discard()
                self._tls = True
                return _NEXT_STARTTLS

    def _invalid(self) -> None:
        self.mail_state = _ST_START
        self.out.append(SMTP_INVALID_COMMAND)

    def _auth_done(self) -> None:
        if self._buf is not None and self._pos == len(self._buf):
            self._buf = None
            self._pos = 0
        method = self.auth_method
        none = method is _AM_NONE
        salt = self.salt if method is _AM_CRAM_MD5 else b""
        if none:
            # empty credentials (CVE-2025-53859), whatever an AUTH left behind
            self.auth = AuthRequest(
                b"", b"", method, salt, self.smtp_helo, self.smtp_from, self.smtp_to
            )
        else:
            self.auth = AuthRequest(self.login, self.passwd, method, salt)
        self._waiting = True
        self.action = ACTION_HTTP_AUTH

    def _command(self, line: bytes, buf: bytes | bytearray) -> int:
        """One command line; ``buf`` is the whole buffer (for a rejection's log line)."""
        state = self.mail_state
        parse = parse_command if self._fast else parse_command_slow
        parsed = parse(line, state is not _ST_START)
        if parsed is None:
            self.errors += 1
            if self.errors >= self.conf.max_errors:
                self.logs.append((INFO, "client sent too many invalid commands"))
                self.quit = True
            self._invalid()
            return _INVALID
        cmd, args, end = parsed
        reply = SMTP_OK
        rc = _OK
        if state is _ST_START:
            if cmd is _CMD_HELO or cmd is _CMD_EHLO:
                reply = self._helo(cmd, args)
            elif cmd is _CMD_AUTH:
                rc, reply = self._auth(args)
            elif cmd is _CMD_QUIT:
                self.quit = True
                reply = SMTP_BYE
            elif cmd is _CMD_MAIL:
                reply = self._mail(args, line[:end], buf)
            elif cmd is _CMD_RCPT:
                rc, reply = self._rcpt(args, line[:end])
            elif cmd is _CMD_RSET:
                self.smtp_from = b""
                self.smtp_to = b""
            elif cmd is _CMD_NOOP:
                pass
            elif cmd is _CMD_STARTTLS:
                rc = self._starttls()
                reply = SMTP_STARTTLS
            else:  # VRFY, EXPN, HELP: parsed, then refused (not counted as errors)
                rc = _INVALID
        elif state is _ST_AUTH_LOGIN_USERNAME:
            rc = self._login_username(args[0])
            reply = SMTP_PASSWORD
            self.mail_state = _ST_AUTH_LOGIN_PASSWORD
        elif state is _ST_AUTH_LOGIN_PASSWORD:
            rc = self._login_password(args[0])
        elif state is _ST_AUTH_PLAIN:
            rc = self._plain(args[0])
        elif state is _ST_AUTH_CRAM_MD5:
            rc = self._cram_md5(args[0])
        else:  # AUTH_EXTERNAL
            rc = self._external(args[0])
        if rc == _INVALID:
            self._invalid()
        elif rc in (_OK, _TLS):
            self.out.append(reply)
        return rc

    # -- the commands ------------------------------------------------------------------------

    def _helo(self, cmd: SmtpCommand, args: list[bytes]) -> bytes:
        if len(args) != 1:
            return SMTP_INVALID_ARGUMENT
        self.smtp_helo = args[0]
        self.smtp_from = b""
        self.smtp_to = b""
        r = replies(self.conf)
        if cmd is _CMD_HELO:
            return r.server_name
        self.esmtp = True
        if not self.tls:
            if self.conf.starttls is _STARTTLS_ON:
                return r.starttls_capability
            if self.conf.starttls is _STARTTLS_ONLY:
                return r.starttls_only_capability
        return r.capability

    def _starttls_only(self) -> bool:
        return not self.tls and self.conf.starttls is _STARTTLS_ONLY

    def _auth(self, args: list[bytes]) -> tuple[int, bytes]:
        if self._starttls_only():
            return _INVALID, b""
        if not args:
            return _OK, SMTP_INVALID_ARGUMENT
        # ngx_mail_auth_parse
        mech = args[0].upper()
        n = len(args)
        if mech == b"LOGIN":
            if n == 1:
                self.mail_state = _ST_AUTH_LOGIN_USERNAME
                return _OK, SMTP_USERNAME
            if n == 2:
                self.mail_state = _ST_AUTH_LOGIN_PASSWORD
                return self._login_username(args[1]), SMTP_PASSWORD
            return _INVALID, b""
        if mech == b"PLAIN":
            if n == 1:
                self.mail_state = _ST_AUTH_PLAIN
                return _OK, SMTP_NEXT
            if n == 2:
                return self._plain(args[1]), b""
            return _INVALID, b""
        if mech == b"CRAM-MD5":
            if n != 1 or not self.conf.smtp_auth & AUTH_CRAM_MD5_ENABLED:
                return _INVALID, b""
            if not self.salt:
                return _ERROR, b""
            self.mail_state = _ST_AUTH_CRAM_MD5
            return _OK, sasl.cram_md5_challenge(b"334 ", self.salt)
        if mech == b"EXTERNAL":
            if n == 1:
                if not self.conf.smtp_auth & AUTH_EXTERNAL_ENABLED:
                    return _INVALID, b""
                self.mail_state = _ST_AUTH_EXTERNAL
                return _OK, SMTP_USERNAME
            if n == 2:  # nginx decodes it before looking at smtp_auth
                return self._external(args[1]), b""
        return _INVALID, b""

    def _mail(self, args: list[bytes], text: bytes, buf: bytes | bytearray) -> bytes:
        if not self.conf.smtp_auth & AUTH_NONE_ENABLED:
            rejected = rejected_text(buf)
            self.logs.append((INFO, f'client was rejected: "{rejected}"'))
            return SMTP_AUTH_REQUIRED
        if self.smtp_from:
            return SMTP_BAD_SEQUENCE
        if not args:
            return SMTP_INVALID_ARGUMENT
        self.smtp_from = text
        # CVE-2025-53859: nothing left over from an AUTH attempt reaches auth_http
        self.login = b""
        self.passwd = b""
        return SMTP_OK

    def _rcpt(self, args: list[bytes], text: bytes) -> tuple[int, bytes]:
        if not self.smtp_from:
            return _OK, SMTP_BAD_SEQUENCE
        if not args:
            return _OK, SMTP_INVALID_ARGUMENT
        self.smtp_to = text
        self.auth_method = _AM_NONE
        return _DONE, b""

    def _starttls(self) -> int:
        if self.tls or self.conf.starttls is _STARTTLS_OFF:
            return _INVALID
        # RFC 3207: forget what the client said before STARTTLS
        self.smtp_helo = b""
        self.smtp_from = b""
        self.smtp_to = b""
        self.action = ACTION_STARTTLS
        return _TLS

    # -- SASL (ngx_mail_auth_plain and friends) -----------------------------------------------

    def _sasl_error(self, exc: sasl.SaslError) -> int:
        self.logs.append((INFO, str(exc)))
        return _INVALID

    def _plain(self, arg: bytes) -> int:
        try:
            self.login, self.passwd = sasl.auth_plain(arg)
        except sasl.SaslError as exc:
            return self._sasl_error(exc)
        self.auth_method = _AM_PLAIN
        return _DONE

    def _login_username(self, arg: bytes) -> int:
        try:
            self.login = sasl.auth_login_username(arg)
        except sasl.SaslError as exc:
            return self._sasl_error(exc)
        return _OK

    def _login_password(self, arg: bytes) -> int:
        try:
            self.passwd = sasl.auth_login_password(arg)
        except sasl.SaslError as exc:
            return self._sasl_error(exc)
        self.auth_method = _AM_LOGIN
        return _DONE

    def _cram_md5(self, arg: bytes) -> int:
        try:
            self.login, self.passwd = sasl.auth_cram_md5(arg)
        except sasl.SaslError as exc:
            if exc.login is not None:  # nginx stores it before it checks the digest
                self.login = exc.login
            return self._sasl_error(exc)
        self.auth_method = _AM_CRAM_MD5
        return _DONE

    def _external(self, arg: bytes) -> int:
        try:
            self.login = sasl.auth_external(arg)
        except sasl.SaslError as exc:
            return self._sasl_error(exc)
        self.passwd = b""
        self.auth_method = _AM_EXTERNAL
        return _DONE


# -- the backend side ------------------------------------------------------------------------

_EXPECT_250 = (
    SmtpState.HELO,
    SmtpState.HELO_XCLIENT,
    SmtpState.HELO_FROM,
    SmtpState.HELO_AUTH,
    SmtpState.FROM,
)
_EXPECT_2X0 = (
    SmtpState.XCLIENT,
    SmtpState.XCLIENT_FROM,
    SmtpState.XCLIENT_HELO,
    SmtpState.XCLIENT_AUTH,
)
_LOGGED_IN = (SmtpState.HELO, SmtpState.XCLIENT, SmtpState.AUTH_PLAIN, SmtpState.TO)


class SmtpUpstream:
    """The SMTP backend login (``ngx_mail_proxy_smtp_handler``), sans-IO.

    ``passwd`` is the password for ``proxy_smtp_auth``: Auth-Pass when the auth
    server sent one, else the client's password after AUTH PLAIN/LOGIN, else
    None (nginx holds none after CRAM-MD5, EXTERNAL and ``none``).
    ``client_addr`` is the Client-IP text (after realip), ``client_host`` the
    Client-Host value (a checked name, ``[UNAVAILABLE]`` or ``[TEMPUNAVAIL]``).
    """

    __slots__ = (
        "_buf",
        "_conf",
        "_done",
        "_esmtp",
        "_from",
        "_helo",
        "_login",
        "_none",
        "_passwd",
        "_pending",
        "_to",
        "action",
        "addr",
        "host",
        "logs",
        "state",
        "to_client",
        "to_upstream",
    )

    def __init__(
        self,
        conf: ServerConf,
        machine: SmtpMachine,
        login: bytes,
        passwd: bytes | None,
        client_addr: str,
        client_host: bytes,
    ) -> None:
        self._conf = conf
        self._login = login
        self._passwd = passwd
        self._esmtp = machine.esmtp
        self._helo = machine.smtp_helo
        self._none = machine.auth_method is _AM_NONE
        self._from = machine.smtp_from
        self._to = machine.smtp_to
        self.addr = client_addr
        if client_host not in (UNAVAILABLE, TEMPUNAVAIL) and not valid_host(client_host):
            client_host = TEMPUNAVAIL  # never let a bad name reach XCLIENT
        self.host = client_host
        self.state = _ST_START
        self.action = ACTION_CONNECTING
        self.to_upstream: list[bytes] = []
        self.to_client: list[bytes] = []
        self.logs: list[tuple[int, str]] = []
        self._buf: bytearray | None = None  # the proxy buffer, start..last
        self._pending: bytearray | None = None
        self._done: UpNext | None = None

    def receive(self, data: bytes) -> UpNext:
        if self._done is not None:
            return self._done
        size = max(self._conf.proxy_buffer, 1)
        if (
            self._buf is None
            and self._pending is None
            and 4 <= len(data) <= size
            and data[-2:] == b"\r\n"
            and self._fast
        ):
            # the common case: one whole reply in one read, no copy
            self.action = ACTION_READING
            rc = self._read_response(data, size)
            if rc is None:  # the first lines of a multi-line reply
                self._buf = bytearray(data)
                return _UP_READ
            if rc is _UP_FAIL:
                return rc
            return self._step(data)
        if data:
            if self._pending is None:
                self._pending = bytearray(data)
            else:
                self._pending += data
        while self._pending:
            buf = self._buf
            if buf is None:
                buf = self._buf = bytearray()
            room = size - len(buf)
            if room <= 0:  # recv() into a full buffer returns 0: nginx's upstream error
                return self._fail(None)
            pending = self._pending
            buf += pending[:room]
            del pending[:room]
            if not pending:
                self._pending = None
            self.action = ACTION_READING
            rc = self._read_response(buf, size)
            if rc is None:
                continue
            if rc is _UP_FAIL:
                return rc
            nxt = self._step(buf)
            if nxt is not _UP_READ:
                return nxt
            self._buf = None
        return _UP_READ

    # False in a test subclass: every reply goes through the buffer loop
    _fast = True

    # ngx_mail_proxy_read_response, SMTP part: None means "read more"
    def _read_response(self, b: bytes | bytearray, size: int) -> UpNext | None:
        last = len(b)
        if last < 4:
            return None
        if b[last - 2] != 0x0D or b[last - 1] != 0x0A:
            if last == size:
                line = c_string(b[: last - 1])
                self.logs.append((ERR, f'upstream sent too long response line: "{line}"'))
                return self._fail(None)
            return None
        if b[3] == 0x2D:  # '-': a multi-line reply, wait for its last line
            # the last CRLF at 1 <= m <= last - 7: where the last line starts
            m = b.rfind(b"\r\n", 1, last - 5)
            if m <= 0 or b[m + 5] == 0x2D:
                return None
        state = self.state
        code = bytes(b[:3])
        if state is _ST_TO:
            return _UP_READ
        if state is _ST_START:
            good = code == b"220"
        elif state in _EXPECT_250:
            good = code == b"250"
        elif state in _EXPECT_2X0:
            good = code in (b"220", b"250")
        else:  # AUTH_PLAIN
            good = code == b"235"
        if good:
            return _UP_READ
        if not self._conf.proxy_pass_error_message:
            line = c_string(b[: last - 2])
            self.logs.append((ERR, f'upstream sent invalid response: "{line}"'))
            return self._fail(None)
        relayed = log_text(b[: last - 2])
        self.logs.append((INFO, f'upstream sent invalid response: "{relayed}"'))
        return self._fail(bytes(b))

    def _fail(self, relay: bytes | None) -> UpNext:
        self.to_client.append(SMTP_INTERNAL_SERVER_ERROR if relay is None else relay)
        self._done = _UP_FAIL
        self._buf = None
        self._pending = None
        return _UP_FAIL

    def _next_after_helo(self) -> SmtpState:
        if self._none:
            return _ST_HELO_FROM
        if self._conf.proxy_smtp_auth:
            return _ST_HELO_AUTH
        return _ST_HELO

    def _step(self, buf: bytes | bytearray) -> UpNext:
        """The backend's reply was good: send the next command, or finish."""
        conf = self._conf
        state = self.state
        if state is _ST_START:
            self.action = "sending HELO/EHLO to upstream"
            verb = b"EHLO " if self._esmtp or conf.xclient else b"HELO "
            line = verb + _b(conf.server_name) + b"\r\n"
            self.state = _ST_HELO_XCLIENT if conf.xclient else self._next_after_helo()
        elif state is _ST_HELO_XCLIENT:
            self.action = "sending XCLIENT to upstream"
            addr = self.addr
            v6 = ":" in addr and not addr.startswith("unix:")
            line = b"XCLIENT ADDR=" + (b"IPV6:" if v6 else b"") + _b(addr)
            if self._login and not conf.proxy_smtp_auth:
                line += b" LOGIN=" + xtext(self._login)
            line += b" NAME=" + self.host + b"\r\n"
            if self._helo:
                self.state = _ST_XCLIENT_HELO
            elif self._none:
                self.state = _ST_XCLIENT_FROM
            elif conf.proxy_smtp_auth:
                self.state = _ST_XCLIENT_AUTH
            else:
                self.state = _ST_XCLIENT
        elif state is _ST_XCLIENT_HELO:
            self.action = "sending client HELO/EHLO to upstream"
            line = (b"EHLO " if self._esmtp else b"HELO ") + self._helo + b"\r\n"
            self.state = self._next_after_helo()
        elif state is _ST_HELO_AUTH or state is _ST_XCLIENT_AUTH:
            self.action = "sending AUTH to upstream"
            if self._passwd is None:
                self.logs.append((ERR, "no password available"))
                return self._fail(None)
            auth = b"\0" + self._login + b"\0" + self._passwd
            line = b"AUTH PLAIN " + sasl.encode_base64(auth) + b"\r\n"
            self.state = _ST_AUTH_PLAIN
        elif state is _ST_HELO_FROM or state is _ST_XCLIENT_FROM:
            self.action = "sending MAIL FROM to upstream"
            line = self._from + b"\r\n"
            self.state = _ST_FROM
        elif state is _ST_FROM:
            self.action = "sending RCPT TO to upstream"
            line = self._to + b"\r\n"
            self.state = _ST_TO
        else:  # HELO, XCLIENT, AUTH_PLAIN, TO: logged in
            assert state in _LOGGED_IN
            self.action = ""
            # nginx relays the backend's RCPT reply for "none", else says 235 itself;
            # bytes still unread (in the kernel for nginx) follow
            self.to_client.append(bytes(buf) if self._none else SMTP_AUTH_OK)
            if self._pending:
                self.to_client.append(bytes(self._pending))
            self._buf = None
            self._pending = None
            self._done = _UP_DONE
            return _UP_DONE
        self.to_upstream.append(line)
        return _UP_READ
