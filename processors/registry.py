"""The explicit registry of detectors: one entry per concern, keyed by a short name.

Nothing registers itself on import; adding a detector means adding a line here. A detector
runs when at least one of its rules is enabled in the policy.
"""

from __future__ import annotations

from collections.abc import Mapping

from processors.detectors.changed import CertificateChanged
from processors.detectors.identity import HostnameMismatch, SelfSigned
from processors.detectors.keys import WeakKey, WeakSignature
from processors.detectors.pins import NotAllowlisted, PinMismatch
from processors.detectors.protocol import DeprecatedVersion, WeakCipher, WeakDh
from processors.detectors.sources import UnexpectedSourceDetector
from processors.detectors.spikes import HandshakeFailureSpikeDetector, TrafficSpikeDetector
from processors.detectors.trust import UntrustedChain
from processors.detectors.validity import Validity
from processors.engine import DetectorFactory

DETECTORS: Mapping[str, DetectorFactory] = {
    "trust": UntrustedChain,
    "self_signed": SelfSigned,
    "validity": Validity,
    "hostname": HostnameMismatch,
    "pins": PinMismatch,
    "allowlist": NotAllowlisted,
    "changed": CertificateChanged,
    "weak_key": WeakKey,
    "weak_signature": WeakSignature,
    "deprecated_version": DeprecatedVersion,
    "weak_cipher": WeakCipher,
    "weak_dh": WeakDh,
    "traffic_spike": TrafficSpikeDetector,
    "failure_spike": HandshakeFailureSpikeDetector,
    "unexpected_source": UnexpectedSourceDetector,
}

DETECTOR_RULES: frozenset[str] = frozenset(
    rule for factory in DETECTORS.values() for rule in getattr(factory, "rules", ())
)
"""Every rule some detector can emit; equals the catalogue (a test checks it)."""
