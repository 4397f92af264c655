"""Loading configurations: the command table, includes, merges and defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront import conf
from mailfront.conf import directives as d
from mailfront.conf.model import (
    AUTH_APOP_ENABLED,
    AUTH_CRAM_MD5_ENABLED,
    AUTH_LOGIN_ENABLED,
    AUTH_PLAIN_ENABLED,
    Cidr,
    Config,
    Protocol,
    ServerConf,
    Starttls,
)
from mailfront.conf.slots import Ctx

EVENTS = "events {}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, **kw: object) -> Config:
    main = write(tmp_path / "conf" / "mailfront.conf", text)
    kw.setdefault("hostname", "mx.test")
    return conf.load(str(main), str(tmp_path), **kw)  # type: ignore[arg-type]


def error(tmp_path: Path, text: str, **kw: object) -> conf.ConfError:
    with pytest.raises(conf.ConfError) as info:
        load(tmp_path, text, **kw)
    return info.value


def server(config: Config, i: int = 0) -> ServerConf:
    assert config.mail is not None
    return config.mail.servers[i]


MINIMAL = (
    EVENTS
    + """
mail {
    auth_http 127.0.0.1:9000/auth;
    server {
        listen 127.0.0.1:143;
    }
}
"""
)


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    s = server(config)
    assert s.protocol is Protocol.IMAP  # from the port
    assert (s.timeout, s.proxy_timeout, s.auth_http_timeout, s.resolver_timeout) == (
        60.0, 86400.0, 60.0, 30.0,
    )  # fmt: skip
    assert s.server_name == "mx.test"
    assert s.max_errors == 5
    page = os.sysconf("SC_PAGE_SIZE")
    assert (s.proxy_buffer, s.imap_client_buffer, s.smtp_client_buffer) == (page, page, page)
    assert s.imap_capabilities == ("IMAP4", "IMAP4rev1", "UIDPLUS")
    assert s.pop3_capabilities == ("TOP", "USER", "UIDL")
    assert s.smtp_capabilities == ()
    assert s.imap_auth == AUTH_PLAIN_ENABLED
    assert s.pop3_auth == AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED  # plain implies LOGIN
    assert s.smtp_auth == AUTH_PLAIN_ENABLED | AUTH_LOGIN_ENABLED
    assert s.xclient is True and s.proxy_smtp_auth is False and s.proxy_protocol == 0
    assert s.starttls is Starttls.OFF
    assert s.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert s.error_log == () and s.resolver is None
    assert s.file == str(tmp_path / "conf" / "mailfront.conf") and s.line == 5
    (ls,) = s.listen
    assert (ls.family, ls.host, ls.port, ls.addr_text) == ("inet", "127.0.0.1", 143,
                                                           "127.0.0.1:143")  # fmt: skip
    assert not ls.wildcard and ls.backlog == 511 and ls.line == 6
    main = config.main
    assert main.pid == str(tmp_path) + "/logs/mailfront.pid"
    assert (main.daemon, main.master_process, main.worker_processes) == (True, True, 1)
    assert main.worker_connections == 512 and main.error_log == ()
    assert config.files == (str(tmp_path / "conf" / "mailfront.conf"),)
    assert config.prefix == str(tmp_path) + "/"
    assert config.warnings == ()


def test_hostname_default_is_lowercase_gethostname(tmp_path: Path) -> None:
    s = server(load(tmp_path, MINIMAL, hostname=None))
    assert s.server_name == os.uname().nodename.lower()
    s = server(load(tmp_path, MINIMAL.replace("server {", 'server_name "";\n server {'),
                    hostname="h"))  # fmt: skip
    assert s.server_name == "h"


def test_merge_main_to_server(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        EVENTS
        + """
mail {
    auth_http 127.0.0.1:9000;
    timeout 5s;
    proxy_buffer 16k;
    imap_capabilities IMAP4rev1;
    imap_capabilities IDLE;
    auth_http_header X-A 1;
    smtp_auth login cram-md5;
    server { listen 127.0.0.1:10143; protocol imap; timeout 1m; }
    server {
        listen 127.0.0.1:10144;
        protocol imap;
        imap_capabilities ID;
        auth_http_header X-B 2;
        smtp_auth plain;
    }
}
""",
    )
    a, b = server(config, 0), server(config, 1)
    assert (a.timeout, b.timeout) == (60.0, 5.0)
    assert a.proxy_buffer == b.proxy_buffer == 16384
    assert a.imap_capabilities == ("IMAP4rev1", "IDLE")  # accumulated in one block
    assert b.imap_capabilities == ("ID",)  # a server's list replaces mail{}'s
    assert a.auth_http_header == (("X-A", "1"),) and b.auth_http_header == (("X-B", "2"),)
    assert a.smtp_auth == AUTH_LOGIN_ENABLED | AUTH_CRAM_MD5_ENABLED
    assert b.smtp_auth == AUTH_PLAIN_ENABLED


def test_bitmask_warning_and_case(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace("listen", "pop3_auth PLAIN apop plain;\nlisten"))
    path = tmp_path / "conf" / "mailfront.conf"
    assert config.warnings == (f'duplicate value "plain" in {path}:6',)
    s = server(config)
    assert s.pop3_auth == AUTH_PLAIN_ENABLED | AUTH_APOP_ENABLED | AUTH_LOGIN_ENABLED


def test_protocol_inference(tmp_path: Path) -> None:
    text = (
        EVENTS
        + """
mail {
    auth_http 127.0.0.1:9000;
    server { listen 127.0.0.1:10000; listen 127.0.0.1:110; listen 127.0.0.1:25; }
    server { listen 127.0.0.1:143; protocol smtp; }
    server { protocol pop3; listen 127.0.0.1:993; protocol smtp; }
}
"""
    )
    config = load(tmp_path, text)
    assert [s.protocol for s in config.mail.servers] == [  # type: ignore[union-attr]
        Protocol.POP3, Protocol.SMTP, Protocol.SMTP,
    ]  # fmt: skip


def test_auth_http_urls(tmp_path: Path) -> None:
    def resolver(name: str) -> list[tuple[str, str]]:
        assert name == "auth.test"
        return [("inet", "192.0.2.7"), ("inet", "192.0.2.8")]

    cases = {
        "http://auth.test:8080/mail/auth": ("auth.test", "192.0.2.7", 8080, "/mail/auth"),
        "auth.test": ("auth.test", "192.0.2.7", 80, "/"),
        "[::1]:81": ("[::1]", "::1", 81, "/"),
        "unix:/run/auth.sock:/a": ("localhost", "/run/auth.sock", 0, "/a"),
    }
    for url, (host, addr, port, uri) in cases.items():
        a = server(load(tmp_path, MINIMAL.replace("127.0.0.1:9000/auth", url),
                        resolver=resolver)).auth_http  # fmt: skip
        assert a is not None
        assert (a.host_header, a.addr, a.port, a.uri, a.url) == (host, addr, port, uri, url)
        assert a.unix is url.startswith("unix:")


def test_hosts_file_resolver(tmp_path: Path) -> None:
    hosts = write(tmp_path / "hosts", "127.0.0.1 localhost Auth\n::1 localhost # v6\n")
    resolve = conf.hosts_file_resolver(str(hosts))
    assert list(resolve("localhost")) == [("inet", "127.0.0.1"), ("inet6", "::1")]
    assert list(resolve("AUTH")) == [("inet", "127.0.0.1")]
    with pytest.raises(conf.ResolveError):
        resolve("elsewhere")
    text = MINIMAL.replace("127.0.0.1:9000/auth", "auth:9000")
    a = server(load(tmp_path, text, resolver=resolve)).auth_http
    assert a is not None and (a.addr, a.port, a.host_header) == ("127.0.0.1", 9000, "auth")


def test_auth_file(tmp_path: Path) -> None:
    text = (
        EVENTS
        + """
mail {
    auth_file users.passwd;
    server { listen 127.0.0.1:143; }
    server { listen 127.0.0.1:10144; protocol imap; auth_http 127.0.0.1:9000; }
    server { listen 127.0.0.1:10145; protocol imap; auth_file /etc/other; }
}
"""
    )
    config = load(tmp_path, text)
    a, b, c = config.mail.servers  # type: ignore[union-attr]
    assert a.auth_file == str(tmp_path / "conf" / "users.passwd") and a.auth_http is None
    assert b.auth_file is None and b.auth_http is not None  # the server's auth_http wins
    assert c.auth_file == "/etc/other"
    e = error(tmp_path, MINIMAL.replace("auth_http 127.0.0.1:9000/auth;", ""))
    assert e.msg == 'no "auth_http" is defined for server'
    assert (e.file, e.line) == (str(tmp_path / "conf" / "mailfront.conf"), 5)


def test_listen_sockets(tmp_path: Path) -> None:
    def resolver(name: str) -> list[tuple[str, str]]:
        return [("inet", "127.0.0.2"), ("inet6", "::1"), ("inet", "127.0.0.2")]

    text = (
        EVENTS
        + """
mail {
    auth_http 127.0.0.1:9000;
    server {
        listen mx.test:10143 backlog=10 so_keepalive=30m::5 ipv6only=off rcvbuf=8k;
        listen 10150-10151;
        listen unix:/tmp/mf.sock;
        protocol smtp;
    }
}
"""
    )
    s = server(load(tmp_path, text, resolver=resolver))
    assert [ls.addr_text for ls in s.listen] == [
        "127.0.0.2:10143", "[::1]:10143", "0.0.0.0:10150", "0.0.0.0:10151", "unix:/tmp/mf.sock",
    ]  # fmt: skip
    first = s.listen[0]
    assert (first.backlog, first.rcvbuf, first.bind, first.ipv6only) == (10, 8192, True, False)
    assert (first.so_keepalive, first.tcp_keepidle, first.tcp_keepcnt) == (1, 1800, 5)
    assert s.listen[2].wildcard and s.listen[4].family == "unix"


def test_includes_are_read_again_in_their_context(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    write(conf_dir / "common.conf", "timeout 7s;\n")
    write(conf_dir / "servers" / "a.conf", "server { listen 127.0.0.1:1; protocol imap; }\n")
    write(conf_dir / "servers" / "b.conf",
          "server { listen 127.0.0.1:2; protocol pop3; include common.conf; }")  # fmt: skip
    text = (
        EVENTS
        + """
mail {
    auth_http 127.0.0.1:9000;
    include common.conf;
    include servers/*.conf;
    include servers/none-*.conf;
}
"""
    )
    config = load(tmp_path, text)
    assert config.files == (
        str(conf_dir / "mailfront.conf"),
        str(conf_dir / "common.conf"),
        str(conf_dir / "servers" / "a.conf"),
        str(conf_dir / "servers" / "b.conf"),
    )
    a, b = config.mail.servers  # type: ignore[union-attr]
    assert (a.timeout, b.timeout) == (7.0, 7.0)
    assert (a.file, b.file) == (str(conf_dir / "servers" / "a.conf"),
                                str(conf_dir / "servers" / "b.conf"))  # fmt: skip
    # the same file, read again in mail{}: timeout is now a duplicate of mail{}'s
    write(conf_dir / "servers" / "b.conf",
          "server { listen 127.0.0.1:2; }\ninclude common.conf;\n")  # fmt: skip
    e = error(tmp_path, text)
    assert str(e) == f'"timeout" directive is duplicate in {conf_dir}/common.conf:1'


def test_include_errors(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "mailfront.conf"
    e = error(tmp_path, EVENTS + "include missing.conf;\n")
    assert str(e) == (f'open() "{tmp_path}/conf/missing.conf" failed '
                      f"(2: No such file or directory) in {path}:2")  # fmt: skip
    write(tmp_path / "conf" / "loop.conf", "include loop.conf;\n")
    e = error(tmp_path, EVENTS + "include loop.conf;\n")
    assert "(24: Too many open files)" in str(e)
    e = error(tmp_path, EVENTS + "include a b;\n")
    assert e.msg == 'invalid number of arguments in "include" directive'


def test_command_line_directives_come_first(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "mailfront.conf"
    config = load(tmp_path, MINIMAL, directives="daemon off; worker_processes 3;")
    assert config.main.daemon is False and config.main.worker_processes == 3
    e = error(tmp_path, "daemon on;\n" + MINIMAL, directives="daemon off;")
    assert str(e) == f'"daemon" directive is duplicate in {path}:1'
    e = error(tmp_path, MINIMAL, directives="daemon maybe;")
    assert str(e) == (
        'invalid value "maybe" in "daemon" directive, it must be "on" or "off" in command line'
    )
    assert e.file == "command line"
    e = error(tmp_path, MINIMAL, directives="events { }")
    assert str(e) == "block directives are not supported in -g option in command line"
    e = error(tmp_path, MINIMAL, directives="daemon off")
    assert str(e) == 'unexpected end of parameter, expecting ";" in command line'


def test_main_level(tmp_path: Path) -> None:
    text = """
        worker_processes auto;
        pid /run/mf.pid;
        error_log logs/main.log info;
        error_log stderr;
        error_log syslog:server=127.0.0.1:5514,tag=mf debug_mail;
        env TZ; env A=1;
        worker_rlimit_nofile 4096;
        worker_shutdown_timeout 10s;
        timer_resolution 100ms;
        load_module modules/ngx_mail_module.so;
        http { server { listen 80; location / { return 200; } } types { text/html html; } }
        events { worker_connections 64; use epoll; }
    """
    main = load(tmp_path, text).main
    assert main.worker_processes == len(os.sched_getaffinity(0))
    assert main.pid == "/run/mf.pid"
    assert [(t.target, t.level) for t in main.error_log] == [
        (f"{tmp_path}/logs/main.log", 7), ("stderr", 4),
        ("syslog:server=127.0.0.1:5514,tag=mf", 8),
    ]  # fmt: skip
    assert main.env == ("TZ", "A=1")
    assert (main.worker_rlimit_nofile, main.worker_shutdown_timeout) == (4096, 10.0)
    assert main.worker_connections == 64


def test_http_block_is_skipped_but_includes_are_read(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "mime.types", "types { text/html html; }\n")
    config = load(tmp_path, EVENTS + "http { include mime.types; anything goes { here; } }\n")
    assert config.files[-1] == str(tmp_path / "conf" / "mime.types")
    e = error(tmp_path, EVENTS + "http { include nope.types; }\n")
    assert e.msg.startswith('open() "')


def test_errors_have_a_place(tmp_path: Path) -> None:
    path = str(tmp_path / "conf" / "mailfront.conf")
    e = error(tmp_path, MINIMAL.replace("listen", "foo;\n        listen"))
    assert (e.msg, e.file, e.line) == ('unknown directive "foo"', path, 6)
    assert str(e) == f'unknown directive "foo" in {path}:6' and not e.late
    e = error(tmp_path, "mail { auth_http 127.0.0.1; }\n")
    assert str(e) == 'no "events" section in configuration' and e.late and e.file is None
    e = error(tmp_path, EVENTS + "mail { imap_auth plain plain; timeout x; }")
    assert e.warnings == (f'duplicate value "plain" in {path}:2',)


def test_not_supported_yet(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "mailfront.conf"
    for line, message in [
        ("ssl_certificate_compression on;",
         '"ssl_certificate_compression on" is not supported yet'),
    ]:  # fmt: skip
        e = error(tmp_path, MINIMAL.replace("listen 127.0.0.1:143;",
                                            "listen 127.0.0.1:143;\n" + line))  # fmt: skip
        assert str(e) == f"{message} in {path}:7"
    s = server(load(tmp_path, MINIMAL.replace("listen", "starttls OFF; resolver off;\nlisten")))
    assert s.starttls is Starttls.OFF and s.resolver is None
    # read (relative to the configuration's folder), applied when the context is made
    s = server(load(tmp_path, MINIMAL.replace("listen", "ssl_session_ticket_key t.key;\nlisten")))
    assert s.ssl_session_ticket_key == (f"{tmp_path}/conf/t.key",)
    s = server(
        load(
            tmp_path,
            MINIMAL.replace(
                "listen 127.0.0.1:143;",
                "listen 127.0.0.1:143 proxy_protocol; proxy_protocol v2; "
                "set_real_ip_from 10.0.0.0/8;",
            ),
        )
    )
    assert s.proxy_protocol == 2 and s.listen[0].proxy_protocol and len(s.set_real_ip_from) == 1
    assert load(tmp_path, "user root root;\n" + MINIMAL).main.user == ("root", "root")
    assert load(tmp_path, "user nobody nogroup;\n" + MINIMAL).main.user == ("nobody", "nogroup")
    e = error(tmp_path, "user root mailfront-no-such-group;\n" + MINIMAL)
    assert str(e) == f'getgrnam("mailfront-no-such-group") failed in {path}:1'
    e = error(tmp_path, "user nobody nogroup;\nuser root;\n" + MINIMAL)
    assert str(e) == f'"user" directive is duplicate in {path}:2'


def test_tls_checks_once_enabled(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "mailfront.conf"
    base = EVENTS + (
        "mail {\n auth_http 127.0.0.1;\n starttls on;\n"
        " server {\n listen 127.0.0.1:1;\n protocol imap;\n %s\n }\n}\n"
    )
    e = error(tmp_path, base % "")
    assert str(e) == f'no "ssl_certificate" is defined for the "starttls" directive in {path}:4'
    e = error(tmp_path, base % "ssl_certificate a.pem;")
    assert e.msg == 'no "ssl_certificate_key" is defined for the "starttls" directive'
    e = error(tmp_path, base % "ssl_certificate a.pem; ssl_certificate b.pem; "
                               "ssl_certificate_key a.key;")  # fmt: skip
    assert e.msg == ('no "ssl_certificate_key" is defined for certificate "b.pem" and '
                     'the "starttls" directive')  # fmt: skip
    e = error(tmp_path, base % "listen 127.0.0.1:2 ssl;")
    assert (
        str(e) == f'no "ssl_certificate" is defined for the "listen ... ssl" directive in {path}:8'
    )
    e = error(tmp_path, base % "ssl_certificate a; ssl_certificate_key k; ssl_verify_client on;")
    assert str(e) == "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client"
    lines = (
        "ssl_certificate a.pem; ssl_certificate_key /k.pem; "
        "ssl_session_cache shared:MAIL:10m; ssl_protocols TLSv1.3;"
        "set_real_ip_from 10.1.0.0/16; set_real_ip_from unix:;"
    )
    s = server(load(tmp_path, base % lines))
    assert s.starttls is Starttls.ON
    assert s.ssl_certificate == (f"{tmp_path}/conf/a.pem",)
    assert s.ssl_certificate_key == ("/k.pem",)
    assert s.ssl_session_cache == "shared:MAIL:10m" and s.ssl_protocols == ("TLSv1.3",)
    assert s.set_real_ip_from == (Cidr("inet", 0x0A010000, 0xFFFF0000), Cidr("unix"))
    config = load(tmp_path, base % "ssl_certificate a; ssl_certificate_key k; "
                                   "set_real_ip_from 10.1.2.3/16;")  # fmt: skip
    assert config.warnings == (f"low address bits of 10.1.2.3/16 are meaningless in {path}:8",)


def test_resolver_once_enabled(tmp_path: Path) -> None:
    s = server(load(tmp_path, MINIMAL.replace(
        "listen", "resolver 127.0.0.53 [::1]:5353 valid=30s ipv6=off;\nlisten")))  # fmt: skip
    assert s.resolver is not None
    assert s.resolver.addresses == (("127.0.0.53", 53), ("::1", 5353))
    assert (s.resolver.valid, s.resolver.ipv4, s.resolver.ipv6) == (30.0, True, False)
    e = error(tmp_path, MINIMAL.replace("listen", "resolver valid=1s;\nlisten"))
    assert e.msg == "no name servers defined"


def test_every_row_is_reachable() -> None:
    names = {row.name for row in d.TABLE}
    assert {"listen", "auth_http", "auth_file", "ssl_conf_command", "worker_connections"} <= names
    for row in d.TABLE:
        for ctx in (Ctx.MAIN, Ctx.EVENTS, Ctx.MAIL, Ctx.SERVER):
            if row.ctx & ctx:
                assert d.lookup(row.name, ctx) is row
        assert row.block == (row.handler is None)


def test_a_full_nginx_conf_loads(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "modules-enabled" / "50-mod-mail.conf",
          "load_module modules/ngx_mail_module.so;\n")  # fmt: skip
    write(tmp_path / "conf" / "mime.types", "types {\n    text/html html htm;\n}\n")
    text = r"""
worker_processes auto;
pid /run/nginx.pid;
include modules-enabled/*.conf;
events {
    worker_connections 768;
    # multi_accept on;
}
http {
    sendfile on;
    include mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - "$request" ${status}';
    server {
        listen 80 default_server;
        location ~ ^/(a|b)\.php$ { return 200 "ok;}"; }
    }
}
mail {
    server_name mail.example.com;
    auth_http localhost/auth.php;
    server { listen 127.0.0.1:10110; protocol pop3; proxy on; }
    server { listen 127.0.0.1:10143; protocol imap; }
}
"""
    config = load(tmp_path, text, resolver=lambda name: [("inet", "127.0.0.1")])
    assert len(config.mail.servers) == 2  # type: ignore[union-attr]
    assert len(config.files) == 3


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "conf" / "folder").mkdir(parents=True)
    e = error(tmp_path, EVENTS + "include folder;\n")
    assert (str(e), e.level) == (f'pread() "{tmp_path}/conf/folder" failed (21: Is a directory)',
                                 "crit")  # fmt: skip


WORDS = [name for name in sorted(d.NAMES)] + ["foo", "allow", "server", "mail", "events"]
ARGS = [
    "on", "off", "OFF", "1s", "500ms", "1h30m", "x", "16k", "1g", "-1", "0", "5",
    "127.0.0.1:143", "[::1]:110", "*:25", "unix:/tmp/s", "10143-10145", "localhost",
    "ssl", "bind", "backlog=1", "so_keepalive=1:2:3", "ipv6only=on", "plain", "login",
    "imap", "pop3", "smtp", "stderr", "syslog:server=127.0.0.1", "info", "valid=1s",
    "127.0.0.1:9000/auth", "http://127.0.0.1", "shared:A:1m", "10.0.0.0/8", "unix:", "",
]  # fmt: skip


@st.composite
def configs(draw: st.DrawFn) -> str:
    out: list[str] = []
    depth = 0
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["stmt", "stmt", "stmt", "open", "close"]))
        if kind == "close" and depth:
            out.append("}")
            depth -= 1
            continue
        words = [draw(st.sampled_from(WORDS))]
        words += draw(st.lists(st.sampled_from(ARGS), max_size=4))
        text = " ".join(f'"{w}"' if not w or " " in w else w for w in words)
        if kind == "open":
            out.append(text + " {")
            depth += 1
        else:
            out.append(text + ";")
    return "\n".join(out + ["}"] * draw(st.integers(0, depth)))


@settings(max_examples=300, deadline=None)
@given(configs())
def test_random_configs_only_raise_conf_errors(text: str) -> None:
    loader = conf.Loader(
        "/x/mailfront.conf",
        "/x/",
        resolver=lambda name: [("inet", "127.0.0.1")],
        hostname="h",
        read_file=lambda path: text.encode() if path == "/x/mailfront.conf" else b"",
    )
    try:
        loader.load()
    except conf.ConfError as e:
        assert str(e)
