"""Counting the sensor's anomalies and turning them into rate-limited anomaly events.

Bad traffic is data: each anomaly is counted under a stable kind, the first of each kind
in a reporting interval becomes an event (and a log line), and the ones in between are
counted and carried by the next event of that kind, so a flood of garbage costs a counter
increment, not a flood of events.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("certwatch.sensor")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly report to publish: ``count`` occurrences of ``kind`` since the last one."""

    kind: str
    detail: str
    timestamp: float
    count: int
    flow: tuple[tuple[bytes, int], tuple[bytes, int]] | None = None


class AnomalyCounter:
    """Counts anomalies by kind and decides which become events."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.totals: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._last_report: dict[str, float] = {}
        self._last_detail: dict[str, str] = {}
        self._logged: set[str] = set()

    def record(
        self,
        kind: str,
        detail: str,
        timestamp: float,
        flow: tuple[tuple[bytes, int], tuple[bytes, int]] | None = None,
    ) -> Anomaly | None:
        """Count one anomaly; return a report when this kind is due one."""
        self.totals[kind] += 1
        self._pending[kind] += 1
        self._last_detail[kind] = detail
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("%s: %s (further ones are counted, see the summary)", kind, detail)
        last = self._last_report.get(kind)
        if last is not None and timestamp - last < self.interval:
            return None
        self._last_report[kind] = timestamp
        count = self._pending.pop(kind)
        return Anomaly(kind, detail, timestamp, count, flow)

    def flush(self, timestamp: float) -> list[Anomaly]:
        """Reports for every kind with occurrences not yet reported (end of a run)."""
        reports = [
            Anomaly(kind, self._last_detail[kind], timestamp, count)
            for kind, count in sorted(self._pending.items())
        ]
        self._pending.clear()
        return reports
