"""POP3 backend login (``Pop3Upstream``), byte-exact with nginx's mail proxy."""

from __future__ import annotations

from mailfront.conf.model import Protocol, ServerConf
from mailfront.protocol.base import ERR, INFO, UpNext
from mailfront.protocol.pop3 import Pop3State, Pop3Upstream
from support.machines import server_conf

INTERNAL = b"-ERR internal server error\r\n"


def make_conf(**kw: object) -> ServerConf:
    return server_conf(Protocol.POP3, **kw)


CONF = make_conf()


def feed(
    replies: list[bytes], conf: ServerConf = CONF, per_byte: bool = False
) -> tuple[Pop3Upstream, list[UpNext], bytes, bytes]:
    up = Pop3Upstream(conf, b"alice", b"s3 cret")
    nexts = []
    for reply in replies:
        chunks = [reply[i : i + 1] for i in range(len(reply))] if per_byte else [reply]
        for chunk in chunks:
            nexts.append(up.receive(chunk))
    return up, nexts, b"".join(up.to_upstream), b"".join(up.to_client)


def test_login() -> None:
    up = Pop3Upstream(CONF, b"alice", b"s3 cret")
    assert up.action == "connecting to upstream"
    assert up.to_upstream == []  # nothing before the greeting
    assert up.receive(b"+OK Dovecot ready.\r\n") is UpNext.READ
    assert up.to_upstream == [b"USER alice\r\n"]
    assert up.action == "sending user name to upstream"
    assert up.state is Pop3State.USER
    up.to_upstream.clear()
    assert up.receive(b"+OK\r\n") is UpNext.READ
    assert up.to_upstream == [b"PASS s3 cret\r\n"]
    assert up.action == "sending password to upstream"
    up.to_upstream.clear()
    assert up.receive(b"+OK Logged in.\r\n") is UpNext.DONE
    assert up.to_upstream == []
    assert up.to_client == [b"+OK Logged in.\r\n"]
    assert up.action == ""
    assert up.logs == []


def test_login_byte_by_byte() -> None:
    replies = [b"+OK Dovecot ready.\r\n", b"+OK\r\n", b"+OK Logged in.\r\n"]
    whole = feed(replies)
    single = feed(replies, per_byte=True)
    assert whole[2:] == single[2:] == (b"USER alice\r\nPASS s3 cret\r\n", b"+OK Logged in.\r\n")
    assert single[1][-1] is UpNext.DONE
    assert set(single[1][:-1]) == {UpNext.READ}


def test_partial_reply_waits() -> None:
    up = Pop3Upstream(CONF, b"a", b"b")
    assert up.receive(b"+OK") is UpNext.READ
    assert up.action == "reading response from upstream"
    assert up.receive(b"\r") is UpNext.READ
    assert up.to_upstream == []
    assert up.receive(b"\n") is UpNext.READ
    assert up.to_upstream == [b"USER a\r\n"]


def test_what_was_read_must_end_in_crlf() -> None:
    up = Pop3Upstream(CONF, b"a", b"b")
    assert up.receive(b"+OK hello\r\n+OK") is UpNext.READ
    assert up.to_upstream == []
    assert up.receive(b" more\r\n") is UpNext.READ
    assert up.to_upstream == [b"USER a\r\n"]


def test_rest_of_a_good_read_is_dropped() -> None:
    _, nexts, sent, _ = feed([b"+OK hi\r\n-ERR junk\r\n", b"+OK\r\n", b"+OK in\r\n"])
    assert nexts == [UpNext.READ, UpNext.READ, UpNext.DONE]
    assert sent == b"USER alice\r\nPASS s3 cret\r\n"


def test_final_reply_relayed_as_read() -> None:
    _, nexts, _, to_client = feed([b"+OK\r\n", b"+OK\r\n", b"+OK in\r\n+OK extra\r\n"])
    assert nexts[-1] is UpNext.DONE
    assert to_client == b"+OK in\r\n+OK extra\r\n"


def test_invalid_greeting() -> None:
    up, nexts, sent, to_client = feed([b"-ERR go away\r\n"])
    assert nexts == [UpNext.FAIL]
    assert sent == b""
    assert to_client == INTERNAL
    assert up.logs == [(ERR, 'upstream sent invalid response: "-ERR go away"')]
    assert up.action == "reading response from upstream"


def test_invalid_password_reply() -> None:
    up, nexts, _, to_client = feed(
        [b"+OK\r\n", b"+OK\r\n", b"-ERR [AUTH] Authentication failed.\r\n"]
    )
    assert nexts[-1] is UpNext.FAIL
    assert to_client == INTERNAL
    assert up.logs == [
        (ERR, 'upstream sent invalid response: "-ERR [AUTH] Authentication failed."')
    ]


def test_ok_is_case_sensitive() -> None:
    up, nexts, _, _ = feed([b"+ok\r\n"])
    assert nexts == [UpNext.FAIL]
    assert up.logs == [(ERR, 'upstream sent invalid response: "+ok"')]


def test_invalid_reply_log_stops_at_nul() -> None:
    up, _, _, _ = feed([b"-ERR a\0b\r\n"])
    assert up.logs == [(ERR, 'upstream sent invalid response: "-ERR a"')]


def test_invalid_reply_multiline_logged_whole() -> None:
    up, _, _, _ = feed([b"-ERR a\r\n-ERR b\r\n"])
    assert up.logs == [(ERR, 'upstream sent invalid response: "-ERR a\r\n-ERR b"')]


def test_pass_error_message() -> None:
    conf = make_conf(proxy_pass_error_message=True)
    reply = b"-ERR [AUTH] Authentication failed.\r\n"
    up, nexts, _, to_client = feed([b"+OK\r\n", b"+OK\r\n", reply], conf)
    assert nexts[-1] is UpNext.FAIL
    assert to_client == reply
    assert up.logs == [
        (INFO, 'upstream sent invalid response: "-ERR [AUTH] Authentication failed."')
    ]


def test_pass_error_message_logs_past_nul() -> None:
    conf = make_conf(proxy_pass_error_message=True)
    up, _, _, to_client = feed([b"-ERR a\0b\r\n"], conf)
    assert to_client == b"-ERR a\0b\r\n"
    assert up.logs == [(INFO, 'upstream sent invalid response: "-ERR a\x00b"')]


def test_too_long_response_line() -> None:
    conf = make_conf(proxy_buffer=16)
    up, nexts, _, to_client = feed([b"+OK " + b"x" * 20], conf)
    assert nexts == [UpNext.FAIL]
    assert to_client == INTERNAL
    assert up.logs == [(ERR, 'upstream sent too long response line: "+OK xxxxxxxxxxx"')]


def test_too_long_response_line_byte_by_byte() -> None:
    conf = make_conf(proxy_buffer=16)
    up, nexts, _, to_client = feed([b"+OK " + b"x" * 20], conf, per_byte=True)
    assert nexts[-1] is UpNext.FAIL
    assert nexts.count(UpNext.FAIL) == 24 - 15  # from the 16th byte on: sticky
    assert to_client == INTERNAL
    assert up.logs == [(ERR, 'upstream sent too long response line: "+OK xxxxxxxxxxx"')]


def test_too_long_with_pass_error_message_is_internal_error() -> None:
    conf = make_conf(proxy_buffer=16, proxy_pass_error_message=True)
    _, _, _, to_client = feed([b"-ERR " + b"x" * 20], conf)
    assert to_client == INTERNAL


def test_reply_exactly_fills_proxy_buffer() -> None:
    conf = make_conf(proxy_buffer=16)
    _, nexts, sent, _ = feed([b"+OK 0123456789\r\n"], conf)
    assert nexts == [UpNext.READ]
    assert sent == b"USER alice\r\n"


def test_chunk_larger_than_proxy_buffer() -> None:
    conf = make_conf(proxy_buffer=8)
    # read as nginx would from a full socket: 8 bytes at a time
    _, nexts, sent, to_client = feed([b"+OK ab\r\n+OK cd\r\n+OK\r\n"], conf)
    assert nexts == [UpNext.DONE]
    assert sent == b"USER alice\r\nPASS s3 cret\r\n"
    assert to_client == b"+OK\r\n"
    up, nexts, _, to_client = feed([b"+OK ab\r\n+OK\r\n+OK in\r\n"], conf)
    assert nexts == [UpNext.FAIL]
    assert up.logs == [(ERR, 'upstream sent too long response line: "+OK\r\n+O"')]


def test_tiny_proxy_buffer() -> None:
    up, nexts, _, to_client = feed([b"+OK\r\n"], make_conf(proxy_buffer=2))
    assert nexts == [UpNext.FAIL]
    assert to_client == INTERNAL
    assert up.logs == []


def test_sticky_outcomes() -> None:
    up, _, _, _ = feed([b"+OK\r\n", b"+OK\r\n", b"+OK\r\n"])
    up.to_client.clear()
    up.to_upstream.clear()
    assert up.receive(b"+OK\r\n") is UpNext.DONE
    assert up.to_client == [] and up.to_upstream == []


def test_login_bytes_sent_raw() -> None:
    up = Pop3Upstream(CONF, b"j doe\xc3\xa9", b"")
    up.receive(b"+OK\r\n")
    up.receive(b"+OK\r\n")
    assert up.to_upstream == [b"USER j doe\xc3\xa9\r\n", b"PASS \r\n"]


def test_internal_error() -> None:
    assert Pop3Upstream(CONF, b"", b"").internal_error() == INTERNAL
