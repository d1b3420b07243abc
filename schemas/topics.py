"""Topic names and message keys (DESIGN.md, "Topics and keys").

Keys keep every server on one partition so that a processor instance owns that server's
state; they are part of the contract just like the topic names.
"""

from __future__ import annotations

from typing import Final

from schemas.events import (
    AnomalyEvent,
    CertificateEvent,
    HandshakeEvent,
    SensorEvent,
    TrafficStatsEvent,
)

HANDSHAKE_TOPIC: Final = "certwatch.tls.handshake"
CERTIFICATE_TOPIC: Final = "certwatch.tls.certificate"
TRAFFIC_STATS_TOPIC: Final = "certwatch.traffic.stats"
ANOMALY_TOPIC: Final = "certwatch.sensor.anomaly"
ALERT_TOPIC: Final = "certwatch.alerts"


def server_key(server_name: str | None, ip: str, port: int) -> str:
    """The server's key: its name when the client sent SNI, else ``ip:port`` (``[v6]:port``)."""
    if server_name:
        return server_name.lower()
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def topic_of(event: SensorEvent) -> str:
    """The topic an event is published to."""
    if isinstance(event, HandshakeEvent):
        return HANDSHAKE_TOPIC
    if isinstance(event, CertificateEvent):
        return CERTIFICATE_TOPIC
    if isinstance(event, TrafficStatsEvent):
        return TRAFFIC_STATS_TOPIC
    return ANOMALY_TOPIC


def key_of(event: SensorEvent) -> str:
    """The message key of an event on its topic."""
    if isinstance(event, HandshakeEvent):
        return server_key(event.tls.client.server_name, event.destination.ip,
                          event.destination.port)
    if isinstance(event, CertificateEvent):
        return event.hash.sha256
    if isinstance(event, TrafficStatsEvent):  # the endpoint, never a name (DESIGN.md)
        return server_key(None, event.destination.ip, event.destination.port)
    assert isinstance(event, AnomalyEvent)
    return event.observer.name
