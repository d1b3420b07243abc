"""A certificate factory for processor tests, built on ``cryptography``.

Typical use::

    pki = Pki.create(now)                       # a root and an intermediate CA
    leaf = pki.leaf("www.example.com")          # valid around ``now``, SAN www.example.com
    chain = [leaf.der, pki.intermediate.der]    # what a server sends (leaf first)
    pki.root.pem                                # for a ``trust.ca_files`` PEM file

Every :class:`Issued` carries its DER, PEM, ``cryptography`` certificate and private key,
so a test can issue from any certificate that is a CA (``issue(..., issuer=some_ca)``).
Variants the detector tests need are keyword arguments of :func:`issue`: validity window,
SANs (DNS and IP), a subject CN, self-signing, CA flag, RSA key size (1024 for a weak key),
and ``sha1=True`` for a sha1WithRSAEncryption signature (the issuer needs an RSA key;
cryptography's builder refuses SHA-1, so the signature OID is patched and the TBS re-signed).
A *rogue* CA is simply another :meth:`Pki.create` with the same names: certificates that
look the same but chain to a root nobody trusts.

Keys are EC P-256 by default (fast); RSA keys are generated once per size and reused, since
RSA key generation dominates test time.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    """One certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def spki_sha256(self) -> str:
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(spki)
        return digest.finalize().hex()

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


@functools.cache
def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """One RSA key per size for the whole test session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(common_name: str | None, organization: str = "certwatch tests") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def issue(
    subject: x509.Name,
    *,
    issuer: Issued | None = None,
    not_before: datetime,
    not_after: datetime,
    ca: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    rsa_bits: int | None = None,
    sha1: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> Issued:
    """A certificate for ``subject``, signed by ``issuer`` (self-signed when None).

    CAs get basicConstraints cA, keyUsage keyCertSign/cRLSign and a subjectKeyIdentifier;
    end entities get extendedKeyUsage ``usages`` (serverAuth; none when empty) and a
    subjectAltName when ``dns``/``ips`` are given. Every certificate gets an
    authorityKeyIdentifier, as the web PKI profile requires.
    """
    key: PrivateKey = rsa_key(rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    elif usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    return Issued(_resign_sha1(cert, signer_key) if sha1 else cert, key)


# DER of the AlgorithmIdentifier OIDs (RFC 8017 A.2.4): same length, so swapping one for the
# other keeps every enclosing length valid.
_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
_SHA1_RSA = bytes.fromhex("06092a864886f70d010105")


def _resign_sha1(cert: x509.Certificate, signer_key: PrivateKey) -> x509.Certificate:
    """``cert`` re-signed with sha1WithRSAEncryption. cryptography refuses SHA-1 in its
    certificate builder, so the signature OID is patched (in the TBS and outside it) and the
    new TBS signed by hand; an RSA signature has the modulus' length, so it fits in place."""
    if not isinstance(signer_key, rsa.RSAPrivateKey):
        raise TypeError("SHA-1 re-signing needs an RSA issuer key (rsa_bits on the issuer)")
    der = cert.public_bytes(serialization.Encoding.DER)
    if der.count(_SHA256_RSA) != 2:
        raise ValueError("expected the sha256WithRSAEncryption OID exactly twice")
    tbs = cert.tbs_certificate_bytes.replace(_SHA256_RSA, _SHA1_RSA)
    signature = signer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    patched = der.replace(_SHA256_RSA, _SHA1_RSA)
    return x509.load_der_x509_certificate(patched[: -len(signature)] + signature)


@dataclass(frozen=True)
class Pki:
    """A root CA and an intermediate CA, valid for ten years around ``now``."""

    now: datetime
    root: Issued
    intermediate: Issued

    @classmethod
    def create(cls, now: datetime, label: str = "Test") -> Pki:
        """A fresh PKI. Two PKIs created with the same ``label`` have the same names but
        different keys: one is the other's rogue twin."""
        start, end = now - timedelta(days=3650), now + timedelta(days=3650)
        root = issue(name(f"{label} Root CA"), not_before=start, not_after=end, ca=True)
        intermediate = issue(name(f"{label} Issuing CA"), issuer=root, not_before=start,
                             not_after=end, ca=True)
        return cls(now, root, intermediate)

    def leaf(self, *dns: str, days_before: float = 30, days_after: float = 60,
             common_name: str | None = None, ips: tuple[str, ...] = (),
             **kwargs: object) -> Issued:
        """A server certificate issued by the intermediate, valid from ``days_before`` days
        before ``now`` to ``days_after`` days after it (negative values move the window)."""
        cn = common_name if common_name is not None else (dns[0] if dns else None)
        return issue(name(cn), issuer=self.intermediate,
                     not_before=self.now - timedelta(days=days_before),
                     not_after=self.now + timedelta(days=days_after), dns=dns, ips=ips,
                     **kwargs)  # type: ignore[arg-type]

    def chain(self, leaf: Issued) -> list[bytes]:
        """What a server sends: the leaf then the intermediate (the root is not sent)."""
        return [leaf.der, self.intermediate.der]


def self_signed(now: datetime, *dns: str, days: float = 365, ca: bool = False) -> Issued:
    """A self-signed server certificate valid from ``now`` - 1 day for ``days`` days."""
    return issue(name(dns[0] if dns else "self-signed"), not_before=now - timedelta(days=1),
                 not_after=now + timedelta(days=days), dns=dns, ca=ca)


def write_pem(path: Path, *certificates: Issued) -> Path:
    """Write ``certificates`` to one PEM file (a ``trust.ca_files`` entry) and return it."""
    path.write_bytes(b"".join(cert.pem for cert in certificates))
    return path
