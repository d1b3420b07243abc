"""A certificate factory: roots, intermediates and leaves, good and deliberately bad.

Everything is derived from the factory's seed: keys (RSA primes from a seeded generator,
EC and Ed25519 private scalars from seeded bytes), serial numbers, and validity windows,
which are offsets in days from the capture time. Signatures are deterministic (PKCS#1 v1.5,
RFC 6979 ECDSA, Ed25519), so the same seed gives the same DER bytes in every process. Keys
are cached per process by (kind, seed, label): a 2048-bit key costs ~0.1 s in pure Python.

``cryptography`` refuses to sign certificates with SHA-1. A SHA-1 certificate is made by
building it with SHA-256, swapping the TBSCertificate's signature AlgorithmIdentifier for the
SHA-1 one, signing the new TBS with the issuer key's raw ``sign`` and assembling the
Certificate SEQUENCE (RFC 5280 4.1) with the small DER helpers below.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["rsa1024", "rsa2048", "p256", "ed25519"]
SignatureHash = Literal["sha256", "sha1"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_KEYS: dict[tuple[str, str], PrivateKey] = {}
_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))]
_SMALL_PRODUCT = math.prod(_SMALL_PRIMES)

# AlgorithmIdentifiers of SHA-1 signatures (RFC 3279 2.2.1: RSA with NULL parameters;
# RFC 5758 3.2 / RFC 3279 2.2.3: ecdsa-with-SHA1 with absent parameters).
_SHA1_RSA_ALGID = bytes.fromhex("300d06092a864886f70d0101050500")
_SHA1_ECDSA_ALGID = bytes.fromhex("300906072a8648ce3d0401")


# -- DER, just enough to take a TBSCertificate apart and put a Certificate together ------


def der(tag: int, content: bytes) -> bytes:
    """One DER TLV with a definite length (X.690 8.1.3)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def der_children(data: bytes) -> list[bytes]:
    """The TLVs inside the constructed TLV ``data`` (which must be one whole TLV)."""
    _, start, end = _tlv(data, 0)
    out: list[bytes] = []
    pos = start
    while pos < end:
        stop = _tlv(data, pos)[2]
        out.append(data[pos:stop])
        pos = stop
    return out


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the TLV at ``pos``; single-byte tags only."""
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    size = first & 0x7F
    length = int.from_bytes(data[pos + 2 : pos + 2 + size], "big")
    return tag, pos + 2 + size, pos + 2 + size + length


# -- deterministic keys --------------------------------------------------------------------


def _is_probable_prime(n: int, rng: random.Random, rounds: int = 12) -> bool:
    """Miller-Rabin (FIPS 186-5 B.3.1) after trial division by the primes below 2000."""
    if math.gcd(n, _SMALL_PRODUCT) != 1:
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while not d & 1:
        d, s = d >> 1, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random) -> int:
    """A random prime with its two top bits set, so that p*q has exactly 2*bits bits."""
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if _is_probable_prime(candidate, rng):
            return candidate


def _rsa_key(bits: int, rng: random.Random) -> rsa.RSAPrivateKey:
    e = 65537
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits - bits // 2, rng)
        if p != q and math.gcd(e, (p - 1) * (q - 1)) == 1:
            break
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def private_key(kind: KeyKind, seed: int, label: str) -> PrivateKey:
    """The key of ``kind`` for (seed, label): the same key every time, in any process."""
    cache_key = (kind, f"{seed}:{label}")
    cached = _KEYS.get(cache_key)
    if cached is not None:
        return cached
    rng = random.Random(f"tlsgen-key:{kind}:{seed}:{label}")
    key: PrivateKey
    if kind == "rsa1024":
        key = _rsa_key(1024, rng)
    elif kind == "rsa2048":
        key = _rsa_key(2048, rng)
    elif kind == "p256":
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # SEC 2
        key = ec.derive_private_key(rng.randrange(1, order), ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    _KEYS[cache_key] = key
    return key


# -- certificates ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        """Lower-case hex SHA-256 of the DER: the certificate's fingerprint."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def spki_sha256(self) -> str:
        """Lower-case hex SHA-256 of the SubjectPublicKeyInfo (RFC 7469 2.4 pin)."""
        spki = self.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(spki).hexdigest()

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return builder.sign(key, hashes.SHA256())


def resign_sha1(certificate: x509.Certificate, issuer_key: PrivateKey) -> x509.Certificate:
    """The same certificate signed with SHA-1 by ``issuer_key`` (RSA or ECDSA): the
    TBSCertificate's ``signature`` field (RFC 5280 4.1.2.3) and the outer
    ``signatureAlgorithm`` both become the SHA-1 AlgorithmIdentifier."""
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        algid = _SHA1_RSA_ALGID
    elif isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        algid = _SHA1_ECDSA_ALGID
    else:
        raise ValueError("Ed25519 has no SHA-1 signature")
    fields = der_children(certificate.tbs_certificate_bytes)
    fields[2] = algid  # [0] version, serialNumber, signature, issuer, ...
    tbs = der(0x30, b"".join(fields))
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    else:
        signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA1(), deterministic_signing=True))
    whole = der(0x30, tbs + algid + der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(whole)


class CertFactory:
    """Makes certificates whose every byte follows from ``seed`` and ``now``.

    ``now`` is the capture time: validity windows are given in days relative to it, so an
    "expired" certificate is expired at the time of the handshakes that carry it.
    """

    def __init__(self, seed: int, now: datetime) -> None:
        self.seed = seed
        self.now = now.astimezone(UTC).replace(microsecond=0)

    def _serial(self, label: str) -> int:
        # RFC 5280 4.1.2.2: positive, at most 20 octets.
        return random.Random(f"tlsgen-serial:{self.seed}:{label}").getrandbits(63) | 1 << 62

    def _builder(
        self, subject: x509.Name, issuer: Issued | None, key: PrivateKey, label: str,
        valid: tuple[float, float],
    ) -> x509.CertificateBuilder:
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(public)
            .serial_number(self._serial(label))
            .not_valid_before(self.now + timedelta(days=valid[0]))
            .not_valid_after(self.now + timedelta(days=valid[1]))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        signer = issuer.key if issuer else key
        return builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )

    def authority(
        self,
        common_name: str,
        *,
        issuer: Issued | None = None,
        key: KeyKind = "rsa2048",
        key_label: str | None = None,
        organization: str = "tlsgen test PKI",
        valid: tuple[float, float] = (-3650, 3650),
    ) -> Issued:
        """A CA certificate: a self-signed root when ``issuer`` is None, else an
        intermediate. ``key_label`` picks the key (default: the common name), so a rogue CA
        can copy a real one's subject with a key of its own."""
        label = key_label or common_name
        private = private_key(key, self.seed, label)
        builder = self._builder(_name(common_name, organization), issuer, private, label, valid)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        return Issued(_sign(builder, issuer.key if issuer else private), private)

    def leaf(
        self,
        hosts: Sequence[str],
        *,
        issuer: Issued | None,
        key: KeyKind = "rsa2048",
        key_label: str | None = None,
        valid: tuple[float, float] = (-30, 335),
        signature_hash: SignatureHash = "sha256",
        organization: str = "tlsgen test servers",
        label: str | None = None,
    ) -> Issued:
        """A server certificate for ``hosts`` (SAN dNSNames; the first is also the CN).
        ``issuer=None`` makes it self-signed. ``label`` distinguishes two leaves for the
        same hosts (serial and default key)."""
        tag = label or ",".join(hosts)
        private = private_key(key, self.seed, key_label or tag)
        builder = self._builder(_name(hosts[0], organization), issuer, private, tag, valid)
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        )
        signer = issuer.key if issuer else private
        certificate = _sign(builder, signer)
        if signature_hash == "sha1":
            certificate = resign_sha1(certificate, signer)
        return Issued(certificate, private)


def pem_bundle(certificates: Sequence[Issued]) -> bytes:
    """The certificates as one PEM file, the form ``trust.ca_files`` takes."""
    return b"".join(c.pem for c in certificates)
