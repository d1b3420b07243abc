"""What every detector is: a small object that looks at one handshake event and returns
findings. Detectors judge; building, deduplicating and publishing alerts is done once, for
all of them, by ``processors.alerts`` and ``processors.suppression``.

A detector is constructed from the policy (``Detector(policy)``), keeps whatever per-server
state it needs (keys keep a server on one partition, so one processor owns that state), and
uses the event's own time (capture time in a replay) for anything time-based.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, NamedTuple, Protocol

from processors.catalog import Severity
from schemas.events import HandshakeEvent
from schemas.topics import server_key

DetailValue = str | int | float | bool | list[str] | None


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector judged wrong with one handshake.

    ``identity`` lists what makes two findings "the same" beyond the rule (the server key,
    port, a certificate fingerprint...): the alert identifier and the suppression key are
    built from it, so it must not contain anything that varies between repetitions of the
    same problem (no timestamps, no client ports).
    """

    rule: str
    severity: Severity
    message: str
    identity: tuple[str, ...]
    certificate_position: int | None = None
    """Index in the server chain of the certificate the finding is about (0 = leaf)."""
    requirement: str | None = None
    """The compliance-profile requirement broken, e.g. "PCI DSS 4.0 req. 4.2.1"."""
    details: Mapping[str, DetailValue] = field(default_factory=dict)


class Pending(NamedTuple):
    """A finding whose suppression the engine decides before it is built.

    A server with a bad certificate repeats the same finding on every handshake, and all but
    the first of a suppression window are dropped: building each one (message, details, the
    frozen record) would be wasted. ``identifier`` must equal ``identifier_of`` of the finding
    ``build()`` returns (rule and identity joined by ``|``, see ``processors.alerts``), which
    the detector usually memoises; ``build`` is called at most once, only for an alert.
    A NamedTuple: one is made per repeated handshake, on the processor's hot path.
    """

    rule: str
    identifier: str
    build: Callable[[], Finding]


class Detector(Protocol):
    """One concern. ``rules`` are the rule names it can emit (see processors.catalog)."""

    rules: ClassVar[tuple[str, ...]]

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """Findings for this handshake (usually none). Must not raise on odd events: fields
        the sensor could not fill are ``None`` and mean "nothing to judge"."""
        ...


class DeferringDetector(Detector, Protocol):
    """A detector whose findings the engine may take as :class:`Pending` (optional: the
    engine uses ``candidates`` when a detector has it, ``inspect`` otherwise)."""

    def candidates(self, event: HandshakeEvent) -> Sequence[Finding | Pending]:
        """What ``inspect`` finds, with findings that often repeat left unbuilt (Pending);
        ``[c.build() if isinstance(c, Pending) else c for c in ...]`` equals ``inspect``."""
        ...


def event_time(event: HandshakeEvent) -> datetime:
    """The time a rule judges by: the handshake's own timestamp (capture time)."""
    return event.timestamp


def server_key_of(event: HandshakeEvent) -> str:
    """The server's key (SNI, else ip:port), as the topic key (schemas.topics)."""
    return server_key(event.tls.client.server_name, event.destination.ip,
                      event.destination.port)
