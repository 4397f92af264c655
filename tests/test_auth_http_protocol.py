"""protocol.auth_http: the request bytes and the response parser, against nginx's rules."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront.auth.base import AuthResult, SessionInfo, Status
from mailfront.conf.model import AuthHttpUrl, AuthMethod, Listen, Protocol, ServerConf, VerifyClient
from mailfront.protocol import auth_http
from mailfront.protocol.auth_http import (
    AuthHttpError,
    AuthHttpTooLarge,
    ResponseParser,
    build_request,
    escape,
    holds_password,
    parse_addr,
    requery_request,
)
from mailfront.protocol.base import AuthRequest

URL = AuthHttpUrl(host_header="auth.example", addr="127.0.0.1", port=9000, uri="/auth")


def conf(protocol: Protocol = Protocol.IMAP, **kw: object) -> ServerConf:
    listen = Listen(family="inet", host="127.0.0.1", port=143, addr_text="127.0.0.1:143")
    kw.setdefault("auth_http", URL)
    return ServerConf(file="t.conf", line=1, listen=(listen,), protocol=protocol, **kw)  # type: ignore[arg-type]


def info(protocol: str = "imap", addr: str = "192.0.2.7") -> SessionInfo:
    return SessionInfo(protocol, addr)


# ------------------------------------------------------------------ escape


def test_escape_every_byte() -> None:
    for c in range(256):
        b = bytes([c])
        if c <= 0x20 or c == 0x25:
            assert escape(b) == b"%%%02X" % c
        else:
            assert escape(b) == b  # 0x7F and 8-bit bytes stay raw


def test_escape_examples() -> None:
    assert escape(b"a b%c\r\n\x00\xff\x7f") == b"a%20b%25c%0D%0A%00\xff\x7f"
    assert escape(b"") == b""
    assert escape(b"user@example.com") == b"user@example.com"


def _unescape(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25:
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


@given(st.binary())
def test_escape_roundtrip(data: bytes) -> None:
    out = escape(data)
    assert _unescape(out) == data
    # nothing in the output needs escaping except the "%" of an escape
    assert not any(c <= 0x20 for c in out)
    assert out.count(b"%") == sum(1 for c in data if c <= 0x20 or c == 0x25)


# ----------------------------------------------------------------- request


def test_request_imap_login() -> None:
    req = AuthRequest(b"bob smith", b"p%ss word", AuthMethod.LOGIN)
    assert build_request(conf(), info(), req, 1) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: plain\r\n"
        b"Auth-User: bob%20smith\r\n"
        b"Auth-Pass: p%25ss%20word\r\n"
        b"Auth-Protocol: imap\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 192.0.2.7\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    ("method", "name"),
    [
        (AuthMethod.PLAIN, b"plain"),
        (AuthMethod.LOGIN, b"plain"),
        (AuthMethod.LOGIN_USERNAME, b"plain"),
        (AuthMethod.APOP, b"apop"),
        (AuthMethod.CRAM_MD5, b"cram-md5"),
        (AuthMethod.EXTERNAL, b"external"),
    ],
)
def test_request_method_names(method: AuthMethod, name: bytes) -> None:
    req = AuthRequest(b"u", b"p", method)
    assert b"\r\nAuth-Method: " + name + b"\r\n" in build_request(conf(), info(), req, 3)


def test_request_pop3_apop_salt() -> None:
    salt = b"<1896.697170952@mail.example>\r\n"
    req = AuthRequest(b"bob", b"c4c9334bac560ecc979e58001b3e22fb", AuthMethod.APOP, salt=salt)
    assert build_request(conf(Protocol.POP3), info("pop3"), req, 2) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: apop\r\n"
        b"Auth-User: bob\r\n"
        b"Auth-Pass: c4c9334bac560ecc979e58001b3e22fb\r\n"
        b"Auth-Salt: <1896.697170952@mail.example>\r\n"
        b"Auth-Protocol: pop3\r\n"
        b"Auth-Login-Attempt: 2\r\n"
        b"Client-IP: 192.0.2.7\r\n"
        b"\r\n"
    )


def test_request_salt_only_for_apop_and_cram_md5() -> None:
    salt = b"<1.2@x>\r\n"
    for method in (AuthMethod.PLAIN, AuthMethod.LOGIN, AuthMethod.EXTERNAL):
        req = AuthRequest(b"u", b"", method, salt=salt)
        assert b"Auth-Salt" not in build_request(conf(), info(), req, 1)
    req = AuthRequest(b"u", b"0" * 32, AuthMethod.CRAM_MD5, salt=salt)
    assert b"\r\nAuth-Salt: <1.2@x>\r\nAuth-Protocol: imap\r\n" in build_request(
        conf(), info(), req, 1
    )


def test_request_smtp_cram_md5_with_client_host() -> None:
    i = info("smtp")
    i.client_host = b"[UNAVAILABLE]"
    req = AuthRequest(b"bob", b"d" * 32, AuthMethod.CRAM_MD5, salt=b"<9.8@mx>\r\n", helo=b"h")
    assert build_request(conf(Protocol.SMTP), i, req, 1) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: cram-md5\r\n"
        b"Auth-User: bob\r\n"
        b"Auth-Pass: " + b"d" * 32 + b"\r\n"
        b"Auth-Salt: <9.8@mx>\r\n"
        b"Auth-Protocol: smtp\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 192.0.2.7\r\n"
        b"Client-Host: [UNAVAILABLE]\r\n"
        b"\r\n"
    )


def test_request_smtp_none() -> None:
    i = info("smtp", "2001:db8::1")
    i.client_host = b"client.example"
    req = AuthRequest(
        b"",
        b"",
        AuthMethod.NONE,
        helo=b"client.example",
        smtp_from=b"MAIL FROM:<a b@x>",
        smtp_to=b"RCPT TO:<c@y> NOTIFY=NEVER",
    )
    assert build_request(conf(Protocol.SMTP), i, req, 1) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: none\r\n"
        b"Auth-User: \r\n"
        b"Auth-Pass: \r\n"
        b"Auth-Protocol: smtp\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 2001:db8::1\r\n"
        b"Client-Host: client.example\r\n"
        b"Auth-SMTP-Helo: client.example\r\n"
        b"Auth-SMTP-From: MAIL FROM:<a b@x>\r\n"
        b"Auth-SMTP-To: RCPT TO:<c@y> NOTIFY=NEVER\r\n"
        b"\r\n"
    )


def test_request_smtp_fields_only_for_none() -> None:
    req = AuthRequest(b"u", b"p", AuthMethod.PLAIN, helo=b"h", smtp_from=b"MAIL FROM:<>")
    out = build_request(conf(Protocol.SMTP), info("smtp"), req, 1)
    assert b"Auth-SMTP" not in out


def test_request_proxy_protocol_ssl_and_extra_headers() -> None:
    i = info("imap", "203.0.113.9")
    i.proxy_src_addr = "203.0.113.9"
    i.proxy_src_port = 51000
    i.proxy_dst_addr = "198.51.100.1"
    i.proxy_dst_port = 993
    i.ssl = {
        auth_http.SSL_PROTOCOL: b"TLSv1.3",
        auth_http.SSL_CIPHER: b"TLS_AES_256_GCM_SHA384",
        auth_http.SSL_VERIFY: b"SUCCESS",
        auth_http.SSL_SUBJECT: b"CN=bob,O=Example",
        auth_http.SSL_ISSUER: b"CN=CA",
        auth_http.SSL_SERIAL: b"",  # empty values are left out
        auth_http.SSL_FINGERPRINT: b"0" * 40,
        auth_http.SSL_CERT: b"-----BEGIN CERTIFICATE-----\nMII x\n-----END CERTIFICATE-----\n",
    }
    c = conf(
        ssl_verify_client=VerifyClient.ON,
        auth_http_pass_client_cert=True,
        auth_http_header=(("X-Auth-Key", "secret value"), ("X-Two", "2")),
    )
    req = AuthRequest(b"bob", b"pw", AuthMethod.PLAIN)
    assert build_request(c, i, req, 7) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: plain\r\n"
        b"Auth-User: bob\r\n"
        b"Auth-Pass: pw\r\n"
        b"Auth-Protocol: imap\r\n"
        b"Auth-Login-Attempt: 7\r\n"
        b"Client-IP: 203.0.113.9\r\n"
        b"Proxy-Protocol-Addr: 203.0.113.9\r\n"
        b"Proxy-Protocol-Port: 51000\r\n"
        b"Proxy-Protocol-Server-Addr: 198.51.100.1\r\n"
        b"Proxy-Protocol-Server-Port: 993\r\n"
        b"Auth-SSL: on\r\n"
        b"Auth-SSL-Protocol: TLSv1.3\r\n"
        b"Auth-SSL-Cipher: TLS_AES_256_GCM_SHA384\r\n"
        b"Auth-SSL-Verify: SUCCESS\r\n"
        b"Auth-SSL-Subject: CN=bob,O=Example\r\n"
        b"Auth-SSL-Issuer: CN=CA\r\n"
        b"Auth-SSL-Fingerprint: 0000000000000000000000000000000000000000\r\n"
        b"Auth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0AMII%20x%0A"
        b"-----END%20CERTIFICATE-----%0A\r\n"
        b"X-Auth-Key: secret value\r\n"
        b"X-Two: 2\r\n"
        b"\r\n"
    )


def test_request_ssl_gates() -> None:
    i = info()
    i.ssl = {
        auth_http.SSL_PROTOCOL: b"TLSv1.2",
        auth_http.SSL_VERIFY: b"NONE",
        auth_http.SSL_CERT: b"PEM",
    }
    req = AuthRequest(b"u", b"p", AuthMethod.PLAIN)
    off = build_request(conf(), i, req, 1)
    assert b"Auth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\n\r\n" in off
    assert b"Verify" not in off and b"Cert" not in off
    on = build_request(conf(ssl_verify_client=VerifyClient.OPTIONAL), i, req, 1)
    assert b"Auth-SSL-Verify: NONE\r\n" in on and b"Cert" not in on
    i.ssl = {}
    assert b"Auth-SSL: on\r\n\r\n" in build_request(conf(), i, req, 1)


def test_request_unix_url_host() -> None:
    url = AuthHttpUrl(host_header="localhost", addr="/run/auth.sock", port=0, uri="/", unix=True)
    c = conf(auth_http=url)
    out = build_request(c, info(), AuthRequest(b"u", b"p", AuthMethod.PLAIN), 1)
    assert out.startswith(b"GET / HTTP/1.0\r\nHost: localhost\r\n")


def test_request_raw_8bit_login() -> None:
    req = AuthRequest("jürgen".encode(), b"\x7f\xff", AuthMethod.PLAIN)
    out = build_request(conf(), info(), req, 1)
    assert b"Auth-User: j\xc3\xbcrgen\r\nAuth-Pass: \x7f\xff\r\n" in out


# ------------------------------------------------------- response parsing


def parse(data: bytes) -> ResponseParser:
    p = ResponseParser()
    assert p.feed(data)
    return p


OK_ANSWER = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.2\r\nAuth-Port: 143\r\n\r\n"


def test_ok() -> None:
    r = parse(OK_ANSWER).result("imap")
    assert (r.status, r.server, r.port, r.user, r.passwd, r.wait) == (
        Status.OK,
        "10.0.0.2",
        143,
        None,
        None,
        None,
    )


def test_status_code_ignored() -> None:
    r = parse(OK_ANSWER.replace(b"200 OK", b"500 Internal Server Error")).result("imap")
    assert r.status is Status.OK


def test_no_status_line_lf_only() -> None:
    p = parse(b"Auth-Status: OK\nAuth-Server: 10.0.0.2\nAuth-Port: 110\n\n")
    assert p.result("pop3").port == 110


def test_partial_http_prefix_is_a_header() -> None:
    # "HTTX" is not "HTTP/": parsing restarts at byte 0, as a header name
    p = parse(b"HTTX: 1\r\nAuth-Status: OK\r\nAuth-Server: 1.2.3.4\r\nAuth-Port: 25\r\n\r\n")
    assert p.result("smtp").server == "1.2.3.4"
    with pytest.raises(AuthHttpError, match=r"^sent invalid header in response$"):
        ResponseParser().feed(b"HTTP 200\r\n\r\n")  # the space after "HTTP"


def test_status_line_bare_cr() -> None:
    with pytest.raises(AuthHttpError) as e:
        ResponseParser().feed(b"HTTP/1.0 200\rX")
    assert str(e.value) == "sent invalid response"
    assert type(e.value) is AuthHttpError


def test_status_line_any_bytes() -> None:
    p = parse(b"HTTP/\x00\xff whatever\nAuth-Status: WAIT\n\n")
    assert p.result("imap").status is Status.WAIT


@pytest.mark.parametrize(
    "data",
    [
        b"Auth_Status: OK\r\n\r\n",
        b"-Auth: x\r\n\r\n",
        b" Auth-Status: OK\r\n\r\n",
        b"Auth-Status : OK\r\n\r\n",
        b"Auth-Status: OK\rX\r\n",
        b"Auth-Status: OK\r\n\rX",
        b"Auth-Status\rX",
        b"Auth-Status:\rX",
        b"\xc1uth: x\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n:x\r\n\r\n",
    ],
)
def test_invalid_header(data: bytes) -> None:
    with pytest.raises(AuthHttpError, match=r"^sent invalid header in response$"):
        ResponseParser().feed(data)


def test_header_values_trimmed() -> None:
    p = parse(
        b"Auth-Status:    Invalid  login  \r\n"
        b"Auth-User:\tbob \r\n"
        b"Auth-Pass:\r\n"
        b"Auth-Error-Code: 550 5.7.1   \r\n"
        b"\r\n"
    )
    r = p.result("smtp")
    assert r.status is Status.ERROR
    assert r.errmsg == b"Invalid  login"
    assert r.user == b"\tbob"  # a tab is not a space to nginx
    assert r.passwd == b""
    assert r.error_code == b"550 5.7.1"


def test_name_without_colon_is_empty_header() -> None:
    # "Auth-Status" alone is an empty status: an error for IMAP/POP3, not for SMTP
    p = parse(b"Auth-Status\r\nAuth-Server: 10.0.0.1\r\nAuth-Port: 25\r\n\r\n")
    assert p.result("imap").status is Status.ERROR
    assert p.result("imap").errmsg == b""
    assert p.result("pop3").status is Status.ERROR
    assert p.result("smtp").status is Status.OK


def test_names_case_insensitive_values_case_sensitive() -> None:
    p = parse(b"aUTH-sTATUS: ok\r\nAUTH-SERVER: 10.0.0.1\r\nauth-port: 143\r\n\r\n")
    r = p.result("imap")
    assert r.status is Status.ERROR and r.errmsg == b"ok"
    p = parse(b"auth-status: wait\r\n\r\n")
    assert p.result("imap").errmsg == b"wait"
    p = parse(b"auth-status: WAIT\r\n\r\n")
    assert p.result("imap").status is Status.WAIT


def test_repeated_headers_last_wins() -> None:
    p = parse(
        b"Auth-Status: first error\r\n"
        b"Auth-Status: second error\r\n"
        b"Auth-Status: OK\r\n"  # a later OK does not clear the error
        b"Auth-Server: 10.0.0.1\r\nAuth-Server: 10.0.0.2\r\n"
        b"Auth-Port: 1\r\nAuth-Port: 2\r\n"
        b"Auth-User: a\r\nAuth-User: b\r\n"
        b"Auth-Wait: 3\r\nAuth-Wait: x\r\n"  # an invalid Auth-Wait is ignored
        b"Auth-Error-Code: 451 4.3.0\r\nAuth-Error-Code:\r\n"
        b"X-Unknown: whatever\r\n"
        b"\r\n"
    )
    r = p.result("smtp")
    assert r.status is Status.ERROR
    assert r.errmsg == b"second error"
    assert r.user == b"b"
    assert r.wait == 3
    assert r.error_code is None  # empty: the default 535 5.7.0 applies
    assert p.peer_name == b"10.0.0.2:2"


def test_smtp_empty_error_after_error_clears_it() -> None:
    p = parse(b"Auth-Status: bad\r\nAuth-Status: \r\nAuth-Server: 1.1.1.1\r\nAuth-Port: 25\r\n\r\n")
    assert p.result("smtp").status is Status.OK
    assert p.result("pop3").errmsg == b""


@pytest.mark.parametrize(
    ("value", "wait"),
    [(b"0", 0), (b"5", 5), (b"007", 7), (b"-1", None), (b"+1", None), (b"1.5", None), (b"", None),
     (b"9223372036854775807", 9223372036854775807), (b"9223372036854775808", None),
     ("٣".encode(), None)],
)  # fmt: skip
def test_auth_wait_values(value: bytes, wait: int | None) -> None:
    p = parse(b"Auth-Status: Invalid login\r\nAuth-Wait: " + value + b"\r\n\r\n")
    assert p.result("pop3").wait == wait


def test_wait() -> None:
    p = parse(b"Auth-Status: WAIT\r\nAuth-Wait: 2\r\nAuth-Pass: real\r\n\r\n")
    r = p.result("imap", has_passwd=False)
    assert (r.status, r.wait, r.passwd) == (Status.WAIT, 2, b"real")
    assert p.wait_seen


def test_error_wins_over_wait() -> None:
    p = parse(b"Auth-Status: WAIT\r\nAuth-Status: go away\r\nAuth-Wait: 1\r\n\r\n")
    r = p.result("imap")
    assert r.status is Status.ERROR and r.errmsg == b"go away" and r.wait == 1
    assert p.wait_seen


def test_sticky_wait_flag() -> None:
    p = parse(OK_ANSWER)
    assert p.result("imap", wait_pending=True).status is Status.WAIT
    assert not p.wait_seen


def test_did_not_send_server_or_port() -> None:
    for data in (
        b"Auth-Status: OK\r\n\r\n",
        b"Auth-Status: OK\r\nAuth-Server: 1.2.3.4\r\n\r\n",
        b"Auth-Status: OK\r\nAuth-Port: 143\r\n\r\n",
        b"Auth-Server: 1.2.3.4\r\nAuth-Port:\r\n\r\n",
        b"\r\n",
    ):
        with pytest.raises(AuthHttpError) as e:
            parse(data).result("imap")
        assert str(e.value) == "did not send server or port"


def test_did_not_send_password() -> None:
    data = b"Auth-Status: OK\r\nAuth-Server: 1.2.3.4\r\nAuth-Port: 110\r\n\r\n"
    for proto in ("imap", "pop3"):
        with pytest.raises(AuthHttpError, match=r"^did not send password$"):
            parse(data).result(proto, has_passwd=False)
    assert parse(data).result("smtp", has_passwd=False).status is Status.OK
    with_pass = data.replace(b"\r\n\r\n", b"\r\nAuth-Pass: \r\n\r\n")
    r = parse(with_pass).result("pop3", has_passwd=False)
    assert r.status is Status.OK and r.passwd == b""


def test_checks_in_nginx_order() -> None:
    # server/port before password, password before the address, address before the port
    with pytest.raises(AuthHttpError, match="server or port"):
        parse(b"Auth-Server: x\r\n\r\n").result("imap", has_passwd=False)
    with pytest.raises(AuthHttpError, match="password"):
        parse(b"Auth-Server: x\r\nAuth-Port: 0\r\n\r\n").result("imap", has_passwd=False)
    with pytest.raises(AuthHttpError, match="address"):
        parse(b"Auth-Server: x\r\nAuth-Port: 0\r\n\r\n").result("imap")


@pytest.mark.parametrize(
    "addr", [b"mail.example.com", b"localhost", b"[::1]", b"1.2.3.256", b"255.255.255.255",
             b"unix:/tmp/x", b"1.2.3", b"1.2.3.4:143", b"fe80::1%lo"],
)  # fmt: skip
def test_invalid_server_address(addr: bytes) -> None:
    p = parse(b"Auth-Status: OK\r\nAuth-Server: " + addr + b"\r\nAuth-Port: 143\r\n\r\n")
    with pytest.raises(AuthHttpError) as e:
        p.result("imap")
    assert str(e.value) == f'sent invalid server address:"{addr.decode()}"'


def test_invalid_server_address_8bit_text() -> None:
    p = parse(b"Auth-Server: h\xc3\xa9\xff\r\nAuth-Port: 1\r\n\r\n")
    with pytest.raises(AuthHttpError) as e:
        p.result("imap")
    assert str(e.value) == 'sent invalid server address:"hé\\xff"'


@pytest.mark.parametrize("port", [b"0", b"65536", b"-1", b"143a", b"1 2", b"99999999999999999999"])
def test_invalid_server_port(port: bytes) -> None:
    p = parse(b"Auth-Server: 10.1.1.1\r\nAuth-Port: " + port + b"\r\n\r\n")
    with pytest.raises(AuthHttpError) as e:
        p.result("imap")
    assert str(e.value) == f'sent invalid server port:"{port.decode()}"'


def test_valid_ports_and_ipv6() -> None:
    p = parse(b"Auth-Server: 2001:DB8::0:1\r\nAuth-Port: 065535\r\n\r\n")
    r = p.result("imap")
    assert (r.server, r.port) == ("2001:db8::1", 65535)
    assert p.peer_name == b"2001:DB8::0:1:065535"  # nginx logs the raw texts
    r = parse(b"Auth-Server: 1.2.3.4\r\nAuth-Port: 1\r\n\r\n").result("imap")
    assert r.port == 1


def test_body_ignored_and_feed_after_done() -> None:
    p = ResponseParser()
    assert p.feed(OK_ANSWER + b"body: \x00\r\r\n" * 200)
    assert p.feed(b"more garbage\r\rX")
    assert p.result("imap").status is Status.OK


def test_result_before_done() -> None:
    p = ResponseParser()
    assert not p.feed(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n")
    with pytest.raises(ValueError):
        p.result("imap")


def test_error_is_sticky() -> None:
    p = ResponseParser()
    with pytest.raises(AuthHttpError):
        p.feed(b"_\r\n")
    with pytest.raises(AuthHttpError):
        p.feed(b"\r\n")


# ------------------------------------------------------ the 1024-byte buffer


def _padded(total: int) -> bytes:
    """An OK answer whose header block ends exactly at byte ``total``."""
    head = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 1.2.3.4\r\nAuth-Port: 143\r\n"
    filler = b"X-Pad: \r\n"
    pad = total - len(head) - len(filler) - 2
    return head + b"X-Pad: " + b"a" * pad + b"\r\n" + b"\r\n"


def test_header_block_of_exactly_1024_bytes() -> None:
    data = _padded(1024)
    assert len(data) == 1024
    assert parse(data + b"body").result("imap").status is Status.OK
    p = ResponseParser()
    for i in range(len(data)):
        assert p.feed(data[i : i + 1]) == (i == len(data) - 1)


def test_header_block_of_1025_bytes() -> None:
    data = _padded(1025)
    with pytest.raises(AuthHttpTooLarge) as e:
        ResponseParser().feed(data)
    assert str(e.value) == "sent too large header in response"
    p = ResponseParser()
    with pytest.raises(AuthHttpTooLarge):
        for i in range(len(data)):
            p.feed(data[i : i + 1])
    assert i == 1023
    # an error inside the first 1024 bytes is reported as that error
    with pytest.raises(AuthHttpError, match="invalid header"):
        ResponseParser().feed(b"_" + b"a" * 2000)


# ------------------------------------------------------ splits and fuzzing


def outcome(chunks: list[bytes], protocol: str = "imap") -> object:
    p = ResponseParser()
    try:
        done = False
        for chunk in chunks:
            done = p.feed(chunk)
        if not done:
            return "incomplete"
        r = p.result(protocol, has_passwd=False)
    except AuthHttpError as e:
        return (type(e).__name__, str(e))
    return (r.status, r.errmsg, r.server, r.port, r.user, r.passwd, r.wait, r.error_code,
            p.wait_seen, p.peer_name)  # fmt: skip


NAMES = [b"Auth-Status", b"auth-server", b"AUTH-PORT", b"Auth-User", b"Auth-Pass", b"Auth-Wait",
         b"Auth-Error-Code", b"X-Other", b"Bad_Name", b"HTTP"]  # fmt: skip
VALUES = [b"OK", b"WAIT", b"ok", b"Invalid login", b"10.0.0.1", b"::1", b"143", b"0", b"3", b"",
          b"  padded  ", b"\xff\x00", b"host.example", b"70000"]  # fmt: skip
ENDS = [b"\r\n", b"\n", b"\r", b" \r\n", b""]


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 500\n", b"HTTP/",
                                           b"HTT", b"HTTP/1.0 200\r"])))  # fmt: skip
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(NAMES))
        sep = draw(st.sampled_from([b": ", b":", b":   ", b""]))
        value = draw(st.sampled_from(VALUES))
        parts.append(name + sep + value + draw(st.sampled_from(ENDS)))
    parts.append(draw(st.sampled_from([b"\r\n", b"\n", b"", b"\r"])))
    parts.append(draw(st.binary(max_size=20)))
    return b"".join(parts)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = []
    last = 0
    for point in points:
        chunks.append(data[last:point])
        last = point
    chunks.append(data[last:])
    return chunks


@settings(max_examples=300)
@given(answers(), st.lists(st.integers(0, 2000), max_size=6), st.sampled_from(["imap", "smtp"]))
def test_any_split_same_outcome(data: bytes, cuts: list[int], protocol: str) -> None:
    whole = outcome([data], protocol)
    assert outcome(_split(data, cuts), protocol) == whole
    assert outcome([data[i : i + 1] for i in range(len(data))], protocol) == whole


@settings(max_examples=300)
@given(st.binary(max_size=1200), st.lists(st.integers(0, 2000), max_size=4))
def test_arbitrary_bytes_only_auth_http_error(data: bytes, cuts: list[int]) -> None:
    whole = outcome([data])
    assert outcome(_split(data, cuts)) == whole
    for proto in ("imap", "pop3", "smtp"):
        outcome([data], proto)  # raises nothing but AuthHttpError (caught)


# ----------------------------------------------------------- ngx_parse_addr


@given(st.ip_addresses())
def test_parse_addr_accepts_ip_literals(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if str(addr) == "255.255.255.255":  # INADDR_NONE: nginx refuses it
        assert parse_addr(b"255.255.255.255") is None
        return
    assert parse_addr(str(addr).encode()) == str(addr)
    if addr.version == 6:
        assert parse_addr(addr.exploded.encode()) == str(addr)
        assert parse_addr(addr.exploded.upper().encode()) == str(addr)


@given(st.binary(max_size=48))
def test_parse_addr_never_raises(data: bytes) -> None:
    out = parse_addr(data)
    if out is not None:
        ipaddress.ip_address(out)


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        (b"1..2.3", "1.0.2.3"),  # nginx counts an empty octet as 0
        (b"010.1.1.1", "10.1.1.1"),  # decimal, not octal
        (b":1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),  # a lone leading ":" is skipped
        (b"::ffff:1.2.3.4", str(ipaddress.IPv6Address("::ffff:1.2.3.4"))),
        (b"1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
        (b"1:2:3:4:5:6:7:1.2.3.4", None),
        (b"1::2::3", None),
        (b"1:", None),
        (b"::12345", None),
        (b"", None),
    ],
)
def test_parse_addr_nginx_quirks(text: bytes, addr: str | None) -> None:
    assert parse_addr(text) == addr


# ---------------------------------------------------------- WAIT re-query


def test_requery_after_cram_md5() -> None:
    salt = b"<1.2@x>\r\n"
    first = AuthRequest(b"bob", b"a" * 32, AuthMethod.CRAM_MD5, salt=salt)
    assert not holds_password(first)
    again = requery_request(first, AuthResult(Status.WAIT))
    assert (again.login, again.passwd, again.salt, again.method) == (
        b"bob",
        b"",
        salt,
        AuthMethod.CRAM_MD5,
    )
    out = build_request(conf(), info(), again, 1)
    assert b"Auth-Pass: \r\nAuth-Salt: <1.2@x>\r\n" in out
    third = requery_request(again, AuthResult(Status.WAIT, user=b"robert", passwd=b"real pw"))
    assert (third.login, third.passwd) == (b"robert", b"real pw")
    assert b"Auth-User: robert\r\nAuth-Pass: real%20pw\r\n" in build_request(
        conf(), info(), third, 1
    )
    assert requery_request(third, AuthResult(Status.WAIT)).passwd == b""


def test_requery_plain_keeps_password() -> None:
    first = AuthRequest(b"bob", b"pw", AuthMethod.PLAIN)
    assert holds_password(first)
    again = requery_request(first, AuthResult(Status.WAIT, user=b"bob@example"))
    assert (again.login, again.passwd) == (b"bob@example", b"pw")


def test_holds_password() -> None:
    assert holds_password(AuthRequest(b"u", b"", AuthMethod.LOGIN))
    assert not holds_password(AuthRequest(b"u", b"x" * 32, AuthMethod.APOP, salt=b"<a>\r\n"))
    assert not holds_password(AuthRequest(b"u", b"", AuthMethod.EXTERNAL))
    assert holds_password(AuthRequest(b"", b"", AuthMethod.NONE))
