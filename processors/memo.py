"""Per-event memos shared by the detectors: the processor's hot path.

Every detector of a processor looks at the same event one after the other, and several
need the same derived values (the server key, the event time in microseconds). Each helper
here remembers its last argument by identity and its result, so the second detector gets
the value for the price of an ``is`` test. Events and datetimes are immutable (the schema
models are frozen), so a value computed from the same object is the same value; the memo
holds a reference to that object, so its identity cannot be reused by another one while
remembered. Memo slots are one tuple, replaced whole, so a reader never pairs one object
with another's value even if two threads share the module.

:class:`BoundedMemo` is the other kind: a dict of pure results keyed by their inputs, emptied
when it reaches its bound (and the emptying counted), for values that repeat across events
(a cipher suite's classes, a client address).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final, Generic, TypeVar

from schemas.events import HandshakeEvent
from schemas.topics import server_key

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

_last_key: tuple[object, str] = (None, "")
_last_micros: tuple[object, int] = (None, 0)

K = TypeVar("K")
V = TypeVar("V")


def event_server_key(event: HandshakeEvent) -> str:
    """``processors.base.server_key_of(event)``, computed once per event."""
    global _last_key
    last = _last_key
    if last[0] is event:
        return last[1]
    key = server_key(event.tls.client.server_name, event.destination.ip,
                     event.destination.port)
    _last_key = (event, key)
    return key


def microseconds(when: datetime) -> int:
    """``when`` as integer microseconds since the epoch (naive times are taken as UTC),
    computed once per datetime object."""
    global _last_micros
    last = _last_micros
    if last[0] is when:
        return last[1]
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    value = (aware - _EPOCH) // _MICROSECOND
    _last_micros = (when, value)
    return value


class BoundedMemo(dict[K, V], Generic[K, V]):
    """A dict of memoised pure results, at most ``max_entries`` of them: when full it is
    emptied (counted in ``resets``) rather than kept in LRU order, which would cost
    bookkeeping on every hit."""

    __slots__ = ("max_entries", "resets")

    def __init__(self, max_entries: int = 4096) -> None:
        super().__init__()
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.resets = 0

    def put(self, key: K, value: V) -> V:
        """Remember ``value`` for ``key`` (emptying the memo first when full); returns it."""
        if len(self) >= self.max_entries:
            self.clear()
            self.resets += 1
        self[key] = value
        return value


_last_day: tuple[object, date] = (None, date.min)


def utc_day(when: datetime) -> date:
    """The UTC calendar day of ``when`` (naive times are taken as UTC), computed once per
    datetime object."""
    global _last_day
    last = _last_day
    if last[0] is when:
        return last[1]
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    day = aware.astimezone(UTC).date()
    _last_day = (when, day)
    return day


def forget() -> None:
    """Drop the per-event memos. A processor never needs this (the memos are keyed by
    identity); tests use it to compare memoised and unmemoised runs."""
    global _last_key, _last_micros, _last_day
    _last_key, _last_micros, _last_day = (None, ""), (None, 0), (None, date.min)
