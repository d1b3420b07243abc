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
and decoding costs ~12 µs instead of ~38 µs (104k instructions instead of 170k for the
previous version of this decoder, which joined and hashed the whole template per event).

What a hit costs is kept off the ~9 KB: the two trailing members are found from the end
(``rfind``), not past the chains; the table is keyed by the template's *shape* (the lengths
of the six pieces around the holes and the first 512 bytes after ``source``: destination,
TLS version, cipher, server name, JA3) and the pieces are then compared in place
(``startswith`` at their offsets, a ``memcmp``), so the template is neither copied nor
hashed; the three models that differ per event (the event, ``certwatch`` and
``certwatch.tls``) are shallow copies of the template's with their slots set through
their descriptors.

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
from schemas.events import FlowCounters, HandshakeEvent, HandshakeExtension
from schemas.tls import HandshakeTiming, TlsDetail

__all__ = ["DecoderStats", "HandshakeDecoder", "decode_handshake", "encode"]

MAX_ENTRIES: Final = 1024
"""Default bound on the templates the table remembers (~24 KB each with its models on the
benchmark capture: ~25 MB at the bound)."""
MAX_BYTES: Final = 8 * 1024 * 1024
"""Default bound on the template text the table holds (as pieces; the models are larger, and
each shape's key adds at most 512 bytes)."""


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

# The core validators themselves (TypeAdapter.validate_json adds a Python call per hole) and
# the placeholders, as names: _fast runs once per event.
(_VALIDATE_TIMESTAMP, _VALIDATE_EVENT, _VALIDATE_SOURCE, _VALIDATE_TIMING,
 _VALIDATE_FLOW) = (hole.adapter.validator.validate_json for hole in _HOLES)
_TIMESTAMP, _EVENT, _SOURCE, _TIMING, _FLOW = (hole.placeholder for hole in _HOLES)
# _fast spells the keys' lengths and the followers out: they must be these.
assert [len(hole.key) for hole in _HOLES] == [13, 8, 9, 9, 7], "_fast's key lengths"
assert [hole.follower for hole in _HOLES] == [
    b',"ecs":', b',"observer":', b',"destination":', b',"record_versions":', b"}}"]


@dataclass(slots=True)
class DecoderStats:
    """What the decoder did: events decoded from a remembered template (``hits``), from a
    template validated now (``misses``), or by full validation (``full``: documents not laid
    out as the encoder writes them, and every invalid one), ``resets`` (the template table
    emptied because it reached a bound) and ``evicted`` (the oldest template of a shape
    dropped for a new one: see ``_PER_SHAPE``)."""

    hits: int = 0
    misses: int = 0
    full: int = 0
    resets: int = 0
    evicted: int = 0


_JSON_SPACE = (b" ", b"\t", b"\r", b"\n")


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
        # shape -> the templates of that shape (at most _PER_SHAPE, newest last)
        self._templates: dict[_Shape, list[_Entry]] = {}
        self._entries = 0
        self._size = 0

    def __len__(self) -> int:
        """How many templates the table holds."""
        return self._entries

    def decode(self, value: bytes) -> HandshakeEvent:
        """The handshake event ``value`` encodes.

        :raises ValidationError: ``value`` is not a handshake event of a schema version this
            build knows (the same error, with the same locations, as full validation).
        """
        if type(value) is bytes:
            # A line from a file (kcat, a replayed dump) ends in a newline; JSON allows the
            # space around a document, so it decodes the same without it. Full validation
            # gets the value as it came, so its errors quote the input the caller gave.
            document = value.strip(b" \t\r\n") if value[-1:] in _JSON_SPACE else value
            event = self._fast(document)
            if event is not None:
                return event
        self.stats.full += 1
        return HandshakeEvent.model_validate_json(value)

    def _fast(self, value: bytes) -> HandshakeEvent | None:
        # The three leading holes sit in the first few hundred bytes: found forwards. The
        # two trailing ones follow the certificate chains (most of the ~9 KB): found
        # backwards from the end, so the chains are not scanned for them. Which occurrence
        # is found does not matter: a template is only learned when each key occurs once
        # in it (see _learn), so on a hit the key found is the only one.
        find = value.find
        size = len(value)
        ts_start = 14 if value.startswith(b'{"@timestamp":') else find(b'"@timestamp":') + 13
        ts_end = find(b',"ecs":', ts_start)
        event_key = find(b'"event":', ts_end)
        if ts_start < 13 or ts_end < 0 or event_key < 0:
            return None
        event_start = event_key + 8
        event_end = find(b',"observer":', event_start)
        source_key = find(b'"source":', event_end)
        if event_end < 0 or source_key < 0:
            return None
        source_start = source_key + 9
        source_end = find(b',"destination":', source_start)
        if source_end < 0:
            return None
        flow_key = value.rfind(b'"flow":', source_end)
        timing_key = value.rfind(b'"timing":', source_end, flow_key)
        if flow_key < 0 or timing_key < 0:
            return None
        timing_start = timing_key + 9
        timing_end = find(b',"record_versions":', timing_start, flow_key)
        flow_start = flow_key + 7
        # The document ends with the flow counters closing ``certwatch`` and the document.
        flow_end = size - 2 if value.endswith(b"}}}") else find(b"}}", flow_start)
        if timing_end < 0 or flow_end < flow_start:
            return None
        # The template is the document outside the holes. Hashing all of it (~9 KB) would
        # cost more than the rest of this function: it is looked up by its shape (the
        # lengths of its pieces and the start of the piece after ``source``, where the
        # destination, TLS version, cipher, server name and JA3 are), then compared piece
        # by piece in place (equal lengths and ``startswith`` at the offset: equal bytes).
        shape = (ts_start, event_start - ts_end, source_start - event_end,
                 timing_start - source_end, flow_start - timing_end, size - flow_end,
                 value[source_end:min(timing_start, source_end + _WINDOW)])
        starts = value.startswith
        for entry in self._templates.get(shape, ()):
            head, after_ts, after_event, after_source, after_timing, tail = entry[0]
            if (starts(after_source, source_end) and starts(head)
                    and starts(after_ts, ts_end) and starts(after_event, event_end)
                    and starts(after_timing, timing_end) and starts(tail, flow_end)):
                self.stats.hits += 1
                break
        else:
            learned = self._learn(shape, (
                value[:ts_start], value[ts_end:event_start], value[event_end:source_start],
                value[source_end:timing_start], value[timing_end:flow_start],
                value[flow_end:]))
            if learned is None:
                return None
            entry = learned
            self.stats.misses += 1
        try:
            timestamp = _VALIDATE_TIMESTAMP(value[ts_start:ts_end])
            event = _VALIDATE_EVENT(value[event_start:event_end])
            source = _VALIDATE_SOURCE(value[source_start:source_end])
            timing = _VALIDATE_TIMING(value[timing_start:timing_end])
            flow = _VALIDATE_FLOW(value[flow_start:flow_end])
        except ValidationError:
            return None
        _, model, extension, tls = entry
        tls_copy = _copy(tls)
        tls_copy.__dict__["timing"] = timing
        extension_copy = _copy(extension)
        fields = extension_copy.__dict__
        fields["tls"] = tls_copy
        fields["flow"] = flow
        copied = _copy(model)
        fields = copied.__dict__
        fields["timestamp"] = timestamp
        fields["event"] = event
        fields["source"] = source
        fields["certwatch"] = extension_copy
        return copied

    def _learn(self, shape: _Shape, pieces: _Pieces) -> _Entry | None:
        """The template (``pieces`` with the placeholders between them) validated and
        remembered, or None when it is not one (then the document takes the full
        validation). Each hole's key must occur once in it, so it is the field's only
        occurrence."""
        head, after_ts, after_event, after_source, after_timing, tail = pieces
        template = b"".join((head, _TIMESTAMP, after_ts, _EVENT, after_event, _SOURCE,
                             after_source, _TIMING, after_timing, _FLOW, tail))
        if any(template.count(hole.key) != 1 for hole in _HOLES):
            return None
        try:
            model = HandshakeEvent.model_validate_json(template)
        except ValidationError:
            return None
        if self._entries >= self.max_entries or self._size + len(template) > self.max_bytes:
            self._templates.clear()
            self._entries = self._size = 0
            self.stats.resets += 1
        entry = (pieces, model, model.certwatch, model.certwatch.tls)
        same_shape = self._templates.setdefault(shape, [])
        if len(same_shape) >= _PER_SHAPE:
            # Rare (same lengths and destination, server name, JA3...: e.g. a certificate
            # renewed with one of the same length): the oldest of the shape goes.
            dropped = same_shape.pop(0)
            self.stats.evicted += 1
            self._entries -= 1
            self._size -= sum(map(len, dropped[0])) + _PLACEHOLDERS
        same_shape.append(entry)
        self._entries += 1
        self._size += len(template)
        return entry


_WINDOW: Final = 512
"""Bytes after ``source`` that go into a template's shape."""
_PER_SHAPE: Final = 8
"""Templates remembered per shape: the ones compared with each document of that shape."""
_PLACEHOLDERS: Final = sum(len(hole.placeholder) for hole in _HOLES)

_Shape = tuple[int, int, int, int, int, int, bytes]
_Pieces = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
"""The template outside its holes: before the timestamp, after it, after event, source,
timing and flow."""
_Entry = tuple[_Pieces, HandshakeEvent, HandshakeExtension, TlsDetail]

_M = TypeVar("_M", bound=BaseModel)

# BaseModel's slots, set through their descriptors: ``object.__setattr__`` costs ~3x more,
# and this runs three times per event.
_SLOTS = BaseModel.__dict__
_SET_DICT = _SLOTS["__dict__"].__set__
_SET_FIELDS_SET = _SLOTS["__pydantic_fields_set__"].__set__
_SET_EXTRA = _SLOTS["__pydantic_extra__"].__set__
_SET_PRIVATE = _SLOTS["__pydantic_private__"].__set__
_new = object.__new__


def _copy(model: _M) -> _M:
    """A shallow copy of ``model`` whose ``__dict__`` the caller fills in before anyone else
    sees it (``model.model_copy()`` without its generic machinery). The fields-set is shared:
    schema models are frozen, so nothing adds to it (``model_copy`` copies it first), and
    every field a hole replaces is already set in the template (it has a placeholder)."""
    copied: _M = _new(model.__class__)
    _SET_DICT(copied, model.__dict__.copy())
    _SET_FIELDS_SET(copied, model.__pydantic_fields_set__)
    _SET_EXTRA(copied, None)
    _SET_PRIVATE(copied, None)
    return copied


_DEFAULT = HandshakeDecoder()


def decode_handshake(value: bytes) -> HandshakeEvent:
    """A handshake event from the wire; raises pydantic's ValidationError when it is not one
    (including a future ``schema_version`` this build does not know). Uses a shared
    :class:`HandshakeDecoder`; a service that wants its own statistics keeps its own."""
    return _DEFAULT.decode(value)
