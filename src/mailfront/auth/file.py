"""``auth_file``: logins checked against a users file (a mailfront extension).

The file is in Dovecot's passwd-file format, one user a line::

    user:{SCHEME}secret:uid:gid:gecos:home:shell:extra_fields

Only the user, the password and the extra fields are read; uid .. shell may
be empty (``bob:{PLAIN}pw::::::host=10.0.0.2``).  Blank lines and lines
starting with ``#`` are ignored.  The extra fields are space-separated
``key=value`` items (they may contain ``:``, e.g. an IPv6 host); the ones
read are Dovecot's proxy fields plus three mailfront additions:

``host=IP``            the backend (an IPv4 or IPv6 literal, like nginx's
                       Auth-Server); required
``port=N``             the backend port for every protocol
``imap_port=N`` ``pop3_port=N`` ``smtp_port=N``
                       (mailfront) the port for one protocol; it wins over
                       ``port``.  Without either: 143, 110, 25
``destuser=NAME``      the login used on the backend (Auth-User)
``pass=SECRET``        the password used on the backend (Auth-Pass)
``nologin``            refuse the login, once the password is right, with
``reason=TEXT``        as the error text (default "Login disabled")

Other fields (``proxy``, ``userdb_*`` ...) are accepted and ignored, so a
Dovecot passwd-file can be shared.  A user without ``host=`` is an error when
the file is loaded, reported with ``FILE:LINE`` like every other error.

Schemes (case-insensitive): ``PLAIN`` (also ``CLEAR``, ``CLEARTEXT``),
``SHA512-CRYPT``, ``SHA256-CRYPT``, ``BLF-CRYPT`` (bcrypt; ``BCRYPT`` is
accepted too), ``ARGON2I``, ``ARGON2ID``, ``MD5-CRYPT`` and ``CRYPT`` (a
crypt(3) string: ``$1$``, ``$2?$``, ``$5$``, ``$6$`` or 13-character DES).
A password without ``{SCHEME}`` is ``CRYPT``, as in Dovecot.  An empty
password locks the user.  Hashes are checked with libpass (``passlib``) and
argon2-cffi, in a thread pool so that the event loop never waits on them.

CRAM-MD5 and APOP work only for ``{PLAIN}`` users (the digest needs the
clear password); the plain password is then returned as Auth-Pass, for the
backend login.  EXTERNAL and SMTP's ``none`` are refused.  A refusal is
``Auth-Status: Invalid login or password`` with no Auth-Wait (nginx then
closes the connection) unless ``fail_wait`` is given.  An unknown user costs
as much time as a known one (the first hashed entry is checked instead), so
timing does not tell which users exist.

The file is read when the backend is made and by ``reload()``; it is not
watched.  ``python -m mailfront.auth.file hash`` makes entries (like
``doveadm pw``), ``python -m mailfront.auth.file check FILE`` checks a file.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import getpass
import hashlib
import hmac
import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any

import argon2
from passlib import hash as passlib_hash  # type: ignore[import-untyped]  # libpass has no stubs

from mailfront.auth.base import AuthError, AuthResult, SessionInfo, Status
from mailfront.conf.model import AuthMethod
from mailfront.protocol.base import AuthRequest

INVALID_LOGIN = b"Invalid login or password"
LOGIN_DISABLED = b"Login disabled"

DEFAULT_PORTS = {"imap": 143, "pop3": 110, "smtp": 25}

_SCHEME_ALIASES = {
    "PLAIN": "PLAIN",
    "CLEAR": "PLAIN",
    "CLEARTEXT": "PLAIN",
    "SHA512-CRYPT": "SHA512-CRYPT",
    "SHA256-CRYPT": "SHA256-CRYPT",
    "BLF-CRYPT": "BLF-CRYPT",
    "BCRYPT": "BLF-CRYPT",
    "ARGON2I": "ARGON2I",
    "ARGON2ID": "ARGON2ID",
    "MD5-CRYPT": "MD5-CRYPT",
    "CRYPT": "CRYPT",
}

# the schemes "hash" can make, as doveadm pw names them
HASH_SCHEMES = ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID", "PLAIN")

_BCRYPT_MAX = 72  # bcrypt reads 72 bytes of password; bcrypt 5 refuses more
_PLAIN_METHODS = (AuthMethod.PLAIN, AuthMethod.LOGIN, AuthMethod.LOGIN_USERNAME)

_argon2 = argon2.PasswordHasher()


@dataclass(frozen=True, slots=True)
class UserEntry:
    """One line of the users file."""

    user: bytes
    scheme: str  # canonical: PLAIN, SHA512-CRYPT, BLF-CRYPT, ARGON2ID, CRYPT ...
    secret: bytes  # the password for PLAIN, the hash text otherwise; b"" = locked
    host: str  # canonical IP text
    port: int = 0
    imap_port: int = 0
    pop3_port: int = 0
    smtp_port: int = 0
    destuser: bytes | None = None
    passwd: bytes | None = None  # pass=
    nologin: bool = False
    reason: bytes = b""
    file: str = ""
    line: int = 0

    @property
    def hashed(self) -> bool:
        return self.scheme != "PLAIN" and bool(self.secret)

    def backend_port(self, protocol: str) -> int:
        specific = {"imap": self.imap_port, "pop3": self.pop3_port, "smtp": self.smtp_port}
        return specific.get(protocol) or self.port or DEFAULT_PORTS.get(protocol, 0)


# ------------------------------------------------------------------ parsing


def _crypt_handler(hashed: str) -> Any:
    """The libpass handler for a crypt(3) string, by its prefix."""
    if hashed.startswith("$6$"):
        return passlib_hash.sha512_crypt
    if hashed.startswith("$5$"):
        return passlib_hash.sha256_crypt
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        return passlib_hash.bcrypt
    if hashed.startswith("$1$"):
        return passlib_hash.md5_crypt
    if len(hashed) == 13 and not hashed.startswith("$"):
        return passlib_hash.des_crypt
    return None


_HANDLERS: dict[str, Any] = {
    "SHA512-CRYPT": passlib_hash.sha512_crypt,
    "SHA256-CRYPT": passlib_hash.sha256_crypt,
    "BLF-CRYPT": passlib_hash.bcrypt,
    "MD5-CRYPT": passlib_hash.md5_crypt,
}


def _valid_hash(scheme: str, hashed: str) -> bool:
    if scheme in ("ARGON2I", "ARGON2ID"):
        prefix = "$argon2id$" if scheme == "ARGON2ID" else "$argon2i$"
        if not hashed.startswith(prefix):
            return False
        try:
            argon2.extract_parameters(hashed)
        except (argon2.exceptions.InvalidHashError, ValueError):
            return False
        return True
    handler = _crypt_handler(hashed) if scheme == "CRYPT" else _HANDLERS[scheme]
    if handler is None or not handler.identify(hashed):
        return False
    try:
        parsed = handler.from_string(hashed)
    except (ValueError, TypeError):
        return False
    return bool(getattr(parsed, "checksum", None))


def _port(value: str, where: str) -> int:
    if not value.isdigit() or not value.isascii() or not 1 <= int(value) <= 65535:
        raise ValueError(f'invalid port "{value}" in {where}')
    return int(value)


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def parse_line(line: str, path: str, lineno: int) -> UserEntry | None:
    """One line of the file; None for a blank line or a comment."""
    where = f"{path}:{lineno}"
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = line.split(":", 7)
    user = fields[0]
    if not user:
        raise ValueError(f"empty user name in {where}")
    if len(fields) < 2:
        raise ValueError(f'no password for user "{user}" in {where}')
    password = fields[1]
    if password.startswith("{"):
        end = password.find("}")
        name = password[1:end].upper() if end > 0 else ""
        if name not in _SCHEME_ALIASES:
            raise ValueError(f'unknown password scheme "{password[: end + 1]}" in {where}')
        scheme = _SCHEME_ALIASES[name]
        secret = password[end + 1 :]
    else:
        scheme, secret = "CRYPT", password
    if secret and scheme != "PLAIN" and not _valid_hash(scheme, secret):
        raise ValueError(f'invalid {scheme} password for user "{user}" in {where}')

    host = ""
    ports = {"port": 0, "imap_port": 0, "pop3_port": 0, "smtp_port": 0}
    destuser: bytes | None = None
    passwd: bytes | None = None
    nologin = False
    reason = b""
    extra = fields[7] if len(fields) == 8 else ""
    for item in extra.split():
        key, eq, value = item.partition("=")
        if key == "host":
            text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            try:
                host = str(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(
                    f'invalid host "{value}" (an IP address is needed) in {where}'
                ) from None
        elif key in ports:
            ports[key] = _port(value, where)
        elif key == "destuser":
            destuser = _enc(value)
        elif key == "pass":
            passwd = _enc(value)
        elif key == "nologin":
            nologin = value.lower() not in ("n", "no", "0", "false") if eq else True
        elif key == "reason":
            reason = _enc(value)
    if not host:
        raise ValueError(f'no "host=" for user "{user}" in {where}')
    return UserEntry(
        user=_enc(user),
        scheme=scheme,
        secret=_enc(secret),
        host=host,
        port=ports["port"],
        imap_port=ports["imap_port"],
        pop3_port=ports["pop3_port"],
        smtp_port=ports["smtp_port"],
        destuser=destuser,
        passwd=passwd,
        nologin=nologin,
        reason=reason,
        file=path,
        line=lineno,
    )


def parse_users(text: str, path: str) -> dict[bytes, UserEntry]:
    """The whole file; ``ValueError("... in FILE:LINE")`` on the first error."""
    users: dict[bytes, UserEntry] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        entry = parse_line(line.removesuffix("\r"), path, lineno)
        if entry is None:
            continue
        first = users.get(entry.user)
        if first is not None:
            raise ValueError(
                f'duplicate user "{entry.user.decode("utf-8", "surrogateescape")}" '
                f"in {path}:{lineno}, first in line {first.line}"
            )
        users[entry.user] = entry
    return users


def load_users(path: str) -> dict[bytes, UserEntry]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    return parse_users(data.decode("utf-8", "surrogateescape"), path)


# ------------------------------------------------------------- checking


def check_password(entry: UserEntry, password: bytes) -> bool:
    """Whether ``password`` matches the entry; slow for hashed schemes."""
    if not entry.secret:
        return False
    if entry.scheme == "PLAIN":
        return hmac.compare_digest(entry.secret, password)
    hashed = entry.secret.decode("ascii", "replace")
    try:
        if entry.scheme in ("ARGON2I", "ARGON2ID"):
            return bool(_argon2.verify(hashed, password))
        handler = _crypt_handler(hashed) if entry.scheme == "CRYPT" else _HANDLERS[entry.scheme]
        if handler is None:
            return False
        if handler is passlib_hash.bcrypt:
            password = password[:_BCRYPT_MAX]
        return bool(handler.verify(password, hashed))
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False
    except (ValueError, TypeError):  # e.g. a NUL byte bcrypt refuses
        return False


def _salt_text(salt: bytes) -> bytes:
    """The challenge as the client saw it: nginx's salt without its CRLF."""
    return salt.removesuffix(b"\r\n")


def check_digest(entry: UserEntry, req: AuthRequest) -> bool:
    """CRAM-MD5 (RFC 2195) or APOP (RFC 1939) against a ``{PLAIN}`` entry."""
    if entry.scheme != "PLAIN" or not entry.secret or not req.salt:
        return False
    challenge = _salt_text(req.salt)
    if req.method == AuthMethod.CRAM_MD5:
        expected = hmac.new(entry.secret, challenge, hashlib.md5).hexdigest()
    else:
        expected = hashlib.md5(challenge + entry.secret).hexdigest()
    return hmac.compare_digest(expected.encode(), req.passwd.lower())


def refuse(fail_wait: int = 0, errmsg: bytes = INVALID_LOGIN) -> AuthResult:
    return AuthResult(Status.ERROR, errmsg=errmsg, wait=fail_wait or None)


def verify(
    entry: UserEntry | None, req: AuthRequest, protocol: str = "imap", fail_wait: int = 0
) -> AuthResult:
    """The answer for one login, as an auth_http server would give it.

    Pure apart from its CPU time: hashed entries take long (``FileAuth`` runs
    them in a thread).  Never raises.
    """
    if entry is None or req.method in (AuthMethod.EXTERNAL, AuthMethod.NONE):
        return refuse(fail_wait)
    if req.method in (AuthMethod.APOP, AuthMethod.CRAM_MD5):
        if not check_digest(entry, req):
            return refuse(fail_wait)
        passwd: bytes | None = entry.passwd if entry.passwd is not None else entry.secret
    elif req.method in _PLAIN_METHODS:
        if not check_password(entry, req.passwd):
            return refuse(fail_wait)
        passwd = entry.passwd  # None: the client's own password goes on
    else:
        return refuse(fail_wait)
    if entry.nologin:
        return refuse(fail_wait, entry.reason or LOGIN_DISABLED)
    return AuthResult(
        Status.OK,
        server=entry.host,
        port=entry.backend_port(protocol),
        user=entry.destuser,
        passwd=passwd,
    )


def _needs_thread(entry: UserEntry | None, req: AuthRequest) -> bool:
    return req.method in _PLAIN_METHODS and (entry is None or entry.hashed)


def _burn(entry: UserEntry, password: bytes, fail_wait: int) -> AuthResult:
    """An unknown user: spend the time a known one costs, then refuse."""
    check_password(entry, password)
    return refuse(fail_wait)


class FileAuth:
    """The ``auth_file`` backend (``auth.base.AuthBackend``)."""

    def __init__(self, path: str, *, fail_wait: int = 0, workers: int | None = None) -> None:
        self.path = path
        self.fail_wait = fail_wait
        self._users: dict[bytes, UserEntry] = {}
        self._dummy: UserEntry | None = None
        self.reload()
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = (
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="auth_file")
        )

    def reload(self) -> None:
        """Read the file again; on an error the old users stay and ValueError is raised."""
        users = load_users(self.path)
        self._users = users
        self._dummy = next((e for e in users.values() if e.hashed), None)

    @property
    def users(self) -> dict[bytes, UserEntry]:
        return self._users

    async def authenticate(self, info: SessionInfo, req: AuthRequest, attempt: int) -> AuthResult:
        pool = self._pool
        if pool is None:
            raise AuthError("auth_file backend is closed")
        entry = self._users.get(req.login)
        if not _needs_thread(entry, req):
            return verify(entry, req, info.protocol, self.fail_wait)
        loop = asyncio.get_running_loop()
        if entry is None:
            if self._dummy is None:
                return refuse(self.fail_wait)
            return await loop.run_in_executor(pool, _burn, self._dummy, req.passwd, self.fail_wait)
        return await loop.run_in_executor(pool, verify, entry, req, info.protocol, self.fail_wait)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------- CLI


def make_hash(scheme: str, password: bytes) -> str:
    """``{SCHEME}...`` for a new entry, as ``doveadm pw -s SCHEME`` makes it."""
    scheme = _SCHEME_ALIASES.get(scheme.upper(), scheme.upper())
    if scheme == "PLAIN":
        if b":" in password or b"\n" in password or b"\r" in password:
            raise ValueError("a PLAIN password cannot hold ':' or a line break in this file")
        return "{PLAIN}" + password.decode("utf-8", "surrogateescape")
    if scheme == "SHA512-CRYPT":
        hashed = passlib_hash.sha512_crypt.using(rounds=5000).hash(password)
    elif scheme == "SHA256-CRYPT":
        hashed = passlib_hash.sha256_crypt.using(rounds=5000).hash(password)
    elif scheme == "BLF-CRYPT":
        hashed = passlib_hash.bcrypt.using(ident="2y", rounds=10).hash(password[:_BCRYPT_MAX])
    elif scheme == "ARGON2ID":
        hashed = _argon2.hash(password)
    elif scheme == "ARGON2I":
        hashed = argon2.PasswordHasher(type=argon2.Type.I).hash(password)
    else:
        raise ValueError(f'unknown scheme "{scheme}" (one of {", ".join(HASH_SCHEMES)})')
    return "{" + scheme + "}" + str(hashed)


def _read_password() -> bytes:
    if sys.stdin.isatty():
        first = getpass.getpass("Enter new password: ")
        if getpass.getpass("Retype new password: ") != first:
            raise ValueError("passwords don't match")
        return first.encode("utf-8", "surrogateescape")
    line = sys.stdin.buffer.readline()
    return line.removesuffix(b"\n").removesuffix(b"\r")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailfront.auth.file", description="mailfront auth_file tools"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    hash_cmd = sub.add_parser("hash", help="hash a password read from stdin")
    hash_cmd.add_argument("-s", "--scheme", default="SHA512-CRYPT", help="default SHA512-CRYPT")
    check_cmd = sub.add_parser("check", help="check a users file")
    check_cmd.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if args.command == "hash":
            password = _read_password()
            if not password:
                raise ValueError("empty password")
            print(make_hash(args.scheme, password))
        else:
            users = load_users(args.file)
            print(f"{args.file}: {len(users)} users")
    except ValueError as e:
        print(f"mailfront: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
