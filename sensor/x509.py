"""Describe X.509 certificates seen on the wire (RFC 5280), for events and detectors.

Two layers:

* a tiny DER walker (:func:`parse_tbs`) that finds the TBSCertificate fields by their
  position (RFC 5280 section 4.1) without interpreting them. It is what the fingerprints
  (SPKI hash, JA4X) and the serial number rely on, so they survive certificates that
  ``cryptography`` refuses (invalid strings, negative serials, odd parameters).
* :func:`describe_certificate`, which uses ``cryptography`` for everything else, one field
  at a time: ``cryptography`` decodes names and extensions lazily and raises ``ValueError``
  (and others) on first access, so one bad field must not cost the others. Each field that
  fails is named in ``CertificateInfo.field_errors`` instead.

:class:`CertificateCache` keeps descriptions by the SHA-256 of the DER: the same chain is
presented on every connection to a server, and describing one costs ~70 µs (DESIGN.md).
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.x509.oid import NameOID

from sensor.errors import CertificateError

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# DER walker (X.690 section 8.1): only definite lengths, only low tag numbers, as DER demands.

_MAX_LENGTH_OCTETS = 4  # a certificate above 4 GiB is not a certificate


class _Tlv(NamedTuple):
    tag: int
    start: int  # first byte of the value
    end: int  # one past the last byte of the value
    header: int  # offset of the tag byte, so buf[header:end] is the whole TLV


def _read_tlv(buf: bytes, pos: int, end: int) -> _Tlv:
    """Read the TLV at ``pos`` that must end by ``end``; raise CertificateError if malformed."""
    if pos + 2 > end:
        raise CertificateError(f"DER truncated at offset {pos}")
    tag, length = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise CertificateError(f"DER high tag number at offset {pos}")
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > _MAX_LENGTH_OCTETS or start + count > end:
            raise CertificateError(f"DER bad length at offset {pos}")
        length = int.from_bytes(buf[start : start + count], "big")
        start += count
    if start + length > end:
        raise CertificateError(f"DER value overruns its container at offset {pos}")
    return _Tlv(tag, start, start + length, pos)


def _children(buf: bytes, outer: _Tlv) -> list[_Tlv]:
    """The TLVs directly inside a constructed TLV, in order."""
    items: list[_Tlv] = []
    pos = outer.start
    while pos < outer.end:
        item = _read_tlv(buf, pos, outer.end)
        items.append(item)
        pos = item.end
    return items


class RawExtension(NamedTuple):
    """One extension as encoded: OID content octets, criticality, extnValue content."""

    oid: bytes
    critical: bool
    value: bytes


@dataclass(frozen=True, slots=True)
class TbsView:
    """The TBSCertificate fields located by position (RFC 5280 4.1), still encoded.

    ``issuer``/``subject``/``spki`` are whole TLVs (tag and length included), so hashing
    ``spki`` gives the usual SPKI pin (RFC 7469 section 2.4).
    """

    version: int  # the encoded value: 0 = v1, 2 = v3
    serial: bytes  # INTEGER content octets, two's complement
    issuer: bytes
    subject: bytes
    spki: bytes
    spki_algorithm: bytes  # OID content octets of SubjectPublicKeyInfo.algorithm
    spki_key: bytes  # subjectPublicKey BIT STRING content without the unused-bits octet
    extensions: tuple[RawExtension, ...]


def parse_tbs(der: bytes) -> TbsView:
    """Locate the TBSCertificate fields of a DER certificate.

    The input is a whole certificate (a Certificate message carries each one complete), so
    there is no "need more bytes" case: truncated or malformed DER raises
    :class:`~sensor.errors.CertificateError`. Returns a frozen :class:`TbsView`.
    """
    cert = _read_tlv(der, 0, len(der))
    if cert.tag != 0x30 or cert.end != len(der):
        raise CertificateError("not a DER Certificate SEQUENCE")
    parts = _children(der, cert)
    if len(parts) != 3 or parts[0].tag != 0x30:
        raise CertificateError("Certificate is not tbsCertificate, algorithm, signature")
    fields = _children(der, parts[0])
    version = 0
    if fields and fields[0].tag == 0xA0:  # [0] EXPLICIT Version DEFAULT v1
        version = int.from_bytes(der[fields[0].start + 2 : fields[0].end], "big")
        fields = fields[1:]
    if len(fields) < 6 or fields[0].tag != 0x02:
        raise CertificateError("TBSCertificate lacks its mandatory fields")
    serial, _sig, issuer, _validity, subject, spki = fields[:6]
    algorithm, key = _spki_parts(der, spki)
    return TbsView(
        version=version,
        serial=der[serial.start : serial.end],
        issuer=der[issuer.header : issuer.end],
        subject=der[subject.header : subject.end],
        spki=der[spki.header : spki.end],
        spki_algorithm=algorithm,
        spki_key=key,
        extensions=_raw_extensions(der, fields[6:]),
    )


def _spki_parts(der: bytes, spki: _Tlv) -> tuple[bytes, bytes]:
    parts = _children(der, spki)
    if len(parts) != 2 or parts[0].tag != 0x30 or parts[1].tag != 0x03:
        raise CertificateError("SubjectPublicKeyInfo is not algorithm, BIT STRING")
    oid = _read_tlv(der, parts[0].start, parts[0].end)
    if oid.tag != 0x06:
        raise CertificateError("SubjectPublicKeyInfo algorithm has no OID")
    return der[oid.start : oid.end], der[parts[1].start + 1 : parts[1].end]


def _raw_extensions(der: bytes, rest: list[_Tlv]) -> tuple[RawExtension, ...]:
    for item in rest:
        if item.tag != 0xA3:  # skip issuerUniqueID [1] and subjectUniqueID [2]
            continue
        wrapper = _read_tlv(der, item.start, item.end)  # [3] EXPLICIT Extensions
        out = []
        for ext in _children(der, wrapper):
            parts = _children(der, ext)
            if len(parts) not in (2, 3) or parts[0].tag != 0x06 or parts[-1].tag != 0x04:
                raise CertificateError("Extension is not extnID, critical?, extnValue")
            critical = len(parts) == 3 and der[parts[1].start : parts[1].end] != b"\x00"
            oid, value = parts[0], parts[-1]
            raw = RawExtension(der[oid.start : oid.end], critical, der[value.start : value.end])
            out.append(raw)
        return tuple(out)
    return ()


def name_attribute_oids(name_tlv: bytes) -> list[bytes]:
    """OID content octets of every AttributeTypeAndValue of a Name, in encoded order
    (RFC 5280 4.1.2.4: a SEQUENCE of SETs of AttributeTypeAndValue)."""
    name = _read_tlv(name_tlv, 0, len(name_tlv))
    oids: list[bytes] = []
    for rdn in _children(name_tlv, name):
        for atv in _children(name_tlv, rdn):
            oid = _read_tlv(name_tlv, atv.start, atv.end)
            if oid.tag != 0x06:
                raise CertificateError("AttributeTypeAndValue has no OID")
            oids.append(name_tlv[oid.start : oid.end])
    return oids


def serial_to_hex(serial: bytes) -> str:
    """ECS-style serial: uppercase hex without leading zeros ("0" for zero).

    A negative serial (forbidden by RFC 5280 4.1.2.2 but seen in the wild) is written as a
    minus sign and the hex of its magnitude, e.g. INTEGER 0xFF01 → ``"-FF"``: the value is
    kept exactly and cannot be mistaken for a positive serial.
    """
    value = int.from_bytes(serial, "big", signed=True)
    return f"-{-value:X}" if value < 0 else f"{value:X}"


# ---------------------------------------------------------------------------------------------
# Names used in the description.

# Signature algorithms, named as OpenSSL's long names (what Zeek, tshark and `cryptography`
# print). Unknown OIDs are reported as their dotted string.
_SIGNATURE_NAMES = {
    "1.2.840.113549.1.1.2": "md2WithRSAEncryption",
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.10": "RSASSA-PSS",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.2.840.10040.4.3": "dsa-with-sha1",
    "2.16.840.1.101.3.4.3.1": "dsa_with_SHA224",
    "2.16.840.1.101.3.4.3.2": "dsa_with_SHA256",
    "1.3.101.112": "ed25519",
    "1.3.101.113": "ed448",
}

# SubjectPublicKeyInfo algorithm OIDs (content octets) → ECS-style algorithm names.
_KEY_ALGORITHMS = {
    bytes.fromhex("2a864886f70d010101"): "RSA",  # rsaEncryption, RFC 8017
    bytes.fromhex("2a864886f70d01010a"): "RSA-PSS",  # id-RSASSA-PSS, RFC 4055
    bytes.fromhex("2a8648ce3d0201"): "EC",  # id-ecPublicKey, RFC 5480
    bytes.fromhex("2a8648ce380401"): "DSA",  # id-dsa, RFC 3279
    bytes.fromhex("2a864886f70d010301"): "DH",  # dhKeyAgreement (PKCS #3)
    bytes.fromhex("2a8648ce3e0201"): "DH",  # dhpublicnumber, RFC 3279
    bytes.fromhex("2b6570"): "Ed25519",  # RFC 8410
    bytes.fromhex("2b6571"): "Ed448",
    bytes.fromhex("2b656e"): "X25519",
    bytes.fromhex("2b656f"): "X448",
}

# ECS x509.subject.* / x509.issuer.* names for the attribute types ECS knows.
_ECS_NAME_FIELDS = (
    ("common_name", NameOID.COMMON_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("country", NameOID.COUNTRY_NAME),
    ("state_or_province", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME),
)

_BASIC_CONSTRAINTS = bytes.fromhex("551d13")  # id-ce-basicConstraints, RFC 5280 4.2.1.9

NameFields = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What one DER certificate says, in ECS terms (``x509.*``).

    Fingerprints are lowercase hex of the exact DER. ``parse_error`` is set when the DER
    cannot be parsed at all (by our walker or by ``cryptography``); then only ``sha256``,
    ``sha1``, ``der_length`` (and whatever the DER walker could still read: ``spki_sha256``,
    ``serial_number``, ``version``) are filled. ``field_errors`` names each single field that
    could not be read, with the reason, while the rest of the certificate was.

    * ``serial_number``: see :func:`serial_to_hex` (negative serials get a leading ``-``).
    * ``subject``/``issuer``: RFC 4514 strings; ``*_cn`` is the most specific (last
      encoded) commonName; ``*_fields`` maps ECS names to all values in encoded order.
    * ``not_before``/``not_after``: timezone-aware UTC.
    * ``alternative_names``: every SAN of the four kinds, in encoded order, as text; the
      same values are split by kind in ``san_dns``/``san_ip``/``san_email``/``san_uri``.
    * ``public_key_size``: bits of the modulus (RSA), prime p (DSA/DH), field (EC, derived
      from the point length when ``cryptography`` cannot load an explicit-curve key), or
      of the encoded key (Ed25519 256, Ed448 456, X25519 256, X448 448).
    * ``signature_algorithm``: OpenSSL long name (``sha256WithRSAEncryption``,
      ``ecdsa-with-SHA256``, ``ed25519``), or the dotted OID when unknown;
      ``signature_algorithm_oid`` is always the dotted OID.
    * ``version``: the X.509 version number (1, 2 or 3), not its encoding.
    * ``is_ca``: the basicConstraints cA flag; ``False`` when the extension is absent (RFC
      5280 4.2.1.9 defaults cA to FALSE); ``None`` only when the extensions are unreadable.
    * ``self_signed``: subject equals issuer, and the signature verifies with the
      certificate's own key. When the signature cannot be checked (unsupported algorithm
      such as MD5, or an unloadable key) the name match alone decides, and
      ``self_signature_valid`` is ``None``; it is ``True``/``False`` when it was checked.
    """

    sha256: str
    sha1: str
    der_length: int
    spki_sha256: str | None = None
    serial_number: str | None = None
    subject: str | None = None
    subject_cn: str | None = None
    subject_fields: NameFields = ()
    issuer: str | None = None
    issuer_cn: str | None = None
    issuer_fields: NameFields = ()
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    alternative_names: tuple[str, ...] = ()
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    san_email: tuple[str, ...] = ()
    san_uri: tuple[str, ...] = ()
    public_key_algorithm: str | None = None
    public_key_size: int | None = None
    public_key_curve: str | None = None
    public_key_exponent: int | None = None
    signature_algorithm: str | None = None
    signature_algorithm_oid: str | None = None
    version: int | None = None
    is_ca: bool | None = None
    self_signed: bool = False
    self_signature_valid: bool | None = None
    parse_error: str | None = None
    field_errors: tuple[tuple[str, str], ...] = ()

    def subject_dict(self) -> dict[str, list[str]]:
        """``subject_fields`` as the dict ECS ``x509.subject`` wants."""
        return {key: list(values) for key, values in self.subject_fields}

    def issuer_dict(self) -> dict[str, list[str]]:
        """``issuer_fields`` as the dict ECS ``x509.issuer`` wants."""
        return {key: list(values) for key, values in self.issuer_fields}


_FIELD_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    CertificateError,
)


class _Fields:
    """Collects the description field by field, noting which ones failed and why."""

    def __init__(self) -> None:
        # Any: values of many field types, checked by the dataclass at replace() time.
        self.values: dict[str, Any] = {}
        self.errors: list[tuple[str, str]] = []

    def get(self, name: str, read: Callable[[], T]) -> T | None:
        # cryptography raises ValueError (bad encodings), UnsupportedAlgorithm, its own
        # Exception subclasses for extension lists (DuplicateExtension,
        # UnsupportedGeneralNameType), and for some corrupt inputs TypeError/KeyError;
        # CertificateError comes from our walker. Each is recorded against its field.
        try:
            return read()
        except _FIELD_ERRORS as exc:
            self.errors.append((name, f"{type(exc).__name__}: {exc}"))
            return None


def describe_certificate(der: bytes) -> CertificateInfo:
    """Describe one DER certificate. Never raises on bad input: a certificate that cannot
    be parsed at all gives a record with ``parse_error`` set, a field that cannot be read
    gives ``None``/empty for that field and an entry in ``field_errors``."""
    return _describe(der, hashlib.sha256(der).hexdigest())


def _describe(der: bytes, sha256: str) -> CertificateInfo:
    info = CertificateInfo(sha256=sha256, sha1=hashlib.sha1(der).hexdigest(), der_length=len(der))
    try:
        tbs = parse_tbs(der)
    except CertificateError as exc:
        # Our walker is more lenient than cryptography on content but not on structure:
        # what it cannot frame, cryptography cannot either.
        return replace(info, parse_error=str(exc))
    info = replace(
        info,
        spki_sha256=hashlib.sha256(tbs.spki).hexdigest(),
        serial_number=serial_to_hex(tbs.serial),
        version=tbs.version + 1,
    )
    with warnings.catch_warnings():
        # cryptography warns (deprecation) about non-positive serials, in the certificate
        # and in authorityKeyIdentifier, at load and at lazy access. The serial comes from
        # the DER walker; the warning carries nothing for us.
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
            return replace(info, parse_error=f"{type(exc).__name__}: {exc}")
        fields = _Fields()
        _describe_names(cert, fields)
        _describe_validity(cert, fields)
        _describe_san(cert, fields)
        _describe_key(cert, tbs, fields)
        _describe_signature(cert, tbs, fields)
    fields.values["is_ca"] = fields.get("is_ca", lambda: _is_ca(tbs))
    return replace(info, **fields.values, field_errors=tuple(fields.errors))


def _describe_names(cert: x509.Certificate, fields: _Fields) -> None:
    for label, read in (("subject", lambda: cert.subject), ("issuer", lambda: cert.issuer)):
        name = fields.get(label, read)
        if name is None:
            continue
        fields.values[label] = fields.get(label, name.rfc4514_string)
        ecs = _ecs_name_fields(name)
        fields.values[f"{label}_fields"] = ecs
        common_names = dict(ecs).get("common_name", ())
        fields.values[f"{label}_cn"] = common_names[-1] if common_names else None


def _ecs_name_fields(name: x509.Name) -> NameFields:
    out = []
    for key, oid in _ECS_NAME_FIELDS:
        values = tuple(_text(attr.value) for attr in name.get_attributes_for_oid(oid))
        if values:
            out.append((key, values))
    return tuple(out)


def _text(value: str | bytes) -> str:
    # Only BIT STRING attributes (x500UniqueIdentifier) come back as bytes.
    return value if isinstance(value, str) else value.hex()


def _describe_validity(cert: x509.Certificate, fields: _Fields) -> None:
    fields.values["not_before"] = fields.get("not_before", lambda: cert.not_valid_before_utc)
    fields.values["not_after"] = fields.get("not_after", lambda: cert.not_valid_after_utc)


def _describe_san(cert: x509.Certificate, fields: _Fields) -> None:
    def read() -> x509.SubjectAlternativeName | None:
        try:
            return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None

    san = fields.get("alternative_names", read)
    if san is None:
        return
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    emails = tuple(san.get_values_for_type(x509.RFC822Name))
    uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    kinds = x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier | x509.IPAddress
    ordered = [str(general_name.value) for general_name in san if isinstance(general_name, kinds)]
    fields.values.update(
        alternative_names=tuple(ordered), san_dns=dns, san_ip=ips, san_email=emails, san_uri=uris
    )


def _describe_key(cert: x509.Certificate, tbs: TbsView, fields: _Fields) -> None:
    algorithm = _KEY_ALGORITHMS.get(tbs.spki_algorithm, _dotted(tbs.spki_algorithm))
    fields.values["public_key_algorithm"] = algorithm
    key = fields.get("public_key", cert.public_key)
    if key is None:
        if algorithm == "EC" and tbs.spki_key[:1] == b"\x04":
            # Explicit-parameter curves (badcurveball.pcap) do not load; an uncompressed
            # point (SEC 1 2.3.3) still tells the field size: 0x04 || X || Y.
            fields.values["public_key_size"] = (len(tbs.spki_key) - 1) // 2 * 8
        return
    if isinstance(key, rsa.RSAPublicKey):
        fields.values["public_key_size"] = key.key_size
        fields.values["public_key_exponent"] = key.public_numbers().e
    elif isinstance(key, ec.EllipticCurvePublicKey):
        fields.values["public_key_size"] = key.key_size
        fields.values["public_key_curve"] = key.curve.name
    elif isinstance(key, dsa.DSAPublicKey):
        fields.values["public_key_size"] = key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey | x25519.X25519PublicKey):
        fields.values["public_key_size"] = 256
    elif isinstance(key, ed448.Ed448PublicKey):
        fields.values["public_key_size"] = 456
    elif isinstance(key, x448.X448PublicKey):
        fields.values["public_key_size"] = 448
    elif hasattr(key, "key_size"):  # DH
        fields.values["public_key_size"] = int(key.key_size)


def _describe_signature(cert: x509.Certificate, tbs: TbsView, fields: _Fields) -> None:
    oid = fields.get("signature_algorithm", lambda: cert.signature_algorithm_oid.dotted_string)
    if oid is not None:
        fields.values["signature_algorithm_oid"] = oid
        fields.values["signature_algorithm"] = _SIGNATURE_NAMES.get(oid, oid)
    # Byte equality of the encoded names is the cheap test; RFC 5280 7.1 name matching
    # (case folding, string types) is left to cryptography's Name equality.
    same_name = tbs.subject == tbs.issuer or _names_equal(cert)
    valid = _self_signature_valid(cert) if same_name else None
    fields.values["self_signed"] = same_name and valid is not False
    fields.values["self_signature_valid"] = valid


def _names_equal(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.subject == cert.issuer)
    # An undecodable name equals nothing we could compare it with. cryptography raises
    # TypeError, not ValueError, for an attribute whose value is a BIT STRING under another
    # OID (found by fuzzing: tests/data/fuzz/x509/crash-0326b2d5cc7aee45).
    except (ValueError, TypeError):
        return False


def _self_signature_valid(cert: x509.Certificate) -> bool | None:
    """True/False when the self-signature could be checked, None when it could not."""
    try:
        cert.verify_directly_issued_by(cert)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Unsupported digest (MD5), unloadable key, or a key type that cannot sign.
        return None
    return True


def _is_ca(tbs: TbsView) -> bool:
    """The cA flag of basicConstraints read from the DER (RFC 5280 4.2.1.9), so that a
    corrupt *other* extension does not hide it (cryptography parses all or nothing)."""
    for ext in tbs.extensions:
        if ext.oid == _BASIC_CONSTRAINTS:
            seq = _read_tlv(ext.value, 0, len(ext.value))
            items = _children(ext.value, seq)
            return bool(items) and items[0].tag == 0x01 and ext.value[items[0].start] != 0
    return False


def _dotted(oid: bytes) -> str:
    """Dotted form of OID content octets (X.690 8.19), for names we have no table entry for."""
    arcs: list[int] = []
    value = 0
    for byte in oid:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        return ""
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


#: Entries of each cache's identity memo of DER digests (``CertificateCache._digests``).
DIGEST_MEMO_ENTRIES = 2048


class CertificateCache:
    """Bounded LRU of descriptions keyed by the SHA-256 of the DER.

    At most ``max_entries`` descriptions are kept; adding one more evicts the least
    recently used and counts it in ``evictions``. ``hits``/``misses`` count lookups.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, CertificateInfo] = OrderedDict()
        # id(der) -> (der, its SHA-256): the session layer hands every handshake carrying a
        # chain it saw before the same DER ``bytes`` objects (``sensor.session``), so the
        # digest of a repeated certificate is found by identity instead of hashing it again
        # (~3 us a certificate). The DER is kept so its id cannot be reused while remembered.
        # Bounded; a full table is emptied (it only saves work).
        self._digests: dict[int, tuple[bytes, bytes]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, der: bytes) -> bytes:
        known = self._digests.get(id(der))
        if known is not None and known[0] is der:
            return known[1]
        digest = hashlib.sha256(der).digest()
        if len(self._digests) >= DIGEST_MEMO_ENTRIES:
            self._digests.clear()
        self._digests[id(der)] = (der, digest)
        return digest

    def describe(self, der: bytes) -> CertificateInfo:
        """Like :func:`describe_certificate`, from the cache when this DER was seen."""
        digest = self._digest(der)
        info = self._entries.get(digest)
        if info is not None:
            self.hits += 1
            self._entries.move_to_end(digest)
            return info
        self.misses += 1
        info = _describe(der, digest.hex())
        self._entries[digest] = info
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return info
