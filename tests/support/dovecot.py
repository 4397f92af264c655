"""A real Dovecot for the tests: fixtures over ``mailfront.devtools.dovecot``.

- ``dovecot`` (session scope): one Dovecot shared by the whole run, IMAP and
  POP3 on free loopback ports, users ``DEMO_USERS`` with ``demo_messages()``.
  Treat its mail as read-only: a test that deletes or stores mail takes
  ``fresh_dovecot`` instead.
- ``fresh_dovecot`` (function scope): a private Dovecot for one test (about
  0.3 s to start).

Both skip the test when ``dovecot`` is not installed.  Their state lives under
pytest's temp dirs (``tmp_path_factory``), never in the repository.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailfront.devtools.dovecot import (
    BIG_MESSAGE_SHA256,
    BIG_MESSAGE_UID,
    DEMO_USERS,
    DemoMessage,
    Dovecot,
    DovecotError,
    big_message,
    demo_messages,
    find_dovecot,
    read_users_file,
    write_auth_file,
)

__all__ = [
    "BIG_MESSAGE_SHA256",
    "BIG_MESSAGE_UID",
    "DEMO_USERS",
    "DemoMessage",
    "Dovecot",
    "DovecotError",
    "big_message",
    "demo_messages",
    "dovecot",
    "find_dovecot",
    "fresh_dovecot",
    "read_users_file",
    "require_dovecot",
    "write_auth_file",
]

SKIP_REASON = (
    "dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d, "
    "or run `bash .ci/run` as root, which installs it)"
)


def require_dovecot() -> str:
    """The dovecot binary's path; skips the calling test when there is none."""
    binary = find_dovecot()
    if binary is None:
        pytest.skip(SKIP_REASON)
    return binary


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    binary = require_dovecot()
    with Dovecot(tmp_path_factory.mktemp("dovecot"), binary=binary) as server:
        yield server


@pytest.fixture
def fresh_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    binary = require_dovecot()
    with Dovecot(tmp_path_factory.mktemp("fresh-dovecot"), binary=binary) as server:
        yield server
