"""``cert.untrusted_chain``: the server's chain does not verify to the configured trust store.

Path validation is ``cryptography.x509.verification`` (RFC 5280 section 6 with the CA/Browser
Forum web PKI profile: SHA-1 signatures and RSA keys under 2048 bits do not verify, as in
browsers today). Its server verifier insists on checking a name, and the name is a separate
rule (``cert.hostname_mismatch``), so the chain is verified with the client verifier and
extension policies rewritten for server certificates:

* the leaf's subjectAltName may be absent and is not matched against anything;
* an extendedKeyUsage, where present (leaf or CA), must allow ``serverAuth`` (or
  ``anyExtendedKeyUsage``): RFC 5280 4.2.1.12, CA/B Forum BR 7.1.2;
* everything else (validity at the event's time, signatures, basicConstraints, keyUsage,
  path length, name constraints) is the library's web PKI default.

The roots are ``policy.trust``: the system bundle (certifi's when ``certifi`` is importable,
else the OS bundle) when ``system`` is true, plus every certificate of every ``ca_files``
PEM file. A leaf that is itself one of the roots (a private self-signed server certificate
added to ``ca_files``) is trusted as such.

Time is the event's own time, so a 2013 capture is judged as of 2013. Verdicts are cached by
(chain fingerprint, UTC day of the event) in a bounded LRU: within one day the first event's
time stands for the day. TLS 1.3 hides the chain: such events yield nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import importlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import ClassVar, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from processors.base import DetailValue, Finding, Pending
from processors.catalog import RULES, Severity
from processors.memo import BoundedMemo, event_server_key, microseconds
from processors.policy import Policy, Trust
from schemas.events import HandshakeEvent

RULE = "cert.untrusted_chain"
_DAY_US: Final = 86_400_000_000

OS_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/cert.pem"),  # macOS, BSDs
)
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TrustStoreError(ValueError):
    """A ``trust.ca_files`` entry cannot be read or holds no certificate (a policy error,
    raised when the detector is built so the operator sees it at start-up)."""


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The roots a chain may verify to. ``sha256`` holds each root's DER fingerprint;
    ``skipped`` counts PEM blocks of the system bundle that ``cryptography`` refused."""

    certificates: tuple[x509.Certificate, ...]
    sha256: frozenset[str]
    sources: tuple[str, ...]
    skipped: int = 0


def system_bundles() -> tuple[Path, ...]:
    """certifi's bundle (when importable) and the first OS bundle present.

    Both, because each lags the other: certifi follows Mozilla's removals promptly (it no
    longer holds roots that were trusted when an older capture was made), while the OS
    bundle keeps them longer; a root in either is a root the system trusts."""
    bundles: list[Path] = []
    try:
        certifi = importlib.import_module("certifi")
    except ImportError:
        certifi = None
    if certifi is not None:
        bundles.append(Path(str(certifi.where())))
    os_bundle = next((path for path in OS_BUNDLES if path.is_file()), None)
    if os_bundle is not None:
        bundles.append(os_bundle)
    return tuple(bundles)


def system_bundle() -> Path | None:
    """The first system bundle, or None when there is none."""
    bundles = system_bundles()
    return bundles[0] if bundles else None


def _pem_certificates(data: bytes) -> tuple[list[x509.Certificate], int]:
    """Every certificate of a PEM file, loaded one by one so one bad block costs only
    itself; returns (certificates, number of blocks refused)."""
    loaded: list[x509.Certificate] = []
    refused = 0
    for block in _PEM_BLOCK.findall(data):
        try:
            with _quiet():
                loaded.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            refused += 1
    return loaded, refused


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """cryptography warns (deprecation) on non-positive serial numbers, which real roots
    and real server certificates have; the warning tells an operator nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load_anchors(trust: Trust) -> TrustAnchors:
    """The roots ``trust`` describes, cached per configuration and file modification time,
    so detectors share one parse and an edited ``ca_files`` entry is read again.

    Raises :class:`TrustStoreError` for a ``ca_files`` entry that cannot be read or holds no
    certificate. A missing system bundle gives no system roots (``sources`` tells)."""
    files = tuple(str(path) for path in trust.ca_files)
    return _load_anchors(trust.system, files, tuple(_mtime(name) for name in files))


def _mtime(name: str) -> int:
    try:
        return Path(name).stat().st_mtime_ns
    except OSError:
        return -1  # reported by _load_anchors when it tries to read the file


@functools.lru_cache(maxsize=8)
def _load_anchors(system: bool, ca_files: tuple[str, ...], _mtimes: tuple[int, ...]
                  ) -> TrustAnchors:
    certificates: list[x509.Certificate] = []
    sources: list[str] = []
    skipped = 0
    seen: set[bytes] = set()
    for bundle in system_bundles() if system else ():
        try:
            loaded, refused = _pem_certificates(bundle.read_bytes())
        except OSError as exc:
            raise TrustStoreError(f"trust.system: cannot read {bundle}: {exc}") from exc
        skipped += refused
        for certificate in loaded:
            fingerprint = certificate.fingerprint(hashes.SHA256())
            if fingerprint not in seen:
                seen.add(fingerprint)
                certificates.append(certificate)
        sources.append(str(bundle))
    for name in ca_files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise TrustStoreError(f"trust.ca_files: cannot read {name}: {exc}") from exc
        loaded, refused = _pem_certificates(data)
        if not loaded or refused:
            raise TrustStoreError(f"trust.ca_files: {name} holds {len(loaded)} readable "
                                  f"certificate(s) and {refused} unreadable PEM block(s)")
        certificates += loaded
        sources.append(name)
    fingerprints = frozenset(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
                             for cert in certificates)
    return TrustAnchors(tuple(certificates), fingerprints, tuple(sources), skipped)


# -- verification --------------------------------------------------------------------------

_SERVER_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)


def _allows_server_auth(_policy: object, _cert: x509.Certificate,
                        eku: x509.ExtendedKeyUsage | None) -> None:
    """Extension validator: an EKU, where present, must allow TLS server authentication."""
    if eku is not None and not any(usage in eku for usage in _SERVER_USAGES):
        raise ValueError("extendedKeyUsage does not allow serverAuth")


def _server_policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """(CA policy, end-entity policy): web PKI defaults minus the name, EKU = serverAuth."""
    ee = (ExtensionPolicy.webpki_defaults_ee()
          .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
          .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _allows_server_auth))
    ca = (ExtensionPolicy.webpki_defaults_ca()
          .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _allows_server_auth))
    return ca, ee


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """The outcome of verifying one chain. ``reason`` is a short stable phrase (see
    :func:`_reason`), ``error`` the verifier's own words; both None when trusted."""

    trusted: bool
    reason: str | None = None
    error: str | None = None


TRUSTED = ChainVerdict(True)
_PARSE_ERRORS = (ValueError, x509.InvalidVersion)  # InvalidVersion is no ValueError

# cryptography's VerificationError texts are not a stable API: each known phrase is mapped
# to our own reason, anything else is reported as a generic failure with the text attached.
_REASONS = (
    ("not valid at validation time", "a certificate of the chain is expired or not yet valid"),
    ("signature does not match", "a signature does not verify (forged or wrong issuer)"),
    ("forbidden signature algorithm", "a signature algorithm the web PKI forbids (e.g. SHA-1)"),
    ("unsupported signature algorithm", "a signature algorithm the web PKI forbids "
     "(e.g. SHA-1)"),
    ("rsa key is too weak", "an RSA key shorter than 2048 bits"),
    ("rsa modulus", "an RSA key shorter than 2048 bits"),
    ("missing required extension", "a certificate lacks an extension the web PKI requires"),
    ("must be an x509v3", "a certificate is not X.509 version 3"),
    ("no issuer", "unknown issuer (no path to a trusted root)"),
    ("candidates exhausted", "unknown issuer (no path to a trusted root)"),
    ("extendedkeyusage", "a certificate not valid for TLS server authentication (EKU)"),
    ("basicconstraints", "a certificate's basicConstraints forbid this chain"),
    ("keyusage", "a certificate's keyUsage forbids this chain"),
)


def _reason(error: str) -> str:
    lowered = error.lower()
    return next((reason for phrase, reason in _REASONS if phrase in lowered),
                "the chain does not verify")


class ChainVerifier:
    """Verifies DER chains (leaf first) against ``anchors`` at a given time, with a bounded
    LRU of verdicts keyed by (chain fingerprint, UTC day). ``hits``, ``misses`` and
    ``evictions`` count cache use; ``max_entries`` is the bound."""

    def __init__(self, anchors: TrustAnchors, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.anchors = anchors
        self.max_entries = max_entries
        self.hits = self.misses = self.evictions = 0
        self._store = Store(list(anchors.certificates)) if anchors.certificates else None
        self._ca_policy, self._ee_policy = _server_policies()
        self._cache: OrderedDict[tuple[tuple[str, ...], int], ChainVerdict] = OrderedDict()

    @staticmethod
    def _key(fingerprints: Sequence[str], when: datetime) -> tuple[tuple[str, ...], int]:
        # The UTC day as a day number since the epoch (floor of the event's microseconds:
        # the same day as ``astimezone(UTC).date()``), from the per-event memo that the
        # time-based detectors share, so it costs one division here.
        return tuple(fingerprints), microseconds(when) // _DAY_US

    def lookup(self, fingerprints: Sequence[str], when: datetime) -> ChainVerdict | None:
        """The cached verdict for the chain with these SHA-256 fingerprints (hex, leaf
        first) on the UTC day of ``when``, or None (counted as neither hit nor miss)."""
        key = (tuple(fingerprints), microseconds(when) // _DAY_US)  # self._key, inlined
        verdict = self._cache.get(key)
        if verdict is not None:
            self.hits += 1
            self._cache.move_to_end(key)
        return verdict

    def verify(self, chain: Sequence[bytes], when: datetime,
               fingerprints: Sequence[str] | None = None) -> ChainVerdict:
        """The verdict for ``chain`` (DER, leaf first, at least one) at time ``when``, from
        the cache when this chain was verified on the same UTC day. ``fingerprints`` (the
        SHA-256 hex of each DER, as the event carries them) saves hashing the chain."""
        if fingerprints is None:
            fingerprints = [hashlib.sha256(der).hexdigest() for der in chain]
        cached = self.lookup(fingerprints, when)
        if cached is not None:
            return cached
        self.misses += 1
        verdict = self._verify(chain, when)
        self._cache[self._key(fingerprints, when)] = verdict
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
            self.evictions += 1
        return verdict

    def _verify(self, chain: Sequence[bytes], when: datetime) -> ChainVerdict:
        if hashlib.sha256(chain[0]).hexdigest() in self.anchors.sha256:
            return TRUSTED  # the leaf itself is a configured root
        try:
            with _quiet():
                leaf = x509.load_der_x509_certificate(chain[0])
        except _PARSE_ERRORS as exc:
            return ChainVerdict(False, "the leaf certificate cannot be parsed", str(exc))
        if self._store is None:
            return ChainVerdict(False, "the trust store is empty", None)
        intermediates = []
        for der in chain[1:]:
            try:
                with _quiet():
                    intermediates.append(x509.load_der_x509_certificate(der))
            except _PARSE_ERRORS:
                continue  # an unreadable extra certificate cannot be on the path anyway
        verifier = (PolicyBuilder().store(self._store).time(when)
                    .extension_policies(ca_policy=self._ca_policy, ee_policy=self._ee_policy)
                    .build_client_verifier())
        try:
            with _quiet():
                verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            return ChainVerdict(False, _reason(str(exc)), str(exc))
        except _PARSE_ERRORS as exc:
            # cryptography parses lazily: a malformed field (names, extensions) of a chain
            # certificate surfaces only here. Such a chain cannot be shown to be valid.
            return ChainVerdict(False, "a certificate of the chain cannot be parsed", str(exc))
        except x509.UnsupportedGeneralNameType as exc:
            # Raised when a valid path exists but holds a name type the library cannot
            # check against name constraints: it is not proven valid, so not trusted.
            return ChainVerdict(False, "a name type the verifier cannot check", str(exc))
        return TRUSTED


def chain_der(event: HandshakeEvent) -> list[bytes] | None:
    """The server chain's DER (leaf first) carried in the event, or None when the event has
    none (TLS 1.3, resumption, a sensor configured without DER) or it is not base64."""
    encoded = event.tls.server.certificate_chain
    if not encoded:
        return None
    try:
        return [base64.b64decode(item, validate=True) for item in encoded]
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class _Parts:
    """Everything of an untrusted-chain finding but its time, shared by the handshakes of a
    server that repeat it: ``identifier`` is ``identifier_of`` the finding."""

    message: str
    identity: tuple[str, ...]
    fixed: dict[str, DetailValue]
    identifier: str


class UntrustedChain:
    """``cert.untrusted_chain`` (see the module docstring). ``undecodable`` counts events
    whose chain DER could not be decoded (they are not judged)."""

    rules: ClassVar[tuple[str, ...]] = (RULE,)

    def __init__(self, policy: Policy, cache_size: int = 4096) -> None:
        self.enabled = policy.rules.enabled(RULE)
        self.undecodable = 0
        self.verifier = (ChainVerifier(load_anchors(policy.trust), cache_size)
                         if self.enabled else None)
        self._severity = RULES[RULE].severity
        self._parts: BoundedMemo[tuple[str, int, str, str | None, str | None, int], _Parts] = (
            BoundedMemo(cache_size))

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """The finding when the server chain does not verify (at most one)."""
        return [candidate.build() for candidate in self.candidates(event)]

    def candidates(self, event: HandshakeEvent) -> list[Pending]:
        """``inspect``'s finding, unbuilt (``processors.base.Pending``): a server with a bad
        chain repeats it on every handshake, and most of those are suppressed."""
        verifier = self.verifier
        if verifier is None:
            return []
        encoded = event.tls.server.certificate_chain
        if not encoded:
            return []
        when = event.timestamp  # event_time(event), inlined (hot path)
        # The sensor fingerprints each certificate already: a cached verdict needs neither
        # the DER (base64-decoding it) nor hashing it, only the event's own fingerprints.
        described = event.certwatch.tls.server_chain
        fingerprints: tuple[str, ...] | None = (
            tuple([cert.hash.sha256.lower() for cert in described])
            if len(described) == len(encoded) else None)
        verdict: ChainVerdict | None = None
        if fingerprints:
            # ``verifier.lookup`` inlined: same key, same hit count, same LRU order.
            lookup_key = (fingerprints, microseconds(when) // _DAY_US)
            cache = verifier._cache
            verdict = cache.get(lookup_key)
            if verdict is not None:
                verifier.hits += 1
                cache.move_to_end(lookup_key)
        if verdict is None:
            chain = chain_der(event)
            if chain is None:
                self.undecodable += 1
                return []
            verdict = verifier.verify(chain, when, fingerprints)
            if verdict.trusted:
                return []
            leaf = hashlib.sha256(chain[0]).hexdigest()
        elif verdict.trusted:
            return []
        else:
            leaf = fingerprints[0] if fingerprints else described[0].hash.sha256.lower()
        server, port = event_server_key(event), event.destination.port
        key = (server, port, leaf, verdict.reason, verdict.error, len(encoded))
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts.put(key, self._parts_of(server, port, leaf, verdict,
                                                        len(encoded)))
        # Everything but the time is memoised; the time is formatted, and the finding
        # built, only if the engine finds it is not suppressed. ``_pending`` is
        # ``Pending(...)`` without the NamedTuple's Python-level ``__new__``, and the builder
        # a C-level partial: one is made per repeated handshake.
        return [_pending(Pending, (RULE, parts.identifier,
                                   partial(_build, self._severity, parts, when)))]

    @staticmethod
    def _parts_of(server: str, port: int, leaf: str, verdict: ChainVerdict, length: int
                  ) -> _Parts:
        identity = (server, str(port), leaf)
        return _Parts(
            f"{server} (port {port}): the certificate chain does not verify to the trust "
            f"store: {verdict.reason}",
            identity,
            {"reason": verdict.reason, "error": verdict.error, "chain_length": length,
             "leaf_sha256": leaf},
            "|".join((RULE, *identity)),
        )


def _build(severity: Severity, parts: _Parts, when: datetime) -> Finding:
    """One untrusted-chain finding from its memoised parts and the event's time."""
    return Finding(rule=RULE, severity=severity, message=parts.message,
                   identity=parts.identity, certificate_position=0,
                   details=_Details(parts.fixed, when))


# ``Pending(rule, identifier, build)`` is ``tuple.__new__(Pending, (rule, identifier, build))``
# (what the NamedTuple's generated ``__new__`` runs); called directly on the hot path.
_pending: Final[Callable[[type[Pending], tuple[str, str, Callable[[], Finding]]], Pending]] = (
    tuple.__new__)


class _Details(Mapping[str, DetailValue]):
    """The details of an untrusted-chain finding: ``fixed`` (shared, never modified) then
    ``judged_at``, the event time in ISO 8601, formatted on first access."""

    __slots__ = ("_fixed", "_full", "_when")

    def __init__(self, fixed: Mapping[str, DetailValue], when: datetime) -> None:
        self._fixed = fixed
        self._when = when
        self._full: dict[str, DetailValue] | None = None

    def _items(self) -> dict[str, DetailValue]:
        if self._full is None:
            self._full = {**self._fixed, "judged_at": self._when.isoformat()}
        return self._full

    def __getitem__(self, key: str) -> DetailValue:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._fixed) + 1

    def __repr__(self) -> str:
        return repr(self._items())
