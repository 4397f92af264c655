"""SmtpMachine: every reply and error path, byte-exact with nginx's SMTP handler.

Each scenario runs twice, the input fed whole and byte by byte, and both runs
must give the same replies, log lines, outcome and state.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

import mailfront.protocol.smtp as smtp_module
from mailfront.conf.model import (
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_NONE_ENABLED,
    AUTH_PLAIN_ENABLED,
    AuthMethod,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.protocol.base import INFO, Next
from mailfront.protocol.smtp import (
    SMTP_INTERNAL_SERVER_ERROR,
    SmtpCommand,
    SmtpMachine,
    SmtpReplies,
    SmtpState,
    parse_command,
    valid_host,
    xtext,
)
from support.machines import server_conf
from support.noio import top_levels

SALT = b"<1234567890.1700000000@mx.example>\r\n"
DEFAULT_AUTH = AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED
EHLO_DEFAULT = b"250-mx.example\r\n250 AUTH PLAIN LOGIN\r\n"
OK = b"250 2.0.0 OK\r\n"
INVALID = b"500 5.5.1 Invalid command\r\n"
ARGUMENT = b"501 5.5.4 Invalid argument\r\n"
SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def make_conf(**kw: object) -> ServerConf:
    kw.setdefault("server_name", "mx.example")
    return server_conf(Protocol.SMTP, **kw)


@dataclass
class Run:
    machine: SmtpMachine
    out: bytes
    logs: list[tuple[int, str]]
    nxt: Next
    nexts: list[Next] = field(default_factory=list)

    @property
    def auth(self):  # type: ignore[no-untyped-def]
        assert self.machine.auth is not None
        return self.machine.auth


def _feed(m: SmtpMachine, chunks: list[bytes]) -> Run:
    nxt = Next.READ
    for i, chunk in enumerate(chunks):
        nxt = m.receive(chunk)
        if nxt in (Next.STARTTLS, Next.AUTH):  # a session stops reading here
            waiting = nxt
            for rest in chunks[i + 1 :]:  # kept for later (AUTH) or dropped (STARTTLS)
                assert m.receive(rest) is Next.READ
            nxt = waiting
            break
    out = b"".join(m.out)
    logs = list(m.logs)
    m.out.clear()
    m.logs.clear()
    return Run(m, out, logs, nxt)


def _state(m: SmtpMachine) -> tuple[object, ...]:
    auth = m.auth
    a = None
    if auth is not None:
        a = (
            auth.login,
            auth.passwd,
            auth.method,
            auth.salt,
            auth.helo,
            auth.smtp_from,
            auth.smtp_to,
        )
    return (
        m.mail_state,
        m.login,
        m.passwd,
        m.errors,
        m.smtp_helo,
        m.smtp_from,
        m.smtp_to,
        m.esmtp,
        m.action,
        a,
    )


def _buffered(m: SmtpMachine) -> bytes:
    return bytes((m._buf or b"")[m._pos :]) + bytes(m._pending or b"")


def run(
    data: bytes,
    conf: ServerConf | None = None,
    tls: bool = False,
    salt: bytes = SALT,
    same_logs: bool = True,
) -> Run:
    """Feed ``data`` whole and byte by byte; both must agree.  Returns the whole run.

    ``same_logs=False``: nginx's "client was rejected" line shows its whole
    buffer, so it depends on how the input arrived.
    """
    conf = conf or make_conf()
    runs = []
    for split in (False, True):
        m = SmtpMachine(conf, salt, tls)
        assert m.greeting() == b"220 mx.example ESMTP ready\r\n"
        chunks = [data[i : i + 1] for i in range(len(data))] if split else [data]
        runs.append(_feed(m, chunks))
    whole, split_run = runs
    assert whole.out == split_run.out
    if same_logs:
        assert whole.logs == split_run.logs
    else:
        assert [level for level, _ in whole.logs] == [level for level, _ in split_run.logs]
    assert whole.nxt == split_run.nxt
    assert _state(whole.machine) == _state(split_run.machine)
    assert _buffered(whole.machine) == _buffered(split_run.machine)
    return whole


# -- parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"NOOP\r\n", (SmtpCommand.NOOP, [], 4)),
        (b"noop\n", (SmtpCommand.NOOP, [], 4)),
        (b"StartTLS\r\n", (SmtpCommand.STARTTLS, [], 8)),
        (b"MAIL FROM:<a@b> SIZE=1  \r\n", (SmtpCommand.MAIL, [b"FROM:<a@b>", b"SIZE=1"], 22)),
        (b"HELO   x\r\n", (SmtpCommand.HELO, [b"x"], 8)),
        (b"EHLO a\0b\r\n", (SmtpCommand.EHLO, [b"a\0b"], 8)),
        (b"AUTH " + b"a " * 11 + b"\r\n", (SmtpCommand.AUTH, [b"a"] * 11, 26)),
        (b"AUTH " + b"a " * 12 + b"\r\n", None),
        (b"DATA\r\n", None),
        (b"NOOPS\r\n", None),
        (b"NOO\r\n", None),
        (b"NO0P\r\n", None),
        (b" NOOP\r\n", None),
        (b"\r\n", None),
        (b"\n", None),
        (b"NOOP\r\r\n", None),
        (b"NOOP x\ry\r\n", None),
        (b"STARTTLX\r\n", None),
        (b"HELO\t x\r\n", None),
    ],
)
def test_parse_command(line: bytes, expected: object) -> None:
    assert parse_command(line, False) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"dXNlcg==\r\n", (None, [b"dXNlcg=="], 8)),
        (b"\r\n", (None, [b""], 0)),
        (b"\n", (None, [b""], 0)),
        (b" abc\r\n", (None, [b"", b"abc"], 4)),
        (b"a b c\r\n", (None, [b"a", b"b", b"c"], 5)),
        (b"a\rb\n", None),
        (b"a" + b" a" * 11 + b"\r\n", None),
    ],
)
def test_parse_command_argument_mode(line: bytes, expected: object) -> None:
    assert parse_command(line, True) == expected


# -- greeting, HELO, EHLO ---------------------------------------------------------------------


def test_greeting_and_action() -> None:
    m = SmtpMachine(make_conf())
    assert m.action == "sending client greeting line"
    assert m.greeting() == b"220 mx.example ESMTP ready\r\n"
    assert m.action == "in auth state"
    assert not SmtpMachine.needs_salt(make_conf())
    assert SmtpMachine.needs_salt(make_conf(smtp_auth=AUTH_CRAM_MD5_ENABLED))


def test_helo() -> None:
    r = run(b"HELO client.example\r\n")
    assert r.out == b"250 mx.example\r\n"
    assert r.machine.smtp_helo == b"client.example"
    assert not r.machine.esmtp


@pytest.mark.parametrize("line", [b"HELO\r\n", b"HELO a b\r\n", b"EHLO\r\n", b"EHLO a b\r\n"])
def test_helo_arguments(line: bytes) -> None:
    r = run(line)
    assert r.out == ARGUMENT
    assert r.machine.errors == 0
    assert r.machine.smtp_helo == b""


def test_ehlo_default() -> None:
    r = run(b"EHLO client.example\r\n")
    assert r.out == EHLO_DEFAULT
    assert r.machine.esmtp


def test_ehlo_then_helo_keeps_esmtp() -> None:
    r = run(b"EHLO a\r\nHELO b\r\n")
    assert r.out == EHLO_DEFAULT + b"250 mx.example\r\n"
    assert r.machine.esmtp and r.machine.smtp_helo == b"b"


CAPS = ("SIZE 10485760", "PIPELINING", "8BITMIME")


@pytest.mark.parametrize(
    ("auth", "caps", "starttls", "tls", "expected"),
    [
        (
            DEFAULT_AUTH,
            CAPS,
            Starttls.OFF,
            False,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            b"250 AUTH PLAIN LOGIN\r\n",
        ),
        (
            DEFAULT_AUTH,
            CAPS,
            Starttls.ON,
            False,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            b"250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
        ),
        (
            DEFAULT_AUTH,
            CAPS,
            Starttls.ONLY,
            False,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            b"250 STARTTLS\r\n",
        ),
        (
            DEFAULT_AUTH,
            CAPS,
            Starttls.ONLY,
            True,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            b"250 AUTH PLAIN LOGIN\r\n",
        ),
        (
            DEFAULT_AUTH,
            (),
            Starttls.ON,
            False,
            b"250-mx.example\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
        ),
        (DEFAULT_AUTH, (), Starttls.ONLY, False, b"250-mx.example\r\n250 STARTTLS\r\n"),
        (
            AUTH_NONE_ENABLED,
            CAPS,
            Starttls.OFF,
            False,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        ),
        (
            AUTH_NONE_ENABLED,
            CAPS,
            Starttls.ON,
            False,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            b"250 STARTTLS\r\n",
        ),
        (
            AUTH_NONE_ENABLED,
            CAPS,
            Starttls.ONLY,
            False,
            b"250-mx.example\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            b"250 STARTTLS\r\n",
        ),
        (AUTH_NONE_ENABLED, (), Starttls.OFF, False, b"250 mx.example\r\n"),
        (AUTH_NONE_ENABLED, (), Starttls.ON, False, b"250-mx.example\r\n250 STARTTLS\r\n"),
        (
            AUTH_PLAIN_ENABLED
            | AUTH_LOGIN_ENABLED
            | AUTH_CRAM_MD5_ENABLED
            | AUTH_EXTERNAL_ENABLED
            | AUTH_NONE_ENABLED,
            (),
            Starttls.OFF,
            False,
            b"250-mx.example\r\n250 AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n",
        ),
        (
            AUTH_EXTERNAL_ENABLED | AUTH_CRAM_MD5_ENABLED,
            (),
            Starttls.OFF,
            False,
            b"250-mx.example\r\n250 AUTH CRAM-MD5 EXTERNAL\r\n",
        ),
        (AUTH_LOGIN_ENABLED, (), Starttls.OFF, False, b"250-mx.example\r\n250 AUTH LOGIN\r\n"),
    ],
)
def test_ehlo_capabilities(
    auth: int, caps: tuple[str, ...], starttls: Starttls, tls: bool, expected: bytes
) -> None:
    conf = make_conf(smtp_auth=auth, smtp_capabilities=caps, starttls=starttls)
    assert run(b"EHLO x\r\n", conf, tls=tls).out == expected


def test_replies_built_once_per_conf() -> None:
    conf = make_conf()
    assert smtp_module.replies(conf) is smtp_module.replies(conf)
    r = SmtpReplies(make_conf(server_name=""))
    assert r.greeting == b"220  ESMTP ready\r\n"
    assert r.server_name == b"250 \r\n"


# -- simple commands --------------------------------------------------------------------------


def test_noop_rset() -> None:
    r = run(b"NOOP\r\nRSET\r\nnoop x y\r\nrset\n")
    assert r.out == OK * 4
    assert r.nxt is Next.READ


def test_quit_closes_and_ignores_the_rest() -> None:
    r = run(b"QUIT\r\nNOOP\r\n")
    assert r.out == b"221 2.0.0 Bye\r\n"
    assert r.nxt is Next.CLOSE
    assert r.machine.receive(b"NOOP\r\n") is Next.CLOSE
    assert r.machine.out == []


def test_pipelining_and_split_command() -> None:
    r = run(b"HEL")
    assert r.out == b"" and r.nxt is Next.READ
    r = run(b"EHLO a\r\nNOOP\r\nRSET\r\nHELO b\r\n")
    assert r.out == EHLO_DEFAULT + OK + OK + b"250 mx.example\r\n"


@pytest.mark.parametrize(
    "line",
    [
        b"DATA\r\n",
        b"FOO bar\r\n",
        b"\r\n",
        b"NOOP\r\r\n",
        b"NOOPX\r\n",
        b"N00P\r\n",
        b" NOOP\r\n",
        b"AUTH" + b" x" * 12 + b"\r\n",
        b"STARTTLSX\r\n",
    ],
)
def test_invalid_commands_are_counted(line: bytes) -> None:
    r = run(line)
    assert r.out == INVALID
    assert r.machine.errors == 1
    assert r.logs == []
    assert r.nxt is Next.READ


@pytest.mark.parametrize("verb", [b"VRFY", b"EXPN", b"HELP", b"vrfy"])
def test_known_but_refused_commands_are_not_counted(verb: bytes) -> None:
    r = run(verb + b" x\r\n" + verb + b"\r\n", make_conf(max_errors=1))
    assert r.out == INVALID * 2
    assert r.machine.errors == 0
    assert r.nxt is Next.READ


def test_max_errors() -> None:
    r = run(b"DATA\r\nDATA\r\nDATA\r\nNOOP\r\n", make_conf(max_errors=3))
    assert r.out == INVALID * 3
    assert r.logs == [(INFO, "client sent too many invalid commands")]
    assert r.nxt is Next.CLOSE


def test_invalid_command_skips_to_lf() -> None:
    r = run(b"DATA \x00\xff\r\rjunk\nNOOP\r\n")
    assert r.out == INVALID + OK


# -- command buffer ---------------------------------------------------------------------------


def test_too_long_command() -> None:
    conf = make_conf(smtp_client_buffer=16)
    r = run(b"EHLO " + b"x" * 20 + b"\r\n", conf)
    assert r.out == INVALID
    assert r.logs == [(INFO, 'client sent too long command "EHLO xxxxxxxxxxx"')]
    assert r.nxt is Next.CLOSE
    assert r.machine.errors == 0


def test_command_filling_the_buffer_exactly() -> None:
    conf = make_conf(smtp_client_buffer=16)
    r = run(b"HELO 0123456789\r\n", conf)  # 17 bytes: the LF does not fit
    assert r.nxt is Next.CLOSE
    r = run(b"HELO 012345678\r\n", conf)  # 16 bytes
    assert r.out == b"250 mx.example\r\n"


def test_pipelined_batch_beyond_buffer_depends_on_arrival() -> None:
    """nginx never compacts its buffer: a batch read at once must fit in it whole."""
    conf = make_conf(smtp_client_buffer=10)
    m = SmtpMachine(conf)
    m.greeting()
    assert m.receive(b"NOOP\r\nNOOP\r\n") is Next.CLOSE
    assert m.out == [OK, INVALID]
    assert m.logs == [(INFO, 'client sent too long command "NOOP\r\nNOOP"')]
    m = SmtpMachine(conf)
    m.greeting()
    assert m.receive(b"NOOP\r\n") is Next.READ
    assert m.receive(b"NOOP\r\n") is Next.READ
    assert m.out == [OK, OK]


def test_buffer_is_released_when_consumed() -> None:
    m = SmtpMachine(make_conf())
    m.greeting()
    m.receive(b"NOOP\r\nNO")
    assert m._buf == bytearray(b"NOOP\r\nNO")
    m.receive(b"OP\r\n")
    assert m._buf is None and m._pending is None


# -- greeting delay ---------------------------------------------------------------------------


def test_early_input() -> None:
    m = SmtpMachine(make_conf(smtp_client_buffer=12))
    assert m.early_input(b"EHLO x\r\nMAIL FROM:<a>\r\n") is None
    assert m.out == [b"503 5.5.0 Improper use of SMTP command pipelining\r\n"]
    assert m.logs == [(INFO, 'client was rejected before greeting: "EHLO x__MAIL"')]
    assert m.action == "in delay pipelining state"
    assert m.receive(b"NOOP\r\n") is Next.CLOSE


def test_early_eof() -> None:
    m = SmtpMachine(make_conf())
    m.early_input(b"")
    assert m.out == [] and m.logs == []
    assert m.receive(b"x") is Next.CLOSE


# -- AUTH --------------------------------------------------------------------------------------


def test_auth_without_mechanism() -> None:
    r = run(b"AUTH\r\nNOOP\r\n")
    assert r.out == ARGUMENT + OK
    assert r.machine.errors == 0


@pytest.mark.parametrize(
    "line",
    [
        b"AUTH FOO\r\n",
        b"AUTH DIGEST-MD5\r\n",
        b"AUTH CRAM-MD5\r\n",
        b"AUTH EXTERNAL\r\n",
        b"AUTH LOGIN a b\r\n",
        b"AUTH PLAIN a b\r\n",
        b"AUTH LOGINX\r\n",
        b"AUTH EXTERNAL a b\r\n",
    ],
)
def test_auth_unknown_or_disabled(line: bytes) -> None:
    r = run(line + b"NOOP\r\n", make_conf(max_errors=1))
    assert r.out == INVALID + OK
    assert r.machine.errors == 0
    assert r.machine.mail_state is SmtpState.START


def test_auth_plain_initial_response() -> None:
    r = run(b"EHLO a\r\nAUTH PLAIN " + b64(b"authz\0user\0pass") + b"\r\n")
    assert r.out == EHLO_DEFAULT
    assert r.nxt is Next.AUTH
    assert (r.auth.login, r.auth.passwd, r.auth.method) == (b"user", b"pass", AuthMethod.PLAIN)
    assert (r.auth.salt, r.auth.helo, r.auth.smtp_from, r.auth.smtp_to) == (b"", b"", b"", b"")
    assert r.machine.login == b"user"
    assert r.machine.action == "in http auth state"


def test_auth_plain_prompt() -> None:
    r = run(b"auth plain\r\n" + b64(b"\0user\0pass") + b"\r\n")
    assert r.out == b"334 \r\n"
    assert r.nxt is Next.AUTH
    assert (r.auth.login, r.auth.passwd) == (b"user", b"pass")


@pytest.mark.parametrize(
    ("response", "log"),
    [
        (b"*", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b"=", "client sent invalid login in AUTH PLAIN command"),
        (b"", "client sent invalid login in AUTH PLAIN command"),
        (b64(b"user"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0user"), "client sent invalid password in AUTH PLAIN command"),
    ],
)
def test_auth_plain_errors(response: bytes, log: str) -> None:
    for data in (b"AUTH PLAIN " + response + b"\r\n", b"AUTH PLAIN\r\n" + response + b"\r\n"):
        if not response and data.startswith(b"AUTH PLAIN \r"):
            continue  # "AUTH PLAIN " has no second argument
        r = run(data + b"NOOP\r\n", make_conf(max_errors=1))
        assert r.out.endswith(INVALID + OK)
        assert r.logs == [(INFO, log)]
        assert r.machine.errors == 0
        assert r.nxt is Next.READ


def test_auth_login_two_steps() -> None:
    r = run(b"AUTH LOGIN\r\n" + b64(b"user") + b"\r\n" + b64(b"pass") + b"\r\nNOOP\r\n")
    assert r.out == b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
    assert r.nxt is Next.AUTH
    assert (r.auth.login, r.auth.passwd, r.auth.method) == (b"user", b"pass", AuthMethod.LOGIN)
    assert r.machine.leftover() == b"NOOP\r\n"


def test_auth_login_initial_username() -> None:
    r = run(b"AUTH LOGIN " + b64(b"user") + b"\r\n" + b64(b"pass") + b"\r\n")
    assert r.out == b"334 UGFzc3dvcmQ6\r\n"
    assert (r.auth.login, r.auth.passwd) == (b"user", b"pass")


def test_auth_login_empty_username() -> None:
    r = run(b"AUTH LOGIN =\r\n=\r\n")
    assert r.out == b"334 UGFzc3dvcmQ6\r\n"
    assert (r.auth.login, r.auth.passwd) == (b"", b"")


def test_auth_login_bad_base64() -> None:
    log = [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]
    r = run(b"AUTH LOGIN *\r\nNOOP\r\n")
    assert (r.out, r.logs) == (INVALID + OK, log)
    r = run(b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
    assert (r.out, r.logs) == (b"334 VXNlcm5hbWU6\r\n" + INVALID + OK, log)
    r = run(b"AUTH LOGIN\r\ndXNlcg==\r\nab=c d\r\nQUIT\r\n")  # "ab=c" decodes to "i"
    assert r.nxt is Next.AUTH and r.auth.passwd == b"i"
    r = run(b"AUTH LOGIN\r\ndXNlcg==\r\na\r\nNOOP\r\n")
    assert (r.out, r.logs) == (b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n" + INVALID + OK, log)
    assert r.machine.errors == 0


def test_auth_response_lines_are_not_commands() -> None:
    """After a prompt the next line is an argument even if it looks like a command."""
    r = run(b"AUTH LOGIN\r\nQUIT\r\nNOOP\r\n")
    assert r.out == b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
    assert r.nxt is Next.AUTH
    assert r.auth.login == base64.b64decode(b"QUIT")


def test_auth_cram_md5() -> None:
    conf = make_conf(smtp_auth=AUTH_CRAM_MD5_ENABLED)
    digest = b"0123456789abcdef0123456789abcdef"
    r = run(b"AUTH CRAM-MD5\r\n" + b64(b"user " + digest) + b"\r\n", conf)
    assert r.out == b"334 " + b64(SALT[:-2]) + b"\r\n"
    assert r.nxt is Next.AUTH
    assert (r.auth.login, r.auth.passwd, r.auth.method) == (b"user", digest, AuthMethod.CRAM_MD5)
    assert r.auth.salt == SALT


def test_auth_cram_md5_errors() -> None:
    conf = make_conf(smtp_auth=AUTH_CRAM_MD5_ENABLED)
    r = run(b"AUTH CRAM-MD5\r\n" + b64(b"user short") + b"\r\nNOOP\r\n", conf)
    assert r.out.endswith(INVALID + OK)
    assert r.logs == [(INFO, "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command")]
    assert r.machine.login == b"user"  # nginx keeps what it decoded
    r = run(b"AUTH CRAM-MD5\r\n" + b64(b"x" * 40) + b"\r\n", conf)
    assert r.logs == [(INFO, "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command")]
    assert r.machine.login == b"x" * 40
    r = run(b"AUTH CRAM-MD5\r\n!!\r\n", conf)
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH CRAM-MD5 command")]
    assert r.machine.mail_state is SmtpState.START


def test_auth_cram_md5_without_salt_is_an_internal_error() -> None:
    r = run(b"AUTH CRAM-MD5\r\n", make_conf(smtp_auth=AUTH_CRAM_MD5_ENABLED), salt=b"")
    assert r.out == SMTP_INTERNAL_SERVER_ERROR
    assert r.nxt is Next.CLOSE


def test_auth_external() -> None:
    conf = make_conf(smtp_auth=AUTH_EXTERNAL_ENABLED)
    r = run(b"AUTH EXTERNAL\r\n" + b64(b"user") + b"\r\n", conf)
    assert r.out == b"334 VXNlcm5hbWU6\r\n"
    assert (r.auth.login, r.auth.passwd, r.auth.method) == (b"user", b"", AuthMethod.EXTERNAL)
    r = run(b"AUTH EXTERNAL =\r\n", conf)
    assert r.nxt is Next.AUTH and r.auth.login == b""
    r = run(b"AUTH EXTERNAL\r\n*\r\n", conf)
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH EXTERNAL command")]


def test_auth_external_initial_response_skips_the_smtp_auth_check() -> None:
    """nginx decodes ``AUTH EXTERNAL <ir>`` in ngx_mail_auth_parse, before smtp_auth."""
    r = run(b"AUTH EXTERNAL " + b64(b"user") + b"\r\n")
    assert r.nxt is Next.AUTH
    assert r.auth.method is AuthMethod.EXTERNAL


def test_auth_refused_with_starttls_only() -> None:
    conf = make_conf(starttls=Starttls.ONLY)
    r = run(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n", conf)
    assert (r.out, r.machine.errors) == (INVALID, 0)
    r = run(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n", conf, tls=True)
    assert r.nxt is Next.AUTH


def test_receive_while_auth_pending_only_buffers() -> None:
    m = SmtpMachine(make_conf())
    m.greeting()
    assert m.receive(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\nNOOP\r\n") is Next.AUTH
    assert m.receive(b"RSET\r\n") is Next.READ
    assert m.out == []
    assert m.buffered == 27  # the command buffer; RSET waits outside it
    assert m.leftover() == b"NOOP\r\nRSET\r\n"
    assert m.leftover() == b""


def test_auth_failed_and_resume() -> None:
    data = b"AUTH PLAIN " + b64(b"\0u\0bad") + b"\r\nNOOP\r\nAUTH PLAIN " + b64(b"\0u\0ok")
    r = run(data + b"\r\n")
    m = r.machine
    m.auth_failed(b"Invalid login or password", None)
    assert m.out == [b"535 5.7.0 Invalid login or password\r\n"]
    m.out.clear()
    assert m.resume() is Next.AUTH
    assert m.out == [OK]
    assert m.auth is not None and m.auth.passwd == b"ok"
    assert m.action == "in http auth state"


def test_auth_failed_error_code_and_resume_state() -> None:
    r = run(b"AUTH LOGIN\r\n" + b64(b"u") + b"\r\n" + b64(b"p") + b"\r\n")
    m = r.machine
    m.auth_failed(b"Try later", b"451 4.7.0")
    assert m.out == [b"451 4.7.0 Try later\r\n"]
    m.out.clear()
    assert m.resume() is Next.READ
    assert (m.mail_state, m.auth_method, m.login, m.passwd) == (
        SmtpState.START,
        AuthMethod.PLAIN,
        b"u",
        b"",
    )
    assert m.action == "in auth state"
    assert m.auth is None
    assert m.receive(b"NOOP\r\n") is Next.READ and m.out == [OK]


def test_internal_error() -> None:
    assert SmtpMachine(make_conf()).internal_error() == b"451 4.3.2 Internal server error\r\n"


# -- MAIL, RCPT, smtp_auth none ----------------------------------------------------------------


def test_mail_requires_auth() -> None:
    r = run(
        b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", make_conf(max_errors=1), same_logs=False
    )
    assert r.out == EHLO_DEFAULT + b"530 5.7.1 Authentication required\r\n" + SEQUENCE
    # nginx logs its whole buffer, with CR and LF as "_"
    assert r.logs == [(INFO, 'client was rejected: "EHLO a__MAIL FROM:<a@b>__RCPT TO:<c@d>__"')]
    assert r.machine.errors == 0


def test_mail_rejection_log_per_packet() -> None:
    m = SmtpMachine(make_conf())
    m.greeting()
    m.receive(b"EHLO a\r\n")
    m.receive(b"MAIL FROM:<a@b>\r\n")
    assert m.logs == [(INFO, 'client was rejected: "MAIL FROM:<a@b>__"')]


NONE = make_conf(smtp_auth=AUTH_NONE_ENABLED | DEFAULT_AUTH)


def test_none_mail_rcpt() -> None:
    r = run(
        b"EHLO client\r\nMAIL FROM:<a@b> SIZE=10  \r\nRCPT  TO:<c@d> NOTIFY=NEVER\r\nDATA\r\n", NONE
    )
    assert r.out == EHLO_DEFAULT + OK
    assert r.nxt is Next.AUTH
    a = r.auth
    assert (a.login, a.passwd, a.method) == (b"", b"", AuthMethod.NONE)
    assert (a.helo, a.smtp_from, a.smtp_to) == (
        b"client",
        b"MAIL FROM:<a@b> SIZE=10",
        b"RCPT  TO:<c@d> NOTIFY=NEVER",
    )
    assert r.machine.leftover() == b"DATA\r\n"


def test_none_sequence_errors() -> None:
    r = run(b"RCPT TO:<c@d>\r\nMAIL\r\nMAIL FROM:<a>\r\nMAIL FROM:<b>\r\nRCPT\r\n", NONE)
    assert r.out == SEQUENCE + ARGUMENT + OK + SEQUENCE + ARGUMENT
    assert r.machine.errors == 0
    assert r.machine.smtp_from == b"MAIL FROM:<a>"
    assert r.logs == []


def test_none_rset_and_helo_clear_mail() -> None:
    r = run(
        b"MAIL FROM:<a>\r\nRSET\r\nRCPT TO:<c>\r\nMAIL FROM:<b>\r\nHELO x\r\nRCPT TO:<c>\r\n", NONE
    )
    assert r.out == OK + OK + SEQUENCE + OK + b"250 mx.example\r\n" + SEQUENCE


def test_none_mail_clears_stale_credentials() -> None:
    """CVE-2025-53859: an unfinished AUTH must not leak into the "none" request."""
    r = run(b"AUTH LOGIN\r\n" + b64(b"victim") + b"\r\n*\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\n", NONE)
    assert r.nxt is Next.AUTH
    assert (r.auth.login, r.auth.passwd, r.auth.method) == (b"", b"", AuthMethod.NONE)


def test_none_after_failed_auth_sends_empty_credentials() -> None:
    r = run(b"MAIL FROM:<a>\r\n" + b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\nRCPT TO:<b>\r\n", NONE)
    m = r.machine
    m.auth_failed(b"no", None)
    assert m.resume() is Next.AUTH
    assert m.auth is not None
    assert (m.auth.login, m.auth.passwd, m.auth.method) == (b"", b"", AuthMethod.NONE)
    assert m.auth.smtp_from == b"MAIL FROM:<a>"  # nginx keeps MAIL across the retry
    assert m.login == b"u"  # still in the log suffix, as in nginx


def test_none_auth_still_possible() -> None:
    r = run(b"MAIL FROM:<a>\r\nAUTH PLAIN " + b64(b"\0u\0p") + b"\r\n", NONE)
    assert r.nxt is Next.AUTH
    assert r.auth.method is AuthMethod.PLAIN
    assert (r.auth.helo, r.auth.smtp_from, r.auth.smtp_to) == (b"", b"", b"")


def test_none_with_starttls_only_is_not_refused() -> None:
    conf = make_conf(smtp_auth=AUTH_NONE_ENABLED, starttls=Starttls.ONLY)
    r = run(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\n", conf)
    assert r.nxt is Next.AUTH


# -- STARTTLS ------------------------------------------------------------------------------------


def test_starttls_off() -> None:
    r = run(b"STARTTLS\r\n")
    assert (r.out, r.machine.errors, r.nxt) == (INVALID, 0, Next.READ)


def test_starttls_discards_pipelined_input() -> None:
    """CVE-2014-3556: commands sent with STARTTLS are dropped, HELO/MAIL/RCPT forgotten."""
    conf = make_conf(starttls=Starttls.ON, smtp_auth=AUTH_NONE_ENABLED)
    r = run(b"EHLO a\r\nMAIL FROM:<a>\r\nSTARTTLS\r\nRCPT TO:<b>\r\n", conf)
    assert r.out == b"250-mx.example\r\n250 STARTTLS\r\n" + OK + b"220 2.0.0 Start TLS\r\n"
    assert r.nxt is Next.STARTTLS
    m = r.machine
    assert (m.smtp_helo, m.smtp_from, m.smtp_to) == (b"", b"", b"")
    assert m.action == "in starttls state"
    assert m.leftover() == b""
    m.tls_started()
    assert m.action == "in auth state"
    assert m.receive(b"EHLO b\r\nSTARTTLS\r\n") is Next.READ
    assert m.out == [b"250 mx.example\r\n", INVALID]


def test_plaintext_before_handshake_is_dropped() -> None:
    m = SmtpMachine(make_conf(starttls=Starttls.ON))
    m.greeting()
    assert m.receive(b"STARTTLS\r\n") is Next.STARTTLS
    m.out.clear()
    assert m.receive(b"NOOP\r\n") is Next.READ
    assert m.out == [] and m.buffered == 0
    m.tls_started()
    assert m.receive(b"NOOP\r\n") is Next.READ
    assert m.out == [OK]


def test_close() -> None:
    m = SmtpMachine(make_conf())
    m.greeting()
    m.receive(b"NOO")
    m.close()
    assert m.buffered == 0
    assert m.receive(b"P\r\n") is Next.CLOSE
    assert m.resume() is Next.CLOSE
    assert m.out == []


def test_log_text_of_raw_bytes() -> None:
    r = run(b"MAIL FROM:<\xff\xc3\xa9>\r\n")
    assert r.logs == [(INFO, 'client was rejected: "MAIL FROM:<\\xffé>__"')]


def test_starttls_implicit_tls() -> None:
    conf = make_conf(starttls=Starttls.ON)
    r = run(b"EHLO a\r\nstarttls\r\n", conf, tls=True)
    assert r.out == EHLO_DEFAULT + INVALID
    assert r.machine.errors == 0


# -- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        (b"user@example.com", b"user@example.com"),
        (b"a b+c=d", b"a+20b+2Bc+3Dd"),
        (b"\x00\x1f\x20\x21\x7e\x7f\xff", b"+00+1F+20!~+7F+FF"),
        ("jörg".encode(), b"j+C3+B6rg"),
        (b"", b""),
    ],
)
def test_xtext(data: bytes, encoded: bytes) -> None:
    assert xtext(data) == encoded


def test_valid_host() -> None:
    assert valid_host(b"mail-1.example.com")
    for bad in (b"", b"a b", b"a\r\nX: y", b"[UNAVAILABLE]", b"a_b", "é".encode()):
        assert not valid_host(bad)


def test_no_io_imports() -> None:
    banned = {"asyncio", "socket", "ssl", "time", "logging", "random", "select"}
    assert not top_levels(smtp_module.__file__) & banned
