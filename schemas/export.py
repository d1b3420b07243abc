"""JSON Schema export of every message model, for SIEM and consumer authors."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alerts import AlertEvent
from schemas.events import AnomalyEvent, CertificateEvent, HandshakeEvent, TrafficStatsEvent
from schemas.topics import (
    ALERT_TOPIC,
    ANOMALY_TOPIC,
    CERTIFICATE_TOPIC,
    HANDSHAKE_TOPIC,
    TRAFFIC_STATS_TOPIC,
)

EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    HANDSHAKE_TOPIC: HandshakeEvent,
    CERTIFICATE_TOPIC: CertificateEvent,
    TRAFFIC_STATS_TOPIC: TrafficStatsEvent,
    ANOMALY_TOPIC: AnomalyEvent,
    ALERT_TOPIC: AlertEvent,
}
"""Topic name → the model of its messages."""


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<topic>.schema.json`` for every model into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, model in EXPORTED_MODELS.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$id"] = f"https://certwatch.invalid/schemas/{topic}.schema.json"
        path = directory / f"{topic}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
