"""Hypothesis: the SMTP machines never raise, stay within their buffers, and the
parser agrees with a byte-at-a-time transcription of nginx's state machine."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront.conf.model import (
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_NONE_ENABLED,
    AUTH_PLAIN_ENABLED,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.protocol.base import Next, UpNext
from mailfront.protocol.smtp import SmtpMachine, SmtpUpstream, parse_command
from support.machines import server_conf

SALT = b"<1.2@mx>\r\n"

TOKENS = [
    b"EHLO",
    b"HELO",
    b"AUTH",
    b"PLAIN",
    b"LOGIN",
    b"CRAM-MD5",
    b"EXTERNAL",
    b"MAIL",
    b"FROM:<a@b>",
    b"RCPT",
    b"TO:<c@d>",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"STARTTLS",
    b"DATA",
    b"VRFY",
    b"dXNlcg==",
    b"AHUAcA==",
    b"=",
    b"*",
    b" ",
    b"  ",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"x",
    b"\xff",
    b"ehlo",
    b"AbCd",
]

token_stream = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)
any_bytes = st.one_of(token_stream, st.binary(max_size=300))


def conf_strategy() -> st.SearchStrategy[ServerConf]:
    bits = [
        AUTH_PLAIN_ENABLED,
        AUTH_LOGIN_ENABLED,
        AUTH_CRAM_MD5_ENABLED,
        AUTH_EXTERNAL_ENABLED,
        AUTH_NONE_ENABLED,
    ]
    return st.builds(
        lambda auth, starttls, buf, errors, xclient, smtp_auth, pass_err, proxy_buf: server_conf(
            Protocol.SMTP,
            server_name="mx",
            smtp_auth=auth,
            starttls=starttls,
            smtp_client_buffer=buf,
            max_errors=errors,
            xclient=xclient,
            proxy_smtp_auth=smtp_auth,
            proxy_pass_error_message=pass_err,
            proxy_buffer=proxy_buf,
            smtp_capabilities=("PIPELINING",),
        ),
        st.lists(st.sampled_from(bits), unique=True).map(sum),
        st.sampled_from(list(Starttls)),
        st.integers(1, 80),
        st.integers(1, 6),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.integers(1, 64),
    )


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def check_bounds(m: SmtpMachine, nxt: Next) -> None:
    limit = max(m.conf.smtp_client_buffer, 1)
    assert m._buf is None or 0 < len(m._buf) <= limit
    assert m._buf is not None or m._pos == 0
    if nxt is Next.READ:
        assert not m._pending  # nothing held back while reading
    if nxt in (Next.CLOSE, Next.STARTTLS):
        assert m._buf is None and m._pending is None
    for line in m.out:
        assert isinstance(line, bytes) and line.endswith(b"\r\n")
    for level, text in m.logs:
        assert isinstance(level, int) and isinstance(text, str)


@settings(max_examples=300, deadline=None)
@given(
    conf_strategy(),
    st.booleans(),
    any_bytes,
    st.lists(st.integers(0, 400), max_size=20),
    st.lists(st.integers(0, 3), min_size=8, max_size=8),
)
def test_machine_never_raises(
    conf: ServerConf, tls: bool, data: bytes, cuts: list[int], choices: list[int]
) -> None:
    m = SmtpMachine(conf, SALT, tls)
    m.greeting()
    decisions = iter(choices * 4)
    for chunk in chunked(data, cuts):
        nxt = m.receive(chunk)
        check_bounds(m, nxt)
        while nxt is Next.AUTH:
            assert m.auth is not None
            choice = next(decisions, 0)
            if choice == 0:  # logged in
                assert isinstance(m.leftover(), bytes)
                return
            m.auth_failed(b"nope", None if choice == 1 else b"454 4.7.0")
            if choice == 3:
                return  # no Auth-Wait: the session closes
            nxt = m.resume()
            check_bounds(m, nxt)
        if nxt is Next.STARTTLS:
            m.tls_started()
        elif nxt is Next.CLOSE:
            assert m.receive(b"NOOP\r\n") is Next.CLOSE
            return
    m.out.clear()


@settings(max_examples=300, deadline=None)
@given(conf_strategy(), token_stream, st.lists(st.integers(0, 400), max_size=20))
def test_machine_split_invariant(conf: ServerConf, data: bytes, cuts: list[int]) -> None:
    """Within one buffer's worth of input, how it arrives does not matter."""
    conf_kw = {f: getattr(conf, f) for f in conf.__dataclass_fields__}
    conf_kw["smtp_client_buffer"] = 4096
    conf = ServerConf(**conf_kw)  # type: ignore[arg-type]

    def drive(chunks: list[bytes]) -> tuple[object, ...]:
        m = SmtpMachine(conf, SALT)
        m.greeting()
        nxt = Next.READ
        for chunk in chunks:
            nxt = m.receive(chunk)
            while nxt is Next.AUTH:
                m.auth_failed(b"no", None)
                nxt = m.resume()
            if nxt in (Next.CLOSE, Next.STARTTLS):
                break
        logs = [
            (lvl, t.split('"')[0]) if t.startswith("client was rejected:") else (lvl, t)
            for lvl, t in m.logs
        ]
        return b"".join(m.out), logs, nxt, m.mail_state, m.login, m.errors, m.smtp_from

    assert drive([data]) == drive(chunked(data, cuts))


def ref_parse(line: bytes, arg_mode: bool) -> tuple[bytes | None, list[bytes], int] | None:
    """nginx's ngx_mail_smtp_parse_command, one byte at a time, over one line."""
    verbs4 = {
        b"HELO",
        b"EHLO",
        b"QUIT",
        b"AUTH",
        b"NOOP",
        b"MAIL",
        b"RSET",
        b"RCPT",
        b"VRFY",
        b"EXPN",
        b"HELP",
    }
    state = "argument" if arg_mode else "start"
    args: list[bytes] = []
    cmd_start = arg_start = 0
    cmd: bytes | None = None
    end = 0
    for p, ch in enumerate(line):
        if state == "start":
            cmd_start = p
            state = "command"
        if state == "command":
            if ch in b" \r\n":
                c = line[cmd_start:p]
                up = bytes(x - 32 if 97 <= x <= 122 else x for x in c)
                if (len(c) == 4 and up in verbs4) or (len(c) == 8 and up == b"STARTTLS"):
                    cmd = up
                else:
                    return None
                end = p
                if ch == 0x0A:
                    return cmd, args, end
                state = "spaces" if ch == 0x20 else "almost"
            elif not (65 <= ch <= 90 or 97 <= ch <= 122):
                return None
        elif state == "spaces":
            if ch == 0x20:
                pass
            elif ch == 0x0D:
                state = "almost"
            elif ch == 0x0A:
                return cmd, args, end
            elif len(args) <= 10:
                state = "argument"
                arg_start = p
            else:
                return None
        elif state == "argument":
            if ch in b" \r\n":
                args.append(line[arg_start:p])
                end = p
                if ch == 0x0A:
                    return cmd, args, end
                state = "spaces" if ch == 0x20 else "almost"
        elif state == "almost":
            return (cmd, args, end) if ch == 0x0A else None
    raise AssertionError("no LF")


line_strategy = st.one_of(
    st.lists(st.sampled_from([*TOKENS[:-6], b" ", b"a", b"\r"]), max_size=20).map(b"".join),
    st.binary(max_size=40),
).map(lambda b: b.replace(b"\n", b"") + b"\n")


@settings(max_examples=1000, deadline=None)
@given(line_strategy, st.booleans())
def test_parser_matches_nginx_state_machine(line: bytes, arg_mode: bool) -> None:
    got = parse_command(line, arg_mode)
    want = ref_parse(line, arg_mode)
    if want is None:
        assert got is None
    else:
        assert got is not None
        cmd, args, end = got
        assert (cmd.name.encode() if cmd is not None else None, args, end) == want


@settings(max_examples=300, deadline=None)
@given(
    conf_strategy(),
    st.sampled_from(
        [
            b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n",
            b"HELO c\r\nAUTH PLAIN AHUAcA==\r\n",
            b"AUTH PLAIN AHUAcA==\r\n",
            b"EHLO c\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\n",
        ]
    ),
    st.one_of(st.none(), st.binary(max_size=8)),
    st.sampled_from(["192.0.2.1", "::1", "unix:"]),
    st.binary(max_size=20),
    st.lists(st.binary(max_size=80), max_size=12),
)
def test_upstream_never_raises(
    conf: ServerConf,
    client_data: bytes,
    passwd: bytes | None,
    addr: str,
    host: bytes,
    replies: list[bytes],
) -> None:
    conf_kw = {f: getattr(conf, f) for f in conf.__dataclass_fields__}
    conf_kw["smtp_auth"] = conf.smtp_auth | AUTH_NONE_ENABLED | AUTH_PLAIN_ENABLED
    conf = ServerConf(**conf_kw)  # type: ignore[arg-type]
    m = SmtpMachine(conf)
    m.greeting()
    m.receive(client_data)
    up = SmtpUpstream(conf, m, m.login, passwd, addr, host)
    for reply in [b"220 ok\r\n", *replies]:
        nxt = up.receive(reply)
        assert up._buf is None or len(up._buf) <= max(conf.proxy_buffer, 1)
        for line in up.to_upstream:
            assert line.endswith(b"\r\n") and line.count(b"\n") == 1
        if nxt is not UpNext.READ:
            assert up.to_client
            assert up.receive(b"250 ok\r\n") is nxt
            return
