"""Bytes on the bus ⇄ schema models: one JSON document per message, ECS field names.

Decoding is the processor's main cost: a handshake event is ~8 KB of JSON (the certificate
chain travels inside it, as base64 DER and as its x509 description), and validating all of
it with pydantic costs ~40-50 µs, about twice what every detector together costs. Nearly
all of it repeats verbatim from event to event: the same client software talking to the
same server gives the same document except for five members (``@timestamp``, ``event``,
``source``, ``certwatch.tls.timing``, ``certwatch.flow``). :class:`HandshakeDecoder`
therefore cuts those five out (each replaced by a fixed valid placeholder), looks the rest
(the *template*) up in a bounded table, validates the template only the first time it is
seen, validates the five small members on their own with their field's type, and puts
them in place of the placeholders. On the benchmark capture 98.6% of events hit a template
and decoding costs ~21 µs instead of ~41-47 µs.

Why the result is the model full validation gives, for any input: a byte pattern
``"name":`` (a name without backslash or quote) can only be an object key in valid JSON
(inside a string its quotes would be escaped), so a key found exactly once in the template
is that field's only occurrence; each of the five names is a field of exactly one model,
which sits at exactly one place in a ``HandshakeEvent``. A member's bytes that validate on
their own are one complete JSON value which, followed by the next key's comma, is exactly
that key's value in the document. JSON values are independent of their siblings and no
schema model has a cross-field validator, so validating a member apart and putting it in
place of a placeholder equals validating it in place. Anything else (a key not found or
found twice, a template or member that does not validate, whitespace the markers do not
expect, a ``str`` instead of ``bytes``) takes the full validation, which is also what
raises, so error messages (and the dead-letter reasons built from them) are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.base import Endpoint, EventFields
from schemas.events import FlowCounters, HandshakeEvent
from schemas.tls import HandshakeTiming

__all__ = ["DecoderStats", "HandshakeDecoder", "decode_handshake", "encode"]

MAX_ENTRIES: Final = 1024
"""Default bound on the templates the table remembers (~24 KB each with its models on the
benchmark capture: ~25 MB at the bound)."""
MAX_BYTES: Final = 8 * 1024 * 1024
"""Default bound on the template text the table holds as keys (the models are larger)."""


def encode(model: BaseModel) -> bytes:
    """The wire form of any message: compact JSON by alias, absent fields omitted."""
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


@dataclass(frozen=True, slots=True)
class _Hole:
    """A member that differs from event to event: its key pattern, the pattern that follows
    its value in the encoder's field order, the placeholder standing in for it in the
    template, and the field's type."""

    name: str
    key: bytes
    follower: bytes
    placeholder: bytes
    adapter: TypeAdapter[Any]


# In the encoder's order (``HandshakeEvent``: @timestamp, ecs, event, observer, source,
# destination, …; ``TlsDetail``: …, timing, record_versions, …; ``HandshakeExtension``
# ends with flow, the last member of the document).
_HOLES: Final = (
    _Hole("timestamp", b'"@timestamp":', b',"ecs":', b'"1970-01-01T00:00:00Z"',
          TypeAdapter(datetime)),
    _Hole("event", b'"event":', b',"observer":',
          b'{"id":"","kind":"event","category":[],"type":[],"dataset":""}',
          TypeAdapter(EventFields)),
    _Hole("source", b'"source":', b',"destination":', b'{"ip":"","port":0}',
          TypeAdapter(Endpoint)),
    _Hole("timing", b'"timing":', b',"record_versions":', b"{}", TypeAdapter(HandshakeTiming)),
    _Hole("flow", b'"flow":', b"}}", b"{}", TypeAdapter(FlowCounters)),
)

# The core validators themselves: TypeAdapter.validate_json adds a Python call per hole.
_VALIDATE_HOLES: Final = tuple(hole.adapter.validator.validate_json for hole in _HOLES)


@dataclass(slots=True)
class DecoderStats:
    """What the decoder did: events decoded from a remembered template (``hits``), from a
    template validated now (``misses``), or by full validation (``full``: documents not laid
    out as the encoder writes them, and every invalid one), and ``resets`` (the template
    table emptied because it reached a bound)."""

    hits: int = 0
    misses: int = 0
    full: int = 0
    resets: int = 0


class HandshakeDecoder:
    """Decodes handshake events through a table of validated templates (module docstring).

    :meth:`decode` returns exactly what ``HandshakeEvent.model_validate_json`` returns (an
    equal model; the template's parts are shared between events, which is safe: schema
    models are frozen and nothing mutates their lists) and raises the ``ValidationError``
    it raises. The table holds at most ``max_entries`` templates and ``max_bytes`` of
    template text; at either bound it is emptied and ``stats.resets`` counts it.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = DecoderStats()
        self._templates: dict[bytes, HandshakeEvent] = {}
        self._size = 0

    def decode(self, value: bytes) -> HandshakeEvent:
        """The handshake event ``value`` encodes.

        :raises ValidationError: ``value`` is not a handshake event of a schema version this
            build knows (the same error, with the same locations, as full validation).
        """
        if type(value) is bytes:
            event = self._fast(value)
            if event is not None:
                return event
        self.stats.full += 1
        return HandshakeEvent.model_validate_json(value)

    def _fast(self, value: bytes) -> HandshakeEvent | None:
        pieces: list[bytes] = []
        holes: list[bytes] = []
        done = 0
        find = value.find
        for hole in _HOLES:
            key = find(hole.key, done)
            if key < 0:
                return None
            start = key + len(hole.key)
            end = (len(value) - 2 if hole.follower == b"}}" and value.endswith(b"}}}")
                   else find(hole.follower, start))
            if end < start:
                return None
            pieces += (value[done:start], hole.placeholder)
            holes.append(value[start:end])
            done = end
        pieces.append(value[done:])
        template = b"".join(pieces)
        model = self._templates.get(template)
        if model is None:
            model = self._learn(template)
            if model is None:
                return None
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        try:
            values = [validate(text) for validate, text in zip(_VALIDATE_HOLES, holes, strict=True)]
        except ValidationError:
            return None
        timestamp, event, source, timing, flow = values
        extension = model.certwatch
        return _replace(model, {
            "timestamp": timestamp, "event": event, "source": source,
            "certwatch": _replace(extension, {
                "tls": _replace(extension.tls, {"timing": timing}), "flow": flow}),
        })

    def _learn(self, template: bytes) -> HandshakeEvent | None:
        """The template validated, or None when it is not one (then the document takes the
        full validation). Each hole's key must occur once, so it is the field's only
        occurrence."""
        if any(template.count(hole.key) != 1 for hole in _HOLES):
            return None
        try:
            model = HandshakeEvent.model_validate_json(template)
        except ValidationError:
            return None
        if len(self._templates) >= self.max_entries or self._size + len(template) > self.max_bytes:
            self._templates.clear()
            self._size = 0
            self.stats.resets += 1
        self._templates[template] = model
        self._size += len(template)
        return model


_M = TypeVar("_M", bound=BaseModel)


def _replace(model: _M, update: dict[str, Any]) -> _M:
    """``model.model_copy(update=update)`` for fields already set in ``model`` (every hole
    has a placeholder in the template), without its generic machinery: this runs four times
    per event."""
    copied = model.__class__.__new__(model.__class__)
    setattr_ = object.__setattr__
    setattr_(copied, "__dict__", {**model.__dict__, **update})
    setattr_(copied, "__pydantic_extra__", None)
    setattr_(copied, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    setattr_(copied, "__pydantic_private__", None)
    return copied


_DEFAULT = HandshakeDecoder()


def decode_handshake(value: bytes) -> HandshakeEvent:
    """A handshake event from the wire; raises pydantic's ValidationError when it is not one
    (including a future ``schema_version`` this build does not know). Uses a shared
    :class:`HandshakeDecoder`; a service that wants its own statistics keeps its own."""
    return _DEFAULT.decode(value)
