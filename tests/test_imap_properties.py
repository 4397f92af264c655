"""Hypothesis properties of the IMAP machines.

- Whatever a client or backend sends, in whatever pieces, nothing raises,
  every reply is a CRLF-terminated line and the buffers stay within their
  configured bounds.
- For input shorter than the command window (so nginx's rewinding of it
  plays no part), the machine answers the same whatever the split.
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailfront.conf.model import (
    AUTH_CRAM_MD5_ENABLED,
    AUTH_EXTERNAL_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_PLAIN_ENABLED,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.protocol.base import Next, UpNext
from mailfront.protocol.imap import ImapMachine, ImapUpstream
from support.machines import Outcome, run_machine, server_conf

SALT = b"<42.1700000000@mail.example.com>\r\n"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

confs = st.builds(
    lambda size, errors, starttls, mask: server_conf(
        Protocol.IMAP,
        imap_client_buffer=size,
        max_errors=errors,
        starttls=starttls,
        imap_auth=mask,
    ),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=8),
    st.sampled_from(list(Starttls)),
    st.sets(
        st.sampled_from(
            [AUTH_PLAIN_ENABLED, AUTH_LOGIN_ENABLED, AUTH_CRAM_MD5_ENABLED, AUTH_EXTERNAL_ENABLED]
        )
    ).map(sum),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[prev:p])
        prev = p
    return chunks


# -- input grammar ------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


atoms = st.one_of(
    st.sampled_from([b"alice", b"PLAIN", b"LOGIN", b"CRAM-MD5", b"EXTERNAL", b"=", b"*", b"x"]),
    st.binary(min_size=1, max_size=6).filter(lambda b: not set(b) & set(b' "{\r\n\\')),
)
quoted = st.binary(max_size=8).map(
    lambda b: b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
)
raw_quoted = st.binary(max_size=8).filter(lambda b: b"\n" not in b).map(lambda b: b'"' + b)
literals = st.tuples(st.binary(max_size=8), st.booleans(), st.integers(-1, 1)).map(
    lambda t: b"{%d%s}\r\n" % (max(len(t[0]) + t[2], 0), b"+" if t[1] else b"") + t[0]
)
sasl = st.binary(max_size=16).map(_b64)
arguments = st.lists(st.one_of(atoms, quoted, raw_quoted, literals, sasl), max_size=4)
tags = st.sampled_from([b"a", b"B2", b"x.y-z_", b"", b"*", b"0" * 32, b"0" * 33, b"a{"])
commands = st.sampled_from(
    [
        b"NOOP",
        b"noop",
        b"CAPABILITY",
        b"LOGIN",
        b"LOGOUT",
        b"AUTHENTICATE",
        b"authenticate",
        b"STARTTLS",
        b"ID",
        b"SELECT",
        b"",
    ]
)
eols = st.sampled_from([b"\r\n", b"\n", b"\r\r\n", b" \r\n"])
command_lines = st.builds(
    lambda tag, cmd, args, eol: tag + b" " + cmd + b"".join(b" " + a for a in args) + eol,
    tags,
    commands,
    arguments,
    eols,
)
sasl_lines = st.builds(lambda s, eol: s + eol, sasl, eols)
logins = st.builds(
    lambda u, p: b"t LOGIN " + u + b" " + p + b"\r\n", st.one_of(atoms, quoted, literals), atoms
)
exchanges = st.builds(
    lambda mech, resp: b"t AUTHENTICATE " + mech + b"\r\n" + b"".join(r + b"\r\n" for r in resp),
    st.sampled_from([b"PLAIN", b"LOGIN", b"CRAM-MD5", b"EXTERNAL"]),
    st.lists(
        st.one_of(
            st.builds(lambda u, p: _b64(b"\0" + u + b"\0" + p), atoms, atoms),
            st.builds(lambda u: _b64(u + b" " + b"0" * 32), atoms),
            sasl,
            atoms,
        ),
        min_size=1,
        max_size=2,
    ),
)
lines = st.lists(
    st.one_of(command_lines, sasl_lines, logins, exchanges, st.binary(max_size=12)),
    min_size=1,
    max_size=8,
)


# -- arbitrary input -------------------------------------------------------------


@SETTINGS
@given(
    conf=confs,
    tls=st.booleans(),
    chunks=st.lists(st.one_of(st.binary(max_size=80), lines.map(b"".join)), max_size=12),
    choices=st.lists(st.integers(min_value=0, max_value=2), min_size=12, max_size=12),
)
def test_machine_never_raises(
    conf: ServerConf, tls: bool, chunks: list[bytes], choices: list[int]
) -> None:
    m = ImapMachine(conf, SALT, tls)
    m.greeting()
    closed = False
    for i, chunk in enumerate(chunks):
        nxt = m.receive(chunk)
        assert m.buffered <= conf.imap_client_buffer
        for line in m.out:
            assert line.endswith(b"\r\n")
        m.out.clear()
        if closed:
            assert nxt is Next.CLOSE
        if nxt is Next.CLOSE:
            closed = True
        elif nxt is Next.STARTTLS:
            m.tls_started()
        elif nxt is Next.AUTH:
            assert m.auth is not None
            choice = choices[i]
            if choice == 0:
                m.auth_failed(b"Bad login", None)
                nxt = m.resume()
                closed = nxt is Next.CLOSE
            elif choice == 1:
                m.leftover()
                return
            else:
                m.receive(b"more\r\n")  # only buffered while the auth service works
                assert m.out == []
                m.auth_failed(b"Bad login", None)
                m.resume()
            assert m.buffered <= conf.imap_client_buffer


@SETTINGS
@given(
    buffer=st.integers(min_value=1, max_value=200),
    pass_errors=st.booleans(),
    tag=st.binary(max_size=5),
    reads=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.sampled_from(
                [b"* OK ready\r\n", b"+ OK\r\n", b"a1 OK done\r\n", b"* CAPABILITY X\r\n"]
            ),
        ),
        max_size=10,
    ),
)
def test_upstream_never_raises(
    buffer: int, pass_errors: bool, tag: bytes, reads: list[bytes]
) -> None:
    conf = server_conf(
        Protocol.IMAP,
        proxy_buffer=buffer,
        proxy_pass_error_message=pass_errors,
    )
    up = ImapUpstream(conf, b"user", b"pass", tag)
    final = UpNext.READ
    for data in reads:
        nxt = up.receive(data)
        if final is not UpNext.READ:
            assert nxt is final
        final = nxt
        if up._buf is not None:
            assert len(up._buf) <= buffer
    if final is UpNext.FAIL:
        assert up.to_client


# -- split independence -------------------------------------------------------------


def feed(conf: ServerConf, chunks: list[bytes]) -> Outcome:
    """A new IMAP machine given ``chunks`` one after the other: what came of it."""
    res, _ = run_machine(ImapMachine, chunks, conf, conf.imap_client_buffer, False, False, SALT)
    return res


@SETTINGS
@given(
    parts=lines,
    starttls=st.sampled_from(list(Starttls)),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=6),
)
def test_same_answer_whatever_the_split(
    parts: list[bytes], starttls: Starttls, cuts: list[int]
) -> None:
    data = b"".join(parts)
    conf = server_conf(
        Protocol.IMAP,
        imap_client_buffer=len(data) + 1,  # never full: no window effect
        starttls=starttls,
        imap_auth=AUTH_PLAIN_ENABLED | AUTH_CRAM_MD5_ENABLED | AUTH_EXTERNAL_ENABLED,
        max_errors=4,
    )
    assume(b"+}" not in data)  # nginx's "{n+}" check looks back from its buffer's start
    whole = feed(conf, [data])
    assert feed(conf, [data[i : i + 1] for i in range(len(data))]) == whole
    assert feed(conf, split(data, cuts)) == whole
