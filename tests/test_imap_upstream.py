"""IMAP backend login (``ImapUpstream``), byte-exact with ngx_mail_proxy_imap_handler.

Scenarios are a list of backend reads.  nginx judges a reply by what one
read leaves in its buffer (it must end with CRLF), so a scenario is fed as
given and, where nginx's answer does not depend on the split, also byte by
byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mailfront.conf.model import Protocol, ServerConf
from mailfront.protocol.base import ERR, INFO, UpNext
from mailfront.protocol.imap import ImapState, ImapUpstream
from support.machines import server_conf

INTERNAL = b"* BAD internal server error\r\n"


def make_conf(**kw: object) -> ServerConf:
    return server_conf(Protocol.IMAP, **kw)


CONF = make_conf()
PASS_ERRORS = make_conf(proxy_pass_error_message=True)


@dataclass
class Result:
    to_upstream: bytes
    to_client: bytes
    logs: list[tuple[int, str]]
    result: UpNext
    actions: list[str]


def run(
    reads: list[bytes],
    conf: ServerConf = CONF,
    login: bytes = b"alice",
    passwd: bytes = b"secret",
    tag: bytes = b"a1 ",
    per_byte: bool = False,
) -> Result:
    up = ImapUpstream(conf, login, passwd, tag)
    actions = [up.action]
    if per_byte:
        reads = [bytes([c]) for c in b"".join(reads)]
    result = UpNext.READ
    for data in reads:
        result = up.receive(data)
        if up.action != actions[-1]:
            actions.append(up.action)
        if up._buf is not None:
            assert len(up._buf) <= conf.proxy_buffer
        if result is not UpNext.READ:
            break
    return Result(b"".join(up.to_upstream), b"".join(up.to_client), list(up.logs), result, actions)


GREETING = b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"
LOGIN_OK = b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
HAPPY = [GREETING, b"+ OK\r\n", b"+ OK\r\n", LOGIN_OK]
SENT = b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"


def test_login() -> None:
    r = run(HAPPY)
    assert r.result is UpNext.DONE
    assert r.to_upstream == SENT
    assert r.to_client == LOGIN_OK
    assert r.logs == []
    # what the session sees after each read: a timeout while waiting for a
    # reply is logged "while sending ... to upstream", as nginx does
    assert r.actions == [
        "connecting to upstream",
        "sending LOGIN command to upstream",
        "sending user name to upstream",
        "sending password to upstream",
        "",
    ]


def test_action_while_a_reply_is_incomplete() -> None:
    up = ImapUpstream(CONF, b"u", b"p", b"t ")
    up.receive(b"* OK")
    assert up.action == "reading response from upstream"


def test_login_byte_by_byte() -> None:
    r = run(HAPPY, per_byte=True)
    assert r.result is UpNext.DONE
    assert r.to_upstream == SENT
    assert r.to_client == LOGIN_OK


def test_nothing_sent_before_greeting() -> None:
    up = ImapUpstream(CONF, b"u", b"p", b"t ")
    assert up.receive(b"* OK") is UpNext.READ
    assert up.to_upstream == []
    assert up.state == ImapState.START


def test_literal_lengths_are_byte_counts() -> None:
    r = run(HAPPY, login="jösé".encode(), passwd=b"", tag=b"x ")
    assert r.to_upstream == b"x LOGIN {6}\r\n" + "jösé".encode() + b" {0}\r\n\r\n"


def test_any_continuation_line_will_do() -> None:
    r = run([GREETING, b"+ \r\n", b"+ go ahead\r\n", LOGIN_OK])
    assert r.result is UpNext.DONE


def test_untagged_line_before_tagged_ok() -> None:
    # 1.27.3: SmarterMail and Gmail send "* CAPABILITY ..." first
    reply = b"* CAPABILITY IMAP4rev1 UNSELECT IDLE\r\na1 OK LOGIN completed\r\n"
    r = run([*HAPPY[:3], reply])
    assert r.result is UpNext.DONE
    assert r.to_client == reply
    assert run([*HAPPY[:3], reply], per_byte=True).to_client == reply


def test_untagged_line_then_tagged_ok_in_two_reads() -> None:
    untagged = b"* CAPABILITY IMAP4rev1\r\n"
    r = run([*HAPPY[:3], untagged, b"a1 OK done\r\n"])
    assert r.result is UpNext.DONE
    assert r.to_client == untagged + b"a1 OK done\r\n"


def test_two_untagged_lines_are_refused() -> None:
    reply = b"* CAPABILITY X\r\n* OK hi\r\na1 OK done\r\n"
    r = run([*HAPPY[:3], reply])
    assert r.result is UpNext.FAIL
    assert r.to_client == INTERNAL
    assert r.logs == [(ERR, 'upstream sent invalid response: "* OK hi\r\na1 OK done"')]


def test_bytes_after_the_tagged_ok_are_relayed() -> None:
    r = run([*HAPPY[:3], LOGIN_OK + b"* 1 EXISTS\r\n", b"* 2 EXISTS\r\n"])
    assert r.result is UpNext.DONE
    assert r.to_client == LOGIN_OK + b"* 1 EXISTS\r\n"


def test_tail_of_the_read_is_relayed_after_done() -> None:
    # a read longer than proxy_buffer: nginx relays the rest afterwards
    conf = make_conf(proxy_buffer=len(LOGIN_OK))
    tail = b"x" * 100
    r = run([*HAPPY[:3], LOGIN_OK + tail], conf)
    assert r.to_client == LOGIN_OK + tail


@pytest.mark.parametrize(
    ("reads", "line"),
    [
        ([b"* BYE too busy\r\n"], "* BYE too busy"),
        ([b"+OK POP3\r\n"], "+OK POP3"),
        ([GREETING, b"a1 NO [AUTHENTICATIONFAILED] bad\r\n"], "a1 NO [AUTHENTICATIONFAILED] bad"),
        ([GREETING, b"+ OK\r\n", b"a1 BAD literal\r\n"], "a1 BAD literal"),
        # after the tag: what is left of the line
        (
            [*HAPPY[:3], b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"],
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
        ),
        ([*HAPPY[:3], b"* CAPABILITY X\r\na1 NO nope\r\n"], "NO nope"),
        ([*HAPPY[:3], b"* CAPABILITY X\r\nb2 OK\r\n"], "b2 OK"),
        ([*HAPPY[:3], b"a2 OK other tag\r\n"], "a2 OK other tag"),
    ],
)
def test_invalid_response(reads: list[bytes], line: str) -> None:
    r = run(reads)
    assert r.result is UpNext.FAIL
    assert r.to_client == INTERNAL
    assert r.logs == [(ERR, f'upstream sent invalid response: "{line}"')]
    assert r.actions[-1] == "reading response from upstream"


def test_invalid_response_relayed_with_pass_error_message() -> None:
    reply = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    r = run([*HAPPY[:3], reply], PASS_ERRORS)
    assert r.result is UpNext.FAIL
    assert r.to_client == reply
    assert r.logs == [
        (INFO, 'upstream sent invalid response: "NO [AUTHENTICATIONFAILED] Authentication failed."')
    ]


def test_pass_error_message_relays_the_whole_buffer() -> None:
    reply = b"* BYE shutting down\r\n"
    r = run([reply], PASS_ERRORS)
    assert r.to_client == reply
    assert r.logs == [(INFO, 'upstream sent invalid response: "* BYE shutting down"')]


def test_invalid_response_log_stops_at_nul() -> None:
    r = run([b"* NO a\0b\r\n"])
    assert r.logs == [(ERR, 'upstream sent invalid response: "* NO a"')]
    r = run([b"* NO a\0b\r\n"], PASS_ERRORS)
    assert r.logs == [(INFO, 'upstream sent invalid response: "* NO a\x00b"')]
    assert r.to_client == b"* NO a\0b\r\n"


def test_short_reply_waits() -> None:
    # fewer than 4 bytes are never judged, even with CRLF
    up = ImapUpstream(CONF, b"u", b"p", b"t ")
    assert up.receive(b"+\r\n") is UpNext.READ
    assert up.receive(b"\r\n") is UpNext.FAIL
    assert up.logs == [(ERR, 'upstream sent invalid response: "+\r\n"')]


def test_reply_without_crlf_waits() -> None:
    up = ImapUpstream(CONF, b"u", b"p", b"t ")
    assert up.receive(b"* OK ready\n") is UpNext.READ
    assert up.receive(b"\r\n") is UpNext.READ  # "* OK" again at the start: fine
    assert up.to_upstream == [b"t LOGIN {1}\r\n"]


def test_rest_of_a_good_read_is_dropped() -> None:
    r = run([GREETING + b"+ OK\r\n", b"+ OK\r\n", b"+ OK\r\n", LOGIN_OK])
    assert r.result is UpNext.DONE  # the first "+ OK" went with the greeting


def test_too_long_response_line() -> None:
    conf = make_conf(proxy_buffer=16)
    r = run([b"* OK " + b"x" * 20], conf)
    assert r.result is UpNext.FAIL
    assert r.to_client == INTERNAL
    assert r.logs == [(ERR, 'upstream sent too long response line: "* OK xxxxxxxxxx"')]


def test_too_long_response_line_byte_by_byte() -> None:
    conf = make_conf(proxy_buffer=16)
    r = run([b"* OK " + b"x" * 20], conf, per_byte=True)
    assert r.logs == [(ERR, 'upstream sent too long response line: "* OK xxxxxxxxxx"')]


def test_response_exactly_fills_buffer() -> None:
    conf = make_conf(proxy_buffer=16)
    assert run([b"* OK " + b"x" * 9 + b"\r\n"], conf).to_upstream == b"a1 LOGIN {5}\r\n"


def test_tiny_proxy_buffer() -> None:
    # nginx's recv() into a full 3-byte buffer reads nothing: an error
    r = run([b"* OK\r\n"], make_conf(proxy_buffer=3))
    assert r.result is UpNext.FAIL
    assert r.to_client == INTERNAL
    assert r.logs == []


def test_finished_machine_ignores_input() -> None:
    up = ImapUpstream(CONF, b"u", b"p", b"a1 ")
    for data in HAPPY:
        up.receive(data)
    up.to_client.clear()
    assert up.receive(b"more\r\n") is UpNext.DONE
    assert up.to_client == []
    up = ImapUpstream(CONF, b"u", b"p", b"a1 ")
    assert up.receive(b"junk\r\n") is UpNext.FAIL
    assert up.receive(GREETING) is UpNext.FAIL
    assert up.to_upstream == []


def test_internal_error_line() -> None:
    assert ImapUpstream(CONF, b"", b"", b"").internal_error() == INTERNAL


def test_reply_and_more_filling_the_buffer_is_too_long() -> None:
    # the read fills proxy_buffer and does not end with CRLF
    conf = make_conf(proxy_buffer=64)
    r = run([*HAPPY[:3], LOGIN_OK + b"x" * 100], conf)
    assert r.result is UpNext.FAIL
    assert r.to_client == INTERNAL
    assert r.logs[0][1].startswith("upstream sent too long response line: ")
