"""From a detector's finding to the alert document the SIEM reads (schemas.alerts)."""

from __future__ import annotations

from processors.base import Finding, server_key_of
from processors.catalog import RULES
from schemas.alerts import (
    SEVERITY_SCORES,
    AlertCertificate,
    AlertDetail,
    AlertEvent,
    AlertExtension,
    Rule,
)
from schemas.base import EventFields
from schemas.events import HandshakeEvent

ALERT_DATASET = "certwatch.alerts"


def identifier_of(finding: Finding) -> str:
    """The finding's stable identifier: rule name plus what makes it the same finding."""
    return "|".join((finding.rule, *finding.identity))


def build_alert(
    finding: Finding,
    event: HandshakeEvent,
    *,
    alert_id: str,
    profile: str | None,
    suppressed_since_last: int = 0,
) -> AlertEvent:
    """The alert for ``finding`` on ``event``, carrying the handshake's context (source,
    destination, tls) so a SIEM analyst needs no join to understand it."""
    info = RULES[finding.rule]
    certificate = None
    chain = event.certwatch.tls.server_chain
    position = finding.certificate_position
    if position is not None and 0 <= position < len(chain):
        entry = chain[position]
        certificate = AlertCertificate(hash=entry.hash, x509=entry.x509, position=position)
    severity = finding.severity.value
    return AlertEvent(
        timestamp=event.timestamp,
        event=EventFields(
            id=alert_id,
            kind="alert",
            category=["network", "intrusion_detection"],
            type=["info"],
            dataset=ALERT_DATASET,
            severity=SEVERITY_SCORES[severity],
            start=event.event.start,
            end=event.event.end,
        ),
        observer=event.observer,
        rule=Rule(id=info.id, name=info.name, description=info.description,
                  category=info.category),
        message=finding.message,
        source=event.source,
        destination=event.destination,
        network=event.network,
        tls=event.tls.model_copy(update={
            "client": event.tls.client.model_copy(update={"certificate_chain": []}),
            "server": event.tls.server.model_copy(update={"certificate_chain": []}),
        }),
        certwatch=AlertExtension(
            alert=AlertDetail(
                identifier=identifier_of(finding),
                severity=severity,
                profile=profile,
                requirement=finding.requirement,
                server_key=server_key_of(event),
                handshake_event_id=event.event.id,
                details=dict(finding.details),
                suppressed_since_last=suppressed_since_last,
            ),
            certificate=certificate,
        ),
    )
