"""Tools for developing and trying mailfront: not used by the proxy itself.

``devtools.dovecot`` runs a private Dovecot (IMAP + POP3) with demo users and
messages; the test suite and ``mailfront-quickstart`` both use it.
"""
