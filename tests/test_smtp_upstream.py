"""SmtpUpstream: nginx's SMTP backend login (ngx_mail_proxy_smtp_handler), byte-exact.

A scenario is a list of (backend reply, expected command nginx sends next);
each reply is fed whole and byte by byte, with the same result.
"""

from __future__ import annotations

import base64

import pytest

from mailfront.conf.model import (
    AUTH_NONE_ENABLED,
    AUTH_PLAIN_ENABLED,
    Protocol,
    ServerConf,
)
from mailfront.protocol.base import ERR, INFO, UpNext
from mailfront.protocol.smtp import SmtpMachine, SmtpState, SmtpUpstream
from support.machines import server_conf

INTERNAL = b"451 4.3.2 Internal server error\r\n"
AUTH_OK = b"235 2.0.0 OK\r\n"
EHLO_REPLY = b"250-backend\r\n250-PIPELINING\r\n250 XCLIENT ADDR LOGIN NAME\r\n"


def make_conf(**kw: object) -> ServerConf:
    kw.setdefault("server_name", "mx.example")
    return server_conf(Protocol.SMTP, **kw)


def client(conf: ServerConf, data: bytes) -> SmtpMachine:
    """A front machine that went through ``data`` up to its auth request."""
    m = SmtpMachine(conf)
    m.greeting()
    m.receive(data)
    assert m.auth is not None
    return m


def plain(user: bytes = b"user", pw: bytes = b"secret") -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + pw) + b"\r\n"


def new_upstream(
    conf: ServerConf,
    data: bytes,
    login: bytes = b"user",
    passwd: bytes | None = b"secret",
    addr: str = "192.0.2.1",
    host: bytes = b"[UNAVAILABLE]",
) -> SmtpUpstream:
    return SmtpUpstream(conf, client(conf, data), login, passwd, addr, host)


def step(up: SmtpUpstream, reply: bytes, per_byte: bool, strict: bool = True) -> UpNext:
    """Feed one reply; per byte, it must not finish before its last byte (``strict``)."""
    if not per_byte:
        return up.receive(reply)
    nxt = UpNext.READ
    for i in range(len(reply)):
        nxt = up.receive(reply[i : i + 1])
        if nxt is not UpNext.READ:
            assert not strict or i == len(reply) - 1, "finished before the end of the reply"
            break
    return nxt


def converse(make: object, script: list[tuple[bytes, bytes]], final: UpNext) -> list[SmtpUpstream]:
    """Run ``script`` (reply -> expected line to the backend) whole and per byte."""
    ups = []
    for per_byte in (False, True):
        up = make()  # type: ignore[operator]
        assert up.action == "connecting to upstream"
        for n, (reply, expected) in enumerate(script):
            nxt = step(up, reply, per_byte)
            last = n == len(script) - 1
            assert nxt is (final if last else UpNext.READ), (n, reply)
            assert b"".join(up.to_upstream) == expected, (n, reply)
            up.to_upstream.clear()
        ups.append(up)
    a, b = ups
    assert a.to_client == b.to_client and a.logs == b.logs and a.action == b.action
    return ups


def test_xclient_default_ehlo_client() -> None:
    conf = make_conf()
    [up, _] = converse(
        lambda: new_upstream(conf, b"EHLO client.example\r\n" + plain()),
        [
            (b"220 backend ESMTP\r\n", b"EHLO mx.example\r\n"),
            (EHLO_REPLY, b"XCLIENT ADDR=192.0.2.1 LOGIN=user NAME=[UNAVAILABLE]\r\n"),
            (b"220 backend ESMTP\r\n", b"EHLO client.example\r\n"),
            (EHLO_REPLY, b""),
        ],
        UpNext.DONE,
    )
    assert up.to_client == [AUTH_OK]
    assert up.logs == []
    assert up.action == ""
    assert up.state is SmtpState.HELO


def test_xclient_helo_client_and_actions() -> None:
    conf = make_conf()
    up = new_upstream(
        conf,
        b"HELO client\r\n" + plain(),
        login=b"u s+r=\xff",
        addr="2001:db8::1",
        host=b"client.example",
    )
    assert up.receive(b"220 ok\r\n") is UpNext.READ
    assert up.to_upstream == [b"EHLO mx.example\r\n"]  # EHLO because of xclient
    assert up.action == "sending HELO/EHLO to upstream"
    assert up.receive(b"250 ok\r\n") is UpNext.READ
    assert up.to_upstream[1] == (
        b"XCLIENT ADDR=IPV6:2001:db8::1 LOGIN=u+20s+2Br+3D+FF NAME=client.example\r\n"
    )
    assert up.action == "sending XCLIENT to upstream"
    assert up.receive(b"250 ok\r\n") is UpNext.READ
    assert up.to_upstream[2] == b"HELO client\r\n"
    assert up.action == "sending client HELO/EHLO to upstream"
    assert up.receive(b"250 ") is UpNext.READ
    assert up.action == "reading response from upstream"
    assert up.receive(b"ok\r\n") is UpNext.DONE
    assert up.to_client == [AUTH_OK]


def test_xclient_without_helo_and_login() -> None:
    conf = make_conf()
    up = new_upstream(conf, plain(b"", b"pw"), login=b"", addr="unix:")
    up.receive(b"220 ok\r\n")
    up.receive(b"250 ok\r\n")
    assert up.to_upstream[1] == b"XCLIENT ADDR=unix: NAME=[UNAVAILABLE]\r\n"
    assert up.receive(b"220 ok\r\n") is UpNext.DONE  # XCLIENT's 220 or 250 is enough


def test_xclient_host_is_checked() -> None:
    conf = make_conf()
    up = new_upstream(conf, plain(), host=b"evil\r\nRCPT TO:<x>")
    up.receive(b"220 ok\r\n")
    up.receive(b"250 ok\r\n")
    assert up.to_upstream[1] == b"XCLIENT ADDR=192.0.2.1 LOGIN=user NAME=[TEMPUNAVAIL]\r\n"


@pytest.mark.parametrize(
    ("helo", "verb"), [(b"HELO c\r\n", b"HELO"), (b"EHLO c\r\n", b"EHLO"), (b"", b"HELO")]
)
def test_no_xclient(helo: bytes, verb: bytes) -> None:
    conf = make_conf(xclient=False)
    [up, _] = converse(
        lambda: new_upstream(conf, helo + plain()),
        [(b"220 ok\r\n", verb + b" mx.example\r\n"), (b"250 ok\r\n", b"")],
        UpNext.DONE,
    )
    assert up.to_client == [AUTH_OK]


def test_proxy_smtp_auth() -> None:
    conf = make_conf(proxy_smtp_auth=True)
    auth = b"AUTH PLAIN " + base64.b64encode(b"\0user\0secret") + b"\r\n"
    [up, _] = converse(
        lambda: new_upstream(conf, b"EHLO c\r\n" + plain()),
        [
            (b"220 ok\r\n", b"EHLO mx.example\r\n"),
            (b"250 ok\r\n", b"XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]\r\n"),
            (b"250 ok\r\n", b"EHLO c\r\n"),
            (b"250 ok\r\n", auth),
            (b"235 2.7.0 Authentication successful\r\n", b""),
        ],
        UpNext.DONE,
    )
    assert up.to_client == [AUTH_OK]


def test_proxy_smtp_auth_without_xclient() -> None:
    conf = make_conf(proxy_smtp_auth=True, xclient=False)
    auth = b"AUTH PLAIN " + base64.b64encode(b"\0other\0pw2") + b"\r\n"
    converse(
        lambda: new_upstream(conf, plain(), login=b"other", passwd=b"pw2"),
        [(b"220 ok\r\n", b"HELO mx.example\r\n"), (b"250 ok\r\n", auth), (b"235 ok\r\n", b"")],
        UpNext.DONE,
    )


def test_proxy_smtp_auth_no_password() -> None:
    conf = make_conf(proxy_smtp_auth=True, xclient=False)
    up = new_upstream(conf, plain(), passwd=None)
    up.receive(b"220 ok\r\n")
    assert up.receive(b"250 ok\r\n") is UpNext.FAIL
    assert up.logs == [(ERR, "no password available")]
    assert up.action == "sending AUTH to upstream"
    assert up.to_client == [INTERNAL]
    assert up.receive(b"more\r\n") is UpNext.FAIL


def test_proxy_smtp_auth_refused() -> None:
    conf = make_conf(proxy_smtp_auth=True, xclient=False)
    up = new_upstream(conf, plain())
    up.receive(b"220 ok\r\n")
    up.receive(b"250 ok\r\n")
    assert up.receive(b"535 5.7.8 bad\r\n") is UpNext.FAIL
    assert up.logs == [(ERR, 'upstream sent invalid response: "535 5.7.8 bad"')]
    assert up.action == "reading response from upstream"
    assert up.to_client == [INTERNAL]


NONE = make_conf(smtp_auth=AUTH_NONE_ENABLED | AUTH_PLAIN_ENABLED)
NONE_INPUT = b"EHLO c\r\nMAIL FROM:<a@b> SIZE=1\r\nRCPT TO:<c@d>\r\n"


def test_none_with_xclient() -> None:
    [up, _] = converse(
        lambda: new_upstream(NONE, NONE_INPUT, login=b"", passwd=None),
        [
            (b"220 ok\r\n", b"EHLO mx.example\r\n"),
            (b"250 ok\r\n", b"XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]\r\n"),
            (b"220 ok\r\n", b"EHLO c\r\n"),
            (EHLO_REPLY, b"MAIL FROM:<a@b> SIZE=1\r\n"),
            (b"250 2.1.0 Ok\r\n", b"RCPT TO:<c@d>\r\n"),
            (b"550 5.1.1 <c@d>: Recipient address rejected\r\n", b""),
        ],
        UpNext.DONE,
    )
    # any RCPT reply is relayed as is
    assert up.to_client == [b"550 5.1.1 <c@d>: Recipient address rejected\r\n"]
    assert up.action == ""


def test_none_without_xclient_and_helo() -> None:
    conf = make_conf(smtp_auth=AUTH_NONE_ENABLED, xclient=False, proxy_smtp_auth=True)
    [up, _] = converse(
        lambda: new_upstream(conf, b"MAIL FROM:<>\r\nRCPT TO:<c@d>\r\n", login=b"", passwd=None),
        [
            (b"220 ok\r\n", b"HELO mx.example\r\n"),
            (b"250 ok\r\n", b"MAIL FROM:<>\r\n"),
            (b"250 ok\r\n", b"RCPT TO:<c@d>\r\n"),
            (b"250-first\r\n250 last\r\n", b""),
        ],
        UpNext.DONE,
    )
    assert up.to_client == [b"250-first\r\n250 last\r\n"]


def test_none_with_xclient_no_helo() -> None:
    up = new_upstream(NONE, b"MAIL FROM:<>\r\nRCPT TO:<c@d>\r\n", login=b"", passwd=None)
    up.receive(b"220 ok\r\n")
    up.receive(b"250 ok\r\n")
    assert up.receive(b"220 ok\r\n") is UpNext.READ  # XCLIENT, then straight to MAIL
    assert up.to_upstream[-1] == b"MAIL FROM:<>\r\n"
    assert up.action == "sending MAIL FROM to upstream"
    assert up.receive(b"250 ok\r\n") is UpNext.READ
    assert up.action == "sending RCPT TO to upstream"


def test_none_mail_refused() -> None:
    up = new_upstream(
        make_conf(smtp_auth=AUTH_NONE_ENABLED, xclient=False), NONE_INPUT, login=b"", passwd=None
    )
    up.receive(b"220 ok\r\n")
    up.receive(b"250 ok\r\n")
    assert up.receive(b"451 try later\r\n") is UpNext.FAIL
    assert up.to_client == [INTERNAL]


@pytest.mark.parametrize(
    ("reply", "log"),
    [
        (b"554 no\r\n", "554 no"),
        (b"250-a\r\n554 no\r\n", "250-a\r\n554 no"),  # the whole buffer is logged
        (b"5\0x\r\n", "5"),  # %s stops at a NUL
        (b"22\r\n", "22"),
    ],
)
def test_invalid_greeting(reply: bytes, log: str) -> None:
    for per_byte in (False, True):
        up = new_upstream(make_conf(), plain())
        assert step(up, reply, per_byte) is UpNext.FAIL
        assert up.logs == [(ERR, f'upstream sent invalid response: "{log}"')]
        assert up.to_client == [INTERNAL]


def test_pass_error_message() -> None:
    conf = make_conf(proxy_pass_error_message=True, xclient=False)
    for per_byte in (False, True):
        up = new_upstream(conf, plain())
        step(up, b"220 ok\r\n", per_byte)
        reply = b"550-5.7.1 Access denied\r\n550 5.7.1 go away\r\n"
        assert step(up, reply, per_byte) is UpNext.FAIL
        assert up.to_client == [reply]
        assert up.logs == [
            (INFO, 'upstream sent invalid response: "550-5.7.1 Access denied\r\n550 5.7.1 go away"')
        ]


def test_multiline_first_code_decides() -> None:
    up = new_upstream(make_conf(xclient=False), plain())
    assert up.receive(b"220-a\r\n554 no\r\n") is UpNext.READ
    assert up.to_upstream == [b"HELO mx.example\r\n"]


def test_multiline_waits_for_the_last_line() -> None:
    up = new_upstream(make_conf(xclient=False), plain())
    assert up.receive(b"220-hello\r\n") is UpNext.READ
    assert up.to_upstream == []
    assert up.receive(b"220-more\r\n220") is UpNext.READ
    assert up.to_upstream == []
    assert up.receive(b" done\r\n") is UpNext.READ
    assert up.to_upstream == [b"HELO mx.example\r\n"]


def test_short_reply_waits() -> None:
    up = new_upstream(make_conf(xclient=False), plain())
    assert up.receive(b"22\r") is UpNext.READ
    assert up.receive(b"\n") is UpNext.FAIL  # "22\r\n": 4 bytes, ends in CRLF, not 220
    assert up.logs == [(ERR, 'upstream sent invalid response: "22"')]


def test_too_long_response_line() -> None:
    conf = make_conf(proxy_buffer=16, xclient=False)
    for per_byte in (False, True):
        up = new_upstream(conf, plain())
        assert step(up, b"220 " + b"x" * 20 + b"\r\n", per_byte, strict=False) is UpNext.FAIL
        assert up.logs == [(ERR, 'upstream sent too long response line: "220 xxxxxxxxxxx"')]
        assert up.to_client == [INTERNAL]


def test_too_long_response_line_stops_at_nul() -> None:
    up = new_upstream(make_conf(proxy_buffer=8, xclient=False), plain())
    assert up.receive(b"220 a\0bcdef") is UpNext.FAIL
    assert up.logs == [(ERR, 'upstream sent too long response line: "220 a"')]


def test_full_multiline_buffer_then_more_data() -> None:
    """nginx's recv() into a full buffer returns 0: an upstream error without a log line."""
    up = new_upstream(make_conf(proxy_buffer=10, xclient=False), plain())
    assert up.receive(b"220-abc\r\n") is UpNext.READ
    assert up.receive(b"2") is UpNext.FAIL  # full, not ending in CRLF: too long
    assert up.logs == [(ERR, 'upstream sent too long response line: "220-abc\r\n"')]
    up2 = new_upstream(make_conf(proxy_buffer=9, xclient=False), plain())
    assert up2.receive(b"220-abc\r\n") is UpNext.READ  # full, ends in CRLF, still multi-line
    assert up2.receive(b"220 ok\r\n") is UpNext.FAIL
    assert up2.logs == [] and up2.to_client == [INTERNAL]


def test_extra_backend_bytes_are_dropped_with_the_buffer() -> None:
    """nginx empties its buffer after each command: a reply's tail is lost."""
    up = new_upstream(make_conf(xclient=False), plain())
    assert up.receive(b"220 ok\r\n250 early\r\n") is UpNext.READ
    assert up.to_upstream == [b"HELO mx.example\r\n"]
    assert up.receive(b"250 ok\r\n") is UpNext.DONE


def test_bytes_beyond_the_buffer_are_the_next_reply() -> None:
    up = new_upstream(make_conf(xclient=False, proxy_buffer=8), plain())
    assert up.receive(b"220 ok\r\n250 ok\r\nextra") is UpNext.DONE
    assert up.to_upstream == [b"HELO mx.example\r\n"]
    assert up.to_client == [AUTH_OK, b"extra"]  # still unread by nginx: relayed later


def test_done_then_receive() -> None:
    up = new_upstream(make_conf(xclient=False), plain())
    up.receive(b"220 ok\r\n")
    assert up.receive(b"250 ok\r\n") is UpNext.DONE
    assert up.receive(b"x") is UpNext.DONE
