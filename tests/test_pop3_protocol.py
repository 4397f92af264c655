"""POP3 auth phase (``Pop3Machine``), byte-exact with nginx's pop3 handler.

Every scenario is fed whole and byte by byte; both must give the same bytes,
logs and outcome (``check``).  The one nginx behaviour that depends on how
the input is split, the fixed 128-byte window, has its own whole-only tests.
"""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_PLAIN_ENABLED,
    AuthMethod,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.protocol import pop3
from mailfront.protocol.base import INFO, Next
from mailfront.protocol.pop3 import Pop3Machine, Pop3State
from support.machines import Outcome, check_machine, run_machine, server_conf
from support.noio import top_levels

SALT = b"<1896.697170952@dbc.mtview.ca.us>\r\n"
ALL_AUTH = AUTH_PLAIN_ENABLED | AUTH_APOP_ENABLED | AUTH_CRAM_MD5_ENABLED | AUTH_EXTERNAL_ENABLED

OK = b"+OK\r\n"
INVALID = b"-ERR invalid command\r\n"
CAPA = b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n"
CAPA_STLS = (
    b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n"
)
CAPA_STLS_ONLY = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n"
AUTH_LIST = b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\n.\r\n"
USERNAME = b"+ VXNlcm5hbWU6\r\n"
PASSWORD = b"+ UGFzc3dvcmQ6\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def make_conf(**kw: object) -> ServerConf:
    return server_conf(Protocol.POP3, **kw)


CONF = make_conf()


def run(
    data: bytes,
    conf: ServerConf = CONF,
    per_byte: bool = False,
    tls: bool = False,
    salt: bytes = SALT,
) -> tuple[Outcome, Pop3Machine]:
    res, m = run_machine(Pop3Machine, data, conf, pop3.POP3_BUFFER_SIZE, per_byte, tls, salt)
    return res, m


def check(data: bytes, conf: ServerConf = CONF, tls: bool = False) -> Outcome:
    """Feed whole and byte by byte: the same bytes, logs and outcome."""
    return check_machine(Pop3Machine, data, conf, pop3.POP3_BUFFER_SIZE, tls, SALT)


# -- greeting ------------------------------------------------------------------


def test_greeting_plain() -> None:
    m = Pop3Machine(CONF)
    assert m.action == "sending client greeting line"
    assert m.greeting() == b"+OK POP3 ready\r\n"
    assert m.action == "in auth state"
    assert not Pop3Machine.needs_salt(CONF)


@pytest.mark.parametrize("mask", [AUTH_APOP_ENABLED, AUTH_CRAM_MD5_ENABLED, ALL_AUTH])
def test_greeting_with_salt(mask: int) -> None:
    conf = make_conf(pop3_auth=mask)
    assert Pop3Machine.needs_salt(conf)
    m = Pop3Machine(conf, SALT)
    assert m.greeting() == b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n"


def test_greeting_no_salt_for_external() -> None:
    conf = make_conf(pop3_auth=AUTH_PLAIN_ENABLED | AUTH_EXTERNAL_ENABLED)
    assert not Pop3Machine.needs_salt(conf)
    assert Pop3Machine(conf).greeting() == b"+OK POP3 ready\r\n"


# -- USER / PASS -----------------------------------------------------------------


def test_user_pass() -> None:
    r = check(b"USER alice\r\nPASS secret\r\n")
    assert r.out == OK
    assert r.next is Next.AUTH
    assert r.auth == (b"alice", b"secret", AuthMethod.PLAIN, b"")
    assert r.login == b"alice"
    assert r.action == "in http auth state"
    assert r.logs == []
    assert r.leftover == b""


def test_user_pass_spaces_are_part_of_the_argument() -> None:
    r = check(b"user   john  doe \r\npass  pa ss  \r\n")
    assert r.auth == (b"john  doe ", b"pa ss  ", AuthMethod.PLAIN, b"")


def test_user_pass_lf_only_and_any_case() -> None:
    r = check(b"UsEr bob\npAsS x\n")
    assert r.out == OK
    assert r.auth == (b"bob", b"x", AuthMethod.PLAIN, b"")


def test_user_pass_arbitrary_bytes() -> None:
    r = check(b"USER \xc3\xa9\x00\x7f\r\nPASS \x01\xff\r\n")
    assert r.auth == (b"\xc3\xa9\x00\x7f", b"\x01\xff", AuthMethod.PLAIN, b"")


@pytest.mark.parametrize("line", [b"USER\r\n", b"USER \r\n", b"USER    \r\n"])
def test_user_without_argument(line: bytes) -> None:
    r = check(line + b"NOOP\r\n")
    assert r.out == INVALID + OK
    assert r.errors == 0  # a handler's refusal does not count toward max_errors
    assert r.next is Next.READ


def test_pass_in_start_state() -> None:
    r = check(b"PASS secret\r\n")
    assert r.out == INVALID
    assert r.errors == 0


def test_pass_without_argument_resets_to_start() -> None:
    r = check(b"USER a\r\nPASS\r\nPASS b\r\n")
    assert r.out == OK + INVALID + INVALID
    assert r.login == b"a"  # nginx keeps s->login


@pytest.mark.parametrize(
    "cmd", [b"USER b", b"APOP a b", b"AUTH", b"AUTH PLAIN", b"STLS", b"XXXX", b"TOP 1 1"]
)
def test_after_user_only_pass_capa_quit_noop(cmd: bytes) -> None:
    conf = make_conf(pop3_auth=ALL_AUTH, starttls=Starttls.ON)
    r = check(b"USER a\r\n" + cmd + b"\r\nPASS x\r\n", conf)
    assert r.out == OK + INVALID + INVALID
    assert r.next is Next.READ


def test_after_user_capa_noop_then_pass() -> None:
    conf = make_conf(starttls=Starttls.ON)
    r = check(b"USER a\r\nCAPA\r\nNOOP\r\nPASS b\r\n", conf)
    assert r.out == OK + CAPA + OK  # no STLS after USER
    assert r.auth == (b"a", b"b", AuthMethod.PLAIN, b"")


def test_after_user_quit() -> None:
    r = check(b"USER a\r\nQUIT\r\nPASS b\r\n")
    assert r.out == OK + OK
    assert r.next is Next.CLOSE


# -- CAPA, NOOP, QUIT ------------------------------------------------------------------


def test_capa_default() -> None:
    assert check(b"CAPA\r\n").out == CAPA


def test_capa_with_arguments() -> None:
    assert check(b"capa x y z\r\n").out == CAPA


def test_capa_all_methods() -> None:
    r = check(b"CAPA\r\n", make_conf(pop3_auth=ALL_AUTH))
    assert r.out == (
        b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
        b"SASL PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n.\r\n"
    )


def test_capa_sasl_line_always_printed() -> None:
    r = check(b"CAPA\r\n", make_conf(pop3_auth=AUTH_APOP_ENABLED))
    assert r.out == b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL\r\n.\r\n"


def test_capa_starttls_on() -> None:
    assert check(b"CAPA\r\n", make_conf(starttls=Starttls.ON)).out == CAPA_STLS


def test_capa_starttls_only() -> None:
    assert check(b"CAPA\r\n", make_conf(starttls=Starttls.ONLY)).out == CAPA_STLS_ONLY


def test_capa_starttls_only_drops_user_in_any_case() -> None:
    conf = make_conf(starttls=Starttls.ONLY, pop3_capabilities=("TOP", "user", "X-USER", "Users"))
    r = check(b"CAPA\r\n", conf)
    assert r.out == b"+OK Capability list follows\r\nTOP\r\nX-USER\r\nUsers\r\nSTLS\r\n.\r\n"


def test_capa_custom_capabilities() -> None:
    conf = make_conf(pop3_capabilities=("TOP", "UIDL", "RESP-CODES", "PIPELINING"))
    r = check(b"CAPA\r\n", conf)
    assert r.out == (
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n"
        b"SASL PLAIN LOGIN\r\n.\r\n"
    )


@pytest.mark.parametrize("starttls", [Starttls.ON, Starttls.ONLY])
def test_capa_over_tls_has_no_stls(starttls: Starttls) -> None:
    assert check(b"CAPA\r\n", make_conf(starttls=starttls), tls=True).out == CAPA


def test_noop() -> None:
    r = check(b"NOOP\r\nnoop\nNOOP a b c\r\n")
    assert r.out == OK * 3
    assert r.next is Next.READ


def test_quit() -> None:
    r, m = run(b"QUIT\r\nNOOP\r\n")
    assert r.out == OK
    assert r.next is Next.CLOSE
    assert m.receive(b"NOOP\r\n") is Next.CLOSE
    assert m.out == []
    assert check(b"QUIT\r\nNOOP\r\n").out == OK


def test_quit_with_argument() -> None:
    assert check(b"QUIT now\r\n").next is Next.CLOSE


# -- invalid commands, argument count, max_errors ----------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"\r\n",
        b"\n",
        b" USER a\r\n",
        b"TOP 1 1\r\n",
        b"RETR 1\r\n",
        b"US3R a\r\n",
        b"USERS a\r\n",
        b"USE a\r\n",
        b"USER\ra\r\n",
        b"NOOP\rx\n",
        b"NOOP a b c d\r\n",
        b"\x00\xff\r\n",
        b"STAT\r\n",
    ],
)
def test_invalid_command(line: bytes) -> None:
    r = check(line + b"NOOP\r\n")
    assert r.out == INVALID + OK
    assert r.errors == 1
    assert r.logs == []


def test_invalid_command_resets_auth_state() -> None:
    r = check(b"AUTH LOGIN\r\nabc\rdef\r\nNOOP\r\n")
    assert r.out == USERNAME + INVALID + OK


def test_max_errors() -> None:
    r = check(b"A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n")
    assert r.out == INVALID * 5
    assert r.next is Next.CLOSE
    assert r.logs == [(INFO, "client sent too many invalid commands")]
    assert r.errors == 5


def test_max_errors_counts_only_parse_errors() -> None:
    conf = make_conf(max_errors=2)
    r = check(b"PASS x\r\nUSER\r\nAUTH FOO\r\nAPOP a b\r\nSTLS\r\nA\r\nNOOP\r\nB\r\nNOOP\r\n", conf)
    assert r.out == INVALID * 6 + OK + INVALID
    assert r.next is Next.CLOSE
    assert r.errors == 2


def test_max_errors_one() -> None:
    r = check(b"FOO\r\nNOOP\r\n", make_conf(max_errors=1))
    assert r.out == INVALID
    assert r.next is Next.CLOSE


# -- the 128-byte buffer ------------------------------------------------------------


def test_command_of_exactly_128_bytes() -> None:
    line = b"USER " + b"u" * 121 + b"\r\n"
    assert len(line) == 128
    r = check(line + b"PASS p\r\n")
    assert r.auth == (b"u" * 121, b"p", AuthMethod.PLAIN, b"")


def test_too_long_command() -> None:
    data = b"USER " + b"u" * 122 + b"\r\n"
    r = check(data)
    assert r.out == INVALID
    assert r.next is Next.CLOSE
    window = data[:128].decode()
    assert r.logs == [(INFO, f'client sent too long command "{window}"')]


def test_too_long_invalid_command() -> None:
    r = check(b"1" * 200)
    assert r.out == INVALID
    assert r.logs == [(INFO, 'client sent too long command "' + "1" * 128 + '"')]
    assert r.errors == 0


def test_too_long_auth_response() -> None:
    m = Pop3Machine(CONF)
    m.greeting()
    assert m.receive(b"AUTH PLAIN\r\n") is Next.READ
    assert m.receive(b"A" * 200) is Next.CLOSE
    assert m.out == [b"+ \r\n", INVALID]
    assert m.logs == [(INFO, 'client sent too long command "' + "A" * 128 + '"')]
    # in one chunk, the window holds the AUTH command too, and fills earlier
    r, _ = run(b"AUTH PLAIN\r\n" + b"A" * 200)
    assert r.out == b"+ \r\n" + INVALID
    assert r.logs == [(INFO, 'client sent too long command "AUTH PLAIN\r\n' + "A" * 116 + '"')]


def test_window_is_not_compacted_between_pipelined_commands() -> None:
    # nginx rewinds its 128-byte buffer only once everything in it is handled:
    # a command that starts late in the window must fit in what is left of it
    data = b"NOOP\r\n" * 21 + b"NOOP\r\n"
    r, _ = run(data)
    assert r.out == OK * 21 + INVALID
    assert r.next is Next.CLOSE
    window = (b"NOOP\r\n" * 21 + b"NO").decode().replace("\r", "\\r").replace("\n", "\\n")
    assert [(lvl, msg.replace("\r", "\\r").replace("\n", "\\n")) for lvl, msg in r.logs] == [
        (INFO, f'client sent too long command "{window}"')
    ]
    # the same bytes arriving one by one never fill the window
    r, _ = run(data, per_byte=True)
    assert r.out == OK * 22


def test_window_rewinds_when_empty() -> None:
    # 21 commands fill 126 bytes; all are handled, the window rewinds, the
    # rest of the chunk is read into it
    data = b"NOOP\r\n" * 21 + b"USER a\r\nPASS b\r\n"
    m = Pop3Machine(CONF)
    m.greeting()
    assert m.receive(data[:126]) is Next.READ
    assert m.buffered == 0
    assert m.receive(data[126:]) is Next.AUTH
    assert b"".join(m.out) == OK * 22


def test_pipelined_chunk_larger_than_the_window() -> None:
    # everything handled exactly at the window's end: it rewinds, reads on
    data = b"NOOP\r\n" * 20 + b"NOOP a\r\n" + b"USER a\r\nPASS b\r\nQUIT\r\n"
    assert len(b"NOOP\r\n" * 20 + b"NOOP a\r\n") == 128
    r, _ = run(data)
    assert r.out == OK * 22
    assert r.auth == (b"a", b"b", AuthMethod.PLAIN, b"")
    assert r.leftover == b"QUIT\r\n"


# -- pipelining and the auth request's leftover ------------------------------------


def test_pipelined_after_pass_kept_for_the_backend() -> None:
    r = check(b"USER a\r\nPASS b\r\nSTAT\r\nLIST\r\n")
    assert r.out == OK
    assert r.leftover == b"STAT\r\nLIST\r\n"


def test_receive_while_auth_pending_only_buffers() -> None:
    m = Pop3Machine(CONF)
    m.greeting()
    assert m.receive(b"USER a\r\nPASS b\r\nST") is Next.AUTH
    m.out.clear()
    assert m.receive(b"AT\r\nQUIT\r\n") is Next.READ
    assert m.out == []
    assert m.leftover() == b"STAT\r\nQUIT\r\n"
    assert m.leftover() == b""


def test_auth_failed_and_resume() -> None:
    m = Pop3Machine(CONF)
    m.greeting()
    assert m.receive(b"USER a\r\nPASS b\r\nPASS c\r\nNOOP\r\n") is Next.AUTH
    m.out.clear()
    m.auth_failed(b"Temporary failure", None)
    assert m.out == [b"-ERR Temporary failure\r\n"]
    m.out.clear()
    assert m.resume() is Next.READ
    assert m.action == "in auth state"
    assert m.mail_state is Pop3State.START
    assert m.out == [INVALID, OK]  # back in the start state: PASS is invalid
    assert m.login == b"a"  # nginx keeps s->login
    assert m.receive(b"USER x\r\nPASS y\r\n") is Next.AUTH
    assert m.auth is not None and (m.auth.login, m.auth.passwd) == (b"x", b"y")


def test_resume_reaches_auth_again() -> None:
    m = Pop3Machine(CONF)
    m.greeting()
    assert m.receive(b"USER a\r\nPASS b\r\nUSER c\r\nPASS d\r\n") is Next.AUTH
    m.auth_failed(b"no", None)
    assert m.resume() is Next.AUTH
    assert m.auth is not None and (m.auth.login, m.auth.passwd) == (b"c", b"d")


def test_resume_after_auth_continuation() -> None:
    m = Pop3Machine(CONF)
    m.greeting()
    assert m.receive(b"AUTH PLAIN\r\n" + b64(b"\0u\0p") + b"\r\nNOOP\r\n") is Next.AUTH
    m.out.clear()
    m.auth_failed(b"bad", None)
    assert m.resume() is Next.READ
    assert m.out == [b"-ERR bad\r\n", OK]


def test_internal_error() -> None:
    assert Pop3Machine(CONF).internal_error() == b"-ERR internal server error\r\n"


# -- AUTH ----------------------------------------------------------------------------


def test_auth_list() -> None:
    r = check(b"AUTH\r\nNOOP\r\n")
    assert r.out == AUTH_LIST + OK


def test_auth_list_all() -> None:
    r = check(b"AUTH \r\n", make_conf(pop3_auth=ALL_AUTH))
    assert r.out == b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\nEXTERNAL\r\n.\r\n"


def test_auth_list_empty() -> None:
    r = check(b"AUTH\r\n", make_conf(pop3_auth=AUTH_APOP_ENABLED))
    assert r.out == b"+OK methods supported:\r\n.\r\n"


@pytest.mark.parametrize(
    "line",
    [
        b"AUTH FOO",
        b"AUTH LOGI",
        b"AUTH LOGIN a b",
        b"AUTH PLAIN a b",
        b"AUTH CRAM-MD5 x",
        b"AUTH EXTERNAL a b",
        b"AUTH CRAM-MD5",  # not enabled
        b"AUTH EXTERNAL",  # not enabled
    ],
)
def test_auth_invalid(line: bytes) -> None:
    r = check(line + b"\r\nNOOP\r\n")
    assert r.out == INVALID + OK
    assert r.errors == 0


def test_auth_plain() -> None:
    r = check(b"AUTH PLAIN\r\n" + b64(b"authz\0user\0pass") + b"\r\nNOOP\r\n")
    assert r.out == b"+ \r\n"
    assert r.auth == (b"user", b"pass", AuthMethod.PLAIN, b"")
    assert r.login == b"user"
    assert r.leftover == b"NOOP\r\n"


def test_auth_plain_initial_response() -> None:
    r = check(b"auth plain " + b64(b"\0user\0pa ss") + b"\r\n")
    assert r.out == b""
    assert r.auth == (b"user", b"pa ss", AuthMethod.PLAIN, b"")


def test_auth_plain_response_extra_words_ignored() -> None:
    r = check(b"AUTH PLAIN\r\n" + b64(b"\0u\0p") + b" junk\r\n")
    assert r.auth == (b"u", b"p", AuthMethod.PLAIN, b"")


@pytest.mark.parametrize(
    ("response", "log"),
    [
        (b"*", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b"A", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b"=", "client sent invalid login in AUTH PLAIN command"),
        (b"", "client sent invalid login in AUTH PLAIN command"),
        (b64(b"user"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"user\0"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0user"), "client sent invalid password in AUTH PLAIN command"),
    ],
)
def test_auth_plain_errors(response: bytes, log: str) -> None:
    r = check(b"AUTH PLAIN\r\n" + response + b"\r\nNOOP\r\n")
    assert r.out == b"+ \r\n" + INVALID + OK
    assert r.logs == [(INFO, log)]
    assert r.errors == 0
    r = check(b"AUTH PLAIN " + response + b"\r\nNOOP\r\n")
    if response:
        assert r.out == INVALID + OK
        assert r.logs == [(INFO, log)]


def test_auth_login() -> None:
    r = check(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n")
    assert r.out == USERNAME + PASSWORD
    assert r.auth == (b"alice", b"s3cret", AuthMethod.LOGIN, b"")
    assert r.login == b"alice"


def test_auth_login_initial_response() -> None:
    r = check(b"AUTH LOGIN " + b64(b"alice") + b"\r\n" + b64(b"pw") + b"\r\n")
    assert r.out == PASSWORD
    assert r.auth == (b"alice", b"pw", AuthMethod.LOGIN, b"")


def test_auth_login_empty_user() -> None:
    r = check(b"AUTH LOGIN =\r\n\r\n")
    assert r.out == PASSWORD
    assert r.auth == (b"", b"", AuthMethod.LOGIN, b"")


def test_auth_login_commands_are_just_base64() -> None:
    # in the continuation states a line is an argument, not a command
    r = check(b"AUTH LOGIN\r\nQUIT\r\nNOOP\r\n")
    assert r.out == USERNAME + PASSWORD
    assert r.auth == (base64.b64decode(b"QUIT"), base64.b64decode(b"NOOP"), AuthMethod.LOGIN, b"")


def test_auth_login_bad_username() -> None:
    r = check(b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
    assert r.out == USERNAME + INVALID + OK
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]


def test_auth_login_bad_initial_username() -> None:
    r = check(b"AUTH LOGIN !!!!\r\nNOOP\r\n")
    assert r.out == INVALID + OK
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]


def test_auth_login_bad_password() -> None:
    r = check(b"AUTH LOGIN " + b64(b"bob") + b"\r\n-\r\nNOOP\r\n")
    assert r.out == PASSWORD + INVALID + OK
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]
    assert r.login == b"bob"


CRAM = make_conf(pop3_auth=AUTH_PLAIN_ENABLED | AUTH_CRAM_MD5_ENABLED)
CHALLENGE = b"+ " + b64(SALT[:-2]) + b"\r\n"


def test_auth_cram_md5() -> None:
    digest = b"b913a602c7eda7a495b4e6e7334d3890"
    r = check(b"AUTH CRAM-MD5\r\n" + b64(b"tim " + digest) + b"\r\n", CRAM)
    assert r.out == CHALLENGE
    assert CHALLENGE == b"+ PDE4OTYuNjk3MTcwOTUyQGRiYy5tdHZpZXcuY2EudXM+\r\n"
    assert r.auth == (b"tim", digest, AuthMethod.CRAM_MD5, SALT)


@pytest.mark.parametrize(
    ("response", "login", "log"),
    [
        (b"*", b"", "client sent invalid base64 encoding in AUTH CRAM-MD5 command"),
        (b64(b"tim"), b"tim", "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
        (b64(b"tim abc"), b"tim", "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
        (b"", b"", "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
    ],
)
def test_auth_cram_md5_errors(response: bytes, login: bytes, log: str) -> None:
    r = check(b"AUTH CRAM-MD5\r\n" + response + b"\r\nNOOP\r\n", CRAM)
    assert r.out == CHALLENGE + INVALID + OK
    assert r.logs == [(INFO, log)]
    assert r.login == login  # nginx sets s->login before checking the digest


EXTERNAL = make_conf(pop3_auth=AUTH_PLAIN_ENABLED | AUTH_EXTERNAL_ENABLED)


def test_auth_external() -> None:
    r = check(b"AUTH EXTERNAL\r\n" + b64(b"alice") + b"\r\n", EXTERNAL)
    assert r.out == USERNAME
    assert r.auth == (b"alice", b"", AuthMethod.EXTERNAL, b"")


def test_auth_external_initial_response() -> None:
    r = check(b"AUTH EXTERNAL =\r\n", EXTERNAL)
    assert r.auth == (b"", b"", AuthMethod.EXTERNAL, b"")


def test_auth_external_initial_response_not_gated() -> None:
    # ngx_mail_auth_parse decodes an initial response before the handler
    # checks that "external" is enabled
    r = check(b"AUTH EXTERNAL " + b64(b"bob") + b"\r\n")
    assert r.auth == (b"bob", b"", AuthMethod.EXTERNAL, b"")


def test_auth_external_bad_base64() -> None:
    r = check(b"AUTH EXTERNAL\r\n@\r\nNOOP\r\n", EXTERNAL)
    assert r.out == USERNAME + INVALID + OK
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH EXTERNAL command")]


# -- APOP --------------------------------------------------------------------------------

APOP = make_conf(pop3_auth=AUTH_PLAIN_ENABLED | AUTH_APOP_ENABLED)


def test_apop() -> None:
    r = check(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n", APOP)
    assert r.out == b""
    assert r.auth == (b"mrose", b"c4c9334bac560ecc979e58001b3e22fb", AuthMethod.APOP, SALT)
    assert r.login == b"mrose"


@pytest.mark.parametrize("args", [b"", b" mrose", b" a b c"])
def test_apop_argument_count(args: bytes) -> None:
    r = check(b"APOP" + args + b"\r\nNOOP\r\n", APOP)
    assert r.out == INVALID + OK


def test_apop_disabled() -> None:
    r = check(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert r.out == INVALID


# -- STLS ----------------------------------------------------------------------------------


def test_stls() -> None:
    r, m = run(b"STLS\r\nUSER injected\r\nPASS x\r\n", make_conf(starttls=Starttls.ON))
    assert r.out == OK
    assert r.next is Next.STARTTLS
    assert r.action == "in starttls state"
    assert m.buffered == 0  # CVE-2014-3556: the pipelined commands are gone
    m.tls_started()
    assert m.action == "in auth state"
    assert m.receive(b"CAPA\r\n") is Next.READ
    assert b"".join(m.out) == CAPA
    m.out.clear()
    assert m.receive(b"STLS\r\n") is Next.READ
    assert m.out == [INVALID]


def test_stls_per_byte() -> None:
    r = check(b"STLS\r\n", make_conf(starttls=Starttls.ON))
    assert (r.out, r.next) == (OK, Next.STARTTLS)


def test_stls_when_off() -> None:
    r = check(b"STLS\r\nNOOP\r\n")
    assert r.out == INVALID + OK
    assert r.errors == 0


def test_stls_over_tls() -> None:
    r = check(b"STLS\r\n", make_conf(starttls=Starttls.ON), tls=True)
    assert r.out == INVALID


@pytest.mark.parametrize(
    "line",
    [b"USER a", b"APOP a b", b"AUTH", b"AUTH PLAIN", b"AUTH PLAIN " + b64(b"\0a\0b")],
)
def test_starttls_only_refuses_auth_before_tls(line: bytes) -> None:
    conf = make_conf(starttls=Starttls.ONLY, pop3_auth=ALL_AUTH)
    r = check(line + b"\r\nNOOP\r\n", conf)
    assert r.out == INVALID + OK


def test_starttls_only_after_tls() -> None:
    conf = make_conf(starttls=Starttls.ONLY)
    r, m = run(b"STLS\r\n", conf)
    assert r.next is Next.STARTTLS
    m.tls_started()
    assert m.receive(b"USER a\r\nPASS b\r\n") is Next.AUTH
    assert m.out == [OK]


def test_starttls_only_with_implicit_tls() -> None:
    r = check(b"USER a\r\nPASS b\r\n", make_conf(starttls=Starttls.ONLY), tls=True)
    assert r.auth == (b"a", b"b", AuthMethod.PLAIN, b"")


# -- module rules ---------------------------------------------------------------------------


def test_no_io_imports() -> None:
    banned = {"asyncio", "socket", "ssl", "time", "logging", "random", "os", "select"}
    assert not top_levels(pop3.__file__) & banned


def test_conf_replace_keeps_cache_correct() -> None:
    # capabilities are cached by (capabilities, mask): two confs, two answers
    a = check(b"CAPA\r\n", CONF).out
    b = check(b"CAPA\r\n", replace(CONF, pop3_capabilities=("TOP",))).out
    assert a == CAPA
    assert b == b"+OK Capability list follows\r\nTOP\r\nSASL PLAIN LOGIN\r\n.\r\n"
