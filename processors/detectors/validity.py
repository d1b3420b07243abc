"""``cert.expired``, ``cert.not_yet_valid``, ``cert.expiring_soon``: validity period
(RFC 5280 section 4.1.2.5) against the event's own time (capture time in a replay).

* Every certificate the server sent is checked for ``expired`` / ``not_yet_valid``: the leaf
  (``certificate_position`` 0) and each chain certificate (its position), because an expired
  intermediate breaks the chain for every client just as an expired leaf does. Each is its
  own finding, identified by that certificate's SHA-256.
* ``expiring_soon`` is about the leaf only (the certificate the operator renews): it fires
  when the leaf is currently valid and fewer than ``policy.rules.expiring_soon.days`` days
  remain. Intermediates are issued by CAs on their own schedule; an expired one is reported.
* A certificate whose dates could not be read is not judged. TLS 1.3 hides the chain, so
  such events yield nothing.

RFC 5280 4.1.2.5 makes both bounds inclusive: a certificate is valid at ``not_after`` itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

from processors.base import DetailValue, Finding, event_time
from processors.catalog import RULES
from processors.memo import event_server_key
from processors.policy import Policy
from schemas.events import HandshakeEvent
from schemas.x509 import ChainCertificate

EXPIRED = "cert.expired"
NOT_YET_VALID = "cert.not_yet_valid"
EXPIRING_SOON = "cert.expiring_soon"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _describe(position: int) -> str:
    return "the leaf certificate" if position == 0 else f"the chain certificate #{position}"


class Validity:
    """The three validity rules (see the module docstring)."""

    rules: ClassVar[tuple[str, ...]] = (EXPIRED, NOT_YET_VALID, EXPIRING_SOON)

    def __init__(self, policy: Policy) -> None:
        rules = policy.rules
        self.expired = rules.enabled(EXPIRED)
        self.not_yet_valid = rules.enabled(NOT_YET_VALID)
        self.expiring_soon = rules.expiring_soon.enabled
        self.soon = timedelta(days=rules.expiring_soon.days)

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        chain = event.certwatch.tls.server_chain
        if not chain:
            return []
        now = event_time(event)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        try:
            horizon: datetime | None = now + self.soon
        except OverflowError:  # an event dated near year 9999: the slow path judges it
            horizon = None
        findings: list[Finding] = []
        for position, cert in enumerate(chain):
            # The common case, a certificate valid now and beyond the expiring-soon horizon,
            # is settled by two comparisons, without building anything.
            x509 = cert.x509
            if x509 is None:
                continue
            not_before, not_after = x509.not_before, x509.not_after
            if (not_before is not None and not_after is not None
                    and not_before.tzinfo is not None and not_after.tzinfo is not None
                    and horizon is not None and not_before <= now and horizon <= not_after):
                continue
            finding = self._judge(cert, position, now, event_server_key(event),
                                  event.destination.port)
            if finding is not None:
                findings.append(finding)
        return findings

    def _judge(self, cert: ChainCertificate, position: int, now: datetime, server: str,
               port: int) -> Finding | None:
        x509 = cert.x509
        if x509 is None or x509.not_before is None or x509.not_after is None:
            return None
        not_before, not_after = _aware(x509.not_before), _aware(x509.not_after)
        what = _describe(position)
        if now > not_after:
            if not self.expired:
                return None
            days = (now - not_after).days
            return self._finding(EXPIRED, cert, position, server, port, now,
                                 f"{what} expired on {not_after:%Y-%m-%d} ({days} day(s) "
                                 "before the handshake)", days_expired=days)
        if now < not_before:
            if not self.not_yet_valid:
                return None
            days = (not_before - now).days
            return self._finding(NOT_YET_VALID, cert, position, server, port, now,
                                 f"{what} is not valid before {not_before:%Y-%m-%d} ({days} "
                                 "day(s) after the handshake)", days_until_valid=days)
        remaining = not_after - now
        if position != 0 or not self.expiring_soon or remaining >= self.soon:
            return None
        return self._finding(EXPIRING_SOON, cert, position, server, port, now,
                             f"{what} expires on {not_after:%Y-%m-%d}, {remaining.days} "
                             f"day(s) after the handshake (threshold {self.soon.days} days)",
                             days_remaining=remaining.days, threshold_days=self.soon.days)

    @staticmethod
    def _finding(rule: str, cert: ChainCertificate, position: int, server: str, port: int,
                 now: datetime, text: str, **extra: int) -> Finding:
        # Details are built only for a finding: most certificates are valid (hot path).
        x509 = cert.x509
        assert x509 is not None and x509.not_before is not None and x509.not_after is not None
        details: dict[str, DetailValue] = {
            "sha256": cert.hash.sha256,
            "not_before": _aware(x509.not_before).isoformat(),
            "not_after": _aware(x509.not_after).isoformat(),
            "checked_at": now.isoformat(),
            "subject": x509.subject.distinguished_name if x509.subject else None,
            **extra,
        }
        return Finding(rule, RULES[rule].severity, f"{server} (port {port}): {text}",
                       (server, str(port), cert.hash.sha256), position, details=details)
