"""The processor: every enabled detector over each handshake event, then one shared
suppression step, then alerts. Sans-IO: events in, alerts out; the bus is someone else's.

Traffic statistics (``certwatch.traffic.stats``) go to :meth:`Processor.process_stats`: to
the detectors that have an ``inspect_stats`` (the byte rate of ``traffic.spike``), through
the same suppression step; their alerts carry the endpoint and the interval, and no
``source`` or ``tls`` (a statistic has neither)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from processors.alerts import ALERT_DATASET, build_alert, identifier_of
from processors.base import Detector, Finding, Pending
from processors.catalog import RULES
from processors.memo import event_server_key
from processors.policy import Policy
from processors.suppression import Suppressor, alert_id, window_at
from schemas.alerts import SEVERITY_SCORES, AlertDetail, AlertEvent, AlertExtension, Rule
from schemas.base import EventFields, Network
from schemas.events import HandshakeEvent, TrafficStatsEvent
from schemas.topics import server_key

log = logging.getLogger("certwatch.processor")

DetectorFactory = Callable[[Policy], Detector]
Candidate = Finding | Pending


@dataclass(slots=True)
class ProcessorStats:
    events: int = 0
    stats_events: int = 0
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
        # The hot path's lookups, resolved once (the policy is frozen): each detector's
        # bound ``inspect``, and per rule whether it is enabled and its suppression window.
        # A detector that says it is idle (``idle`` true: e.g. pins with no pin configured)
        # returns nothing for any event under this policy, so it is not called at all. A
        # detector with ``candidates`` (base.DeferringDetector) is asked through it: its
        # repeated findings come as Pending and are built only if they alert.
        self._inspectors: list[tuple[str, Callable[[HandshakeEvent], Sequence[Candidate]]]] = [
            (name, getattr(detector, "candidates", detector.inspect))
            for name, detector in self.detectors.items()
            if not getattr(detector, "idle", False)]
        self._stats_inspectors: list[Callable[[TrafficStatsEvent], Sequence[Finding]]] = [
            inspect for detector in self.detectors.values()
            if (inspect := getattr(detector, "inspect_stats", None)) is not None]
        self._enabled: dict[str, bool] = {}
        self._windows: dict[str, float] = {}  # rule -> suppression window in seconds

    def process(self, event: HandshakeEvent) -> list[AlertEvent]:
        """The alerts this handshake raises, already deduplicated."""
        self.stats.events += 1
        findings = self._findings(event)
        if not findings:
            return []
        alerts = []
        for finding in findings:
            alert = self._admit(finding, event)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def process_stats(self, event: TrafficStatsEvent) -> list[AlertEvent]:
        """The alerts this interval's traffic statistics raise, already deduplicated."""
        self.stats.stats_events += 1
        alerts = []
        for inspect in self._stats_inspectors:
            for finding in inspect(event):
                if not self._rule_enabled(finding.rule):
                    continue
                identifier = identifier_of(finding)
                window = window_at(event.timestamp, self._window_of(finding.rule))
                admitted, held = self.suppressor.admit(identifier, window)
                if not admitted:
                    self.stats.suppressed += 1
                    continue
                key = server_key(None, event.destination.ip, event.destination.port)
                self.stats.alerts[finding.rule] += 1
                self.stats.alerts_by_server[key] += 1
                alerts.append(_stats_alert(finding, event, key, alert_id(identifier, window),
                                           self.policy.profile, held))
        return alerts

    def _window_of(self, rule: str) -> float:
        seconds = self._windows.get(rule)
        if seconds is None:
            seconds = self._windows[rule] = self.policy.suppression(rule).total_seconds()
        return seconds

    def _rule_enabled(self, rule: str) -> bool:
        enabled = self._enabled.get(rule)
        if enabled is None:
            # Unknown rules raise KeyError here, as they did uncached.
            enabled = self._enabled[rule] = self.policy.rules.enabled(rule)
        return enabled

    def _findings(self, event: HandshakeEvent) -> list[Candidate]:
        findings: list[Candidate] = []
        for name, inspect in self._inspectors:
            try:
                found = inspect(event)
            except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as error:
                # A detector bug must not stop the stream for every other rule: counted,
                # logged once per detector, the event goes on to the others.
                if not self.stats.detector_errors[name]:
                    log.exception("detector %s failed on event %s: %s", name, event.event.id,
                                  error)
                self.stats.detector_errors[name] += 1
                continue
            if found:
                enabled = self._enabled
                for finding in found:
                    on = enabled.get(finding.rule)
                    if on is None:
                        on = self._rule_enabled(finding.rule)
                    if on:
                        findings.append(finding)
        return findings

    def _admit(self, candidate: Candidate, event: HandshakeEvent) -> AlertEvent | None:
        # Suppression needs only the rule, the identifier and the time: a Pending finding is
        # built only once it is known to alert (most repeats of a finding are suppressed).
        if isinstance(candidate, Pending):
            identifier = candidate.identifier
        else:
            identifier = identifier_of(candidate)
        rule = candidate.rule
        seconds = self._windows.get(rule)
        if seconds is None:
            seconds = self._windows[rule] = self.policy.suppression(rule).total_seconds()
        window = window_at(event.timestamp, seconds)  # event_time(event), inlined
        admitted, held = self.suppressor.admit(identifier, window)
        if not admitted:
            self.stats.suppressed += 1
            return None
        finding = candidate.build() if isinstance(candidate, Pending) else candidate
        self.stats.alerts[finding.rule] += 1
        self.stats.alerts_by_server[event_server_key(event)] += 1
        return build_alert(finding, event, alert_id=alert_id(identifier, window),
                           profile=self.policy.profile, suppressed_since_last=held)


def _stats_alert(finding: Finding, event: TrafficStatsEvent, key: str, alert_event_id: str,
                 profile: str | None, held: int) -> AlertEvent:
    """The alert of a finding on traffic statistics: the endpoint, the interval, the rule."""
    info = RULES[finding.rule]
    severity = finding.severity.value
    return AlertEvent(
        timestamp=event.timestamp,
        event=EventFields(
            id=alert_event_id, kind="alert", category=["network", "intrusion_detection"],
            type=["info"], dataset=ALERT_DATASET, severity=SEVERITY_SCORES[severity],
            start=event.event.start, end=event.event.end,
        ),
        observer=event.observer,
        rule=Rule(id=info.id, name=info.name, description=info.description,
                  category=info.category),
        message=finding.message,
        destination=event.destination,
        network=Network(transport=event.network.transport, type=event.network.type),
        certwatch=AlertExtension(alert=AlertDetail(
            identifier=identifier_of(finding), severity=severity, profile=profile,
            requirement=finding.requirement, server_key=key,
            handshake_event_id=event.event.id, details=dict(finding.details),
            suppressed_since_last=held,
        )),
    )


def _rules_of(factory: DetectorFactory) -> tuple[str, ...]:
    rules: tuple[str, ...] = getattr(factory, "rules", ())
    return rules
