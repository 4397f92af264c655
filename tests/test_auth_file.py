"""auth.file: the users file, every scheme, CRAM-MD5/APOP, and the async backend."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import argon2
import pytest
from passlib import hash as passlib_hash  # type: ignore[import-untyped]

from mailfront.auth.base import AuthError, SessionInfo, Status
from mailfront.auth.file import (
    INVALID_LOGIN,
    FileAuth,
    UserEntry,
    check_password,
    load_users,
    main,
    make_hash,
    parse_users,
    verify,
)
from mailfront.conf.model import AuthMethod
from mailfront.protocol.base import AuthRequest

DOVEADM = shutil.which("doveadm")
needs_doveadm = pytest.mark.skipif(DOVEADM is None, reason="doveadm is not installed")


def doveadm_pw(scheme: str, password: str) -> str:
    assert DOVEADM is not None
    out = subprocess.run(
        [DOVEADM, "pw", "-s", scheme, "-p", password], capture_output=True, check=True, text=True
    )
    return out.stdout.strip()


def one(password_field: str, extra: str = "host=10.0.0.2") -> UserEntry:
    users = parse_users(f"bob:{password_field}::::::{extra}\n", "users")
    return users[b"bob"]


def plain(login: bytes, password: bytes) -> AuthRequest:
    return AuthRequest(login, password, AuthMethod.PLAIN)


# ------------------------------------------------------------------ parsing

FILE = """\
# mailfront users
bob:{PLAIN}secret:1000:1000:Bob:/home/bob:/bin/sh:host=10.0.0.2 port=10143 proxy

alice@example.com:{plain}pw::::::host=[2001:db8::1] imap_port=993 pop3_port=995 destuser=alice
  # an indented comment
carol:{CLEARTEXT}c::::::host=::1 port=2000 smtp_port=2525 pass=backend userdb_quota=1G\r
dave:::::::host=10.0.0.3
"""


def test_parse_file() -> None:
    users = parse_users(FILE, "/etc/users")
    assert set(users) == {b"bob", b"alice@example.com", b"carol", b"dave"}
    bob = users[b"bob"]
    assert (bob.scheme, bob.secret, bob.host, bob.line, bob.file) == (
        "PLAIN",
        b"secret",
        "10.0.0.2",
        2,
        "/etc/users",
    )
    assert [bob.backend_port(p) for p in ("imap", "pop3", "smtp")] == [10143, 10143, 10143]
    alice = users[b"alice@example.com"]
    assert alice.host == "2001:db8::1" and alice.destuser == b"alice"
    assert [alice.backend_port(p) for p in ("imap", "pop3", "smtp")] == [993, 995, 25]
    carol = users[b"carol"]
    assert carol.secret == b"c" and carol.passwd == b"backend" and carol.host == "::1"
    assert [carol.backend_port(p) for p in ("imap", "pop3", "smtp")] == [2000, 2000, 2525]
    dave = users[b"dave"]
    assert dave.secret == b"" and not dave.hashed
    assert [dave.backend_port(p) for p in ("imap", "pop3", "smtp")] == [143, 110, 25]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bob:{PLAIN}pw\n", 'no "host=" for user "bob" in F:1'),
        ("\n#\nbob:{PLAIN}pw::::::port=143\n", 'no "host=" for user "bob" in F:3'),
        ("bob:{PLAIN}pw::::::host=mail.example\n", 'invalid host "mail.example"'),
        ("bob:{PLAIN}pw::::::host=10.0.0.1 port=0\n", 'invalid port "0" in F:1'),
        ("bob:{PLAIN}pw::::::host=10.0.0.1 imap_port=65536\n", 'invalid port "65536" in F:1'),
        ("bob:{PLAIN}pw::::::host=10.0.0.1 port=x\n", 'invalid port "x" in F:1'),
        ("bob:{SHA1}x::::::host=10.0.0.1\n", 'unknown password scheme "{SHA1}" in F:1'),
        ("bob:{PLAIN::::::host=10.0.0.1\n", 'unknown password scheme "" in F:1'),
        ("bob:{SHA512-CRYPT}$6$abc::::::host=10.0.0.1\n", "invalid SHA512-CRYPT password"),
        ("bob:{ARGON2I}$argon2id$x::::::host=10.0.0.1\n", "invalid ARGON2I password"),
        ("bob:{BLF-CRYPT}$6$x$y::::::host=10.0.0.1\n", "invalid BLF-CRYPT password"),
        ("bob:$y$j9T$abc$def::::::host=10.0.0.1\n", "invalid CRYPT password"),
        (":{PLAIN}pw::::::host=10.0.0.1\n", "empty user name in F:1"),
        ("bob\n", 'no password for user "bob" in F:1'),
        (
            "bob:{PLAIN}a::::::host=10.0.0.1\n\nbob:{PLAIN}b::::::host=10.0.0.1\n",
            'duplicate user "bob" in F:3, first in line 1',
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_users(text, "F")
    assert message in str(e.value)
    assert "in F:" in str(e.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r'^open\(\) ".*/nope" failed \(2: No such file'):
        load_users(str(tmp_path / "nope"))


# ------------------------------------------------------------------ schemes


def library_hashes() -> list[tuple[str, str]]:
    return [
        ("SHA512-CRYPT", passlib_hash.sha512_crypt.using(rounds=5000).hash("secret")),
        ("SHA256-CRYPT", passlib_hash.sha256_crypt.using(rounds=5000).hash("secret")),
        ("BLF-CRYPT", passlib_hash.bcrypt.using(rounds=4).hash("secret")),
        ("BCRYPT", passlib_hash.bcrypt.using(rounds=4, ident="2y").hash("secret")),
        ("MD5-CRYPT", passlib_hash.md5_crypt.hash("secret")),
        ("ARGON2I", argon2.PasswordHasher(time_cost=1, type=argon2.Type.I).hash("secret")),
        ("ARGON2ID", argon2.PasswordHasher(time_cost=1).hash("secret")),
        ("CRYPT", passlib_hash.sha512_crypt.using(rounds=1000).hash("secret")),
        ("CRYPT", passlib_hash.sha256_crypt.using(rounds=1000).hash("secret")),
        ("CRYPT", passlib_hash.md5_crypt.hash("secret")),
        ("CRYPT", passlib_hash.bcrypt.using(rounds=4).hash("secret")),
        ("CRYPT", passlib_hash.des_crypt.hash("secret")),
        ("PLAIN", "secret"),
        ("plain", "secret"),
        ("CLEAR", "secret"),
    ]


@pytest.mark.parametrize(("scheme", "hashed"), library_hashes())
def test_scheme_library_hashes(scheme: str, hashed: str) -> None:
    entry = one("{%s}%s" % (scheme, hashed))  # noqa: UP031
    assert check_password(entry, b"secret")
    assert not check_password(entry, b"Secret")
    assert not check_password(entry, b"")
    assert verify(entry, plain(b"bob", b"secret")).status is Status.OK
    assert verify(entry, plain(b"bob", b"wrong")).errmsg == INVALID_LOGIN


def test_no_scheme_is_crypt() -> None:
    entry = one(passlib_hash.sha512_crypt.using(rounds=1000).hash("secret"))
    assert entry.scheme == "CRYPT"
    assert check_password(entry, b"secret")


@needs_doveadm
@pytest.mark.parametrize(
    "scheme",
    ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID", "CRYPT", "MD5-CRYPT",
     "PLAIN"],
)  # fmt: skip
def test_scheme_doveadm_hashes(scheme: str) -> None:
    hashed = doveadm_pw(scheme, "s3cr3t pässword")
    assert hashed.startswith("{")
    entry = one(hashed)
    assert check_password(entry, "s3cr3t pässword".encode())
    assert not check_password(entry, b"s3cr3t")


@needs_doveadm
@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID"])
def test_our_hashes_verified_by_doveadm(scheme: str) -> None:
    hashed = make_hash(scheme, b"top secret")
    assert DOVEADM is not None
    out = subprocess.run(
        [DOVEADM, "pw", "-t", hashed, "-p", "top secret"], capture_output=True, text=True
    )
    assert "(verified)" in out.stdout + out.stderr


def test_bcrypt_long_and_nul_passwords() -> None:
    long = b"x" * 100
    entry = one("{BLF-CRYPT}" + passlib_hash.bcrypt.using(rounds=4).hash(long[:72]))
    assert check_password(entry, long)  # bcrypt reads 72 bytes, as crypt(3) does
    assert check_password(entry, long[:72])
    assert not check_password(entry, b"a\x00b")  # refused quietly


def test_argon2_type_must_match() -> None:
    hashed = argon2.PasswordHasher(time_cost=1).hash("secret")
    with pytest.raises(ValueError, match="invalid ARGON2I"):
        one("{ARGON2I}" + hashed)


# --------------------------------------------------------- methods, fields


def test_unknown_user_locked_external_none() -> None:
    users = parse_users(FILE, "F")
    assert verify(users.get(b"nobody"), plain(b"nobody", b"x")).status is Status.ERROR
    assert verify(users[b"dave"], plain(b"dave", b"")).status is Status.ERROR  # locked
    ext = AuthRequest(b"bob", b"", AuthMethod.EXTERNAL)
    assert verify(users[b"bob"], ext).errmsg == INVALID_LOGIN
    none = AuthRequest(b"", b"", AuthMethod.NONE, smtp_from=b"MAIL FROM:<>")
    assert verify(users.get(b""), none, "smtp").status is Status.ERROR


def test_ok_result_fields() -> None:
    users = parse_users(FILE, "F")
    r = verify(users[b"bob"], plain(b"bob", b"secret"), "pop3")
    assert (r.status, r.server, r.port, r.user, r.passwd, r.wait) == (
        Status.OK,
        "10.0.0.2",
        10143,
        None,
        None,  # the client's password goes on to the backend
        None,
    )
    r = verify(users[b"alice@example.com"], plain(b"alice@example.com", b"pw"), "imap")
    assert (r.server, r.port, r.user) == ("2001:db8::1", 993, b"alice")
    r = verify(users[b"carol"], AuthRequest(b"carol", b"c", AuthMethod.LOGIN), "smtp")
    assert (r.port, r.passwd) == (2525, b"backend")


def test_refusal_wording_and_wait() -> None:
    entry = one("{PLAIN}pw")
    r = verify(entry, plain(b"bob", b"no"))
    assert (r.status, r.errmsg, r.wait) == (Status.ERROR, b"Invalid login or password", None)
    assert verify(entry, plain(b"bob", b"no"), fail_wait=3).wait == 3


def test_nologin() -> None:
    entry = one("{PLAIN}pw", "host=10.0.0.1 nologin reason=Moved")
    assert verify(entry, plain(b"bob", b"pw")).errmsg == b"Moved"
    assert verify(entry, plain(b"bob", b"bad")).errmsg == INVALID_LOGIN  # no hint before
    entry = one("{PLAIN}pw", "host=10.0.0.1 nologin=y")
    assert verify(entry, plain(b"bob", b"pw")).errmsg == b"Login disabled"
    entry = one("{PLAIN}pw", "host=10.0.0.1 nologin=no")
    assert verify(entry, plain(b"bob", b"pw")).status is Status.OK


# RFC 2195 section 2 and RFC 1939 section 7, with nginx's salt (CRLF included)
CRAM_SALT = b"<1896.697170952@postoffice.reston.mci.net>\r\n"
APOP_SALT = b"<1896.697170952@dbc.mtview.ca.us>\r\n"


def test_cram_md5_rfc_example() -> None:
    entry = parse_users("tim:{PLAIN}tanstaaftanstaaf::::::host=10.0.0.1", "F")[b"tim"]
    digest = b"b913a602c7eda7a495b4e6e7334d3890"
    assert digest == hmac.new(b"tanstaaftanstaaf", CRAM_SALT[:-2], hashlib.md5).hexdigest().encode()
    req = AuthRequest(b"tim", digest, AuthMethod.CRAM_MD5, salt=CRAM_SALT)
    r = verify(entry, req, "imap")
    assert (r.status, r.passwd) == (Status.OK, b"tanstaaftanstaaf")  # Auth-Pass for the backend
    req.passwd = digest.upper()
    assert verify(entry, req).status is Status.OK
    req.passwd = b"0" * 32
    assert verify(entry, req).status is Status.ERROR
    req = AuthRequest(b"tim", digest, AuthMethod.CRAM_MD5, salt=b"<other@x>\r\n")
    assert verify(entry, req).status is Status.ERROR


def test_apop_rfc_example() -> None:
    entry = parse_users("mrose:{PLAIN}tanstaaf::::::host=10.0.0.1 pass=real", "F")[b"mrose"]
    digest = b"c4c9334bac560ecc979e58001b3e22fb"
    assert digest == hashlib.md5(APOP_SALT[:-2] + b"tanstaaf").hexdigest().encode()
    req = AuthRequest(b"mrose", digest, AuthMethod.APOP, salt=APOP_SALT)
    r = verify(entry, req, "pop3")
    assert (r.status, r.port, r.passwd) == (Status.OK, 110, b"real")  # pass= wins


def test_digests_refused_for_hashed_entries() -> None:
    entry = one("{SHA512-CRYPT}" + passlib_hash.sha512_crypt.using(rounds=1000).hash("secret"))
    digest = hmac.new(b"secret", CRAM_SALT[:-2], hashlib.md5).hexdigest().encode()
    req = AuthRequest(b"bob", digest, AuthMethod.CRAM_MD5, salt=CRAM_SALT)
    assert verify(entry, req).errmsg == INVALID_LOGIN
    digest = hashlib.md5(APOP_SALT[:-2] + b"secret").hexdigest().encode()
    req = AuthRequest(b"bob", digest, AuthMethod.APOP, salt=APOP_SALT)
    assert verify(entry, req).errmsg == INVALID_LOGIN


# ---------------------------------------------------------- the backend


def write_users(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


SLOW_ARGON2 = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)


def test_backend_async_does_not_block_the_loop(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users",
        [
            "slow:{ARGON2ID}" + SLOW_ARGON2.hash("secret") + "::::::host=10.0.0.5 imap_port=1143",
            "fast:{PLAIN}pw::::::host=10.0.0.6",
        ],
    )
    backend = FileAuth(path)

    async def run() -> None:
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        info = SessionInfo("imap", "192.0.2.1")
        start = time.monotonic()
        results = await asyncio.gather(
            backend.authenticate(info, plain(b"slow", b"secret"), 1),
            backend.authenticate(info, plain(b"slow", b"bad"), 1),
            backend.authenticate(info, plain(b"fast", b"pw"), 1),
        )
        elapsed = time.monotonic() - start
        stop = True
        await t
        ok, bad, fast = results
        assert (ok.status, ok.server, ok.port) == (Status.OK, "10.0.0.5", 1143)
        assert bad.status is Status.ERROR
        assert (fast.status, fast.server, fast.port) == (Status.OK, "10.0.0.6", 143)
        # the loop kept running while the hashes were checked in threads
        assert elapsed > 0.02
        assert ticks >= 5

    try:
        asyncio.run(run())
    finally:
        backend.close()


def test_backend_cancel_and_close(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users",
        ["slow:{ARGON2ID}" + SLOW_ARGON2.hash("secret") + "::::::host=10.0.0.5"],
    )
    backend = FileAuth(path, workers=1)
    info = SessionInfo("pop3", "192.0.2.1")

    async def run() -> None:
        task = asyncio.create_task(backend.authenticate(info, plain(b"slow", b"secret"), 1))
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the backend still answers after a cancelled call
        r = await backend.authenticate(info, plain(b"slow", b"secret"), 2)
        assert (r.status, r.port) == (Status.OK, 110)
        backend.close()
        with pytest.raises(AuthError, match="closed"):
            await backend.authenticate(info, plain(b"slow", b"secret"), 3)

    asyncio.run(run())
    backend.close()  # twice is harmless


def test_backend_unknown_user_costs_like_a_known_one(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users",
        [
            "plainuser:{PLAIN}pw::::::host=10.0.0.1",
            "slow:{ARGON2ID}" + SLOW_ARGON2.hash("secret") + "::::::host=10.0.0.5",
        ],
    )
    backend = FileAuth(path, fail_wait=2)
    info = SessionInfo("imap", "192.0.2.1")

    async def timed(login: bytes) -> tuple[float, object]:
        start = time.monotonic()
        r = await backend.authenticate(info, plain(login, b"secret"), 1)
        return time.monotonic() - start, r

    async def run() -> None:
        known, r1 = await timed(b"slow")
        unknown, r2 = await timed(b"nobody")
        assert r1.status is Status.OK  # type: ignore[attr-defined]
        assert (r2.status, r2.errmsg, r2.wait) == (Status.ERROR, INVALID_LOGIN, 2)  # type: ignore[attr-defined]
        assert unknown > known * 0.2

    try:
        asyncio.run(run())
    finally:
        backend.close()


def test_backend_inline_paths(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", ["tim:{PLAIN}tanstaaftanstaaf::::::host=10.0.0.1"])
    backend = FileAuth(path)
    info = SessionInfo("imap", "192.0.2.1")
    digest = hmac.new(b"tanstaaftanstaaf", CRAM_SALT[:-2], hashlib.md5).hexdigest().encode()

    async def run() -> None:
        r = await backend.authenticate(
            info, AuthRequest(b"tim", digest, AuthMethod.CRAM_MD5, salt=CRAM_SALT), 1
        )
        assert r.status is Status.OK and r.passwd == b"tanstaaftanstaaf"
        r = await backend.authenticate(info, plain(b"nobody", b"x"), 1)  # no hashed entry
        assert r.status is Status.ERROR

    try:
        asyncio.run(run())
    finally:
        backend.close()


def test_backend_reload(tmp_path: Path) -> None:
    users = tmp_path / "users"
    path = write_users(users, ["bob:{PLAIN}one::::::host=10.0.0.1"])
    backend = FileAuth(path)
    try:
        assert backend.users[b"bob"].secret == b"one"
        write_users(users, ["bob:{PLAIN}two::::::host=10.0.0.1", "eve:{PLAIN}x::::::host=10.0.0.2"])
        backend.reload()
        assert backend.users[b"bob"].secret == b"two" and b"eve" in backend.users
        write_users(users, ["bob:{PLAIN}three"])
        with pytest.raises(ValueError, match=r'no "host=" for user "bob" in .*/users:1'):
            backend.reload()
        assert backend.users[b"bob"].secret == b"two"  # the old users stay
    finally:
        backend.close()


def test_backend_bad_file(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", ["ok:{PLAIN}x::::::host=10.0.0.1", "bad:{MD4}x"])
    with pytest.raises(ValueError, match=r'unknown password scheme "\{MD4\}" in .*/users:2'):
        FileAuth(path)


# ------------------------------------------------------------------- CLI


@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "sha256-crypt", "BLF-CRYPT", "ARGON2I",
                                    "ARGON2ID", "PLAIN"])  # fmt: skip
def test_cli_hash(
    scheme: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("pässword\n".encode())))
    assert main(["hash", "--scheme", scheme]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("{" + scheme.upper() + "}")
    entry = one(out)
    assert check_password(entry, "pässword".encode())
    assert not check_password(entry, b"password")


def test_cli_default_scheme_is_sha512_crypt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"secret\r\n")))
    assert main(["hash"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("{SHA512-CRYPT}$6$")
    assert check_password(one(out), b"secret")


def test_cli_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n")))
    assert main(["hash"]) == 1
    assert "empty password" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a:b\n")))
    assert main(["hash", "-s", "PLAIN"]) == 1
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x\n")))
    assert main(["hash", "-s", "MD4"]) == 1
    assert 'unknown scheme "MD4"' in capsys.readouterr().err


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "users"
    path.write_text(FILE)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: 4 users\n"
    path.write_text("x:{PLAIN}y::::::host=nohost\n")
    assert main(["check", str(path)]) == 1
    assert f"in {path}:1" in capsys.readouterr().err


def test_cli_as_module(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-W", "error", "-m", "mailfront.auth.file", "hash", "-s", "ARGON2ID"],
        input=b"secret\n",
        capture_output=True,
        check=True,
    )
    assert out.stdout.startswith(b"{ARGON2ID}$argon2id$")
    assert out.stderr == b""
