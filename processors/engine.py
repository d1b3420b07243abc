"""The processor: every enabled detector over each handshake event, then one shared
suppression step, then alerts. Sans-IO: events in, alerts out; the bus is someone else's."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from processors.alerts import build_alert, identifier_of
from processors.base import Detector, Finding, event_time, server_key_of
from processors.policy import Policy
from processors.suppression import Suppressor, alert_id, window_index
from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent

log = logging.getLogger("certwatch.processor")

DetectorFactory = Callable[[Policy], Detector]


@dataclass(slots=True)
class ProcessorStats:
    events: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    alerts_by_server: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    detector_errors: Counter[str] = field(default_factory=Counter)


class Processor:
    """Runs the detectors of ``registry`` whose rules the policy enables."""

    def __init__(self, policy: Policy, registry: Mapping[str, DetectorFactory]) -> None:
        self.policy = policy
        self.detectors: dict[str, Detector] = {
            name: factory(policy)
            for name, factory in registry.items()
            if any(policy.rules.enabled(rule) for rule in _rules_of(factory))
        }
        self.suppressor = Suppressor()
        self.stats = ProcessorStats()

    def process(self, event: HandshakeEvent) -> list[AlertEvent]:
        """The alerts this handshake raises, already deduplicated."""
        self.stats.events += 1
        alerts = []
        for finding in self._findings(event):
            alert = self._admit(finding, event)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _findings(self, event: HandshakeEvent) -> list[Finding]:
        findings: list[Finding] = []
        for name, detector in self.detectors.items():
            try:
                found = detector.inspect(event)
            except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as error:
                # A detector bug must not stop the stream for every other rule: counted,
                # logged once per detector, the event goes on to the others.
                if not self.stats.detector_errors[name]:
                    log.exception("detector %s failed on event %s: %s", name, event.event.id,
                                  error)
                self.stats.detector_errors[name] += 1
                continue
            findings.extend(f for f in found if self.policy.rules.enabled(f.rule))
        return findings

    def _admit(self, finding: Finding, event: HandshakeEvent) -> AlertEvent | None:
        identifier = identifier_of(finding)
        window = window_index(event_time(event), self.policy.suppression(finding.rule))
        admitted, held = self.suppressor.admit(identifier, window)
        if not admitted:
            self.stats.suppressed += 1
            return None
        self.stats.alerts[finding.rule] += 1
        self.stats.alerts_by_server[server_key_of(event)] += 1
        return build_alert(finding, event, alert_id=alert_id(identifier, window),
                           profile=self.policy.profile, suppressed_since_last=held)


def _rules_of(factory: DetectorFactory) -> tuple[str, ...]:
    rules: tuple[str, ...] = getattr(factory, "rules", ())
    return rules
