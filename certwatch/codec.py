"""Bytes on the bus ⇄ schema models: one JSON document per message, ECS field names."""

from __future__ import annotations

from pydantic import BaseModel

from schemas.events import HandshakeEvent


def encode(model: BaseModel) -> bytes:
    """The wire form of any message: compact JSON by alias, absent fields omitted."""
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode_handshake(value: bytes) -> HandshakeEvent:
    """A handshake event from the wire; raises pydantic's ValidationError when it is not one
    (including a future ``schema_version`` this build does not know)."""
    return HandshakeEvent.model_validate_json(value)
