"""SASL helpers shared by the IMAP, POP3 and SMTP machines, as nginx does them.

nginx's base64 decoder (``ngx_decode_base64``) stops at the first ``=``,
ignores whatever follows it, refuses any other byte outside the standard
alphabet and a length of 4n+1.  The mechanisms (``ngx_mail_auth_plain`` and
friends) raise ``SaslError`` with nginx's log message; the machine turns that
into its invalid-command reply.
"""

from __future__ import annotations

import binascii

B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# Prompts (base64 of "Username:" and "Password:")
USERNAME_PROMPT = b"VXNlcm5hbWU6"
PASSWORD_PROMPT = b"UGFzc3dvcmQ6"


class SaslError(Exception):
    """A client sent something undecodable; ``str(exc)`` is nginx's log line.

    ``login`` is what nginx took as the login before it gave up (CRAM-MD5
    sets it before it checks the digest), else None.
    """

    def __init__(self, message: str, login: bytes | None = None) -> None:
        super().__init__(message)
        self.login = login


def decode_base64(src: bytes) -> bytes | None:
    """``ngx_decode_base64``: the decoded bytes, or None when invalid."""
    try:
        # canonical, padded base64 (the usual case) decodes the same either way
        return binascii.a2b_base64(src, strict_mode=True)
    except binascii.Error:
        pass
    end = src.find(b"=")
    if end >= 0:
        src = src[:end]
    if src.translate(None, B64_ALPHABET) or len(src) % 4 == 1:
        return None
    pad = -len(src) % 4
    return binascii.a2b_base64(src + b"=" * pad) if src else b""


def encode_base64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def auth_plain(arg: bytes) -> tuple[bytes, bytes]:
    """AUTH PLAIN response -> (login, password); the authzid is ignored."""
    plain = decode_base64(arg)
    if plain is None:
        raise SaslError("client sent invalid base64 encoding in AUTH PLAIN command")
    parts = plain.split(b"\0", 2)
    if len(parts) == 3:  # authzid, login, password (which may hold NULs)
        return parts[1], parts[2]
    first = plain.find(b"\0")
    if first < 0 or first == len(plain) - 1:
        raise SaslError("client sent invalid login in AUTH PLAIN command")
    rest = plain[first + 1 :]
    second = rest.find(b"\0")
    if second < 0:
        raise SaslError("client sent invalid password in AUTH PLAIN command")
    return rest[:second], rest[second + 1 :]


def auth_login_username(arg: bytes) -> bytes:
    login = decode_base64(arg)
    if login is None:
        raise SaslError("client sent invalid base64 encoding in AUTH LOGIN command")
    return login


def auth_login_password(arg: bytes) -> bytes:
    passwd = decode_base64(arg)
    if passwd is None:
        raise SaslError("client sent invalid base64 encoding in AUTH LOGIN command")
    return passwd


def auth_cram_md5(arg: bytes) -> tuple[bytes, bytes]:
    """CRAM-MD5 response -> (login, 32-byte digest); split at the first space."""
    data = decode_base64(arg)
    if data is None:
        raise SaslError("client sent invalid base64 encoding in AUTH CRAM-MD5 command")
    sp = data.find(b" ")
    if sp < 0 or len(data) - sp - 1 != 32:
        # nginx has stored the text up to the space (all of it without one) as the login
        raise SaslError(
            "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command",
            data if sp < 0 else data[:sp],
        )
    return data[:sp], data[sp + 1 :]


def auth_external(arg: bytes) -> bytes:
    login = decode_base64(arg)
    if login is None:
        raise SaslError("client sent invalid base64 encoding in AUTH EXTERNAL command")
    return login


def make_salt(random: int, now: int, server_name: str) -> bytes:
    """``ngx_mail_salt``: ``<random.time@server_name>`` followed by CRLF.

    ``random`` and ``now`` are injected (no clock or RNG in protocol code).
    """
    return b"<%d.%d@%s>\r\n" % (random, now, server_name.encode())


def cram_md5_challenge(prefix: bytes, salt: bytes) -> bytes:
    """``ngx_mail_auth_cram_md5_salt``: prefix + base64(salt without CRLF) + CRLF."""
    return prefix + encode_base64(salt[:-2]) + b"\r\n"
