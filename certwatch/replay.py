"""``certwatch replay``: captures in, events out, in one process with no broker."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sensor.capture import open_capture
from sensor.errors import CaptureError

if TYPE_CHECKING:
    # Annotations only: a replay without detectors imports no processor module (start-up).
    from certwatch.progress import Progress
    from processors.engine import ProcessorStats
    from schemas.events import SensorEvent
    from sensor.pcapfile import Buffer, CaptureReader, PcapReader
    from sensor.sensor import Sensor

log = logging.getLogger("certwatch.replay")

#: Cyclic garbage collector thresholds while replaying (see ``collector_tuned``).
REPLAY_GC_THRESHOLDS = (50_000, 50, 100)


@contextmanager
def collector_tuned() -> Iterator[None]:
    """Run the body with the cyclic garbage collector set for a bulk replay, then restore it.

    The sensor makes almost no reference cycles (a 20,000-handshake replay leaves ~1,200
    cyclic objects to collect in all), but it keeps many long-lived containers (flows,
    sessions, memo tables) that every collection of the older generations walks again: with
    CPython's default thresholds (700, 10, 10) that was 20-25% of the CPU time of the
    memory benchmark (20,000 flows open at once) and ~10% of the throughput one. The
    objects of the imports are frozen out of the collector's sight (``gc.freeze``) and
    collections are made rarer; cycles are still collected, 50,000 allocations apart."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*REPLAY_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, for the summary and the exit status."""

    captures: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    skipped_records: int = 0
    events: int = 0
    seconds: float = 0.0


async def replay(
    paths: Sequence[str],
    sensor: Sensor,
    emit: Callable[[SensorEvent], Awaitable[None]],
    progress: Progress | None = None,
    speed: float | None = None,
) -> ReplayReport:
    """Feed every capture in ``paths`` through ``sensor`` in order (one sensor: a handshake
    split across two consecutive files is still seen whole) and hand each event to
    ``emit``. A capture that cannot be opened is reported and skipped; the others go on.

    The capture is read synchronously; every few thousand packets control goes back to the
    event loop so consumers of the events (the processors) keep up as the replay goes.
    With ``speed`` the frames are paced by their capture timestamps (1.0 = as captured,
    2.0 = twice as fast); without it they go as fast as they can be read."""
    import asyncio  # already loaded: this runs on its event loop (replay_sync needs none)

    with collector_tuned():
        report = ReplayReport()
        started = time.perf_counter()
        pacer = Pacer(speed) if speed else None
        for path, reader in _opened(paths, report):
            with reader:
                if pacer is None:
                    for events in _batch_events(reader, path, sensor, progress):
                        for event in events:
                            await emit(event)
                        report.events += len(events)
                        await asyncio.sleep(0)
                else:
                    await _replay_paced(reader, path, sensor, emit, report, progress, pacer)
            _account(reader, path, report)
        for event in sensor.finish():
            await emit(event)
            report.events += 1
        return _done(report, progress, started)


def replay_sync(
    paths: Sequence[str],
    sensor: Sensor,
    emit: Callable[[SensorEvent], object],
    progress: Progress | None = None,
) -> ReplayReport:
    """:func:`replay` without an event loop, as fast as the captures can be read, for a
    caller whose ``emit`` is a plain function (the events written to a file): the same
    events in the same order, the same report."""
    with collector_tuned():
        report = ReplayReport()
        started = time.perf_counter()
        for path, reader in _opened(paths, report):
            with reader:
                for events in _events_of(reader, path, sensor, progress):
                    for event in events:
                        emit(event)
                    report.events += len(events)
            _account(reader, path, report)
        events = sensor.finish()
        for event in events:
            emit(event)
        report.events += len(events)
        return _done(report, progress, started)


def _opened(paths: Sequence[str], report: ReplayReport) -> Iterator[tuple[str, CaptureReader]]:
    """Each capture that opens, with its path; one that does not is logged and reported."""
    for path in paths:
        try:
            reader = open_capture(path)
        except CaptureError as error:
            log.error("%s", error)
            report.failed.append((path, str(error)))
            continue
        report.captures += 1
        yield path, reader


def _account(reader: CaptureReader, path: str, report: ReplayReport) -> None:
    """What reading one capture left to report: truncation, malformed records."""
    if reader.truncated:
        log.warning("%s: capture is truncated; read what was complete", path)
        report.truncated.append(path)
    report.skipped_records += reader.skipped_records


def _done(report: ReplayReport, progress: Progress | None, started: float) -> ReplayReport:
    if progress is not None:
        progress.clear()
    report.seconds = time.perf_counter() - started
    return report


def _batch_events(
    reader: CaptureReader, path: str, sensor: Sensor, progress: Progress | None
) -> Iterator[list[SensorEvent]]:
    """As fast as the capture can be read: the reader hands over lists of frames
    (``CaptureReader.batches``: no generator resume and no record object per frame) and the
    sensor takes each list whole (``Sensor.process_many``: no per-packet call here); yields
    the events of each list, in order (often none), before the next list is read."""
    process_many, queue, drain = sensor.process_many, sensor.queue, sensor.drain
    stats = sensor.stats
    for batch in reader.batches():  # progress and the event loop get a turn each list
        process_many(iter(batch), len(batch))
        del batch  # the frames may go before the next list is read: one list held, not two
        yield drain() if queue else []
        if progress is not None:
            progress.update(path, reader.bytes_read, reader.bytes_total,
                            stats.packets, sum(stats.handshakes.values()))


def _events_of(
    reader: CaptureReader, path: str, sensor: Sensor, progress: Progress | None
) -> Iterator[list[SensorEvent]]:
    """:func:`_batch_events`, or for a classic pcap :func:`_run_events`: the same events."""
    from sensor.pcapfile import PcapReader  # loaded already: open_capture imports it

    if isinstance(reader, PcapReader):
        return _run_events(reader, path, sensor, progress)
    return _batch_events(reader, path, sensor, progress)


def _run_events(
    reader: PcapReader, path: str, sensor: Sensor, progress: Progress | None
) -> Iterator[list[SensorEvent]]:
    """:func:`_batch_events` for a classic pcap, whose records the sensor reads in place
    (``PcapReader.record_runs`` hands ``Sensor.process_pcap_records`` a run of the mapped
    file or the stream's buffer, ~1 MiB at a time): no copy and no tuple per frame, which
    is most of what reading costs for the packets that are only counted. Yields the events
    of each run, in order (often none), before the next run is read."""
    fmt = reader.record_format
    process, queue, drain = sensor.process_pcap_records, sensor.queue, sensor.drain
    stats = sensor.stats

    def consume(buf: Buffer, start: int, end: int) -> int:
        return process(buf, start, end, fmt)

    for _ in reader.record_runs(consume):  # progress gets a turn each run
        yield drain() if queue else []
        if progress is not None:
            progress.update(path, reader.bytes_read, reader.bytes_total,
                            stats.packets, sum(stats.handshakes.values()))


async def _replay_paced(
    reader: CaptureReader, path: str, sensor: Sensor,
    emit: Callable[[SensorEvent], Awaitable[None]], report: ReplayReport,
    progress: Progress | None, pacer: Pacer,
) -> None:
    """Frames handed to the sensor at their captured pace, events on as they come."""
    import asyncio

    process, queue, drain = sensor.process, sensor.queue, sensor.drain
    for batch in reader.batches():
        for timestamp, linktype, data in batch:
            await pacer.wait_until(timestamp)
            process(timestamp, linktype, data)
            if queue:
                for event in drain():
                    await emit(event)
                    report.events += 1
        await asyncio.sleep(0)
        if progress is not None:
            progress.update(path, reader.bytes_read, reader.bytes_total,
                            sensor.stats.packets, sum(sensor.stats.handshakes.values()))


class Pacer:
    """Sleeps so that frames are handed on at ``speed`` times their captured rate."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin: tuple[float, float] | None = None  # (capture time, wall time)

    async def wait_until(self, timestamp: float) -> None:
        if self._origin is None:
            self._origin = (timestamp, time.monotonic())
            return
        due = self._origin[1] + (timestamp - self._origin[0]) / self.speed
        delay = due - time.monotonic()
        if delay > 0.001:
            import asyncio

            await asyncio.sleep(delay)


def summary(report: ReplayReport, sensor: Sensor,
            alerts: ProcessorStats | None = None, *, title: str = "certwatch replay") -> str:
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
        f"{title}: {report.captures} capture(s), {stats.packets:,} packets "
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
    if alerts is not None:
        lines += alert_summary(alerts)
    return "\n".join(lines)


def alert_summary(stats: ProcessorStats, top: int = 10) -> list[str]:
    """Alerts by rule and by server, for the end-of-run summary."""
    total = sum(stats.alerts.values())
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(stats.alerts.items())) or "none"
    servers = ", ".join(f"{server} {n}" for server, n in stats.alerts_by_server.most_common(top))
    lines = [f"  alerts         {total:,} ({by_rule}); suppressed repeats {stats.suppressed:,}"]
    if servers:
        lines.append(f"  by server      {servers}")
    if stats.detector_errors:
        errors = ", ".join(f"{d} {n}" for d, n in sorted(stats.detector_errors.items()))
        lines.append(f"  detector errors {errors}")
    return lines
