"""The rule catalogue: every alert rule's stable name, its meaning and its default severity.

The names are a contract with every SIEM that consumes ``certwatch.alerts`` (DESIGN.md, "Alert
rules"): they never change meaning. ``rule.id`` is derived from the name so it is stable too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum


class Severity(Enum):
    """Alert severity; ``event.severity`` carries the score (schemas.alerts.SEVERITY_SCORES)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class RuleInfo:
    name: str
    description: str
    category: str
    severity: Severity

    @property
    def id(self) -> str:
        """A short stable identifier derived from the name (``CW-`` + 8 hex digits)."""
        return "CW-" + hashlib.sha256(self.name.encode()).hexdigest()[:8].upper()


_RULES = (
    RuleInfo("cert.untrusted_chain", "The server's chain does not verify to the configured "
             "trust store.", "certificate", Severity.HIGH),
    RuleInfo("cert.self_signed", "The server's leaf certificate is self-signed.",
             "certificate", Severity.MEDIUM),
    RuleInfo("cert.expired", "The certificate was expired at the time of the handshake.",
             "certificate", Severity.HIGH),
    RuleInfo("cert.not_yet_valid", "The certificate was not yet valid at the time of the "
             "handshake.", "certificate", Severity.HIGH),
    RuleInfo("cert.expiring_soon", "The certificate expires within the configured number of "
             "days of the handshake.", "certificate", Severity.LOW),
    RuleInfo("cert.hostname_mismatch", "The server name the client asked for (SNI) is not "
             "covered by the leaf's subject alternative names or common name.",
             "certificate", Severity.HIGH),
    RuleInfo("cert.pin_mismatch", "A host pinned in the policy presented a certificate "
             "that matches none of its pins.", "certificate", Severity.CRITICAL),
    RuleInfo("cert.not_allowlisted", "Strict inventory: the leaf certificate is not in the "
             "allowlist.", "certificate", Severity.MEDIUM),
    RuleInfo("cert.changed", "A known server presented a certificate it has not presented "
             "before.", "certificate", Severity.LOW),
    RuleInfo("cert.weak_key", "A certificate's public key is weaker than the policy allows.",
             "certificate", Severity.MEDIUM),
    RuleInfo("cert.weak_signature", "A certificate is signed with a weak hash (MD5, SHA-1).",
             "certificate", Severity.MEDIUM),
    RuleInfo("tls.deprecated_version", "A deprecated protocol version was negotiated.",
             "protocol", Severity.MEDIUM),
    RuleInfo("tls.weak_cipher", "A weak cipher suite was negotiated.", "protocol",
             Severity.MEDIUM),
    RuleInfo("tls.weak_dh", "The ephemeral Diffie-Hellman group is weaker than the policy "
             "allows.", "protocol", Severity.MEDIUM),
    RuleInfo("traffic.spike", "Connections to a server far above its learned baseline.",
             "traffic", Severity.MEDIUM),
    RuleInfo("tls.handshake_failure_spike", "Failed or aborted handshakes to a server far "
             "above its learned baseline.", "traffic", Severity.MEDIUM),
    RuleInfo("traffic.unexpected_source", "A client outside the server's allowed networks, "
             "or (learned) from a network never seen for that server.", "traffic",
             Severity.MEDIUM),
)

RULES: dict[str, RuleInfo] = {rule.name: rule for rule in _RULES}
"""Every rule by its stable name."""
