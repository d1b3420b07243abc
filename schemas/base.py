"""Building blocks shared by every message: the ECS envelope and the model configuration.

Every model that crosses a process boundary is frozen and forbids unknown fields, so a
producer that drifts from the contract fails loudly at the producer, not in the SIEM.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Final = 1
"""Bumped on any change a consumer could notice; carried as ``certwatch.schema_version``."""

ECS_VERSION = "8.11.0"


class Model(BaseModel):
    """Base of every schema model: immutable, strict about unknown fields, ECS aliases."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Ecs(Model):
    version: str = ECS_VERSION


class Observer(Model):
    """The sensor that saw the traffic (ECS ``observer.*``)."""

    name: str
    type: Literal["sensor"] = "sensor"
    product: Literal["certwatch"] = "certwatch"
    vendor: Literal["certwatch"] = "certwatch"


class Endpoint(Model):
    """ECS ``source`` / ``destination``: the client is always the source."""

    ip: str
    port: int = Field(ge=0, le=65535)


class Vlan(Model):
    id: str


class NetworkInner(Model):
    vlan: Vlan


class Network(Model):
    """ECS ``network.*``. With QinQ the outer tag is ``vlan``, the inner one ``inner.vlan``."""

    transport: Literal["tcp", "udp"] = "tcp"
    type: Literal["ipv4", "ipv6"]
    protocol: Literal["tls"] = "tls"
    vlan: Vlan | None = None
    inner: NetworkInner | None = None


class EventFields(Model):
    """ECS ``event.*``. ``duration`` is in nanoseconds as ECS defines it."""

    id: str
    kind: Literal["event", "alert", "metric"]
    category: list[str]
    type: list[str]
    dataset: str
    module: Literal["certwatch"] = "certwatch"
    outcome: Literal["success", "failure", "unknown"] | None = None
    start: datetime | None = None
    end: datetime | None = None
    duration: int | None = Field(default=None, ge=0)
    severity: int | None = Field(default=None, ge=0, le=100)
