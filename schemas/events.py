"""The sensor's events: one model per topic (see ``schemas.topics``).

Each is a whole JSON document, ECS-shaped, with ``certwatch.schema_version`` so a consumer can
refuse what it does not understand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import SCHEMA_VERSION, Ecs, Endpoint, EventFields, Model, Network, Observer
from schemas.tls import Tls, TlsDetail
from schemas.x509 import X509, CertificateExtra, Hashes


class FlowCounters(Model):
    """Packets and payload bytes of the connection up to the moment the event was emitted."""

    packets: int = 0
    bytes: int = 0


class HandshakeExtension(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    tls: TlsDetail
    flow: FlowCounters = Field(default_factory=FlowCounters)


class HandshakeEvent(Model):
    """One TLS session seen on the wire: topic ``certwatch.tls.handshake``."""

    timestamp: datetime = Field(alias="@timestamp")
    ecs: Ecs = Field(default_factory=Ecs)
    event: EventFields
    observer: Observer
    source: Endpoint
    destination: Endpoint
    network: Network
    tls: Tls
    certwatch: HandshakeExtension


class CertificateSighting(Model):
    """Where the certificate was first seen by this sensor."""

    role: Literal["server", "client"]
    position: int = Field(ge=0, description="0 for the leaf, then up the chain")
    server_ip: str
    server_port: int
    server_name: str | None = None


class CertificateExtension(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    certificate: CertificateExtra
    seen: CertificateSighting
    der_base64: str


class CertificateEvent(Model):
    """A certificate first seen by this sensor: topic ``certwatch.tls.certificate``."""

    timestamp: datetime = Field(alias="@timestamp")
    ecs: Ecs = Field(default_factory=Ecs)
    event: EventFields
    observer: Observer
    hash: Hashes
    x509: X509 | None = None
    certwatch: CertificateExtension


class AnomalyDetail(Model):
    kind: str = Field(description="stable name, e.g. tls_record_error, flow_table_full")
    detail: str
    count: int = Field(default=1, ge=1)


class AnomalyExtension(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    anomaly: AnomalyDetail


class AnomalyEvent(Model):
    """The sensor's own health: parse failures, limits reached: ``certwatch.sensor.anomaly``."""

    timestamp: datetime = Field(alias="@timestamp")
    ecs: Ecs = Field(default_factory=Ecs)
    event: EventFields
    observer: Observer
    message: str
    source: Endpoint | None = None
    destination: Endpoint | None = None
    network: Network | None = None
    certwatch: AnomalyExtension


SensorEvent = HandshakeEvent | CertificateEvent | AnomalyEvent
