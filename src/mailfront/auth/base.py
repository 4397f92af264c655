"""The one small interface every authentication backend implements.

A backend answers the question auth_http answers in nginx: is this login
good, and which backend server holds the mailbox.  The session awaits
``backend.authenticate(info, req, attempt)`` (the one coroutine of a login)
and gets an ``AuthResult``; a backend that fails internally raises
``AuthError("log message")`` and the session logs the message at error level
and sends the protocol's internal error.  The session cancels the call when
the client goes away.

Backends: ``auth.http`` (nginx's auth_http), ``auth.file`` (mailfront's
``auth_file``).  SQL and PAM come later behind the same interface.
"""

from __future__ import annotations

import enum
from typing import Protocol as TypingProtocol

from mailfront.protocol.base import AuthRequest


class Status(enum.IntEnum):
    OK = 0
    WAIT = 1
    ERROR = 2


class AuthResult:
    """The answer, in auth_http's terms (``Auth-*`` response headers)."""

    __slots__ = ("errmsg", "error_code", "passwd", "port", "server", "status", "user", "wait")

    def __init__(
        self,
        status: Status,
        errmsg: bytes = b"",
        server: str = "",
        port: int = 0,
        user: bytes | None = None,
        passwd: bytes | None = None,
        wait: int | None = None,
        error_code: bytes | None = None,
    ) -> None:
        self.status = status
        self.errmsg = errmsg  # Auth-Status text when status is ERROR
        self.server = server  # Auth-Server: an IP literal
        self.port = port  # Auth-Port
        self.user = user  # Auth-User: replaces the login for the backend
        self.passwd = passwd  # Auth-Pass: replaces the password for the backend
        self.wait = wait  # Auth-Wait seconds, None when absent or invalid
        self.error_code = error_code  # Auth-Error-Code (SMTP)

    def __repr__(self) -> str:
        return f"AuthResult({self.status.name}, server={self.server!r}, port={self.port})"


class SessionInfo:
    """What a backend may want to know about the client (auth_http headers)."""

    __slots__ = (
        "client_addr",
        "client_host",
        "protocol",
        "proxy_dst_addr",
        "proxy_dst_port",
        "proxy_src_addr",
        "proxy_src_port",
        "ssl",
    )

    def __init__(self, protocol: str, client_addr: str) -> None:
        self.protocol = protocol  # "imap", "pop3", "smtp"
        self.client_addr = client_addr  # Client-IP text (after realip)
        self.client_host: bytes | None = None  # Client-Host (SMTP only)
        self.proxy_src_addr: str | None = None  # PROXY header addresses, if any
        self.proxy_src_port: int = 0
        self.proxy_dst_addr: str | None = None
        self.proxy_dst_port: int = 0
        self.ssl: dict[str, bytes] | None = None  # Auth-SSL-* values (TLS issue)


class AuthError(Exception):
    """The backend failed (not: the login was refused); str() is the log line."""


class AuthBackend(TypingProtocol):
    async def authenticate(
        self, info: SessionInfo, req: AuthRequest, attempt: int
    ) -> AuthResult: ...

    def close(self) -> None: ...
