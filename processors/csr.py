"""Pre-issuance checks of a certificate signing request (``certwatch csr check``).

The same rules the sensor applies to certificates on the wire, applied before a CA ever signs:
key strength (``cert.weak_key``), signature hash (``cert.weak_signature``), names against the
hosts the certificate is meant for (``cert.hostname_mismatch``), plus what only a CSR can get
wrong: its own proof-of-possession signature (RFC 2986 §4.2) and whether it was made from the
private key the operator is about to deploy.

Pure: bytes in through :func:`load_csr` / :func:`load_private_key`, findings out of
:func:`check_csr`. Reading files and the exit status belong to the CLI.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID, ObjectIdentifier, SignatureAlgorithmOID

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CertName = str | IpAddress
"""A name a certificate can carry: a DNS name (lower case, A-labels) or an IP address."""

_PEM_LABEL = re.compile(rb"-----BEGIN ([^-\r\n]*)-----")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# Hashes cryptography no longer names in signature_hash_algorithm (RFC 3279 §2.2.1).
_LEGACY_SIGNATURE_HASHES = {"1.2.840.113549.1.1.2": "md2", "1.2.840.113549.1.1.3": "md4"}
# The only curves the CA/Browser Forum Baseline Requirements (§6.1.5) let a public CA certify.
_CA_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_SIGNATURE_NAMES = {oid: name.lower() for name, oid in vars(SignatureAlgorithmOID).items()
                    if isinstance(oid, ObjectIdentifier)}
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class CsrFinding:
    """One observation about a CSR; ``message`` is one line saying what is wrong and why."""

    level: Literal["error", "warning", "info"]
    rule: str
    message: str


class CsrError(Exception):
    """The input is unusable: not a CSR (PEM or DER), or an unreadable private key file."""


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR in PEM (any text around the block is ignored) or DER.

    Raises :class:`CsrError` naming the problem (empty input, a PEM block of another kind such
    as a certificate, malformed PEM or DER), chained to cryptography's error.
    """
    if not data.strip():
        raise CsrError("empty input: expected a certificate signing request in PEM or DER")
    if b"-----BEGIN" in data:
        labels = [label.decode("ascii", "replace") for label in _PEM_LABEL.findall(data)]
        # "NEW CERTIFICATE REQUEST" is the legacy Netscape label, still written by some tools.
        if not any(label.endswith("CERTIFICATE REQUEST") for label in labels):
            found = ", ".join(labels) or "no recognisable PEM block"
            raise CsrError(f"not a CSR: PEM input holds {found}, not a CERTIFICATE REQUEST")
        try:
            return _parsed(x509.load_pem_x509_csr(data))
        except (ValueError, TypeError, x509.InvalidVersion) as exc:
            raise CsrError(f"malformed PEM certificate signing request: {exc}") from exc
    try:
        return _parsed(x509.load_der_x509_csr(data))
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise CsrError(f"not a CSR: neither PEM nor a DER CertificationRequest ({exc})") from exc


def _parsed(csr: x509.CertificateSigningRequest) -> x509.CertificateSigningRequest:
    """Touch every field check_csr reads unguarded: cryptography decodes some lazily, and a
    malformed one must be reported here as "not a CSR" (ValueError), not crash a check.
    cryptography raises TypeError for some impossible attribute types in the subject."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_csr reports them as findings
        csr.subject.rfc4514_string()
    _ = csr.signature_algorithm_oid, csr.signature, csr.tbs_certrequest_bytes
    return csr


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKeyTypes:
    """Parse a private key in PEM or DER (PKCS#8, or traditional PKCS#1/SEC 1 in PEM).

    Raises :class:`CsrError` when the input is empty, not a key, encrypted and no (or a wrong)
    password was given, or of an algorithm cryptography does not support.
    """
    if not data.strip():
        raise CsrError("empty input: expected a private key in PEM or DER")
    pem = b"-----BEGIN" in data
    loader = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        return loader(data, password)
    except TypeError as exc:  # password missing for an encrypted key, or given for a plain one
        raise CsrError(f"private key: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"unreadable private key ({'PEM' if pem else 'DER'}): {exc}") from exc


def normalise_host(host: str) -> CertName:
    """The canonical form of a host the certificate is meant for (a ``--host`` value).

    IP literals become address objects; DNS names are lower-cased, lose a trailing dot and are
    IDNA-encoded (RFC 5890 A-labels, as SANs carry them). A leftmost ``*`` label is kept: it
    asks for a wildcard certificate. Raises ValueError when the name is not a host name.
    """
    name = host.strip()
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    name = name[:-1] if name.endswith(".") else name
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"not a valid host name: {host!r} ({exc})") from exc
    labels = name.split(".")
    tail = labels[1:] if labels[0] == "*" and len(labels) > 2 else labels
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in tail):
        raise ValueError(f"not a valid host name: {host!r}")
    return name


def covers(cert_name: CertName, host: CertName) -> bool:
    """Whether a certificate name covers a requested host (both from :func:`normalise_host`).

    RFC 6125 §6.4.3: a wildcard stands for exactly one whole leftmost label, so
    ``*.example.com`` covers ``www.example.com`` but neither ``example.com`` nor
    ``a.b.example.com``. A requested wildcard is only covered by the same wildcard.
    """
    wildcard = isinstance(cert_name, str) and cert_name.startswith("*.")
    if wildcard and isinstance(host, str) and not host.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == str(cert_name)[2:]
    return cert_name == host


def check_csr(
    csr: x509.CertificateSigningRequest,
    *,
    hosts: Sequence[str] = (),
    key: PrivateKeyTypes | None = None,
    min_rsa_bits: int = 2048,
    min_dsa_bits: int = 2048,
    min_ec_bits: int = 224,
    forbidden_hashes: Collection[str] = ("md5", "sha1"),
) -> list[CsrFinding]:
    """Every finding about ``csr``: info lines summarising it first, then the problems.

    ``hosts`` are the names the certificate is for (each must be covered by a SAN, see
    :func:`covers`); ``key`` the private key to be deployed with it. Exit status for the CLI:
    1 when any finding has level ``"error"``, 0 otherwise (:func:`exit_status`); 2 when the
    input was not a CSR, which :func:`load_csr` reports by raising :class:`CsrError`.
    Raises ValueError for a malformed entry in ``hosts`` (a usage error, see
    :func:`normalise_host`).
    """
    wanted = [normalise_host(host) for host in hosts]
    with warnings.catch_warnings(record=True) as caught:
        # cryptography warns (rather than fails) on attributes of the wrong length, e.g. a
        # countryName that is not two letters (RFC 5280 Appendix A); CAs reject those.
        warnings.simplefilter("always")
        subject = csr.subject
    findings = [CsrFinding("info", "csr.summary", f"subject: {subject.rfc4514_string()}")]
    findings += [CsrFinding("warning", "csr.bad_subject", f"malformed subject attribute "
                            f"({warning.message}); CAs reject it")
                 for warning in caught]
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography refuses e.g. an even or unit RSA exponent (not a valid RSA key at all).
        findings.append(CsrFinding("error", "csr.unsupported_key",
                                   f"the CSR's public key cannot be used: {exc}"))
    else:
        findings += _key_findings(public_key, min_rsa_bits, min_dsa_bits, min_ec_bits)
        findings += _self_signature(csr, public_key)
        if key is not None and key.public_key().public_bytes(*_SPKI) != public_key.public_bytes(
                *_SPKI):
            findings.append(CsrFinding("error", "csr.key_mismatch", "the private key does not "
                                       "match the CSR's public key; the certificate would be "
                                       "unusable with it"))
    findings += _hash_findings(csr, {name.lower() for name in forbidden_hashes})
    findings += _name_findings(csr, subject, wanted)
    return findings


def exit_status(findings: Sequence[CsrFinding]) -> int:
    """1 when any finding is an error, else 0 (2 is for input that is not a CSR)."""
    return 1 if any(finding.level == "error" for finding in findings) else 0


def _key_findings(key: CertificatePublicKeyTypes, min_rsa: int, min_dsa: int,
                  min_ec: int) -> list[CsrFinding]:
    found: list[CsrFinding] = []
    if isinstance(key, rsa.RSAPublicKey):
        found.append(CsrFinding("info", "csr.summary", f"key: RSA {key.key_size} bits"))
        if key.key_size < min_rsa:
            found.append(_weak(f"RSA key of {key.key_size} bits; at least {min_rsa} required"))
        exponent = key.public_numbers().e
        if exponent < 65537:
            # Small exponents make padding mistakes exploitable (Bleichenbacher's 2006 e=3
            # signature forgery); FIPS 186-4 Appendix B.3.1 requires 2^16 < e < 2^256.
            found.append(CsrFinding("warning", "csr.rsa_exponent", f"RSA public exponent "
                                    f"{exponent}; 65537 or more recommended"))
    elif isinstance(key, dsa.DSAPublicKey):
        found.append(CsrFinding("info", "csr.summary", f"key: DSA {key.key_size} bits"))
        if key.key_size < min_dsa:
            found.append(_weak(f"DSA key of {key.key_size} bits; at least {min_dsa} required"))
        found.append(CsrFinding("warning", "csr.key_type", "DSA key: public CAs certify only "
                                "RSA and ECDSA keys (CA/B Baseline Requirements §6.1.5)"))
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        found.append(CsrFinding("info", "csr.summary", f"key: EC {curve} ({key.key_size} bits)"))
        if key.key_size < min_ec:
            found.append(_weak(f"EC key on {curve} of {key.key_size} bits; at least {min_ec} "
                               "required"))
        elif curve not in _CA_CURVES:
            found.append(CsrFinding("warning", "csr.key_type", f"EC curve {curve}: public CAs "
                                    "certify only P-256, P-384 and P-521"))
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        name = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        found.append(CsrFinding("info", "csr.summary", f"key: {name}"))
    else:  # X25519/X448 cannot sign, so they cannot make a valid CSR (RFC 2986 §3)
        found.append(CsrFinding("error", "csr.unsupported_key",
                                f"{type(key).__name__} cannot sign; not a certificate key"))
    return found


def _weak(message: str) -> CsrFinding:
    return CsrFinding("error", "cert.weak_key", message)


def _self_signature(csr: x509.CertificateSigningRequest,
                    key: CertificatePublicKeyTypes) -> list[CsrFinding]:
    # RFC 2986 §3: the signature proves possession of the private key; CAs reject it when bad.
    try:
        valid = csr.is_signature_valid or _legacy_signature_valid(csr, key)
        problem = "does not verify with its own public key (corrupted or tampered)"
    except (ValueError, UnsupportedAlgorithm) as exc:
        valid, problem = False, f"cannot be verified: {exc}"
    return [] if valid else [CsrFinding("error", "csr.bad_signature",
                                        f"the CSR's signature {problem}")]


def _legacy_signature_valid(csr: x509.CertificateSigningRequest,
                            key: CertificatePublicKeyTypes) -> bool:
    """Verify by hand what ``is_signature_valid`` declines: it is False for any SHA-1 or MD5
    signature, and such a CSR must be reported for its hash, not as tampered."""
    algorithm, signed = csr.signature_hash_algorithm, (csr.signature, csr.tbs_certrequest_bytes)
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(*signed, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(*signed, ec.ECDSA(algorithm))
        elif isinstance(key, dsa.DSAPublicKey) and algorithm is not None:
            key.verify(*signed, algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _hash_findings(csr: x509.CertificateSigningRequest,
                   forbidden: set[str]) -> list[CsrFinding]:
    oid = csr.signature_algorithm_oid
    try:
        algorithm = csr.signature_hash_algorithm
        name = algorithm.name if algorithm is not None else None  # None: EdDSA hashes itself
    except UnsupportedAlgorithm:
        name = _LEGACY_SIGNATURE_HASHES.get(oid.dotted_string)
        if name is None:
            return [CsrFinding("error", "csr.unsupported_signature", "unknown signature "
                               f"algorithm {oid.dotted_string}; no CA will accept it")]
    label = _SIGNATURE_NAMES.get(oid, oid.dotted_string)
    found = [CsrFinding("info", "csr.summary", f"signature: {label}")]
    if name is not None and name in forbidden:
        found.append(CsrFinding("error", "cert.weak_signature", f"signed with {name.upper()}; "
                                f"forbidden hashes: {', '.join(sorted(forbidden))}"))
    return found


def _name_findings(csr: x509.CertificateSigningRequest, subject: x509.Name,
                   wanted: list[CertName]) -> list[CsrFinding]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return [CsrFinding("error", "csr.bad_extension", f"unreadable extensions: {exc}")]
    common = [attr.value for attr in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
              if isinstance(attr.value, str)]
    found: list[CsrFinding] = []
    if san is None:
        # RFC 6125 §6.4.4 keeps the CN only as a legacy fallback; browsers and the Baseline
        # Requirements want every name in the SAN, so a CN-only CSR is nearly always a mistake.
        found.append(CsrFinding("warning", "csr.no_subject_alt_name", "no subjectAltName "
                                "extension; current clients ignore the CN, the only name left"))
        names, where = [_cn_name(value) for value in common], "CN"
    else:
        names, where = _san_names(san), "subjectAltName"
        shown = ", ".join(_show(name) for name in names) or "(empty)"
        found.append(CsrFinding("info", "csr.summary", f"subjectAltName: {shown}"))
        for value in common:
            if _cn_name(value) not in names:
                found.append(CsrFinding("warning", "csr.cn_not_in_san", f"CN {value!r} is "
                                        "not among the SANs, as CAs require"))
    for host in wanted:
        if not any(covers(name, host) for name in names):
            found.append(CsrFinding("error", "cert.hostname_mismatch", f"{_show(host)} is not "
                                    f"covered by the CSR's {where}"))
    for name in names if wanted else ():
        if not any(covers(name, host) for host in wanted):
            found.append(CsrFinding("warning", "csr.unexpected_san", f"{where} names "
                                    f"{_show(name)}, which was not asked for"))
    return found


def _san_names(san: x509.SubjectAlternativeName) -> list[CertName]:
    names: list[CertName] = [_dns_name(dns) for dns in san.get_values_for_type(x509.DNSName)]
    for address in san.get_values_for_type(x509.IPAddress):
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            names.append(address)
    return names


def _dns_name(value: str) -> str:
    """A SAN dNSName in the form :func:`normalise_host` gives (IA5, so already A-labels)."""
    value = value.lower()
    return value[:-1] if value.endswith(".") else value


def _cn_name(value: str) -> CertName:
    """A CN read as a host name; legacy clients also accepted an IP literal there."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return _dns_name(value)


def _show(name: CertName) -> str:
    return f"DNS:{name}" if isinstance(name, str) else f"IP:{name}"
