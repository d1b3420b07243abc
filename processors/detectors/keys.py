"""The server's certificates: key strength and signature hash.

Two rules, one class each: ``cert.weak_key`` (every certificate of the server chain, root
included: a weak root key lets anyone forge the whole chain) and ``cert.weak_signature``
(every certificate whose signature a verifier relies on; a self-signed certificate's own
signature is not relied upon, since trusting it is a decision about the certificate itself,
which is why browsers never rejected SHA-1-signed roots). Thresholds come from
:func:`processors.profiles.resolve`.
"""

from __future__ import annotations

import functools
import re
from typing import ClassVar, Final

from processors.base import Finding
from processors.catalog import RULES
from processors.memo import BoundedMemo, event_server_key
from processors.policy import Policy
from processors.profiles import Thresholds, resolve
from schemas.events import HandshakeEvent
from schemas.x509 import ChainCertificate

# ECS-style key algorithm names (as the sensor writes them) → which minimum applies. EdDSA
# keys are elliptic-curve keys: Ed25519 counts as 256 bits, Ed448 as 456 (RFC 8410 sizes).
_KEY_MINIMUMS: Final = {
    "RSA": "min_rsa_bits",
    "RSA-PSS": "min_rsa_bits",
    "DSA": "min_dsa_bits",
    "EC": "min_ec_bits",
    "ED25519": "min_ec_bits",
    "ED448": "min_ec_bits",
}

# Signature algorithm OIDs → hash (RFC 3279 §2.2, RFC 4055 §5, RFC 5758 §3, and the old OIW
# OIDs 1.3.14.3.2.x that early certificates carry). RSASSA-PSS names its hash in parameters
# the event does not carry: not judged.
_SIGNATURE_OID_HASH: Final = {
    "1.2.840.113549.1.1.2": "md2", "1.2.840.113549.1.1.3": "md4",
    "1.2.840.113549.1.1.4": "md5", "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224", "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384", "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.10045.4.1": "sha1", "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.10040.4.3": "sha1", "2.16.840.1.101.3.4.3.1": "sha224",
    "2.16.840.1.101.3.4.3.2": "sha256",
    "1.3.14.3.2.3": "md5", "1.3.14.3.2.13": "sha1", "1.3.14.3.2.27": "sha1",
    "1.3.14.3.2.29": "sha1",
}  # fmt: skip
_HASH_IN_NAME: Final = re.compile(r"(md2|md4|md5|sha-?1|sha-?224|sha-?256|sha-?384|sha-?512)"
                                  r"(?![0-9])", re.IGNORECASE)


def signature_hash(name: str | None, oid: str | None = None) -> str | None:
    """The hash of a certificate signature (``md5``, ``sha1``, ``sha256``...) from its OID or,
    failing that, its name (``sha1WithRSAEncryption``, ``ecdsa-with-SHA1``, ``dsaWithSHA1``);
    None when neither tells (RSASSA-PSS, Ed25519, unknown)."""
    if oid is not None and oid in _SIGNATURE_OID_HASH:
        return _SIGNATURE_OID_HASH[oid]
    if name is None:
        return None
    if name in _SIGNATURE_OID_HASH:  # the sensor writes the dotted OID for unknown names
        return _SIGNATURE_OID_HASH[name]
    match = _HASH_IN_NAME.search(name)
    return match.group(1).lower().replace("-", "") if match else None


# Pure and called for every certificate of every handshake with a few distinct arguments.
_signature_hash = functools.lru_cache(maxsize=1024)(signature_hash)

_UNSEEN: Final = "\x00unseen"
_UNSEEN_LIMIT: Final[tuple[int, str | None]] = (-1, _UNSEEN)
"""The memos' "not memoised yet" (None is a memoised value), told apart by identity."""


def _describe(cert: ChainCertificate, position: int) -> str:
    names = cert.x509.subject.common_name if cert.x509 and cert.x509.subject else []
    return f"certificate {position} ({names[-1]})" if names else f"certificate {position}"


def _identity(event: HandshakeEvent, cert: ChainCertificate) -> tuple[str, ...]:
    return (event_server_key(event), str(event.destination.port), cert.hash.sha256)


class WeakKey:
    """``cert.weak_key``: a chain certificate's public key is below its minimum size."""

    rules: ClassVar[tuple[str, ...]] = ("cert.weak_key",)

    def __init__(self, policy: Policy) -> None:
        self.thresholds: Thresholds = resolve(policy)
        self._enabled = policy.rules.enabled(self.rules[0])
        self._minimums: BoundedMemo[str, tuple[int, str | None] | None] = BoundedMemo(256)

    def _minimum(self, algorithm: str) -> tuple[int, str | None] | None:
        # Memoised per algorithm name (a handful): the thresholds are frozen.
        if algorithm in self._minimums:
            return self._minimums[algorithm]
        threshold = _KEY_MINIMUMS.get(algorithm.upper())
        if threshold is None:
            return self._minimums.put(algorithm, None)
        minimum: int = getattr(self.thresholds, threshold)
        return self._minimums.put(algorithm, (minimum, self.thresholds.requirement(threshold)))

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """One finding per server-chain certificate whose key is too small."""
        if not self._enabled:
            return []
        rule = self.rules[0]
        findings: list[Finding] = []
        minimums = self._minimums
        for position, cert in enumerate(event.certwatch.tls.server_chain):
            x509 = cert.x509
            if x509 is None:
                continue
            algorithm, size = x509.public_key_algorithm, x509.public_key_size
            if algorithm is None or size is None:
                continue
            # ``self._minimum(algorithm)``, its memo hit inlined (hot path: every certificate).
            limit = minimums.get(algorithm, _UNSEEN_LIMIT)
            if limit is _UNSEEN_LIMIT:
                limit = self._minimum(algorithm)
            if limit is None or size >= limit[0]:
                continue
            minimum, requirement = limit
            curve = f" on {x509.public_key_curve}" if x509.public_key_curve else ""
            findings.append(Finding(
                rule=rule,
                severity=RULES[rule].severity,
                message=f"{event_server_key(event)}: {_describe(cert, position)} has a "
                        f"{x509.public_key_size}-bit {x509.public_key_algorithm} key{curve}, "
                        f"below the minimum of {minimum} bits",
                identity=_identity(event, cert),
                certificate_position=position,
                requirement=requirement,
                details={"certificate_sha256": cert.hash.sha256,
                         "public_key_algorithm": x509.public_key_algorithm,
                         "public_key_size": x509.public_key_size,
                         "public_key_curve": x509.public_key_curve,
                         "min_bits": minimum},
            ))
        return findings


class WeakSignature:
    """``cert.weak_signature``: a chain certificate is signed with a forbidden hash."""

    rules: ClassVar[tuple[str, ...]] = ("cert.weak_signature",)

    def __init__(self, policy: Policy) -> None:
        thresholds = resolve(policy)
        self.forbidden = thresholds.forbidden_hashes
        self._requirement = thresholds.requirement("forbidden_hashes")
        self._enabled = policy.rules.enabled(self.rules[0])
        # (signature name, OID) -> its hash when forbidden, else None: a handful of distinct
        # pairs, judged on every certificate of every handshake (bounded, emptied when full).
        self._forbidden_of: BoundedMemo[tuple[str | None, str | None], str | None] = (
            BoundedMemo(1024))

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """One finding per relied-upon certificate signed with a forbidden hash."""
        if not self._enabled:
            return []
        rule = self.rules[0]
        findings: list[Finding] = []
        forbidden_of = self._forbidden_of
        for position, cert in enumerate(event.certwatch.tls.server_chain):
            extra, x509 = cert.certwatch, cert.x509
            if extra.self_signed or x509 is None:
                continue
            algorithm = x509.signature_algorithm
            pair = (algorithm, extra.signature_algorithm_oid)
            digest = forbidden_of.get(pair, _UNSEEN)
            if digest is _UNSEEN:
                found = _signature_hash(*pair)
                digest = forbidden_of.put(pair, found if found in self.forbidden else None)
            if digest is None:
                continue
            findings.append(Finding(
                rule=rule,
                severity=RULES[rule].severity,
                message=f"{event_server_key(event)}: {_describe(cert, position)} is signed "
                        f"with {algorithm} ({digest.upper()})",
                identity=_identity(event, cert),
                certificate_position=position,
                requirement=self._requirement,
                details={"certificate_sha256": cert.hash.sha256,
                         "signature_algorithm": algorithm, "hash": digest,
                         "forbidden_hashes": sorted(self.forbidden)},
            ))
        return findings
