"""Compliance profiles: one word in the policy (``profile:``) sets the thresholds of the
version, cipher, key, signature and DH rules, and each alert quotes the requirement its
threshold comes from.

Precedence, per threshold: a value written in the policy's rule settings wins, then the
profile's value, then the built-in default (DESIGN.md, "Alert rules"). A threshold keeps the
requirement text only when the profile supplied it: an explicit or default value breaks no
named requirement, so findings judged by it carry ``requirement=None``.

Sources the requirement texts paraphrase (never quote at length):

* PCI DSS v4.0 req. 4.2.1 ("strong cryptography and security protocols ... only secure
  versions or configurations ... no fallback to insecure versions, algorithms, key sizes")
  and its Glossary entry "Strong Cryptography" (112-bit effective strength: RSA 2048, ECC
  224, DSA/DH 2048/224). PCI SSC treats SSL and early TLS as not strong cryptography
  (Appendix A2); TLS 1.1 is held below the minimum here as the SSC's migration guidance
  recommends TLS 1.2 (an operator can write ``min_version: "1.1"`` to relax it).
* NIST SP 800-52 Rev. 2 (Aug. 2019): §3.1 protocol versions (TLS 1.2 required, TLS 1.0 and
  SSL not to be used, TLS 1.1 should not be), §3.3.1 cipher suites (ephemeral ECDHE/DHE key
  exchange; RSA key transport only in the Appendix D transition list), §3.2.1 server
  certificates; strengths per SP 800-57 Pt. 1 / SP 800-131A Rev. 2 (112 bits, no SHA-1 for
  signatures).
* Mozilla Server Side TLS, guidelines version 5.7 (ssl-config.mozilla.org/guidelines):
  intermediate = TLS 1.2 + 1.3, ECDHE/DHE with AES-GCM or ChaCha20-Poly1305 only, RSA 2048
  or ECDSA P-256/P-384, SHA-256+ signatures, DH 2048 (ffdhe2048), curves X25519, P-256,
  P-384; modern = TLS 1.3 only, ECDSA certificates, same curves, no DH.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

from processors.policy import Policy

_T = TypeVar("_T")

# The cipher classes every profile forbids (and the built-in default): none of these gives
# 112-bit confidentiality and integrity (RFC 7465 RC4, RFC 8996/9325 for the rest).
_BASELINE_CIPHERS: Final = frozenset({"null", "export", "anon", "rc4", "des", "3des", "md5"})
# Mozilla intermediate/modern admit only forward-secret AEAD suites.
_AEAD_FS_ONLY: Final = _BASELINE_CIPHERS | {"cbc", "sha1", "no_forward_secrecy"}
_ALL_WEAK_HASHES: Final = frozenset({"md2", "md4", "md5", "sha1", "sha224"})


@dataclass(frozen=True, slots=True)
class Profile:
    """One compliance profile. ``None`` for a threshold means the profile says nothing about
    it (the built-in default applies, with no requirement quoted)."""

    name: str
    title: str
    min_version: str | None
    version_requirement: str
    forbidden_ciphers: frozenset[str] | None
    cipher_requirement: str
    min_rsa_bits: int | None
    min_dsa_bits: int | None
    min_ec_bits: int | None
    key_requirement: str
    forbidden_hashes: frozenset[str] | None
    signature_requirement: str
    min_dh_bits: int | None
    min_dh_ec_bits: int | None
    dh_requirement: str


_PCI_STRONG = "PCI DSS v4.0 req. 4.2.1: strong cryptography"
_NIST = "NIST SP 800-52r2"
_MOZ_I = "Mozilla Server Side TLS 5.7 intermediate"
_MOZ_M = "Mozilla Server Side TLS 5.7 modern"

PROFILES: Final[dict[str, Profile]] = {
    profile.name: profile
    for profile in (
        Profile(
            name="pci-dss-4",
            title="PCI DSS v4.0",
            min_version="1.2",
            version_requirement=f"{_PCI_STRONG}: only secure protocol versions, no fallback "
            "to SSL or early TLS (Appendix A2)",
            forbidden_ciphers=_BASELINE_CIPHERS,
            cipher_requirement=f"{_PCI_STRONG}: no insecure algorithms (NULL, export, "
            "anonymous, RC4, DES/3DES, MD5)",
            min_rsa_bits=2048,
            min_dsa_bits=2048,
            min_ec_bits=224,
            key_requirement=f"{_PCI_STRONG}: at least 112-bit key strength (Glossary: RSA "
            "2048, DSA 2048, ECC 224 bits)",
            forbidden_hashes=frozenset({"md2", "md4", "md5", "sha1"}),
            signature_requirement=f"{_PCI_STRONG}: only trusted certificates, no insecure "
            "signature algorithms (MD5, SHA-1)",
            min_dh_bits=2048,
            min_dh_ec_bits=224,
            dh_requirement=f"{_PCI_STRONG}: at least 112-bit key strength (Glossary: DH 2048, "
            "ECC 224 bits)",
        ),
        Profile(
            name="nist-800-52r2",
            title="NIST SP 800-52 Rev. 2",
            min_version="1.2",
            version_requirement=f"{_NIST} §3.1: servers shall support TLS 1.2 and should not "
            "use TLS 1.0/1.1 (SSL 2.0/3.0 shall not be used)",
            forbidden_ciphers=_BASELINE_CIPHERS | {"no_forward_secrecy"},
            cipher_requirement=f"{_NIST} §3.3.1: TLS 1.2 cipher suites with ephemeral "
            "(EC)DHE key exchange and approved encryption (RSA key transport only as an "
            "Appendix D transition)",
            min_rsa_bits=2048,
            min_dsa_bits=2048,
            min_ec_bits=224,
            key_requirement=f"{_NIST} §3.2.1 with SP 800-57 Pt. 1: server keys of at least "
            "112-bit strength (RSA/DSA 2048, ECDSA 224 bits)",
            forbidden_hashes=frozenset({"md2", "md4", "md5", "sha1"}),
            signature_requirement=f"{_NIST} §3.2.1 with SP 800-131A Rev. 2: certificates "
            "signed with SHA-224 or stronger (no MD5, no SHA-1)",
            min_dh_bits=2048,
            min_dh_ec_bits=224,
            dh_requirement=f"{_NIST} §3.3.1 with SP 800-57 Pt. 1: key exchange of at least "
            "112-bit strength (DH 2048, ECDH 224 bits)",
        ),
        Profile(
            name="mozilla-intermediate",
            title="Mozilla Server Side TLS 5.7, intermediate",
            min_version="1.2",
            version_requirement=f"{_MOZ_I}: TLS 1.2 and TLS 1.3 only",
            forbidden_ciphers=_AEAD_FS_ONLY,
            cipher_requirement=f"{_MOZ_I}: TLS 1.2 suites only ECDHE/DHE with AES-GCM or "
            "ChaCha20-Poly1305",
            min_rsa_bits=2048,
            min_dsa_bits=None,
            min_ec_bits=256,
            key_requirement=f"{_MOZ_I}: ECDSA (P-256, P-384) or RSA 2048-bit certificates",
            forbidden_hashes=_ALL_WEAK_HASHES,
            signature_requirement=f"{_MOZ_I}: certificates signed with "
            "sha256WithRSAEncryption or ecdsa-with-SHA256/384/512",
            min_dh_bits=2048,
            min_dh_ec_bits=256,
            dh_requirement=f"{_MOZ_I}: DH parameters of 2048 bits (ffdhe2048), curves "
            "X25519, prime256v1, secp384r1",
        ),
        Profile(
            name="mozilla-modern",
            title="Mozilla Server Side TLS 5.7, modern",
            min_version="1.3",
            version_requirement=f"{_MOZ_M}: TLS 1.3 only",
            forbidden_ciphers=_AEAD_FS_ONLY,
            cipher_requirement=f"{_MOZ_M}: TLS 1.3 cipher suites only (AES-GCM, "
            "ChaCha20-Poly1305)",
            min_rsa_bits=None,
            min_dsa_bits=None,
            min_ec_bits=256,
            key_requirement=f"{_MOZ_M}: ECDSA certificates on P-256 or P-384",
            forbidden_hashes=_ALL_WEAK_HASHES,
            signature_requirement=f"{_MOZ_M}: certificates signed with "
            "ecdsa-with-SHA256/384/512",
            min_dh_bits=None,
            min_dh_ec_bits=256,
            dh_requirement=f"{_MOZ_M}: key exchange on X25519, prime256v1 or secp384r1",
        ),
    )
}
"""Every profile by the name the policy's ``profile`` field takes."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The resolved thresholds of the protocol, cipher, key, signature and DH rules.

    ``requirements`` pairs a threshold's name (a field name of this class) with the
    requirement text of the profile it came from; :meth:`requirement` reads it.
    """

    min_version: str = "1.2"
    forbidden_ciphers: frozenset[str] = _BASELINE_CIPHERS
    min_rsa_bits: int = 2048
    min_dsa_bits: int = 2048
    min_ec_bits: int = 224
    # md2/md4 are weaker than md5: a default that let them through would be a trap.
    forbidden_hashes: frozenset[str] = frozenset({"md2", "md4", "md5", "sha1"})
    min_dh_bits: int = 2048
    min_dh_ec_bits: int = 224
    profile: str | None = None
    requirements: tuple[tuple[str, str], ...] = ()

    def requirement(self, threshold: str) -> str | None:
        """The profile requirement behind ``threshold`` (e.g. ``"min_version"``), or None
        when the value is the built-in default or was written in the policy."""
        for name, text in self.requirements:
            if name == threshold:
                return text
        return None


DEFAULTS: Final = Thresholds()
"""The built-in thresholds (no profile, nothing written in the policy)."""


_NO_PROFILE: Final = Profile("", "", None, "", None, "", None, None, None, "", None, "", None,
                            None, "")


def _frozen(values: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(values) if values is not None else None


def resolve(policy: Policy) -> Thresholds:
    """The thresholds ``policy`` means: explicit rule settings (non-None) over the policy's
    profile over :data:`DEFAULTS`, each remembering the requirement it came from."""
    p = PROFILES[policy.profile] if policy.profile is not None else _NO_PROFILE
    rules = policy.rules
    key, dh = rules.weak_key, rules.weak_dh
    reqs: list[tuple[str, str]] = []

    def pick(name: str, explicit: _T | None, profiled: _T | None, requirement: str) -> _T:
        if explicit is not None:
            return explicit
        if profiled is not None:
            reqs.append((name, requirement))
            return profiled
        default: _T = getattr(DEFAULTS, name)
        return default

    return Thresholds(
        min_version=pick("min_version", rules.deprecated_version.min_version, p.min_version,
                         p.version_requirement),
        forbidden_ciphers=pick("forbidden_ciphers", _frozen(rules.weak_cipher.forbid),
                               p.forbidden_ciphers, p.cipher_requirement),
        min_rsa_bits=pick("min_rsa_bits", key.min_rsa_bits, p.min_rsa_bits, p.key_requirement),
        min_dsa_bits=pick("min_dsa_bits", key.min_dsa_bits, p.min_dsa_bits, p.key_requirement),
        min_ec_bits=pick("min_ec_bits", key.min_ec_bits, p.min_ec_bits, p.key_requirement),
        forbidden_hashes=pick("forbidden_hashes",
                              _frozen(rules.weak_signature.forbidden_hashes),
                              p.forbidden_hashes, p.signature_requirement),
        min_dh_bits=pick("min_dh_bits", dh.min_dh_bits, p.min_dh_bits, p.dh_requirement),
        min_dh_ec_bits=pick("min_dh_ec_bits", dh.min_ec_bits, p.min_dh_ec_bits,
                            p.dh_requirement),
        profile=policy.profile,
        requirements=tuple(reqs),
    )
