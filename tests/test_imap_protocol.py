"""IMAP auth phase (``ImapMachine``), byte-exact with nginx's imap handler.

Every scenario is fed whole and byte by byte; both must give the same bytes,
logs and outcome (``check``).  The nginx behaviours that depend on how the
input is split (the command window, rewound only once all of it is handled)
have their own whole-only tests at the end.
"""

from __future__ import annotations

import base64

import pytest

from mailfront.conf.model import (
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_PLAIN_ENABLED,
    AuthMethod,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.protocol import imap
from mailfront.protocol.base import INFO, Next
from mailfront.protocol.imap import ImapMachine, ImapState
from support.machines import Outcome, check_machine, run_machine, server_conf
from support.noio import top_levels

SALT = b"<1896.697170952@dbc.mtview.ca.us>\r\n"
ALL_AUTH = AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED | AUTH_CRAM_MD5_ENABLED | AUTH_EXTERNAL_ENABLED

CAPA = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\n"
USERNAME = b"+ VXNlcm5hbWU6\r\n"
PASSWORD = b"+ UGFzc3dvcmQ6\r\n"
NEXT = b"+ OK\r\n"


def ok(tag: bytes = b"a") -> bytes:
    return tag + b" OK completed\r\n"


def bad(tag: bytes = b"a") -> bytes:
    return tag + b" BAD invalid command\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def make_conf(**kw: object) -> ServerConf:
    return server_conf(Protocol.IMAP, **kw)


CONF = make_conf()


def run(
    data: bytes,
    conf: ServerConf = CONF,
    per_byte: bool = False,
    tls: bool = False,
    salt: bytes = SALT,
) -> tuple[Outcome, ImapMachine]:
    res, m = run_machine(ImapMachine, data, conf, conf.imap_client_buffer, per_byte, tls, salt)
    return res, m


def check(data: bytes, conf: ServerConf = CONF, tls: bool = False) -> Outcome:
    """Feed whole and byte by byte: the same bytes, logs and outcome."""
    return check_machine(ImapMachine, data, conf, conf.imap_client_buffer, tls, SALT)


# -- greeting ------------------------------------------------------------------


def test_greeting() -> None:
    m = ImapMachine(CONF)
    assert m.action == "sending client greeting line"
    assert m.greeting() == b"* OK IMAP4 ready\r\n"
    assert m.action == "in auth state"
    assert m.out == [] and m.logs == []


def test_needs_salt_only_for_cram_md5() -> None:
    assert not ImapMachine.needs_salt(CONF)
    assert not ImapMachine.needs_salt(make_conf(imap_auth=AUTH_EXTERNAL_ENABLED))
    assert ImapMachine.needs_salt(make_conf(imap_auth=AUTH_CRAM_MD5_ENABLED))


def test_internal_error_line() -> None:
    assert ImapMachine(CONF).internal_error() == b"* BAD internal server error\r\n"
    assert imap.IMAP_CERT_ERROR == b"* BYE SSL certificate error\r\n"
    assert imap.IMAP_NO_CERT == b"* BYE No required SSL certificate\r\n"


# -- CAPABILITY ------------------------------------------------------------------


def test_capability_default() -> None:
    r = check(b"a CAPABILITY\r\n")
    assert r.out == CAPA + ok()
    assert r.next is Next.READ
    assert r.errors == 0 and r.logs == []
    assert r.tag == b""  # reset once the command is answered


def test_capability_auth_names_in_fixed_order() -> None:
    conf = make_conf(imap_auth=ALL_AUTH)
    r = check(b"a CAPABILITY\r\n", conf)
    assert r.out == (
        b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5"
        b" AUTH=EXTERNAL\r\n" + ok()
    )


def test_capability_without_plain() -> None:
    conf = make_conf(imap_auth=AUTH_CRAM_MD5_ENABLED | AUTH_EXTERNAL_ENABLED)
    r = check(b"a CAPABILITY\r\n", conf)
    assert r.out == (b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=CRAM-MD5 AUTH=EXTERNAL\r\n" + ok())


def test_capability_configured() -> None:
    conf = make_conf(imap_capabilities=("IMAP4rev1", "IDLE", "LITERAL+"), imap_auth=0)
    r = check(b"a CAPABILITY\r\n", conf)
    assert r.out == b"* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\n" + ok()


def test_capability_starttls_on() -> None:
    conf = make_conf(starttls=Starttls.ON, imap_auth=AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED)
    r = check(b"a CAPABILITY\r\n", conf)
    assert r.out == (
        b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN AUTH=LOGIN STARTTLS\r\n" + ok()
    )


def test_capability_starttls_only() -> None:
    conf = make_conf(starttls=Starttls.ONLY, imap_auth=ALL_AUTH)
    r = check(b"a CAPABILITY\r\n", conf)
    assert r.out == b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\n" + ok()


@pytest.mark.parametrize("starttls", [Starttls.ON, Starttls.ONLY])
def test_capability_over_tls_is_the_plain_one(starttls: Starttls) -> None:
    conf = make_conf(starttls=starttls)
    assert check(b"a CAPABILITY\r\n", conf, tls=True).out == CAPA + ok()


def test_capabilities_helper() -> None:
    capability, starttls, only = imap.capabilities(make_conf(imap_auth=ALL_AUTH))
    assert capability.endswith(b"AUTH=EXTERNAL\r\n")
    assert starttls == capability[:-2] + b" STARTTLS\r\n"
    assert only == b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\n"


def test_capability_arguments_ignored_and_case_insensitive() -> None:
    assert check(b"x1 capability foo bar\r\n").out == CAPA + ok(b"x1")


# -- NOOP, LOGOUT, tags, unknown commands ---------------------------------------------


def test_noop() -> None:
    r = check(b"a NOOP\r\nb noop\r\nc NoOp x y z\r\n")
    assert r.out == ok(b"a") + ok(b"b") + ok(b"c")
    assert r.next is Next.READ


def test_bare_lf_ends_a_command() -> None:
    assert check(b"a NOOP\nb NOOP\n").out == ok(b"a") + ok(b"b")


def test_spaces_before_command() -> None:
    # the tag is the first word and one space; more spaces are skipped
    assert check(b"a    NOOP\r\n").out == ok(b"a")


def test_logout() -> None:
    r = check(b"a LOGOUT\r\nb NOOP\r\n")
    assert r.out == b"* BYE\r\n" + ok(b"a")
    assert r.next is Next.CLOSE


def test_receive_after_close() -> None:
    _, m = run(b"a LOGOUT\r\n")
    assert m.receive(b"b NOOP\r\n") is Next.CLOSE
    assert m.out == [] and m.buffered == 0
    assert m.resume() is Next.CLOSE


@pytest.mark.parametrize(
    "tag",
    [b"A", b"z9", b"a.b-c_d", b"0" * 32, b"-", b"."],
)
def test_valid_tags(tag: bytes) -> None:
    assert check(tag + b" NOOP\r\n").out == ok(tag)


@pytest.mark.parametrize(
    "line",
    [
        b"a*b NOOP\r\n",
        b"a+ NOOP\r\n",
        b"{1} NOOP\r\n",
        b'"a" NOOP\r\n',
        b"0" * 33 + b" NOOP\r\n",
        b"a\r\n",
        b"\r\n",
        b"\n",
        b"NOOP\r\n",
    ],
)
def test_invalid_tag_answers_with_star(line: bytes) -> None:
    r = check(line)
    assert r.out == bad(b"*")
    assert r.errors == 1
    assert r.next is Next.READ


def test_missing_tag_is_a_space() -> None:
    # nginx takes the empty word before the first space as the tag " "
    assert check(b" NOOP\r\n").out == b" OK completed\r\n"


@pytest.mark.parametrize(
    "line",
    [
        b'a ID ("name" "x")\r\n',
        b"a ENABLE UTF8=ACCEPT\r\n",
        b"a COMPRESS DEFLATE\r\n",
        b"a SELECT INBOX\r\n",
        b"a NOOPS\r\n",
        b"a NO0P\r\n",
        b"a LOG-IN u p\r\n",
        b"a \r\n",
        b"a  \n",
        b"a NOOP\rx\n",
        b"a NOOP a b c d\r\n",  # at most 3 arguments
    ],
)
def test_invalid_command(line: bytes) -> None:
    r = check(line)
    assert r.out == bad()
    assert r.errors == 1
    assert r.logs == []


def test_invalid_command_skipped_up_to_lf() -> None:
    r = check(b"a FOO bar baz\r\nb NOOP\r\n")
    assert r.out == bad(b"a") + ok(b"b")


def test_max_errors() -> None:
    conf = make_conf(max_errors=3)
    r = check(b"a X\r\nb X\r\nc X\r\nd NOOP\r\n", conf)
    assert r.out == bad(b"a") + bad(b"b") + bad(b"c")
    assert r.next is Next.CLOSE
    assert r.errors == 3
    assert r.logs == [(INFO, "client sent too many invalid commands")]


def test_errors_count_only_parser_errors() -> None:
    # a LOGIN with one argument, bad base64, STARTTLS when off: replied BAD
    # by the handler, which nginx does not count
    conf = make_conf(max_errors=2)
    data = b"a LOGIN u\r\nb AUTHENTICATE PLAIN !!!!\r\nc STARTTLS\r\nd AUTHENTICATE FOO\r\n"
    r = check(data, conf)
    assert r.out == bad(b"a") + bad(b"b") + bad(b"c") + bad(b"d")
    assert r.errors == 0
    assert r.next is Next.READ


# -- LOGIN -------------------------------------------------------------------------


def test_login_atoms() -> None:
    r = check(b"a1 LOGIN alice secret\r\n")
    assert r.out == b""
    assert r.next is Next.AUTH
    assert r.auth == (b"alice", b"secret", AuthMethod.PLAIN, b"")
    assert r.login == b"alice"
    assert r.tag == b"a1 "
    assert r.action == "in http auth state"
    assert r.leftover == b""


def test_login_quoted_with_escapes() -> None:
    r = check(b'a LOGIN "al ice" "p\\"a\\\\ss"\r\n')
    assert r.auth == (b"al ice", b'p"a\\ss', AuthMethod.PLAIN, b"")


def test_login_backslash_in_atom_is_data() -> None:
    r = check(b"a LOGIN us\\er p\\\\w\r\n")
    assert r.auth == (b"us\\er", b"p\\\\w", AuthMethod.PLAIN, b"")


def test_login_quote_in_atom_is_data() -> None:
    r = check(b'a LOGIN us"er pass\r\n')
    assert r.auth == (b'us"er', b"pass", AuthMethod.PLAIN, b"")


def test_login_quoted_then_atom_without_space() -> None:
    r = check(b'a LOGIN "user"pass\r\n')
    assert r.auth == (b"user", b"pass", AuthMethod.PLAIN, b"")


def test_login_empty_password() -> None:
    r = check(b'a LOGIN alice ""\r\n')
    assert r.auth == (b"alice", b"", AuthMethod.PLAIN, b"")


def test_login_synchronising_literals() -> None:
    r = check(b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\n")
    assert r.out == NEXT + NEXT
    assert r.next is Next.AUTH
    assert r.auth == (b"alice", b"secret", AuthMethod.PLAIN, b"")


def test_login_literal_content_is_raw() -> None:
    # no unescaping, spaces, quotes and CRLF are data
    r = check(b'a LOGIN {7}\r\na"\\ b\r\n {2}\r\n\r\n\r\n')
    assert r.auth == (b'a"\\ b\r\n', b"\r\n", AuthMethod.PLAIN, b"")


def test_login_non_synchronising_literals() -> None:
    r = check(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    assert r.out == b""
    assert r.auth == (b"alice", b"secret", AuthMethod.PLAIN, b"")


def test_login_literal_cr_repeated() -> None:
    assert check(b"a LOGIN {1}\r\r\nu p\r\n").auth == (b"u", b"p", AuthMethod.PLAIN, b"")


def test_login_zero_length_literal_takes_one_byte() -> None:
    # nginx's counter: {0} ends at the first byte after its CRLF
    r = check(b"a LOGIN {0}\r\nX pass\r\n")
    assert r.out == NEXT
    assert r.auth == (b"X", b"pass", AuthMethod.PLAIN, b"")


def test_literal_followed_by_brace_is_invalid() -> None:
    # 1.29.6: a literal must be followed by SP or CRLF
    r = check(b"a LOGIN {1}\r\nu{1}\r\np\r\n")
    assert r.out == NEXT + bad() + bad(b"*")  # "p" is then a command without a tag
    assert r.errors == 2
    assert r.next is Next.READ


def test_literal_followed_by_other_byte_is_invalid() -> None:
    r = check(b"a LOGIN {1}\r\nuser pass\r\nb NOOP\r\n")
    assert r.out == NEXT + bad() + ok(b"b")


@pytest.mark.parametrize(
    "line",
    [
        b"a LOGIN {5a}\r\n",
        b"a LOGIN {5\r\n",
        b"a LOGIN {5++}\r\n",
        b"a LOGIN {5}x\r\n",
        b"a LOGIN {5}\rx\n",
        b"a LOGIN {99999999999999999999}\r\n",  # overflow
        b"a LOGIN u p q {1}\r\n",  # a fourth argument
    ],
)
def test_literal_syntax_errors(line: bytes) -> None:
    r = check(line)
    assert r.out == bad()
    assert r.errors == 1


def test_literal_largest_length_asks_for_data() -> None:
    assert check(b"a LOGIN {9223372036854775807}\r\n").out == NEXT


def test_literal_bigger_than_buffer() -> None:
    conf = make_conf(imap_client_buffer=32)
    r = check(b"a LOGIN {100}\r\n" + b"x" * 40, conf)
    window = b"a LOGIN {100}\r\n" + b"x" * 17
    assert r.out == NEXT + bad()
    assert r.next is Next.CLOSE
    assert r.logs == [(INFO, f'client sent too long command "{window.decode()}"')]
    assert r.errors == 0


@pytest.mark.parametrize("args", [b"", b" alice", b" a b c", b' "" secret'])
def test_login_argument_errors(args: bytes) -> None:
    r = check(b"a LOGIN" + args + b"\r\n")
    assert r.out == bad()
    assert r.next is Next.READ
    assert r.errors == 0


def test_login_pipelined_leftover() -> None:
    r = check(b"a LOGIN u p\r\nb SELECT INBOX\r\nc FETCH 1")
    assert r.next is Next.AUTH
    assert r.leftover == b"b SELECT INBOX\r\nc FETCH 1"


def test_receive_while_waiting_only_buffers() -> None:
    _, m = run(b"a LOGIN u p\r\nb NOOP\r\n")
    m2 = ImapMachine(CONF)
    m2.greeting()
    assert m2.receive(b"a LOGIN u p\r\nb NOOP\r\n") is Next.AUTH
    assert m2.receive(b"c NOOP\r\n") is Next.READ
    assert m2.out == []
    assert m2.leftover() == b"b NOOP\r\nc NOOP\r\n"
    assert m.leftover() == b""  # run() took it already


def test_unterminated_quote_leaks_into_next_command() -> None:
    # nginx keeps s->quoted set when a quoted string ends at CRLF: the next
    # command's atoms then run to the end of the line
    r = check(b'a LOGIN "user\r\nb LOGIN user pass\r\n')
    assert r.out == bad(b"a") + bad(b"b")
    assert r.errors == 0


def test_quote_leak_cleared_by_parser_error() -> None:
    r = check(b'a LOGIN "user\r\nb X\r\nc LOGIN user pass\r\n')
    assert r.out == bad(b"a") + bad(b"b")
    assert r.auth == (b"user", b"pass", AuthMethod.PLAIN, b"")


def test_backslash_before_crlf_is_invalid() -> None:
    r = check(b'a LOGIN "us\\\r\nb NOOP\r\n')
    assert r.out == bad(b"a") + ok(b"b")
    assert r.errors == 1


# -- AUTHENTICATE PLAIN -------------------------------------------------------------


def test_authenticate_plain() -> None:
    r = check(b"a AUTHENTICATE PLAIN\r\n" + b64(b"authz\0alice\0secret") + b"\r\n")
    assert r.out == b"+ \r\n"
    assert r.next is Next.AUTH
    assert r.auth == (b"alice", b"secret", AuthMethod.PLAIN, b"")
    assert r.tag == b"a "


def test_authenticate_plain_initial_response() -> None:
    r = check(b"a authenticate plain " + b64(b"\0bob\0pw") + b"\r\nb NOOP\r\n")
    assert r.out == b""
    assert r.auth == (b"bob", b"pw", AuthMethod.PLAIN, b"")
    assert r.leftover == b"b NOOP\r\n"


def test_authenticate_plain_response_extra_words_ignored() -> None:
    r = check(b"a AUTHENTICATE PLAIN\r\n" + b64(b"\0u\0p") + b" more words\r\n")
    assert r.auth == (b"u", b"p", AuthMethod.PLAIN, b"")


@pytest.mark.parametrize(
    ("response", "log"),
    [
        (b"!!!!", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b"*", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b"=", "client sent invalid login in AUTH PLAIN command"),
        (b"", "client sent invalid login in AUTH PLAIN command"),
        (b64(b"alice"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0alice"), "client sent invalid password in AUTH PLAIN command"),
    ],
)
def test_authenticate_plain_errors(response: bytes, log: str) -> None:
    r = check(b"t1 AUTHENTICATE PLAIN\r\n" + response + b"\r\nt2 NOOP\r\n")
    assert r.out == b"+ \r\n" + bad(b"t1") + ok(b"t2")
    assert r.logs == [(INFO, log)]
    assert r.errors == 0


def test_authenticate_plain_bad_initial_response() -> None:
    r = check(b"a AUTHENTICATE PLAIN =\r\n")
    assert r.out == bad()
    assert r.logs == [(INFO, "client sent invalid login in AUTH PLAIN command")]


def test_authenticate_response_is_an_atom() -> None:
    # the response line is parsed from nginx's sw_argument state: a literal
    # is just an atom starting with "{" (and is not base64)
    resp = b64(b"\0u\0p")
    r = check(b"a AUTHENTICATE PLAIN\r\n{%d}\r\n%s\r\n" % (len(resp), resp))
    assert r.out == b"+ \r\n" + bad() + bad(b"*")
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH PLAIN command")]


def test_authenticate_response_second_word_may_be_a_literal() -> None:
    resp = b64(b"\0u\0p")
    r = check(b"a AUTHENTICATE PLAIN\r\n%s {3}\r\nabc\r\n" % resp)
    assert r.out == b"+ \r\n" + NEXT
    assert r.auth == (b"u", b"p", AuthMethod.PLAIN, b"")


# -- AUTHENTICATE LOGIN -------------------------------------------------------------


def test_authenticate_login() -> None:
    r = check(b"a AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"secret") + b"\r\n")
    assert r.out == USERNAME + PASSWORD
    assert r.auth == (b"alice", b"secret", AuthMethod.LOGIN, b"")
    assert r.login == b"alice"


def test_authenticate_login_initial_response() -> None:
    r = check(b"a AUTHENTICATE LOGIN " + b64(b"alice") + b"\r\n" + b64(b"pw") + b"\r\n")
    assert r.out == PASSWORD
    assert r.auth == (b"alice", b"pw", AuthMethod.LOGIN, b"")


def test_authenticate_login_empty_user() -> None:
    r = check(b"a AUTHENTICATE LOGIN =\r\n=\r\n")
    assert r.out == PASSWORD
    assert r.auth == (b"", b"", AuthMethod.LOGIN, b"")


def test_authenticate_login_bad_username_is_untagged() -> None:
    # nginx clears the tag flag for the username step before it checks it
    r = check(b"a AUTHENTICATE LOGIN\r\n!!!\r\nb NOOP\r\n")
    assert r.out == USERNAME + b"BAD invalid command\r\n" + ok(b"b")
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]


def test_authenticate_login_bad_initial_username_is_tagged() -> None:
    r = check(b"a AUTHENTICATE LOGIN !!!\r\n")
    assert r.out == bad()
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]


def test_authenticate_login_bad_password() -> None:
    r = check(b"a AUTHENTICATE LOGIN\r\n" + b64(b"bob") + b"\r\n*\r\nb NOOP\r\n")
    assert r.out == USERNAME + PASSWORD + bad(b"a") + ok(b"b")
    assert r.login == b"bob"
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH LOGIN command")]


def test_authenticate_login_commands_are_just_base64() -> None:
    # "b NOOP" is the user name line: "b" is valid base64 of nothing? no: one
    # char is a 4n+1 length, invalid
    r = check(b"a AUTHENTICATE LOGIN\r\nb NOOP\r\n")
    assert r.out == USERNAME + b"BAD invalid command\r\n"


# -- AUTHENTICATE CRAM-MD5 ------------------------------------------------------------


CRAM = make_conf(imap_auth=AUTH_PLAIN_ENABLED | AUTH_CRAM_MD5_ENABLED)
CHALLENGE = b"+ " + b64(SALT[:-2]) + b"\r\n"


def test_authenticate_cram_md5() -> None:
    digest = b"b913a602c7eda7a495b4e6e7334d3890"
    r = check(b"a AUTHENTICATE CRAM-MD5\r\n" + b64(b"tim " + digest) + b"\r\n", CRAM)
    assert r.out == CHALLENGE
    assert r.auth == (b"tim", digest, AuthMethod.CRAM_MD5, SALT)
    assert r.login == b"tim"


def test_authenticate_cram_md5_disabled() -> None:
    r = check(b"a AUTHENTICATE CRAM-MD5\r\n")
    assert r.out == bad()
    assert r.errors == 0


def test_authenticate_cram_md5_initial_response_refused() -> None:
    assert check(b"a AUTHENTICATE CRAM-MD5 " + b64(b"x") + b"\r\n", CRAM).out == bad()


@pytest.mark.parametrize(
    ("response", "login", "log"),
    [
        (b"!!!!", b"", "client sent invalid base64 encoding in AUTH CRAM-MD5 command"),
        (b64(b"tim"), b"tim", "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
        (b64(b"tim abc"), b"tim", "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
    ],
)
def test_authenticate_cram_md5_errors(response: bytes, login: bytes, log: str) -> None:
    r = check(b"a AUTHENTICATE CRAM-MD5\r\n" + response + b"\r\n", CRAM)
    assert r.out == CHALLENGE + bad()
    assert r.login == login
    assert r.logs == [(INFO, log)]


# -- AUTHENTICATE EXTERNAL ------------------------------------------------------------


EXTERNAL = make_conf(imap_auth=AUTH_PLAIN_ENABLED | AUTH_EXTERNAL_ENABLED)


def test_authenticate_external() -> None:
    r = check(b"a AUTHENTICATE EXTERNAL\r\n" + b64(b"alice") + b"\r\n", EXTERNAL)
    assert r.out == USERNAME
    assert r.auth == (b"alice", b"", AuthMethod.EXTERNAL, b"")


def test_authenticate_external_initial_response() -> None:
    r = check(b"a AUTHENTICATE EXTERNAL =\r\n", EXTERNAL)
    assert r.out == b""
    assert r.auth == (b"", b"", AuthMethod.EXTERNAL, b"")


def test_authenticate_external_disabled() -> None:
    assert check(b"a AUTHENTICATE EXTERNAL\r\n").out == bad()


def test_authenticate_external_initial_response_not_gated() -> None:
    # as nginx: ngx_mail_auth_parse decodes an initial response itself
    r = check(b"a AUTHENTICATE EXTERNAL " + b64(b"bob") + b"\r\n")
    assert r.auth == (b"bob", b"", AuthMethod.EXTERNAL, b"")


def test_authenticate_external_bad_base64() -> None:
    r = check(b"a AUTHENTICATE EXTERNAL\r\n!\r\n", EXTERNAL)
    assert r.out == USERNAME + bad()
    assert r.logs == [(INFO, "client sent invalid base64 encoding in AUTH EXTERNAL command")]


# -- AUTHENTICATE errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"a AUTHENTICATE\r\n",
        b"a AUTHENTICATE FOO\r\n",
        b"a AUTHENTICATE XOAUTH2 abc\r\n",
        b"a AUTHENTICATE LOGIN a b\r\n",
        b"a AUTHENTICATE PLAIN a b\r\n",
        b"a AUTHENTICATE EXTERNAL a b\r\n",
        b"a AUTHENTICATE PLAINX\r\n",
    ],
)
def test_authenticate_invalid(line: bytes) -> None:
    r = check(line, make_conf(imap_auth=ALL_AUTH))
    assert r.out == bad()
    assert r.next is Next.READ
    assert r.errors == 0


def test_authenticate_exchange_too_long_for_window() -> None:
    # the AUTHENTICATE line stays in the window while its response is read
    conf = make_conf(imap_client_buffer=40)
    first = b"a AUTHENTICATE PLAIN\r\n"
    r = check(first + b"A" * 30, conf)
    window = first + b"A" * (40 - len(first))
    assert r.out == b"+ \r\n" + bad()
    assert r.next is Next.CLOSE
    assert r.logs == [(INFO, f'client sent too long command "{window.decode()}"')]


# -- STARTTLS ------------------------------------------------------------------------


STARTTLS_ON = make_conf(starttls=Starttls.ON)
STARTTLS_ONLY = make_conf(starttls=Starttls.ONLY)


def test_starttls() -> None:
    r, m = run(b"a STARTTLS\r\nb LOGIN injected pw\r\n", STARTTLS_ON)
    assert r.out == ok()
    assert r.next is Next.STARTTLS
    assert r.action == "in starttls state"
    assert m.buffered == 0
    # nothing pipelined survives (CVE-2014-3556), even what arrives now
    assert m.receive(b"c NOOP\r\n") is Next.READ
    m.tls_started()
    assert m.action == "in auth state"
    assert m.receive(b"d CAPABILITY\r\n") is Next.READ
    assert b"".join(m.out) == CAPA + ok(b"d")


def test_starttls_per_byte() -> None:
    r, m = run(b"a STARTTLS\r\nb NOOP\r\n", STARTTLS_ON, per_byte=True)
    assert r.out == ok()
    assert r.next is Next.STARTTLS
    assert m.buffered == 0


def test_starttls_twice() -> None:
    _, m = run(b"a STARTTLS\r\n", STARTTLS_ON)
    m.tls_started()
    assert m.receive(b"b STARTTLS\r\n") is Next.READ
    assert b"".join(m.out) == bad(b"b")


def test_starttls_off() -> None:
    r = check(b"a STARTTLS\r\n")
    assert r.out == bad()
    assert r.errors == 0


def test_starttls_over_implicit_tls() -> None:
    assert check(b"a STARTTLS\r\n", STARTTLS_ON, tls=True).out == bad()


@pytest.mark.parametrize(
    "line",
    [b"a LOGIN u p\r\n", b"a AUTHENTICATE PLAIN\r\n", b"a AUTHENTICATE PLAIN " + b64(b"\0u\0p")],
)
def test_starttls_only_refuses_login_before_tls(line: bytes) -> None:
    r = check(line + b"\r\n", STARTTLS_ONLY)
    assert r.out.startswith(bad())
    assert r.next is Next.READ


def test_starttls_only_after_tls() -> None:
    _, m = run(b"a STARTTLS\r\n", STARTTLS_ONLY)
    m.tls_started()
    assert m.receive(b"b LOGIN u p\r\n") is Next.AUTH


def test_starttls_only_with_implicit_tls() -> None:
    assert check(b"a LOGIN u p\r\n", STARTTLS_ONLY, tls=True).next is Next.AUTH


# -- after the auth service answered -----------------------------------------------------


def test_auth_failed_line_keeps_the_tag_space() -> None:
    _, m = run(b"x7 LOGIN u p\r\n")
    m.auth_failed(b"Invalid login or password", None)
    assert m.out == [b"x7 NO Invalid login or password\r\n"]


def test_auth_failed_after_authenticate() -> None:
    _, m = run(b"q AUTHENTICATE PLAIN\r\n" + b64(b"\0u\0p") + b"\r\n")
    m.auth_failed(b"Go away", b"535 5.7.8")
    assert m.out == [b"q NO Go away\r\n"]


def start(data: bytes, conf: ServerConf = CONF) -> ImapMachine:
    m = ImapMachine(conf, SALT if ImapMachine.needs_salt(conf) else b"")
    m.greeting()
    assert m.receive(data) is Next.AUTH
    return m


def test_resume_handles_buffered_input() -> None:
    m = start(b"a LOGIN u p\r\nb NOOP\r\nc LOGIN v w\r\n")
    m.auth_failed(b"bad", None)
    assert m.resume() is Next.AUTH
    assert b"".join(m.out) == b"a NO bad\r\n" + ok(b"b")
    assert m.auth is not None and m.auth.login == b"v"
    assert m.tag == b"c "
    assert m.action == "in http auth state"


def test_resume_with_nothing_buffered() -> None:
    _, m = run(b"a AUTHENTICATE LOGIN\r\n" + b64(b"u") + b"\r\n" + b64(b"p") + b"\r\n")
    m.auth_failed(b"bad", None)
    assert m.resume() is Next.READ
    assert m.mail_state == ImapState.START
    assert m.action == "in auth state"
    assert m.auth is None
    m.out.clear()
    assert m.receive(b"b NOOP\r\n") is Next.READ
    assert m.out == [ok(b"b")]


def test_resume_keeps_the_failed_tag_for_a_tagless_error() -> None:
    # nginx resets s->tag only once a command is answered; the failed
    # command went to the auth service instead
    _, m = run(b"a1 LOGIN u p\r\n")
    m.auth_failed(b"bad", None)
    m.resume()
    m.out.clear()
    m.receive(b"\r\nb NOOP\r\n")
    assert b"".join(m.out) == bad(b"a1") + ok(b"b")


def test_resume_keeps_login_and_errors() -> None:
    m = start(b"a X\r\nb LOGIN alice p\r\n")
    m.auth_failed(b"bad", None)
    m.resume()
    assert m.login == b"alice"
    assert m.errors == 1


def test_second_cram_md5_attempt() -> None:
    # 9bc13718f: a second CRAM-MD5 attempt starts from clean state
    data = b"a AUTHENTICATE CRAM-MD5\r\n" + b64(b"tim " + b"0" * 32) + b"\r\n"
    _, m = run(data, CRAM)
    m.auth_failed(b"bad", None)
    m.resume()
    m.out.clear()
    assert m.receive(b"b AUTHENTICATE CRAM-MD5\r\n" + b64(b"tim") + b"\r\n") is Next.READ
    assert b"".join(m.out) == CHALLENGE + bad(b"b")


# -- the command window (whole input only: nginx depends on the split) ---------------


def test_pipelined_commands_share_the_window() -> None:
    # nginx rewinds its buffer only when every byte in it was handled, so
    # pipelined commands must fit in it together
    conf = make_conf(imap_client_buffer=32)
    data = b"a NOOP\r\n" * 3 + b"bb NOOP\r\nc NOOP\r\n"  # 41 bytes
    r, _ = run(data, conf)
    assert r.out == ok(b"a") * 3 + bad(b"bb")
    assert r.next is Next.CLOSE
    assert r.logs == [(INFO, f'client sent too long command "{data[:32].decode()}"')]
    # fed command by command, they fit
    r2, _ = run(data, conf, per_byte=True)
    assert r2.out == ok(b"a") * 3 + ok(b"bb") + ok(b"c")


def test_pipelined_commands_filling_the_window_exactly() -> None:
    conf = make_conf(imap_client_buffer=32)
    data = b"a NOOP\r\n" * 5  # the window drains after 4, then takes the 5th
    assert check(data, conf).out == ok(b"a") * 5


def test_window_rewinds_once_drained() -> None:
    conf = make_conf(imap_client_buffer=16)
    m = ImapMachine(conf)
    m.greeting()
    for tag in (b"a", b"b", b"c", b"d"):
        assert m.receive(tag + b" NOOP\r\n") is Next.READ
        assert m.buffered == 0
    assert b"".join(m.out) == b"".join(ok(t) for t in (b"a", b"b", b"c", b"d"))


def test_exactly_full_window() -> None:
    conf = make_conf(imap_client_buffer=8)
    assert check(b"a NOOP\r\n", conf).out == ok()
    r = check(b"ab NOOP\r\n", conf)
    assert r.out == bad(b"ab")
    assert r.logs == [(INFO, 'client sent too long command "ab NOOP\r"')]


def test_too_long_invalid_command() -> None:
    conf = make_conf(imap_client_buffer=16)
    r = check(b"a SELECT " + b"x" * 20 + b"\r\n", conf)
    assert r.out == bad()
    assert r.next is Next.CLOSE
    assert r.errors == 0


def test_too_long_tag() -> None:
    conf = make_conf(imap_client_buffer=16)
    r = check(b"!" * 20, conf)
    assert r.out == bad(b"*")
    assert r.logs == [(INFO, 'client sent too long command "' + "!" * 16 + '"')]


def test_non_synchronising_literal_in_invalid_command_closes() -> None:
    r = check(b"a SELECT {5+}\r\nb NOOP\r\n")
    assert r.out == bad()
    assert r.next is Next.CLOSE
    r = check(b"a SELECT {5+}\nb NOOP\r\n")
    assert r.next is Next.CLOSE


def test_synchronising_literal_in_invalid_command_is_skipped() -> None:
    r = check(b"a SELECT {5}\r\nb NOOP\r\n")
    assert r.out == bad() + ok(b"b")
    assert r.next is Next.READ


def test_plus_brace_detection_needs_five_bytes() -> None:
    # nginx only looks when the LF is past the 5th byte of its buffer
    assert check(b"+}\r\nb NOOP\r\n").out == bad(b"*") + ok(b"b")
    assert check(b"a +}\r\n").next is Next.CLOSE


def test_binary_garbage_in_log_line() -> None:
    conf = make_conf(imap_client_buffer=8)
    r = check(b"\xff\xfe\x00abcdefgh", conf)
    assert r.logs == [(INFO, 'client sent too long command "\\xff\\xfe\x00abcde"')]


# -- house rules ---------------------------------------------------------------------


def test_no_io_imports() -> None:
    banned = {"asyncio", "socket", "ssl", "time", "logging", "random", "os"}
    assert not top_levels(imap.__file__) & banned


def test_slots_only() -> None:
    m = ImapMachine(CONF)
    with pytest.raises(AttributeError):
        m.extra = 1  # type: ignore[attr-defined]
