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


class TrafficNetwork(Model):
    """ECS ``network.*`` of a traffic metric: ``bytes`` and ``packets`` are ECS's totals of
    both directions (here TCP payload bytes, headers excluded, as the flows count them;
    UDP payload bytes for QUIC and DTLS); ``source.*`` and ``destination.*`` split them."""

    transport: Literal["tcp", "udp"] = "tcp"
    type: Literal["ipv4", "ipv6"]
    bytes: int = Field(ge=0)
    packets: int = Field(ge=0)


class TrafficSource(Model):
    """ECS ``source.*`` of a traffic metric: the server endpoint's clients, together (no
    address: many clients). Optional in the model so events of sensors older than the split
    still validate; a sensor always sets both."""

    bytes: int | None = Field(default=None, ge=0, description=(
        "payload bytes the clients sent to the server in the interval (upload; ECS "
        "source.bytes); with destination.bytes, network.bytes"))
    packets: int | None = Field(default=None, ge=0, description=(
        "packets the clients sent to the server in the interval (ECS source.packets); with "
        "destination.packets, network.packets"))


class TrafficDestination(Endpoint):
    """ECS ``destination.*`` of a traffic metric: the server endpoint the event is about
    and what it sent (``bytes`` and ``packets`` optional as in :class:`TrafficSource`)."""

    bytes: int | None = Field(default=None, ge=0, description=(
        "payload bytes the server sent to its clients in the interval (download; ECS "
        "destination.bytes)"))
    packets: int | None = Field(default=None, ge=0, description=(
        "packets the server sent to its clients in the interval (ECS destination.packets)"))


class TrafficCounts(Model):
    """What ECS has no field for: connections and handshakes of the interval."""

    connections: int = Field(ge=0, description="connections first seen in the interval")
    handshakes: int = Field(ge=0, description="TLS handshakes reported in the interval")
    failed_handshakes: int = Field(ge=0, description="of which not established")


class TrafficStatsExtension(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    traffic: TrafficCounts


class TrafficStatsEvent(Model):
    """Counts of one server endpoint over one interval of capture time (``event.start`` to
    ``event.end``; ``@timestamp`` is the end): topic ``certwatch.traffic.stats``, the input of
    byte-rate spike detection. ``network`` has both directions' counts, ``source`` the
    clients' (upload) and ``destination`` the server's (download); a connection whose start
    was not seen is split by the roles the sensor infers (a hello, else the ports)."""

    timestamp: datetime = Field(alias="@timestamp")
    ecs: Ecs = Field(default_factory=Ecs)
    event: EventFields
    observer: Observer
    source: TrafficSource | None = None
    destination: TrafficDestination
    network: TrafficNetwork
    certwatch: TrafficStatsExtension


SensorEvent = HandshakeEvent | CertificateEvent | AnomalyEvent | TrafficStatsEvent
