"""The command line, called in-process: nginx's flags, messages and exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mailfront
from mailfront import cli
from mailfront.cli import main
from support.proxy import free_port

GOOD = """\
events {}
mail {
    auth_http 127.0.0.1:9000/auth;
    server {
        listen 127.0.0.1:10143;
        protocol imap;
        imap_auth plain plain;
    }
}
"""


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "conf" / "mailfront.conf").write_text(GOOD)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_test_ok_with_default_conf_under_prefix(
    prefix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "-t", "-p", str(prefix))
    conf = f"{prefix}/conf/mailfront.conf"
    assert rc == 0 and out == ""
    assert err == (
        f'mailfront: [warn] duplicate value "plain" in {conf}:7\n'
        f"mailfront: the configuration file {conf} syntax is ok\n"
        f"mailfront: configuration file {conf} test is successful\n"
    )


def test_quiet_keeps_warnings(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(capsys, "-tq", f"-p{prefix}")
    assert rc == 0 and err == (
        f'mailfront: [warn] duplicate value "plain" in {prefix}/conf/mailfront.conf:7\n'
    )


def test_test_failed(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = prefix / "conf" / "bad.conf"
    bad.write_text(GOOD.replace("protocol imap;", "protocol imap; foo;"))
    rc, _, err = run(capsys, "-q", "-t", "-c", "conf/bad.conf", "-p", str(prefix))
    assert rc == 1
    assert err.splitlines()[-2:] == [
        f'mailfront: [emerg] unknown directive "foo" in {bad}:6',
        f"mailfront: configuration file {bad} test failed",
    ]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "-t", "-p", str(tmp_path))
    conf = f"{tmp_path}/conf/mailfront.conf"
    assert rc == 1 and err == (
        f'mailfront: [emerg] open() "{conf}" failed (2: No such file or directory)\n'
        f"mailfront: configuration file {conf} test failed\n"
    )


def test_late_error_after_syntax_ok(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = prefix / "conf" / "mailfront.conf"
    conf.write_text(GOOD.replace("events {}\n", ""))
    rc, _, err = run(capsys, "-t", "-p", str(prefix))
    assert rc == 1
    assert err.splitlines()[-3:] == [
        f"mailfront: the configuration file {conf} syntax is ok",
        'mailfront: [emerg] no "events" section in configuration',
        f"mailfront: configuration file {conf} test failed",
    ]


def test_global_directives(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "-t", "-p", str(prefix), "-g", "daemon off; daemon on;")
    assert rc == 1
    assert 'mailfront: [emerg] "daemon" directive is duplicate in command line\n' in err


def test_dump(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (prefix / "conf" / "inc.conf").write_text("timeout 5s;")
    conf = prefix / "conf" / "mailfront.conf"
    conf.write_text(GOOD.replace("    server {", "    include inc.conf;\n    server {"))
    rc, out, _err = run(capsys, "-T", "-q", "-p", str(prefix))
    assert rc == 0
    assert out == (
        f"# configuration file {conf}:\n{conf.read_text()}\n"
        f"# configuration file {prefix}/conf/inc.conf:\ntimeout 5s;\n"
    )


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    version = f"mailfront version: mailfront/{mailfront.__version__}\n"
    rc, out, err = run(capsys, "-v")
    assert (rc, out, err) == (0, "", version)
    rc, out, err = run(capsys, "-?")
    assert rc == 0 and err.startswith(version + "Usage: mailfront [-?hvVtTq]")
    assert "-p prefix     : set prefix path (default: /usr/local/mailfront/)" in err
    assert "-c filename   : set configuration file (default: conf/mailfront.conf)" in err
    rc, out, err = run(capsys, "-V")
    assert rc == 0 and "reads nginx's mail{} configuration" in err
    assert f"nginx/{mailfront.NGINX_COMPAT}" in err


def test_version_then_test(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "-vt", "-p", str(prefix))
    assert rc == 0 and err.startswith("mailfront version:") and "test is successful" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x"], 'invalid option: "x"'),
        (["-x"], 'invalid option: "x"'),
        (["-tz"], 'invalid option: "z"'),
        (["-p"], 'option "-p" requires directory name'),
        (["-c"], 'option "-c" requires file name'),
        (["-e"], 'option "-e" requires file name'),
        (["-g"], 'option "-g" requires parameter'),
        (["-s"], 'option "-s" requires parameter'),
        (["-s", "restart"], 'invalid option: "-s restart"'),
    ],
)
def test_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, *argv)
    assert (rc, out, err) == (1, "", f"mailfront: {message}\n")


def test_signal_errors(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (prefix / "conf" / "mailfront.conf").write_text(GOOD.replace(" plain plain;", " plain;"))
    pid = f"{prefix}/logs/mailfront.pid"
    rc, _, err = run(capsys, "-s", "reload", "-p", str(prefix))
    assert rc == 1
    assert err == f'mailfront: [error] open() "{pid}" failed (2: No such file or directory)\n'
    Path(pid).write_text("garbage\n")
    rc, _, err = run(capsys, "-s", "stop", "-p", str(prefix))
    assert (rc, err) == (1, f'mailfront: [error] invalid PID number "garbage" in "{pid}"\n')
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(pid).write_text(f"{dead.pid}\n")
    rc, _, err = run(capsys, "-s", "quit", "-p", str(prefix))
    assert (rc, err) == (1, f"mailfront: [alert] kill({dead.pid}, 3) failed (3: No such process)\n")


@pytest.mark.parametrize(
    ("name", "signo"),
    [
        ("stop", signal.SIGTERM),
        ("quit", signal.SIGQUIT),
        ("reopen", signal.SIGUSR1),
        ("reload", signal.SIGHUP),
    ],
)
def test_signals_reach_the_master(
    name: str, signo: int, prefix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (prefix / "conf" / "mailfront.conf").write_text(GOOD.replace(" plain plain;", " plain;"))
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time\n"
         f"signal.signal({int(signo)}, lambda *a: sys.exit(42))\n"
         "print('ready', flush=True)\n"
         "time.sleep(30)\n"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        (prefix / "logs" / "mailfront.pid").write_text(f"{child.pid}\n")
        rc, _, err = run(capsys, "-s", name, "-p", str(prefix))
        assert (rc, err) == (0, "")
        assert child.wait(timeout=10) == 42
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_run_serves_with_e_and_g(prefix: Path) -> None:
    """Without -t the process serves: -g's "daemon off" keeps it in the foreground,
    and -e (relative to -p) is its log while the config names none."""
    import socket
    import time

    port = free_port()
    (prefix / "conf" / "mailfront.conf").write_text(GOOD.replace("10143", str(port)))
    cmd = [sys.executable, "-m", "mailfront", "-p", str(prefix), "-e", "logs/boot.log",
           "-g", "daemon off; master_process off;"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and first.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        assert first.poll() is None  # foreground, serving
        assert (prefix / "logs" / "boot.log").exists()
        # a second one cannot bind: the error goes to the -e log, exit code 1
        second = subprocess.run(cmd, capture_output=True, timeout=20)
        assert second.returncode == 1
        log = (prefix / "logs" / "boot.log").read_text()
        assert "[emerg]" in log and f"bind() to 127.0.0.1:{port} failed (98: " in log
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0


def test_test_does_not_import_the_server(prefix: Path) -> None:
    code = (
        "import sys\n"
        "from mailfront.cli import main\n"
        f"rc = main(['-tq', '-p', {str(prefix)!r}])\n"
        "assert not [m for m in sys.modules if m.startswith('mailfront.server')], sys.modules\n"
        "assert 'asyncio' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_system_resolver() -> None:
    assert ("inet", "127.0.0.1") in cli.system_resolver("localhost")
    with pytest.raises(mailfront.conf.ResolveError):
        cli.system_resolver("bad name with spaces.invalid")


def test_example_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(mailfront.__file__).parent / "examples" / "mailfront.conf"
    rc, _, err = run(capsys, "-t", "-p", str(tmp_path), "-c", str(example))
    assert rc == 0, err
    config = mailfront.conf.load(str(example), str(tmp_path))
    assert config.mail is not None
    (srv,) = config.mail.servers
    assert srv.listen[0].addr_text == "127.0.0.1:10143" and srv.auth_file is not None
    assert os.path.dirname(srv.auth_file) == str(example.parent)


NGINX = "/usr/sbin/nginx"
MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
NO_NGINX = not (os.path.exists(NGINX) and os.path.exists(MAIL_MODULE))


@pytest.mark.skipif(NO_NGINX, reason="nginx with libnginx-mod-mail is not installed")
@pytest.mark.parametrize(
    ("config", "argv"),
    [
        (GOOD, ["-t"]),
        (GOOD, ["-tq"]),
        (GOOD.replace("events {}\n", ""), ["-t"]),
        ("daemon on;\n" + GOOD, ["-t", "-g", "daemon off;"]),
        (GOOD, ["-t", "-g", "daemon off"]),
        (GOOD, ["-t", "-g", "events { }"]),
        (GOOD, ["-t", "-g", "}"]),
        (GOOD, ["-t", "-g", "worker_processes 2; pid logs/x.pid;"]),
    ],
)
def test_same_stderr_as_nginx(
    config: str, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "nginx.conf"
    text = config.replace("127.0.0.1:10143", f"127.0.0.1:{free_port()}")
    path.write_text(f"load_module {MAIL_MODULE};\n" + text)
    common = [*argv, "-c", str(path), "-p", f"{tmp_path}/"]
    ours = main(common)
    _, err = capsys.readouterr()
    theirs = subprocess.run(
        [NGINX, *common, "-e", f"{tmp_path}/logs/early.log"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert ours == theirs.returncode
    assert err.replace("mailfront: ", "nginx: ") == theirs.stderr
