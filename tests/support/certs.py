"""Certificates made by the tests: CAs, server and client certificates, CRLs.

trustme makes the CAs and the ordinary certificates; cryptography (which
trustme is built on) signs what trustme does not offer: CRLs, certificates
with hand-made subjects, certificates already expired, and keys under a
password.  Everything is written as PEM files into a folder, for
configurations to name.

    pki = Pki(tmp_path)
    server = pki.server("mail.test")             # .cert, .key (paths)
    client = pki.client("alice")                 # issued by pki.ca
    crl = pki.crl([client])                      # path of a PEM CRL revoking it
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
_counter = itertools.count(1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files; ``der`` is the leaf certificate."""

    cert: Path  # the leaf first, then its chain up to (not including) the root
    key: Path
    der: bytes

    @property
    def x509(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


class Authority:
    """A CA (root or intermediate) whose key can sign anything."""

    def __init__(
        self,
        folder: Path,
        ca: trustme.CA,
        name: str,
        chain: tuple[bytes, ...] = (),
        root: bool = True,
    ) -> None:
        self.folder = folder
        self.ca = ca
        self.name = name
        self.root = root
        self.chain = chain  # PEM of the intermediates above this CA, below the root
        self.pem = ca.cert_pem.bytes()
        self.cert = x509.load_pem_x509_certificate(self.pem)
        key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
        self.key = key
        self.path = folder / f"{name}.pem"
        self.path.write_bytes(self.pem)

    def _write(self, stem: str, leaf: bytes, key_pem: bytes, chain: bool) -> Issued:
        cert = self.folder / f"{stem}.crt"
        key = self.folder / f"{stem}.key"
        extra = () if self.root or not chain else (self.pem, *self.chain)
        cert.write_bytes(leaf + b"".join(extra))
        key.write_bytes(key_pem)
        return Issued(cert, key, x509.load_pem_x509_certificate(leaf).public_bytes(_DER))

    def issue(
        self,
        *names: str,
        stem: str | None = None,
        key_type: trustme.KeyType = trustme.KeyType.ECDSA,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        chain: bool = True,
    ) -> Issued:
        """A certificate from trustme (server and client use, SAN = ``names``)."""
        leaf = self.ca.issue_cert(
            *names,
            common_name=names[0],
            key_type=key_type,
            not_before=not_before,
            not_after=not_after,
        )
        pems = leaf.cert_chain_pems
        return self._write(
            stem or f"{self.name}-{names[0]}",
            pems[0].bytes(),
            leaf.private_key_pem.bytes(),
            chain,
        )

    def issue_named(
        self,
        subject: x509.Name,
        *,
        stem: str,
        serial: int | None = None,
        password: bytes | None = None,
        key_type: str = "ec",
    ) -> Issued:
        """A client certificate with a hand-made subject (and serial), signed here."""
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        cert = builder.sign(self.key, hashes.SHA256())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        return self._write(stem, cert.public_bytes(serialization.Encoding.PEM), key_pem, True)

    def child(self, name: str) -> Authority:
        """An intermediate CA under this one."""
        above = () if self.root else (self.pem, *self.chain)
        return Authority(self.folder, self.ca.create_child_ca(), name, above, root=False)

    def crl(self, revoked: list[Issued], stem: str | None = None) -> Path:
        """A PEM CRL of this CA revoking ``revoked`` (may be empty)."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(NOW - datetime.timedelta(hours=1))
            .next_update(NOW + datetime.timedelta(days=7))
        )
        for issued in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(issued.x509.serial_number)
                .revocation_date(NOW - datetime.timedelta(minutes=30))
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        path = self.folder / f"{stem or self.name}.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


_DER = serialization.Encoding.DER


class Pki:
    """A folder of test PKI: one root CA (``ca``) and what it issues."""

    def __init__(self, folder: Path, key_type: trustme.KeyType = trustme.KeyType.ECDSA):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca = Authority(folder, trustme.CA(key_type=key_type), "ca")

    def authority(self, name: str) -> Authority:
        """Another root CA (an unknown CA, for the server)."""
        return Authority(self.folder, trustme.CA(), name)

    def server(
        self, name: str = "mail.test", key_type: trustme.KeyType = trustme.KeyType.ECDSA
    ) -> Issued:
        kind = "rsa" if key_type == trustme.KeyType.RSA else "ec"
        return self.ca.issue(name, stem=f"server-{kind}-{next(_counter)}", key_type=key_type)

    def client(self, name: str = "alice", **kw: object) -> Issued:
        return self.ca.issue(name, stem=f"client-{name}-{next(_counter)}", **kw)  # type: ignore[arg-type]

    def encrypted_key(self, issued: Issued, password: bytes) -> Path:
        """A copy of ``issued``'s key under ``password`` (traditional PEM, as openssl writes it)."""
        key = serialization.load_pem_private_key(issued.key.read_bytes(), None)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
        path = issued.key.with_suffix(".enc.key")
        path.write_bytes(pem)
        return path


def name(*pairs: tuple[x509.ObjectIdentifier, str], **kw: object) -> x509.Name:
    """An x509.Name of single-valued RDNs, first pair first (the DER order)."""
    return x509.Name([x509.NameAttribute(oid, value, **kw) for oid, value in pairs])  # type: ignore[arg-type]


__all__ = ["NOW", "Authority", "Issued", "NameOID", "Pki", "name"]
