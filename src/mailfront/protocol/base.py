"""What every protocol machine shares: the contract with the session driver.

A front-end machine (``imap.ImapMachine``, ``pop3.Pop3Machine``,
``smtp.SmtpMachine``) is sans-IO.  The session driver

1. sends ``machine.greeting()``;
2. calls ``nxt = machine.receive(data)`` for each chunk read from the client;
   the machine parses and handles as many buffered commands as it can, and
   collects its replies in ``machine.out`` (a list of ``bytes``) and its log
   lines in ``machine.logs`` (a list of ``(level, message)``);
3. writes ``b"".join(machine.out)`` (and clears it), logs ``machine.logs``
   with the session's context, and acts on ``nxt``:

   - ``Next.READ``: read more;
   - ``Next.AUTH``: stop reading and authenticate ``machine.auth`` (an
     ``AuthRequest``); then call ``machine.auth_failed(...)`` or take
     ``machine.leftover()`` for the backend once logged in;
   - ``Next.STARTTLS``: upgrade the client connection (the machine has
     already discarded buffered input, CVE-2014-3556), then call
     ``machine.tls_started()``;
   - ``Next.CLOSE``: close once the output is written.

A back-end (upstream) login machine in ``upstream.py`` has the same shape
with ``UpNext`` and two outputs (``to_upstream``, ``to_client``).

Nothing here does I/O, reads a clock, or logs: log lines are data.
"""

from __future__ import annotations

import enum

from mailfront.conf.model import AuthMethod

# nginx log levels used by the machines (see conf.model.LOG_LEVELS)
ERR = 4
WARN = 5
INFO = 7
DEBUG = 8


class Next(enum.IntEnum):
    READ = 0
    AUTH = 1
    STARTTLS = 2
    CLOSE = 3


class UpNext(enum.IntEnum):
    READ = 0  # send to_upstream / to_client, read more from the backend
    DONE = 1  # logged in: send to_client, then relay
    FAIL = 2  # send to_client, close both sides


# What auth_http sends in Auth-Method, by AuthMethod
AUTH_METHOD_NAMES = (b"plain", b"plain", b"plain", b"apop", b"cram-md5", b"external", b"none")


class AuthRequest:
    """The client finished an authentication command: what auth_http is asked."""

    __slots__ = ("helo", "login", "method", "passwd", "salt", "smtp_from", "smtp_to")

    def __init__(
        self,
        login: bytes,
        passwd: bytes,
        method: AuthMethod,
        salt: bytes = b"",
        helo: bytes = b"",
        smtp_from: bytes = b"",
        smtp_to: bytes = b"",
    ) -> None:
        self.login = login
        self.passwd = passwd
        self.method = method
        self.salt = salt  # the exact salt bytes, CRLF included (APOP, CRAM-MD5)
        self.helo = helo  # SMTP: the client's HELO/EHLO argument
        self.smtp_from = smtp_from  # SMTP "none": the whole MAIL command line
        self.smtp_to = smtp_to  # SMTP "none": the whole RCPT command line

    def __repr__(self) -> str:  # never shows the password
        return f"AuthRequest(login={self.login!r}, method={self.method.name})"
