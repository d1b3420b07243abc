"""The alert: what the SIEM reads from ``certwatch.alerts``.

One JSON document per alert, ECS-shaped: ``event.kind: alert``, ``rule.*``,
``event.severity`` and ``message``, plus the source/destination/tls/x509 context of the
handshake that fired it. ``certwatch.alert.identifier`` names the finding (rule plus the
fields that make it the same finding); ``event.id`` is derived from it and from the
suppression window it opened, so a re-delivered event produces the same alert id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import SCHEMA_VERSION, Ecs, Endpoint, EventFields, Model, Network, Observer
from schemas.tls import Tls
from schemas.x509 import X509, Hashes

SeverityLabel = Literal["low", "medium", "high", "critical"]

SEVERITY_SCORES: dict[str, int] = {"low": 21, "medium": 47, "high": 73, "critical": 99}
"""``event.severity`` for each label (the risk-score bands SIEM detection rules use)."""


class Rule(Model):
    """ECS ``rule.*``: ``name`` is the stable rule name of DESIGN.md (``cert.expired``)."""

    id: str
    name: str
    description: str
    category: str
    ruleset: Literal["certwatch"] = "certwatch"
    reference: str | None = None


class AlertCertificate(Model):
    """The certificate the finding is about (ECS ``x509.*`` and its hashes)."""

    hash: Hashes
    x509: X509 | None = None
    position: int = Field(ge=0, description="0 for the leaf")


class AlertDetail(Model):
    identifier: str = Field(description="rule plus the fields that make it the same finding")
    severity: SeverityLabel
    profile: str | None = Field(default=None, description="compliance profile in force")
    requirement: str | None = Field(default=None, description="the profile requirement broken")
    server_key: str
    handshake_event_id: str
    details: dict[str, str | int | float | bool | list[str] | None] = Field(default_factory=dict)
    suppressed_since_last: int = Field(
        default=0, ge=0, description="same finding seen in the previous suppression window"
    )


class AlertExtension(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    alert: AlertDetail
    certificate: AlertCertificate | None = None


class AlertEvent(Model):
    """One alert on topic ``certwatch.alerts``, keyed by ``event.id``."""

    timestamp: datetime = Field(alias="@timestamp")
    ecs: Ecs = Field(default_factory=Ecs)
    event: EventFields
    observer: Observer
    rule: Rule
    message: str
    source: Endpoint | None = Field(
        default=None, description="absent on an alert raised by traffic statistics")
    destination: Endpoint
    network: Network
    tls: Tls | None = Field(
        default=None, description="absent on an alert raised by traffic statistics")
    certwatch: AlertExtension
