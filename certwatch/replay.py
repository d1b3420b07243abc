"""``certwatch replay``: captures in, events out, in one process with no broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from certwatch.progress import Progress
from schemas.events import SensorEvent
from sensor.capture import open_capture
from sensor.errors import CaptureError
from sensor.sensor import Sensor

log = logging.getLogger("certwatch.replay")

PROGRESS_EVERY = 4096  # packets between progress redraw checks


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, for the summary and the exit status."""

    captures: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    skipped_records: int = 0
    events: int = 0
    seconds: float = 0.0


def replay(
    paths: Sequence[str],
    sensor: Sensor,
    emit: Callable[[SensorEvent], None],
    progress: Progress | None = None,
) -> ReplayReport:
    """Feed every capture in ``paths`` through ``sensor`` in order (one sensor: a handshake
    split across two consecutive files is still seen whole) and hand each event to
    ``emit``. A capture that cannot be opened is reported and skipped; the others go on."""
    report = ReplayReport()
    started = time.perf_counter()
    for path in paths:
        try:
            reader = open_capture(path)
        except CaptureError as error:
            log.error("%s", error)
            report.failed.append((path, str(error)))
            continue
        report.captures += 1
        with reader:
            for count, (timestamp, linktype, data) in enumerate(reader, 1):
                sensor.process(timestamp, linktype, data)
                if sensor.pending:
                    for event in sensor.drain():
                        emit(event)
                        report.events += 1
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress.update(path, reader.bytes_read, reader.bytes_total,
                                    sensor.stats.packets, sum(sensor.stats.handshakes.values()))
            if reader.truncated:
                log.warning("%s: capture is truncated; read what was complete", path)
                report.truncated.append(path)
            report.skipped_records += reader.skipped_records
    for event in sensor.finish():
        emit(event)
        report.events += 1
    if progress is not None:
        progress.clear()
    report.seconds = time.perf_counter() - started
    return report


def summary(report: ReplayReport, sensor: Sensor) -> str:
    """The end-of-run summary a person reads: what was seen and what was skipped."""
    stats = sensor.stats
    rate = stats.packets / report.seconds if report.seconds > 0 else 0.0
    by_version = ", ".join(f"{v} {n}" for v, n in sorted(stats.handshakes.items())) or "none"
    anomalies = ", ".join(f"{k} {n}" for k, n in sorted(sensor.anomalies.totals.items()))
    skipped = [f"{path}: truncated" for path in report.truncated]
    skipped += [f"{path}: {why}" for path, why in report.failed]
    if report.skipped_records:
        skipped.append(f"{report.skipped_records} malformed capture records")
    lines = [
        f"certwatch replay: {report.captures} capture(s), {stats.packets:,} packets "
        f"in {report.seconds:.2f} s ({rate:,.0f} packets/s)",
        f"  flows          {sensor.flows.created:,} (TLS {stats.tls_flows:,}, "
        f"not TLS {stats.not_tls_flows:,}; evicted {sensor.flows.evicted:,}); "
        f"non-TCP packets {stats.not_tcp:,}",
        f"  handshakes     {sum(stats.handshakes.values()):,} ({by_version}); "
        f"established {stats.established:,}",
        f"  certificates   {stats.certificates:,} first seen",
        f"  anomalies      {anomalies or 'none'}",
        f"  skipped input  {'; '.join(skipped) or 'none'}",
        f"  events         {report.events:,}",
    ]
    return "\n".join(lines)
