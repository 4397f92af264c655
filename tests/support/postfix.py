"""A real Postfix for the tests: fixtures over ``mailfront.devtools.postfix``.

- ``postfix`` (session scope): one Postfix shared by the whole run, smtpd on
  a free loopback port, Maildirs for ``alice``/``bob`` at ``example.com``,
  AUTH through the session's ``dovecot`` (its auth service on TCP), XCLIENT
  allowed from loopback.  Tests tell their mail apart by content (a unique
  Subject or Message-ID), since the Maildirs are shared.

It skips the test when ``postfix`` is not installed or when not running as
root (Postfix's master refuses to run otherwise).  Its state lives under
pytest's temp dirs plus one private directory under the system temp dir (the
queue), removed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mailfront.devtools.dovecot import Dovecot
from mailfront.devtools.postfix import DOMAIN, HOSTNAME, Postfix, PostfixError, find_postfix

__all__ = [
    "DOMAIN",
    "HOSTNAME",
    "Postfix",
    "PostfixError",
    "find_postfix",
    "postfix",
    "require_postfix",
]

SKIP_REASON = (
    "postfix is not installed (apt-get install postfix, "
    "or run `bash .ci/run` as root, which installs it)"
)


def require_postfix() -> str:
    """The postfix command's path; skips the calling test when Postfix cannot run here."""
    binary = find_postfix()
    if binary is None:
        pytest.skip(SKIP_REASON)
    if os.getuid() != 0:
        pytest.skip("Postfix's master runs only as root")
    return binary


@pytest.fixture(scope="session")
def postfix(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postfix]:
    binary = require_postfix()
    root = tmp_path_factory.mktemp("postfix")
    with Postfix(root, binary=binary, sasl=dovecot.auth_address) as server:
        yield server
