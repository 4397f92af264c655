"""TLS test material that ``support.certs`` and ``ssl`` do not give.

- :func:`self_signed`: a self-signed client certificate;
- :func:`cert_headers`: the Auth-SSL-* headers nginx sends for a client
  certificate, its fields as ``openssl x509`` prints them;
- :class:`BioClient`: a TLS client over memory BIOs on a plain socket, so that
  bytes of our choosing (a PROXY header) go out in the same packet as the
  ClientHello.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.certs import NOW, Issued

# what the test servers greet with, each protocol (server_name mail.test)
GREETING = {
    "imap": b"* OK IMAP4 ready\r\n",
    "pop3": b"+OK POP3 ready\r\n",
    "smtp": b"220 mail.test ESMTP ready\r\n",
}
# ngx_mail_verify_cert's cert_error line (spec section 1.9)
CERT_ERROR = {
    "imap": b"* BYE SSL certificate error\r\n",
    "pop3": b"-ERR SSL certificate error\r\n",
    "smtp": b"421 4.7.1 SSL certificate error\r\n",
}


def s_client(port: int, ca: Path, *args: str, stdin: bytes = b"") -> str:
    """``openssl s_client`` to 127.0.0.1:``port`` trusting ``ca``, that sends ``stdin``
    (CRLF line ends) and waits for the close; its whole output."""
    from support.tools import tool

    out = subprocess.run(
        [tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca),
         "-ign_eof", "-crlf", *args],
        input=stdin, capture_output=True, timeout=30,
    )  # fmt: skip
    return out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")


def client_hello(ctx: ssl.SSLContext | None = None, server_hostname: str = "localhost") -> bytes:
    """The first flight of a real TLS client (``ctx``, else Python's defaults), made in
    memory."""
    ctx = ctx if ctx is not None else ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a handshake that needs no answer")
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a handshake record
    return hello


def self_signed(folder: Path, common_name: str, stem: str) -> Issued:
    """A leaf certificate signed by its own key (OpenSSL: "self-signed certificate", 18)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


def x509_field(openssl: str, cert: Path, *args: str) -> bytes:
    """One ``openssl x509 -noout`` field's value (what follows the first ``=``)."""
    out = subprocess.run(
        [openssl, "x509", "-in", str(cert), "-noout", *args],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip().split(b"=", 1)[1]


def cert_headers(openssl: str, issued: Issued, verify: bytes) -> bytes:
    """Auth-SSL-Verify .. Auth-SSL-Fingerprint as nginx sends them for ``issued``
    (``verify`` is ``SUCCESS`` or ``FAILED:<OpenSSL's text>``)."""
    fingerprint = x509_field(openssl, issued.cert, "-fingerprint", "-sha1")
    return (
        b"Auth-SSL-Verify: " + verify + b"\r\n"
        b"Auth-SSL-Subject: "
        + x509_field(openssl, issued.cert, "-subject", "-nameopt", "RFC2253")
        + b"\r\nAuth-SSL-Issuer: "
        + x509_field(openssl, issued.cert, "-issuer", "-nameopt", "RFC2253")
        + b"\r\nAuth-SSL-Serial: "
        + x509_field(openssl, issued.cert, "-serial")
        + b"\r\nAuth-SSL-Fingerprint: "
        + fingerprint.replace(b":", b"").lower()
        + b"\r\n"
    )


class BioClient:
    """A blocking TLS client on ``sock`` that sends ``prefix`` and its ClientHello in
    one ``sendall`` (one packet on loopback), then reads and writes lines."""

    def __init__(
        self, sock: socket.socket, ctx: ssl.SSLContext, prefix: bytes = b"", hostname: str = ""
    ) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname or None)
        self.buf = b""
        first = prefix
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(first + self.outgoing.read())
                first = b""
                self._fill()
        self._flush()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ssl.SSLEOFError("the server closed the connection")
        self.incoming.write(data)

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def read_line(self) -> bytes:
        """One line, CRLF included (less if the server closes first)."""
        while b"\r\n" not in self.buf:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                try:
                    self._fill()
                except ssl.SSLEOFError:
                    break
                continue
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            self.buf += chunk
        line, sep, self.buf = self.buf.partition(b"\r\n")
        return line + sep


__all__ = [
    "CERT_ERROR",
    "GREETING",
    "BioClient",
    "cert_headers",
    "client_hello",
    "s_client",
    "self_signed",
    "x509_field",
]
