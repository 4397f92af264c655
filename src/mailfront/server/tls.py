"""Server-side TLS after the handshake: nginx's client-certificate check and the Auth-SSL-* facts.

The SSL contexts are built by the OpenSSL engine
(:mod:`mailfront.server.tls_openssl`) and the handshake runs in
:mod:`mailfront.server.tls_transport`; this module holds what nginx does with
a finished handshake, on any object that answers :class:`TLSFacts`.

* :func:`check_client_cert` is ``ngx_mail_verify_cert``: after the handshake,
  whether the session must answer with the protocol's *cert_error* or
  *no_cert* line and close (:func:`rejection_line` gives the line).
* :func:`ssl_info` gives the values of the Auth-SSL-* request headers.
* :func:`cert_facts` prints a certificate's subject, issuer and serial as
  OpenSSL does (RFC 2253), from the DER.

What differs from nginx is listed in ``docs/tls.md``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from typing import NamedTuple
from typing import Protocol as Protocol_

from cryptography import x509

from mailfront.conf.model import Protocol, ServerConf, VerifyClient
from mailfront.conf.tls_support import (
    verify_enabled,
)
from mailfront.protocol import auth_http, imap, pop3, smtp

# ngx_mail_verify_cert's log texts (info level)
LOG_VERIFY_ERROR = "client SSL certificate verify error: (%d:%s)"
LOG_NO_CERT = "client sent no required SSL certificate"


class Rejection(enum.Enum):
    """The line ``ngx_mail_verify_cert`` sends before it closes the session."""

    CERT_ERROR = "cert_error"
    NO_CERT = "no_cert"


class CertRejection(NamedTuple):
    kind: Rejection
    log: str  # the info-level log text, nginx's words


_REJECTION_LINES: dict[tuple[Protocol, Rejection], bytes] = {
    (Protocol.IMAP, Rejection.CERT_ERROR): imap.IMAP_CERT_ERROR,
    (Protocol.IMAP, Rejection.NO_CERT): imap.IMAP_NO_CERT,
    (Protocol.POP3, Rejection.CERT_ERROR): pop3.POP3_CERT_ERROR,
    (Protocol.POP3, Rejection.NO_CERT): pop3.POP3_NO_CERT,
    (Protocol.SMTP, Rejection.CERT_ERROR): smtp.SMTP_CERT_ERROR,
    (Protocol.SMTP, Rejection.NO_CERT): smtp.SMTP_NO_CERT,
}


def rejection_line(protocol: Protocol, kind: Rejection) -> bytes:
    """``cscf->protocol->cert_error`` / ``no_cert``: what the client reads before the close."""
    return _REJECTION_LINES[(protocol, kind)]


# ------------------------------------------------------- after the handshake


class TLSFacts(Protocol_):
    """What the session asks of a finished handshake (``TLSTransport`` answers it)."""

    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def getpeercert(self, binary_form: bool = True) -> bytes | None: ...

    @property
    def verify_result(self) -> int: ...


def check_client_cert(obj: TLSFacts, conf: ServerConf) -> CertRejection | None:
    """``ngx_mail_verify_cert``: None when the session goes on, else what to answer and log.

    Call it right after the handshake (implicit TLS or STARTTLS).  The caller
    logs ``log`` at info level, sends :func:`rejection_line` and closes.
    """
    from mailfront.server.libssl import verify_error_text
    from mailfront.server.tls_openssl import optional_error

    if not verify_enabled(conf):
        return None
    code = obj.verify_result
    if code and not optional_error(conf, code):
        return CertRejection(
            Rejection.CERT_ERROR, LOG_VERIFY_ERROR % (code, verify_error_text(code))
        )
    if conf.ssl_verify_client == VerifyClient.ON and obj.getpeercert(binary_form=True) is None:
        return CertRejection(Rejection.NO_CERT, LOG_NO_CERT)
    return None


def ssl_info(obj: TLSFacts, conf: ServerConf) -> dict[str, bytes]:
    """The Auth-SSL-* values for ``SessionInfo.ssl`` (``build_request`` picks what to send).

    Protocol and cipher always; with ``ssl_verify_client`` on, the verify
    result (``ngx_ssl_get_client_verify``) and, when the client sent a
    certificate, its subject and issuer (RFC 2253, as
    ``X509_NAME_print_ex``), serial (``i2a_ASN1_INTEGER``), SHA-1
    fingerprint and PEM text.
    """
    from mailfront.server.libssl import verify_error_text

    info: dict[str, bytes] = {}
    version = obj.version()
    if version:
        info[auth_http.SSL_PROTOCOL] = version.encode("ascii")
    cipher = obj.cipher()
    if cipher:
        info[auth_http.SSL_CIPHER] = cipher[0].encode("ascii")
    if not verify_enabled(conf):
        return info
    der = obj.getpeercert(binary_form=True)
    if der is None:
        info[auth_http.SSL_VERIFY] = b"NONE"
        return info
    code = obj.verify_result
    info[auth_http.SSL_VERIFY] = (
        b"SUCCESS" if not code else b"FAILED:" + verify_error_text(code).encode()
    )
    try:
        info.update(cert_facts(der))
    except ValueError:  # a certificate OpenSSL took but this reader cannot walk
        info[auth_http.SSL_FINGERPRINT] = hashlib.sha1(der).hexdigest().encode("ascii")
        info[auth_http.SSL_CERT] = pem(der)
    return info


def common_name(der: bytes) -> str | None:
    """The first commonName of a certificate's subject (PROXY v2 CN), or None."""
    try:
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME
        )
    except ValueError:
        return None
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def cert_facts(der: bytes) -> dict[str, bytes]:
    """Subject, issuer, serial, fingerprint and PEM of a DER certificate, as nginx prints them.

    Raises ``ValueError`` when the DER cannot be walked.
    """
    issuer, subject, serial = _tbs_fields(der)
    return {
        auth_http.SSL_SUBJECT: rfc2253(subject),
        auth_http.SSL_ISSUER: rfc2253(issuer),
        auth_http.SSL_SERIAL: serial_text(serial),
        auth_http.SSL_FINGERPRINT: hashlib.sha1(der).hexdigest().encode("ascii"),
        auth_http.SSL_CERT: pem(der),
    }


def pem(der: bytes) -> bytes:
    """``PEM_write_bio_X509``: base64 in 64-column lines between the armour lines."""
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        b"-----BEGIN CERTIFICATE-----\n"
        + b"".join(x + b"\n" for x in lines)
        + (b"-----END CERTIFICATE-----\n")
    )


def serial_text(content: bytes) -> bytes:
    """``i2a_ASN1_INTEGER`` of a serial number's DER content bytes.

    Upper-case hex of the magnitude, ``-`` first when negative, ``00`` for
    zero, and OpenSSL's ``\\`` + newline after every 35 bytes.
    """
    n = int.from_bytes(content, "big", signed=True) if content else 0
    magnitude = abs(n)
    raw = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big")
    out = bytearray(b"-" if n < 0 else b"")
    for i in range(len(raw)):
        if i and i % 35 == 0:
            out += b"\\\n"
        out += b"%02X" % raw[i]
    return bytes(out)


# ------------------------------------------------------- DER and RFC 2253


class _DerError(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(tag byte, start of content, end of content, end of element) at ``pos``."""
    if pos + 2 > len(data):
        raise _DerError("truncated")
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # high tag number: skip its bytes
        while pos < len(data) and data[pos] & 0x80:
            pos += 1
        pos += 1
    if pos >= len(data):
        raise _DerError("truncated")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise _DerError("truncated")
    return tag, pos, end, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, cstart, cend, nxt = _tlv(data, pos)
        out.append((tag, pos, cstart, cend))
        pos = nxt
    return out


def _tbs_fields(der: bytes) -> tuple[bytes, bytes, bytes]:
    """(issuer Name DER, subject Name DER, serial content) of a certificate."""
    _, cstart, _, _ = _tlv(der, 0)  # Certificate
    _, tstart, tend, _ = _tlv(der, cstart)  # tbsCertificate
    fields = _children(der, tstart, tend)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 5:
        raise _DerError("short tbsCertificate")
    serial = der[fields[0][2] : fields[0][3]]
    issuer = der[fields[2][1] : fields[2][3]]
    subject = der[fields[4][1] : fields[4][3]]
    return issuer, subject, serial


# OpenSSL's short names (OBJ_nid2sn) of the attributes met in names
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.14": "searchGuide",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.19": "physicalDeliveryOfficeName",
    "2.5.4.20": "telephoneNumber",
    "2.5.4.21": "telexNumber",
    "2.5.4.22": "teletexTerminalIdentifier",
    "2.5.4.23": "facsimileTelephoneNumber",
    "2.5.4.24": "x121Address",
    "2.5.4.25": "internationaliSDNNumber",
    "2.5.4.26": "registeredAddress",
    "2.5.4.27": "destinationIndicator",
    "2.5.4.28": "preferredDeliveryMethod",
    "2.5.4.29": "presentationAddress",
    "2.5.4.30": "supportedApplicationContext",
    "2.5.4.31": "member",
    "2.5.4.32": "owner",
    "2.5.4.33": "roleOccupant",
    "2.5.4.34": "seeAlso",
    "2.5.4.35": "userPassword",
    "2.5.4.36": "userCertificate",
    "2.5.4.37": "cACertificate",
    "2.5.4.38": "authorityRevocationList",
    "2.5.4.39": "certificateRevocationList",
    "2.5.4.40": "crossCertificatePair",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.47": "enhancedSearchGuide",
    "2.5.4.48": "protocolInformation",
    "2.5.4.49": "distinguishedName",
    "2.5.4.50": "uniqueMember",
    "2.5.4.51": "houseIdentifier",
    "2.5.4.52": "supportedAlgorithms",
    "2.5.4.53": "deltaRevocationList",
    "2.5.4.54": "dmdName",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    "2.5.4.98": "c3",
    "2.5.4.99": "n3",
    "2.5.4.100": "dnsName",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.8": "unstructuredAddress",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.3": "mail",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

# asn1/a_strex.c: tag2nbyte, the character width of each universal string type
# OpenSSL prints as text (0 is UTF8String); any other type is dumped as #hex
_WIDTH = {12: 0, 18: 1, 19: 1, 20: 1, 22: 1, 23: 1, 24: 1, 26: 1, 28: 4, 30: 2}

# asn1/charmap.h for the flags of XN_FLAG_RFC2253: ESC_2253 chars take a
# backslash, control chars become \XX; space and "#" first, space last, too
_BACKSLASH = frozenset(b'"+,;<>\\')
_CONTROL = frozenset(range(0x20)) | {0x7F}


def _oid_text(der: bytes) -> str:
    """``OBJ_obj2txt(..., 1)``: the dotted form of an OID's content bytes."""
    if not der:
        return ""
    arcs: list[int] = []
    value = 0
    for byte in der:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0] if arcs else 0
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _escape_bytes(data: bytes) -> bytes:
    """``do_buf`` with one byte per character after UTF-8 conversion."""
    out = bytearray()
    last = len(data) - 1
    for i, c in enumerate(data):
        if c > 0x7F or c in _CONTROL:
            out += b"\\%02X" % c
        elif c in _BACKSLASH:
            out += b"\\" + bytes([c])
        elif c == 0x20 and (i == last or i == 0):
            out += b"\\ "
        elif c == 0x23 and i == 0 and i != last:
            out += b"\\#"
        else:
            out.append(c)
    return bytes(out)


def _print_value(tag: int, raw: bytes, tlv: bytes) -> bytes:
    """``do_print_ex`` with ASN1_STRFLGS_RFC2253 for one attribute value."""
    width = _WIDTH.get(tag) if tag < 0x20 else None  # universal, primitive
    if width is None:
        return b"#" + tlv.hex().upper().encode("ascii")
    if width == 0:  # UTF8String: its bytes as they are (no second conversion)
        return _escape_bytes(raw)
    if len(raw) % width:
        return b"#" + tlv.hex().upper().encode("ascii")
    chars = [int.from_bytes(raw[i : i + width], "big") for i in range(0, len(raw), width)]
    if any(c > 0x10FFFF for c in chars):
        return b"#" + tlv.hex().upper().encode("ascii")
    # UTF8_putc() refuses surrogates and do_buf() then drops the character
    text = "".join(chr(c) for c in chars if not 0xD800 <= c <= 0xDFFF).encode("utf-8")
    # a single-byte character keeps its first/last position; multi-byte ones are all > 0x7f
    return _escape_bytes(text)


def rfc2253(name_der: bytes) -> bytes:
    """``X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253)`` of a Name's DER.

    Entries last to first, ``,`` between RDNs and ``+`` inside one, OpenSSL's
    short names (an OID it has no name for: dotted, value dumped as ``#hex``
    of its DER), values escaped as RFC 2253 asks and every byte past ASCII as
    ``\\XX`` of its UTF-8 form.
    """
    _, start, end, _ = _tlv(name_der, 0)
    entries: list[tuple[int, bytes]] = []  # (RDN index, printed entry)
    for index, (_, _, sstart, send) in enumerate(_children(name_der, start, end)):
        for _, _, astart, aend in _children(name_der, sstart, send):
            parts = _children(name_der, astart, aend)
            if len(parts) < 2:
                raise _DerError("bad AttributeTypeAndValue")
            oid = _oid_text(name_der[parts[0][2] : parts[0][3]])
            vtag, vpos, vstart, vend = parts[1]
            tlv = name_der[vpos:vend]
            short = _SHORT_NAMES.get(oid)
            if short is None:
                printed = oid.encode("ascii") + b"=#" + tlv.hex().upper().encode("ascii")
            else:
                printed = (
                    short.encode("ascii") + b"=" + _print_value(vtag, name_der[vstart:vend], tlv)
                )
            entries.append((index, printed))
    out = bytearray()
    prev = None
    for index, printed in reversed(entries):
        if prev is not None:
            out += b"+" if index == prev else b","
        out += printed
        prev = index
    return bytes(out)


__all__ = [
    "CertRejection",
    "Rejection",
    "TLSFacts",
    "cert_facts",
    "check_client_cert",
    "common_name",
    "pem",
    "rejection_line",
    "rfc2253",
    "serial_text",
    "ssl_info",
]
