"""Deduplication shared by every rule: one alert per finding per suppression window.

Windows are aligned to multiples of their length in event time (seconds since the epoch,
UTC), not opened by the first occurrence. That makes the decision a pure function of the
finding and its time: a processor that restarts and is re-delivered the same events decides
the same way and gives the same alert id, so duplicates downstream are recognisable even
though the in-memory record of what was already reported died with the process.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime, timedelta

from processors.memo import microseconds


def window_index(when: datetime, window: timedelta) -> int:
    """The aligned window ``when`` falls in."""
    return window_at(when, window.total_seconds())


def window_at(when: datetime, seconds: float) -> int:
    """``window_index(when, window)`` with ``seconds = window.total_seconds()`` computed
    once by the caller (the processor keeps it per rule)."""
    # For an aware time, CPython's ``timestamp()`` is ``(when - epoch).total_seconds()``:
    # the exact microseconds of that difference, int-divided by 10**6 (true division,
    # correctly rounded). ``microseconds`` is that same difference in microseconds, memoised
    # per event time (processors.memo), which the time-based detectors have usually computed
    # already: the same float, cheaper. Naive (local) times: ``timestamp()`` as ever.
    stamp = (microseconds(when) / 1_000_000 if when.tzinfo is not None
             else when.timestamp())
    if seconds <= 0:
        return int(stamp * 1e6)  # no suppression: every microsecond its own
    return int(stamp // seconds)


def alert_id(identifier: str, window: int) -> str:
    """``event.id`` of the alert for a finding in a window: stable across re-deliveries."""
    return hashlib.sha256(f"{identifier}|{window}".encode()).hexdigest()[:32]


class Suppressor:
    """Remembers which (finding, window) pairs were alerted, bounded to ``max_entries``
    (least recently alerted forgotten first), and how many repeats were held back."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._alerted: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._held: dict[str, int] = {}
        self.suppressed = 0

    def admit(self, identifier: str, window: int) -> tuple[bool, int]:
        """Whether this finding alerts in this window; when it does, also how many repeats
        were suppressed since the previous alert of the same finding."""
        key = (identifier, window)
        if key in self._alerted:
            self._alerted.move_to_end(key)
            self._held[identifier] = self._held.get(identifier, 0) + 1
            self.suppressed += 1
            return False, 0
        self._alerted[key] = None
        if len(self._alerted) > self.max_entries:
            (old_identifier, _), _ = self._alerted.popitem(last=False)
            self._held.pop(old_identifier, None)
        return True, self._held.pop(identifier, 0)
