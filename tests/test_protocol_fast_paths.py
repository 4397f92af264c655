"""The per-login fast paths give exactly what the byte state machines give.

Each machine with a fast path has a class attribute ``_fast``; a subclass with
``_fast = False`` sends every input through the general code.  Hypothesis
drives both with the same (mostly well-formed) input and the same session
calls, and compares every return value, reply, log line and every slot of the
objects after each step.  The helpers with a shortcut (``parse_command``,
``decode_base64``, ``parse_addr``, ``build_request``) are compared with the
general code or with a transcription of nginx's.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfront.auth.base import AuthResult, SessionInfo, Status
from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_NONE_ENABLED,
    AUTH_PLAIN_ENABLED,
    AuthHttpUrl,
    AuthMethod,
    Protocol,
    ServerConf,
    Starttls,
    VerifyClient,
)
from mailfront.protocol import auth_http, sasl
from mailfront.protocol.auth_http import AuthHttpError, ResponseParser
from mailfront.protocol.base import AuthRequest, Next, UpNext
from mailfront.protocol.imap import ImapMachine, ImapUpstream
from mailfront.protocol.pop3 import Pop3Machine, Pop3Upstream
from mailfront.protocol.smtp import (
    SmtpMachine,
    SmtpUpstream,
    parse_command,
    parse_command_slow,
)
from support.machines import server_conf

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SALT = b"<42.1700000000@mail.example.com>\r\n"


class SlowImap(ImapMachine):
    __slots__ = ()
    _fast = False


class SlowImapUpstream(ImapUpstream):
    __slots__ = ()
    _fast = False


class SlowPop3(Pop3Machine):
    __slots__ = ()
    _fast = False


class SlowPop3Upstream(Pop3Upstream):
    __slots__ = ()
    _fast = False


class SlowSmtp(SmtpMachine):
    __slots__ = ()
    _fast = False


class SlowSmtpUpstream(SmtpUpstream):
    __slots__ = ()
    _fast = False


class SlowParser(ResponseParser):
    __slots__ = ()
    _fast = False


def _value(v: object) -> object:
    if isinstance(v, AuthRequest):
        return ("AuthRequest", v.login, v.passwd, v.method, v.salt, v.helo, v.smtp_from, v.smtp_to)
    if isinstance(v, list):
        return [_value(x) for x in v]
    return (type(v).__name__, v)


def snapshot(obj: object, cls: type) -> dict[str, object]:
    """Every slot of ``obj`` (declared by ``cls``), unset ones included."""
    names: tuple[str, ...] = cls.__dict__["__slots__"]
    return {name: _value(getattr(obj, name, "<unset>")) for name in names}


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def chunked(source: st.DataObject, lines: list[bytes]) -> list[bytes]:
    """Mostly one line per read (the fast paths' case), sometimes glued or cut."""
    draw = source.draw
    data = b"".join(lines)
    how = draw(st.sampled_from(["lines", "lines", "lines", "whole", "cuts"]))
    if how == "lines":
        return lines
    if how == "whole":
        return [data]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=4))))
    chunks, prev = [], 0
    for c in [*cuts, len(data)]:
        chunks.append(data[prev:c])
        prev = c
    return chunks


# -- the client-side machines ------------------------------------------------------------


def drive_pair(
    fast: Any,
    slow: Any,
    cls: type,
    chunks: list[bytes],
    decisions: list[int],
    failed: Callable[[Any], None],
) -> None:
    """Feed both machines the same chunks and make the same session calls."""
    assert snapshot(fast, cls) == snapshot(slow, cls)
    assert fast.greeting() == slow.greeting()
    for i, chunk in enumerate(chunks):
        nf = fast.receive(chunk)
        ns = slow.receive(chunk)
        assert nf == ns
        assert snapshot(fast, cls) == snapshot(slow, cls)
        if nf == Next.CLOSE:
            return
        if nf == Next.STARTTLS:
            fast.tls_started()
            slow.tls_started()
        elif nf == Next.AUTH:
            choice = decisions[i % len(decisions)] if decisions else 0
            if choice == 0:  # logged in: the rest goes to the backend
                assert fast.leftover() == slow.leftover()
                assert snapshot(fast, cls) == snapshot(slow, cls)
                return
            failed(fast)
            failed(slow)
            if choice == 1:  # Auth-Wait: back to the auth state
                assert fast.resume() == slow.resume()
            else:
                fast.close()
                slow.close()
        assert snapshot(fast, cls) == snapshot(slow, cls)


tags = st.sampled_from([b"a1", b"A001", b"x.-_9", b"t" * 32, b"t" * 33, b"", b"a+b", b"*"])
imap_commands = st.sampled_from(
    [
        b"LOGIN",
        b"login",
        b"LoGiN",
        b"AUTHENTICATE",
        b"authenticate",
        b"CAPABILITY",
        b"NOOP",
        b"LOGOUT",
        b"STARTTLS",
        b"BOGUS",
        b"LOGINX",
    ]
)
imap_args = st.one_of(
    st.sampled_from(
        [
            b"user",
            b"p@ss",
            b"PLAIN",
            b"plain",
            b"LOGIN",
            b"EXTERNAL",
            b"CRAM-MD5",
            b64(b"\0user\0pass"),
            b64(b"authz\0u\0p w"),
            b64(b"\0\0"),
            b64(b"nonul"),
            b64(b"a\0"),
            b"AHVzZXI",
            b"bad*b64",
            b'a"b',
            b"\\x",
            b"\xff\x00",
            b'"quoted"',
            b'"un',
            b'"a\\"b"',
            b"{4}\r\nabcd",
            b"{3+}\r\nabc",
            b"{0}\r\n",
            b"=",
            b"*",
        ]
    ),
    st.binary(min_size=1, max_size=6).filter(lambda b: not set(b) & set(b' "{\r\n')),
)
seps = st.sampled_from([b" ", b" ", b"  "])
imap_ends = st.sampled_from([b"\r\n", b"\r\n", b"\n", b" \r\n", b"  \r\n", b"\r", b"\rx\r\n"])


simple_atoms = st.binary(min_size=1, max_size=8).filter(lambda b: not set(b) & set(b' "{\r\n'))


@st.composite
def imap_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["good", "good", "login", "plain", "any", "cont"]))
    if kind == "good":  # what the fast path takes, mostly
        tag = draw(st.sampled_from([b"a1", b"A001", b"x.-_9", b"t" * 32]))
        if draw(st.booleans()):
            args = [draw(simple_atoms), draw(simple_atoms)]
            cmd = draw(st.sampled_from([b"LOGIN", b"login"]))
        else:
            cmd = b"AUTHENTICATE " + draw(st.sampled_from([b"PLAIN", b"plain"]))
            args = [b64(draw(st.sampled_from([b"\0u\0p", b"a\0bob\0p w\0x", b"\0\0"])))]
        line = tag + draw(seps) + cmd
        for arg in args:
            line += draw(seps) + arg
        return line + draw(st.sampled_from([b"\r\n", b"\n", b"  \r\n"]))
    tag = draw(tags)
    if kind == "login":
        cmd = draw(st.sampled_from([b"LOGIN", b"login", b"Login"]))
        args = draw(st.lists(imap_args, min_size=1, max_size=3))
    elif kind == "plain":
        cmd = draw(st.sampled_from([b"AUTHENTICATE", b"authenticate"]))
        args = [draw(st.sampled_from([b"PLAIN", b"plain", b"pLaIn"]))]
        args += draw(st.lists(imap_args, max_size=2))
    elif kind == "cont":  # an AUTHENTICATE continuation line
        return draw(imap_args) + draw(imap_ends)
    else:
        cmd = draw(imap_commands)
        args = draw(st.lists(imap_args, max_size=3))
    line = tag + draw(seps) + cmd
    for arg in args:
        line += draw(seps) + arg
    return line + draw(imap_ends)


imap_confs = st.builds(
    lambda size, errors, starttls, mask: server_conf(
        Protocol.IMAP,
        imap_client_buffer=size,
        max_errors=errors,
        starttls=starttls,
        imap_auth=mask,
    ),
    st.sampled_from([4096, 4096, 64, 20, 8]),
    st.integers(min_value=1, max_value=6),
    st.sampled_from(list(Starttls)),
    st.sets(
        st.sampled_from(
            [AUTH_PLAIN_ENABLED, AUTH_LOGIN_ENABLED, AUTH_CRAM_MD5_ENABLED, AUTH_EXTERNAL_ENABLED]
        )
    ).map(sum),
)


@SETTINGS
@given(
    imap_confs,
    st.booleans(),
    st.data(),
    st.lists(st.integers(0, 2), max_size=4),
)
def test_imap_machine_fast_equals_slow(
    conf: ServerConf, tls: bool, data: st.DataObject, decisions: list[int]
) -> None:
    lines = data.draw(st.lists(imap_lines(), min_size=1, max_size=6))
    chunks = chunked(data, lines)
    drive_pair(
        ImapMachine(conf, SALT, tls),
        SlowImap(conf, SALT, tls),
        ImapMachine,
        chunks,
        decisions,
        lambda m: m.auth_failed(b"Invalid login"),
    )


def test_imap_fast_path_is_taken() -> None:
    """The common commands do not reach the byte parser (no window is made)."""
    conf = server_conf(Protocol.IMAP)
    m = ImapMachine(conf)
    m.greeting()
    assert m.receive(b"a1 LOGIN user pass\r\n") == Next.AUTH
    assert (m.tag, m.login, m.auth and m.auth.passwd) == (b"a1 ", b"user", b"pass")
    assert m._pending == b"" and m._buf is None
    m = ImapMachine(conf)
    assert m.receive(b"a2 AUTHENTICATE PLAIN " + b64(b"\0bob\0pw") + b"\r\n") == Next.AUTH
    assert (m.tag, m.login, m.auth and m.auth.passwd) == (b"a2 ", b"bob", b"pw")


pop3_commands = st.sampled_from(
    [
        b"USER",
        b"user",
        b"PASS",
        b"pass",
        b"AUTH",
        b"CAPA",
        b"NOOP",
        b"QUIT",
        b"STLS",
        b"APOP",
        b"BOGUS",
        b"USE",
    ]
)
pop3_args = st.one_of(
    st.sampled_from(
        [
            b"bob",
            b"bob smith",
            b"p@ss word ",
            b"PLAIN",
            b"LOGIN",
            b64(b"\0u\0p"),
            b"\xff\x00",
            b"x" * 120,
            b"=",
            b"*",
        ]
    ),
    st.binary(min_size=1, max_size=6).filter(lambda b: not set(b) & set(b"\r\n")),
)
pop3_ends = st.sampled_from([b"\r\n", b"\r\n", b"\n", b" \r\n", b"\r", b"\rx\r\n"])


@st.composite
def pop3_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["user", "pass", "any", "cont"]))
    if kind == "cont":
        return draw(pop3_args) + draw(pop3_ends)
    if kind == "any":
        cmd = draw(pop3_commands)
        args = draw(st.lists(pop3_args, max_size=3))
    else:
        cmd = draw(st.sampled_from([b"USER", b"user", b"UsEr"] if kind == "user" else [b"PASS"]))
        args = draw(st.lists(pop3_args, min_size=0, max_size=2))
    line = cmd
    for arg in args:
        line += draw(seps) + arg
    return line + draw(pop3_ends)


pop3_confs = st.builds(
    lambda errors, starttls, mask: server_conf(
        Protocol.POP3,
        max_errors=errors,
        starttls=starttls,
        pop3_auth=mask,
    ),
    st.integers(min_value=1, max_value=6),
    st.sampled_from(list(Starttls)),
    st.sets(
        st.sampled_from(
            [AUTH_PLAIN_ENABLED, AUTH_APOP_ENABLED, AUTH_CRAM_MD5_ENABLED, AUTH_EXTERNAL_ENABLED]
        )
    ).map(sum),
)


@SETTINGS
@given(pop3_confs, st.booleans(), st.data(), st.lists(st.integers(0, 2), max_size=4))
def test_pop3_machine_fast_equals_slow(
    conf: ServerConf, tls: bool, data: st.DataObject, decisions: list[int]
) -> None:
    lines = data.draw(st.lists(pop3_lines(), min_size=1, max_size=6))
    if data.draw(st.booleans()):  # a well-formed USER, PASS first
        user = data.draw(st.sampled_from([b"USER", b"user"])) + data.draw(seps)
        user += data.draw(pop3_args.filter(lambda b: b[:1] != b" ")) + b"\r\n"
        lines[:0] = [user, b"PASS " + data.draw(pop3_args) + b"\r\n"]
    chunks = chunked(data, lines)
    drive_pair(
        Pop3Machine(conf, SALT, tls),
        SlowPop3(conf, SALT, tls),
        Pop3Machine,
        chunks,
        decisions,
        lambda m: m.auth_failed(b"Invalid login"),
    )


def test_pop3_fast_path_is_taken() -> None:
    conf = server_conf(Protocol.POP3)
    m = Pop3Machine(conf)
    m.greeting()
    assert m.receive(b"USER bob smith \r\n") == Next.READ
    assert m._buf is None and m.out == [b"+OK\r\n"] and m.login == b"bob smith "
    assert m.receive(b"PASS pw\r\n") == Next.AUTH
    assert m.auth is not None and (m.auth.login, m.auth.passwd) == (b"bob smith ", b"pw")


smtp_verbs = st.sampled_from(
    [
        b"EHLO",
        b"ehlo",
        b"HELO",
        b"AUTH",
        b"auth",
        b"MAIL",
        b"RCPT",
        b"RSET",
        b"NOOP",
        b"QUIT",
        b"VRFY",
        b"STARTTLS",
        b"BOGUS",
        b"EHL0",
        b"",
    ]
)
smtp_args = st.one_of(
    st.sampled_from(
        [
            b"client.example",
            b"PLAIN",
            b"plain",
            b"LOGIN",
            b"CRAM-MD5",
            b"EXTERNAL",
            b"NONE",
            b64(b"\0user\0pass"),
            b64(b"z\0u\0p\0q"),
            b64(b"\0u"),
            b64(b"bob"),
            b64(b"bob " + b"0" * 32),
            b"FROM:<a@b>",
            b"TO:<c@d>",
            b"a\tb",
            b"\xff\x00",
            b"=",
            b"AHVzZXI",
        ]
    ),
    st.binary(min_size=1, max_size=6).filter(lambda b: not set(b) & set(b" \r\n")),
)
smtp_ends = st.sampled_from([b"\r\n", b"\r\n", b"\n", b" \r\n", b"  \r\n", b"\r", b"\rx\r\n"])


@st.composite
def smtp_lines(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:  # an argument line (AUTH continuation)
        args = draw(st.lists(smtp_args, max_size=2))
        return b" ".join(args) + draw(smtp_ends)
    line = draw(smtp_verbs)
    for arg in draw(st.lists(smtp_args, max_size=3)):
        line += draw(seps) + arg
    if draw(st.integers(0, 20)) == 0:
        line += b" x" * 12  # too many arguments
    return line + draw(smtp_ends)


smtp_confs = st.builds(
    lambda size, errors, starttls, mask: server_conf(
        Protocol.SMTP,
        server_name="mx",
        smtp_client_buffer=size,
        max_errors=errors,
        starttls=starttls,
        smtp_auth=mask,
        smtp_capabilities=("PIPELINING", "SIZE 1000"),
    ),
    st.sampled_from([4096, 4096, 64, 16, 0]),
    st.integers(min_value=1, max_value=6),
    st.sampled_from(list(Starttls)),
    st.sets(
        st.sampled_from(
            [
                AUTH_PLAIN_ENABLED,
                AUTH_LOGIN_ENABLED,
                AUTH_CRAM_MD5_ENABLED,
                AUTH_EXTERNAL_ENABLED,
                AUTH_NONE_ENABLED,
            ]
        )
    ).map(sum),
)


@SETTINGS
@given(smtp_confs, st.booleans(), st.data(), st.lists(st.integers(0, 2), max_size=4))
def test_smtp_machine_fast_equals_slow(
    conf: ServerConf, tls: bool, data: st.DataObject, decisions: list[int]
) -> None:
    lines = data.draw(st.lists(smtp_lines(), min_size=1, max_size=6))
    if data.draw(st.booleans()):  # a well-formed login first
        login = data.draw(
            st.sampled_from(
                [
                    [b"AUTH PLAIN " + b64(b"\0user\0pass") + b"\r\n"],
                    [b"AUTH LOGIN\r\n", b64(b"user") + b"\r\n", b64(b"pass") + b"\r\n"],
                    [b"AUTH LOGIN " + b64(b"user") + b"\r\n", b64(b"pass") + b"\r\n"],
                    [b"MAIL FROM:<a@b> SIZE=10  \r\n", b"RCPT TO:<c@d>\r\n"],
                ]
            )
        )
        lines[:0] = [data.draw(st.sampled_from([b"EHLO client.example\r\n", b"HELO c\n"]))]
        lines[1:1] = login
    chunks = chunked(data, lines)
    drive_pair(
        SmtpMachine(conf, SALT, tls),
        SlowSmtp(conf, SALT, tls),
        SmtpMachine,
        chunks,
        decisions,
        lambda m: m.auth_failed(b"Invalid login", None),
    )


@SETTINGS
@given(
    st.lists(smtp_args | smtp_verbs | st.sampled_from([b" ", b"  ", b"\r", b"\t"])), st.booleans()
)
def test_smtp_parse_command_fast_equals_slow(parts: list[bytes], arg_mode: bool) -> None:
    body = b"".join(parts).replace(b"\n", b"")
    for end in (b"\r\n", b"\n"):
        line = body + end
        assert parse_command(line, arg_mode) == parse_command_slow(line, arg_mode)


# -- the backend logins ---------------------------------------------------------------------


def drive_upstreams(fast: Any, slow: Any, cls: type, chunks: list[bytes]) -> None:
    assert snapshot(fast, cls) == snapshot(slow, cls)
    for chunk in chunks:
        rf = fast.receive(chunk)
        rs = slow.receive(chunk)
        assert rf == rs
        assert snapshot(fast, cls) == snapshot(slow, cls)
        if rf != UpNext.READ:
            break


def replies(source: st.DataObject, good: list[bytes], bad: list[bytes]) -> list[bytes]:
    lines = source.draw(st.lists(st.sampled_from(good + good + bad), min_size=1, max_size=6))
    return chunked(source, lines)


@SETTINGS
@given(st.sampled_from([4096, 4096, 40, 8, 3]), st.booleans(), st.data())
def test_imap_upstream_fast_equals_slow(size: int, pass_err: bool, data: st.DataObject) -> None:
    conf = server_conf(
        Protocol.IMAP,
        proxy_buffer=size,
        proxy_pass_error_message=pass_err,
    )
    good = [
        b"* OK ready\r\n",
        b"+ OK\r\n",
        b"+\r\n",
        b"a1 OK done\r\n",
        b"* CAPABILITY IMAP4rev1\r\n",
        b"* CAPABILITY X\r\na1 OK in\r\n",
    ]
    bad = [b"a1 NO bad\r\n", b"* BAD\x00x\r\n", b"OK", b"\r\n", b"x" * 50 + b"\r\n", b"* OK"]
    chunks = replies(data, good, bad)
    drive_upstreams(
        ImapUpstream(conf, b"user", b"pass", b"a1 "),
        SlowImapUpstream(conf, b"user", b"pass", b"a1 "),
        ImapUpstream,
        chunks,
    )


@SETTINGS
@given(st.sampled_from([4096, 4096, 30, 8, 3]), st.booleans(), st.data())
def test_pop3_upstream_fast_equals_slow(size: int, pass_err: bool, data: st.DataObject) -> None:
    conf = server_conf(
        Protocol.POP3,
        proxy_buffer=size,
        proxy_pass_error_message=pass_err,
    )
    good = [b"+OK ready\r\n", b"+OK\r\n", b"+OK logged in\r\n"]
    bad = [b"-ERR no\r\n", b"-ERR \x00x\r\n", b"+O", b"\r\n", b"+OK" + b"x" * 40 + b"\r\n"]
    chunks = replies(data, good, bad)
    drive_upstreams(
        Pop3Upstream(conf, b"user", b"pass"),
        SlowPop3Upstream(conf, b"user", b"pass"),
        Pop3Upstream,
        chunks,
    )


@SETTINGS
@given(
    st.sampled_from([4096, 4096, 40, 8, 3]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([b"EHLO c\r\n", b"HELO c\r\n", b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n"]),
    st.data(),
)
def test_smtp_upstream_fast_equals_slow(
    size: int, xclient: bool, smtp_auth: bool, pass_err: bool, hello: bytes, data: st.DataObject
) -> None:
    conf = server_conf(
        Protocol.SMTP,
        server_name="mx",
        proxy_buffer=size,
        xclient=xclient,
        proxy_smtp_auth=smtp_auth,
        proxy_pass_error_message=pass_err,
        smtp_auth=AUTH_PLAIN_ENABLED | AUTH_NONE_ENABLED,
    )
    machine = SmtpMachine(conf)
    machine.receive(hello)
    machine.receive(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n")
    good = [
        b"220 mx ESMTP\r\n",
        b"250 mx\r\n",
        b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        b"250-mx\r\n",
        b"250 done\r\n",
        b"235 2.0.0 OK\r\n",
        b"220 ok\r\n",
    ]
    bad = [b"554 no\r\n", b"451 \x00x\r\n", b"25", b"\r\n", b"250-" + b"x" * 40 + b"\r\n"]
    chunks = replies(data, good, bad)
    drive_upstreams(
        SmtpUpstream(conf, machine, b"u", b"p", "192.0.2.1", b"[UNAVAILABLE]"),
        SlowSmtpUpstream(conf, machine, b"u", b"p", "192.0.2.1", b"[UNAVAILABLE]"),
        SmtpUpstream,
        chunks,
    )


# -- auth_http ------------------------------------------------------------------------------


def outcome(parser: ResponseParser, data: bytes, protocol: str) -> object:
    try:
        if not parser.feed(data):
            return "incomplete"
        r = parser.result(protocol, has_passwd=False)
    except AuthHttpError as e:
        return (type(e).__name__, str(e))
    return (
        r.status,
        r.errmsg,
        r.server,
        r.port,
        r.user,
        r.passwd,
        r.wait,
        r.error_code,
        parser.wait_seen,
        parser.peer_name,
        parser.done,
    )


header_names = st.sampled_from(
    [
        b"Auth-Status",
        b"auth-status",
        b"AUTH-SERVER",
        b"Auth-Port",
        b"Auth-User",
        b"Auth-Pass",
        b"Auth-Wait",
        b"Auth-Error-Code",
        b"Auth-Status-X",
        b"Auth-Statu",
        b"X-Auth-Status",
        b"Server",
        b"Date",
        b"Bad_Name",
        b"-x",
        b"HTTP",
    ]
)
header_values = st.sampled_from(
    [
        b"OK",
        b"WAIT",
        b"Invalid login",
        b"127.0.0.1",
        b"010.0.0.1",
        b"1..2.3",
        b"::1",
        b"143",
        b"0",
        b"3",
        b"70000",
        b"",
        b"  padded  ",
        b"a  b",
        b"\xff\x00",
        b"x:y",
        b"255.255.255.255",
    ]
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    out = draw(
        st.sampled_from(
            [
                b"HTTP/1.0 200 OK\r\n",
                b"HTTP/1.1 204 No Content\r\n",
                b"HTTP/1.0 200\n",
                b"",
                b"HTTP/1.0 x\rx",
            ]
        )
    )
    for _ in range(draw(st.integers(0, 9))):
        name = draw(header_names)
        sep = draw(st.sampled_from([b": ", b": ", b":", b":  ", b"", b" :"]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b" \r\n", b"\r"]))
        out += name + sep + draw(header_values) + end
    out += draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"", b"\r"]))
    return out + draw(st.sampled_from([b"", b"body", b"x" * 1100]))


@SETTINGS
@given(answers(), st.sampled_from(["imap", "pop3", "smtp"]))
def test_auth_http_parser_fast_equals_slow(data: bytes, protocol: str) -> None:
    assert outcome(ResponseParser(), data, protocol) == outcome(SlowParser(), data, protocol)


def test_auth_http_parser_fast_path_is_taken() -> None:
    p = ResponseParser()
    assert p.feed(
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\nAuth-Port: 143\r\n\r\n"
    )
    assert p._buf is None  # the state machines were not started
    r = p.result("imap")
    assert (r.server, r.port) == ("10.0.0.1", 143)


def _ngx_decode_base64(src: bytes) -> bytes | None:
    """A transcription of ngx_decode_base64 (ngx_string.c), byte by byte."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    values = []
    for c in src:
        if c == 0x3D:
            break
        i = alphabet.find(bytes([c]))
        if i < 0:
            return None
        values.append(i)
    if len(values) % 4 == 1:
        return None
    out = bytearray()
    for q in range(0, len(values) - 3, 4):
        a, b, c, d = values[q : q + 4]
        out += bytes(((a << 2 | b >> 4) & 0xFF, (b << 4 | c >> 2) & 0xFF, (c << 6 | d) & 0xFF))
    rest = values[len(values) - len(values) % 4 :]
    if len(rest) > 1:
        out.append((rest[0] << 2 | rest[1] >> 4) & 0xFF)
    if len(rest) > 2:
        out.append((rest[1] << 4 | rest[2] >> 2) & 0xFF)
    return bytes(out)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=12).map(lambda b: binascii.b2a_base64(b, newline=False)),
        st.lists(st.sampled_from([*b"ABQRaz09+/=", 0x20, 0x0A, 0x2D])).map(bytes),
        st.binary(max_size=12),
    )
)
def test_decode_base64_is_nginx(src: bytes) -> None:
    assert sasl.decode_base64(src) == _ngx_decode_base64(src)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"0", b"1", b"9", b"25", b"255", b"256", b"010", b"00", b""]),
        min_size=1,
        max_size=5,
    )
)
def test_parse_addr_shortcut_is_ngx_inet_addr(octets: list[bytes]) -> None:
    text = b".".join(octets)
    v4 = auth_http._inet_addr(text)
    want = str(ipaddress.IPv4Address(v4)) if v4 is not None else None
    if want is None:
        v6 = auth_http._inet6_addr(text)
        want = str(ipaddress.IPv6Address(v6)) if v6 is not None else None
    assert auth_http.parse_addr(text) == want


# -- build_request against the straightforward construction ---------------------------------


def reference_request(conf: ServerConf, info: SessionInfo, req: AuthRequest, attempt: int) -> bytes:
    """``ngx_mail_auth_http_create_request``, header by header, with no caching."""
    assert conf.auth_http is not None
    esc = auth_http.escape
    crlf = b"\r\n"
    method = AuthMethod(req.method)
    out = b"GET " + conf.auth_http.uri.encode() + b" HTTP/1.0\r\n"
    out += b"Host: " + conf.auth_http.host_header.encode() + crlf
    out += (
        b"Auth-Method: "
        + [b"plain", b"plain", b"plain", b"apop", b"cram-md5", b"external", b"none"][method]
        + crlf
    )
    out += b"Auth-User: " + esc(req.login) + crlf + b"Auth-Pass: " + esc(req.passwd) + crlf
    if method in (AuthMethod.APOP, AuthMethod.CRAM_MD5) and req.salt:
        out += b"Auth-Salt: " + req.salt
    out += b"Auth-Protocol: " + conf.protocol.value.encode() + crlf
    out += b"Auth-Login-Attempt: " + str(attempt).encode() + crlf
    out += b"Client-IP: " + info.client_addr.encode() + crlf
    if info.client_host:
        out += b"Client-Host: " + info.client_host + crlf
    if info.proxy_src_addr is not None:
        out += b"Proxy-Protocol-Addr: " + info.proxy_src_addr.encode() + crlf
        out += b"Proxy-Protocol-Port: " + str(info.proxy_src_port).encode() + crlf
        out += b"Proxy-Protocol-Server-Addr: " + (info.proxy_dst_addr or "").encode() + crlf
        out += b"Proxy-Protocol-Server-Port: " + str(info.proxy_dst_port).encode() + crlf
    if method == AuthMethod.NONE:
        out += b"Auth-SMTP-Helo: " + req.helo + crlf
        out += b"Auth-SMTP-From: " + req.smtp_from + crlf
        out += b"Auth-SMTP-To: " + req.smtp_to + crlf
    if info.ssl is not None:
        out += b"Auth-SSL: on\r\n"
        names = ["Auth-SSL-Protocol", "Auth-SSL-Cipher"]
        if conf.ssl_verify_client != VerifyClient.OFF:
            names += [
                "Auth-SSL-Verify",
                "Auth-SSL-Subject",
                "Auth-SSL-Issuer",
                "Auth-SSL-Serial",
                "Auth-SSL-Fingerprint",
            ]
            if conf.auth_http_pass_client_cert:
                names.append("Auth-SSL-Cert")
        for name in names:
            value = info.ssl.get(name)
            if value:
                if name == "Auth-SSL-Cert":
                    value = esc(value)
                out += name.encode() + b": " + value + crlf
    for key, text in conf.auth_http_header:
        out += key.encode() + b": " + text.encode() + crlf
    return out + crlf


@SETTINGS
@given(
    st.sampled_from(list(Protocol)),
    st.lists(
        st.tuples(st.sampled_from(["X-Auth-Key", "X-A"]), st.sampled_from(["secret", ""])),
        max_size=2,
    ),
    st.sampled_from(list(VerifyClient)),
    st.booleans(),
    st.sampled_from(list(AuthMethod)),
    st.sampled_from([b"user", b"a b%c", b"", b"\xff@x"]),
    st.sampled_from([b"pass", b"p w", b""]),
    st.sampled_from([b"", SALT]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(1, 20),
)
def test_build_request_is_reference(
    protocol: Protocol,
    headers: list[tuple[str, str]],
    verify: VerifyClient,
    pass_cert: bool,
    method: AuthMethod,
    login: bytes,
    passwd: bytes,
    salt: bytes,
    host: bool,
    proxy: bool,
    ssl: bool,
    attempt: int,
) -> None:
    conf = server_conf(
        protocol,
        auth_http=AuthHttpUrl(host_header="auth.example", addr="127.0.0.1", port=9, uri="/a b"),
        auth_http_header=tuple(headers),
        ssl_verify_client=verify,
        auth_http_pass_client_cert=pass_cert,
    )
    info = SessionInfo(protocol.value, "192.0.2.7")
    if host:
        info.client_host = b"client.example"
    if proxy:
        info.proxy_src_addr, info.proxy_src_port = "198.51.100.1", 4000
        info.proxy_dst_addr, info.proxy_dst_port = None, 25
    if ssl:
        info.ssl = {
            "Auth-SSL-Protocol": b"TLSv1.3",
            "Auth-SSL-Verify": b"SUCCESS",
            "Auth-SSL-Cert": b"-----BEGIN\n x\n",
            "Auth-SSL-Cipher": b"",
        }
    req = AuthRequest(login, passwd, method, salt, b"helo", b"MAIL FROM:<a>", b"RCPT TO:<b>")
    want = reference_request(conf, info, req, attempt)
    assert auth_http.build_request(conf, info, req, attempt) == want
    assert auth_http.build_request(conf, info, req, attempt) == want  # from the cache


def test_build_request_without_auth_http() -> None:
    conf = server_conf(Protocol.IMAP)
    req = AuthRequest(b"u", b"p", AuthMethod.PLAIN)
    with pytest.raises(ValueError, match="no auth_http"):
        auth_http.build_request(conf, SessionInfo("imap", "192.0.2.7"), req, 1)


def test_holds_password_by_method() -> None:
    for method in AuthMethod:
        for salt in (b"", SALT):
            for passwd in (b"", b"pw"):
                req = AuthRequest(b"u", passwd, method, salt)
                if method in (AuthMethod.APOP, AuthMethod.CRAM_MD5):
                    want = not salt
                elif method == AuthMethod.EXTERNAL:
                    want = passwd != b""
                else:
                    want = True
                assert auth_http.holds_password(req) is want


def test_auth_result_fields() -> None:
    """The positional AuthResult of result() puts each value in its field."""
    p = ResponseParser()
    p.feed(
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\nAuth-Port: 143\r\n"
        b"Auth-User: u2\r\nAuth-Pass: p2\r\nAuth-Wait: 3\r\nAuth-Error-Code: 535 x\r\n\r\n"
    )
    r = p.result("smtp")
    want = AuthResult(Status.OK, b"", "10.0.0.1", 143, b"u2", b"p2", 3, b"535 x")
    assert [getattr(r, f) for f in AuthResult.__slots__] == [
        getattr(want, f) for f in AuthResult.__slots__
    ]
    assert (r.server, r.port, r.user, r.passwd, r.wait, r.error_code) == (
        "10.0.0.1",
        143,
        b"u2",
        b"p2",
        3,
        b"535 x",
    )
