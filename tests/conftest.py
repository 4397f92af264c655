"""Fixtures for every test.  They live in ``tests/support/<topic>.py``: to add
some, write them there and list the module below (one line)."""

pytest_plugins = [
    "support.dovecot",  # dovecot, fresh_dovecot: a real Dovecot (IMAP, POP3)
    "support.postfix",  # postfix: a real Postfix (SMTP backend, AUTH via dovecot, XCLIENT)
]
