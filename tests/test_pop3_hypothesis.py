"""Property tests for the POP3 machines: anything a client or backend sends
is handled without an exception, and every buffer stays within its bound."""

from __future__ import annotations

import base64
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_PLAIN_ENABLED,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.protocol.base import Next, UpNext
from mailfront.protocol.pop3 import POP3_BUFFER_SIZE, Pop3Machine, Pop3Upstream
from support.machines import server_conf

SALT = b"<1.2@example.org>\r\n"

LINES = [
    b"USER alice",
    b"USER a b ",
    b"PASS secret",
    b"PASS",
    b"APOP a 0123456789abcdef0123456789abcdef",
    b"APOP a",
    b"AUTH",
    b"AUTH PLAIN",
    b"AUTH PLAIN " + base64.b64encode(b"\0u\0p"),
    b"AUTH LOGIN",
    b"AUTH LOGIN " + base64.b64encode(b"u"),
    b"AUTH CRAM-MD5",
    b"AUTH EXTERNAL",
    b"AUTH EXTERNAL =",
    base64.b64encode(b"u"),
    base64.b64encode(b"\0u\0p"),
    base64.b64encode(b"u " + b"0" * 32),
    b"=",
    b"*",
    b"",
    b"CAPA",
    b"NOOP",
    b"QUIT",
    b"STLS",
    b"TOP 1 1",
    b"NOOP a b c d",
]

line = st.one_of(
    st.sampled_from(LINES),
    st.binary(max_size=40),
).flatmap(lambda body: st.sampled_from([body + b"\r\n", body + b"\n", body + b"\r", body]))

confs = st.builds(
    lambda mask, starttls, max_errors: server_conf(
        Protocol.POP3,
        pop3_auth=mask,
        starttls=starttls,
        max_errors=max_errors,
    ),
    st.sampled_from(
        [
            AUTH_PLAIN_ENABLED,
            AUTH_APOP_ENABLED,
            AUTH_PLAIN_ENABLED | AUTH_CRAM_MD5_ENABLED,
            AUTH_PLAIN_ENABLED | AUTH_APOP_ENABLED | AUTH_CRAM_MD5_ENABLED | AUTH_EXTERNAL_ENABLED,
        ]
    ),
    st.sampled_from(list(Starttls)),
    st.integers(min_value=0, max_value=6),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def drive(m: Pop3Machine, chunks: list[bytes], stop_at_starttls: bool) -> list[bytes]:
    """Act as the session: fail every login with Auth-Wait, upgrade on STLS."""
    m.greeting()
    for chunk in chunks:
        nxt = m.receive(chunk)
        while True:
            assert m.buffered <= POP3_BUFFER_SIZE
            if nxt is Next.READ:
                assert m._pending == b""  # nothing left "in the socket"
            if nxt is Next.AUTH:
                assert m.auth is not None
                assert m.action == "in http auth state"
                m.auth_failed(b"try again", None)
                nxt = m.resume()
                continue
            break
        if nxt is Next.CLOSE:
            break
        if nxt is Next.STARTTLS:
            if stop_at_starttls:
                break
            m.tls_started()
    return m.out


@settings(max_examples=300, deadline=None)
@given(confs, st.lists(line, max_size=30), st.lists(st.integers(0, 10_000)), st.booleans())
def test_any_input_any_split(
    conf: ServerConf, lines: list[bytes], cuts: list[int], tls: bool
) -> None:
    data = b"".join(lines)
    m = Pop3Machine(conf, SALT if Pop3Machine.needs_salt(conf) else b"", tls)
    drive(m, split(data, cuts), stop_at_starttls=False)
    assert m.buffered <= POP3_BUFFER_SIZE


@settings(max_examples=300, deadline=None)
@given(confs, st.lists(line, max_size=12), st.booleans())
def test_whole_equals_byte_by_byte(conf: ServerConf, lines: list[bytes], tls: bool) -> None:
    # below 128 bytes the window never fills, so the split cannot matter
    data = b"".join(lines)[: POP3_BUFFER_SIZE - 1]
    salt = SALT if Pop3Machine.needs_salt(conf) else b""
    a = Pop3Machine(conf, salt, tls)
    b = Pop3Machine(conf, salt, tls)
    out_a = drive(a, [data], stop_at_starttls=True)
    out_b = drive(b, [data[i : i + 1] for i in range(len(data))], stop_at_starttls=True)
    assert b"".join(out_a) == b"".join(out_b)
    assert a.logs == b.logs
    assert (a.login, a.errors, a.action) == (b.login, b.errors, b.action)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([b"+OK", b"+OK hi", b"-ERR no", b"+O", b""]).map(lambda s: s + b"\r\n"),
            st.binary(max_size=30),
        ),
        max_size=10,
    ),
    st.lists(st.integers(0, 10_000)),
    st.integers(min_value=1, max_value=40),
    st.booleans(),
)
def test_upstream_any_input(
    replies: list[bytes], cuts: list[int], size: int, passerr: bool
) -> None:
    conf = server_conf(
        Protocol.POP3,
        proxy_buffer=size,
        proxy_pass_error_message=passerr,
    )
    up = Pop3Upstream(conf, b"user", b"pass")
    final = UpNext.READ
    for chunk in split(b"".join(replies), cuts):
        nxt = up.receive(chunk)
        buf = up._buf
        assert buf is None or len(buf) <= size
        if final is not UpNext.READ:
            assert nxt is final
        final = nxt
    if final is UpNext.FAIL:
        assert up.to_client
    assert len(up.to_upstream) <= 2
