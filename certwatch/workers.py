"""``--workers N`` for captures: N processes share the flows of one capture, one parent merges.

Each worker process reads the whole capture itself (the mmap reader costs ~0.6 µs a
packet) and feeds its sensor only the frames whose flow hashes to it
(``Sensor.process_share_many``, a list of frames a call, the owner test inline: ~0.6 µs for
another worker's frame; a classic pcap's records read in place, ``Sensor.process_pcap_records``
with the share, no frame copied; ``sensor.flowhash``: both directions of a connection, and
tunnelled traffic by its inner flow, land on one worker). Frames that are no flow (not
TCP, malformed, unknown link type) are the sensor's business of worker 0 alone, so every
counter is counted once. For the frames it skips a worker still lets capture time pass
(``Sensor.advance``), so idle flows expire at the same packet as in a single sensor.

Each worker sends its events to the parent over a pipe, pickled in batches of JSON text,
every event tagged with the number of the frame that produced it, and with every batch a
watermark (all its events up to that frame are sent). The parent releases events in frame
order once every worker has passed that frame, so the merged stream is the one a single
sensor emits (events of one frame from several workers, which only idle-flow sweeps and the
end of input produce, come in worker order). What a single sensor decides across flows is
decided in the parent, in that order, so the result does not depend on N:

* anomaly rate limiting: workers forward every anomaly raw; the parent's
  :class:`AnomalyCounter` makes the events (``anomaly_report_interval``);
* certificate announcements: workers announce every certificate; the parent keeps the
  first sighting per ``certificate_event_ttl`` (:class:`Announcements`, the rule of
  ``sensor.build``, compared on the event's microsecond timestamp). The text of a
  certificate's event goes over the pipe once per worker (bounded: :data:`TEMPLATES`);
  later sightings travel as a :class:`Sighting`, its time, id and place, from which the
  parent makes the text in the rare case it announces one (a certificate seen again after
  its TTL). On the benchmark capture 14,000 of a worker's 24,000 events are such repeats,
  which the parent drops: serialised, they were 40 of its 120 MB of pipe traffic;
* traffic statistics: every worker cuts its intervals at the same frame (intervals are
  epoch-aligned and skipped frames still move a worker's capture time), so the parent sums
  the workers' ``certwatch.traffic.stats`` events of one frame per endpoint
  (:func:`merge_traffic`) and applies ``max_stats_endpoints`` again: one event per endpoint
  and interval, as one sensor emits. (Live workers, ``certwatch.workers_live``, publish
  their own; the processor adds up events of one endpoint and window.)

Counters (the summary, ``/metrics``) are the workers' sums, except certificates (counted
by the parent's announcements) and anomalies (the parent's counter). The flow-table bound
is divided by N per worker (``--max-flows`` stays the total), so evictions start later or
earlier than in one table only when a worker's share of flows is uneven.

Back-pressure, not loss: a worker reads a file, so when the parent falls behind the pipe
fills and the worker waits (losing events would make the result depend on N). The parent
stops reading a worker that is more than :data:`MAX_HELD` events ahead of the slowest,
which bounds what it holds; the slowest is always read, so this cannot deadlock. A live
sensor never waits on anything: its workers publish themselves (``certwatch.workers_live``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, NamedTuple

from certwatch.codec import encode
from certwatch.output import JsonLinesWriter
from certwatch.progress import Progress
from certwatch.replay import ReplayReport, collector_tuned, summary
from schemas.events import CertificateEvent, SensorEvent, TrafficStatsEvent
from schemas.topics import CERTIFICATE_TOPIC, TRAFFIC_STATS_TOPIC, key_of, topic_of
from sensor.anomalies import Anomaly, AnomalyCounter
from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.errors import CaptureError
from sensor.pcapfile import Buffer, PcapReader
from sensor.sensor import Sensor
from sensor.traffic import LIMIT_ANOMALY

if TYPE_CHECKING:
    # The detectors, the bus and the metrics server are imported where they are used:
    # ``--no-alerts`` needs none of them (start-up).
    from certwatch.bus.memory import MemoryBus
    from certwatch.metrics import Collector
    from certwatch.services import ProcessorService
    from processors.engine import Processor
    from processors.policy import Policy
    from schemas.alerts import AlertEvent
    from sensor.pcapfile import CaptureReader

log = logging.getLogger("certwatch.workers")

SEND_FRAMES = 16_384  # a watermark every 16384 frames at least, so the parent can release
SEND_EVERY_ITEMS = 512  # events per pipe message, about (sent after the frame list reaching it)
MAX_HELD = 50_000  # events the parent holds from one worker before it stops reading it
END = 1 << 62  # the frame tag of what ``Sensor.finish`` emits: after every frame
TEMPLATES = 4096  # certificates per worker whose event text the parent keeps (see Sighting)
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2

FlowEnds = tuple[tuple[bytes, int], tuple[bytes, int]]


class Sighting(NamedTuple):
    """A certificate event sent without its text: what differs from the worker's earlier
    event of that certificate (whose text the parent has, ``template``, filled in when the
    parent receives it). Every other member is the certificate's own or the observer's."""

    stamp: datetime
    event_id: str
    role: str
    position: int
    server_ip: str
    server_port: int
    server_name: str | None
    template: str = ""


# One item per event or raw anomaly: (frame tag, topic, key, JSON text, certificate sha256
# or None, timestamp, None). A certificate sent as a Sighting: (frame tag, topic, key, "",
# sha256, timestamp, the Sighting). An anomaly: (frame tag, "", kind, detail, None,
# timestamp, its flow's ends or None).
Item = tuple[int, str, str, str, str | None, float, FlowEnds | Sighting | None]
Emit = Callable[[str, str, str], Awaitable[None]]
"""(topic, key, JSON text) of one merged event, in order."""


class Snapshot(NamedTuple):
    """A worker's counters, sent with every batch."""

    packets: int
    not_tcp: int
    tls_flows: int
    not_tls_flows: int
    handshakes: dict[str, int]
    established: int
    flows_created: int
    flows_evicted: int
    flows_expired: int
    flows_active: int
    now: float


class WorkerError(RuntimeError):
    """A worker process ended without finishing its share (it crashed or was killed)."""


class ForwardingAnomalies(AnomalyCounter):
    """A worker's anomaly counter: counts, and keeps every occurrence for the parent
    instead of rate-limiting locally (the parent's counter decides which become events)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.raw: list[Anomaly] = []

    def record(
        self,
        kind: str,
        detail: str,
        timestamp: float,
        flow: FlowEnds | None = None,
    ) -> Anomaly | None:
        self.totals[kind] += 1
        self.raw.append(Anomaly(kind, detail, timestamp, 1, flow))
        return None

    def flush(self, timestamp: float) -> list[Anomaly]:
        return []


class Announcements:
    """Which certificate events a single sensor would have emitted: the first sighting of
    a fingerprint, then again once ``ttl`` seconds have passed (``EventBuilder``'s rule,
    bounded the same way: pruned of expired entries past ``2 * cache_size``)."""

    def __init__(self, ttl: float, cache_size: int) -> None:
        self.ttl = ttl
        self.bound = 2 * cache_size
        self._last: dict[str, float] = {}

    def first_sighting(self, sha256: str, timestamp: float) -> bool:
        last = self._last.get(sha256)
        if last is not None and timestamp - last < self.ttl:
            return False
        if len(self._last) >= self.bound:
            horizon = timestamp - self.ttl
            self._last = {k: t for k, t in self._last.items() if t >= horizon}
            if len(self._last) >= self.bound:
                self._last.clear()
        self._last[sha256] = timestamp
        return True


def worker_config(config: SensorConfig, workers: int) -> SensorConfig:
    """A worker's share of ``config``: 1/N of the flow table and of the buffer budget, and
    every certificate announced (the parent applies the TTL; -inf since capture time may
    step back)."""
    return replace(config, max_flows=max(1, config.max_flows // workers),
                   max_buffered_bytes=max(1, config.max_buffered_bytes // workers),
                   certificate_event_ttl=float("-inf"))


# -- the worker process -------------------------------------------------------------------


class _Outbox:
    """A worker's side of the pipe: tagged items, sent in batches with a watermark."""

    def __init__(self, conn: Connection, sensor: Sensor, forward: ForwardingAnomalies) -> None:
        self.conn, self.sensor, self.forward = conn, sensor, forward
        self.items: list[Item] = []
        self.to_json = JsonLinesWriter("-").to_json  # its shared-fragment cache; no output
        self.progress: tuple[str, int, int | None] | None = None
        # Certificates whose event text was sent, in step with the parent's templates.
        self.texts_sent: dict[str, None] = {}
        self.sent = 0  # the watermark of the last batch sent

    def collect(self, tag: int, events: list[SensorEvent]) -> None:
        """Tag ``events`` and the anomalies recorded while the sensor handled frame ``tag``.
        Anomalies go after the frame's events: their relative order is lost, which only
        matters for the order of output, not its content."""
        append, to_json, sent = self.items.append, self.to_json, self.texts_sent
        for event in events:
            if isinstance(event, CertificateEvent):
                sha256, stamp = event.hash.sha256, event.timestamp
                if sha256 in sent:
                    seen = event.certwatch.seen
                    append((tag, CERTIFICATE_TOPIC, sha256, "", sha256, stamp.timestamp(),
                            Sighting(stamp, event.event.id, seen.role, seen.position,
                                     seen.server_ip, seen.server_port, seen.server_name)))
                    continue
                if len(sent) >= TEMPLATES:  # Templates.take does the same
                    sent.clear()
                sent[sha256] = None
                append((tag, CERTIFICATE_TOPIC, sha256, to_json(event), sha256,
                        stamp.timestamp(), None))
            else:
                append((tag, topic_of(event), key_of(event), to_json(event), None, 0.0, None))
        for anomaly in self.forward.raw:
            append((tag, "", anomaly.kind, anomaly.detail, None, anomaly.timestamp,
                    anomaly.flow))
        self.forward.raw.clear()

    def send(self, watermark: int) -> None:
        self.conn.send(("batch", watermark, snapshot(self.sensor), self.items, self.progress))
        self.items = []
        self.sent = watermark


def snapshot(sensor: Sensor) -> Snapshot:
    stats, flows = sensor.stats, sensor.flows
    return Snapshot(stats.packets, stats.not_tcp, stats.tls_flows, stats.not_tls_flows,
                    dict(stats.handshakes), stats.established, flows.created, flows.evicted,
                    flows.expired, len(flows), sensor.now)


def run_worker(index: int, workers: int, paths: Sequence[str], config: SensorConfig,
               conn: Connection) -> None:
    """A worker process's whole life: its share of every capture, then ``finish``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    sensor = Sensor(worker_config(config, workers))
    forward = ForwardingAnomalies()
    sensor.anomalies = forward
    outbox = _Outbox(conn, sensor, forward)
    report = ReplayReport()
    frame = 0
    # The collector set as for a replay in one process (certwatch.replay.collector_tuned),
    # though a worker gains little from it: 0.3% of its instructions on the benchmark.
    with collector_tuned():
        for path in paths:
            try:
                reader = open_capture(path)
            except CaptureError as error:
                if index == 0:  # every worker fails alike: one says so
                    log.error("%s", error)
                report.failed.append((path, str(error)))
                continue
            report.captures += 1
            with reader:
                if isinstance(reader, PcapReader):
                    frame = _share_records(reader, path, outbox, frame, workers, index)
                else:
                    frame = _share(reader, path, outbox, frame, workers, index)
                if reader.truncated:
                    if index == 0:
                        log.warning("%s: capture is truncated; read what was complete", path)
                    report.truncated.append(path)
                report.skipped_records += reader.skipped_records
        outbox.send(frame)
        outbox.collect(END, sensor.finish())
        outbox.send(END)
    conn.send(("end", snapshot(sensor), report.captures, report.failed, report.truncated,
               report.skipped_records))
    conn.close()
    log.debug("worker %d: %d of %d frames, %.2f s CPU", index, sensor.stats.packets, frame,
              time.process_time())


def _share(reader: CaptureReader, path: str, outbox: _Outbox, frame: int, workers: int,
           index: int) -> int:
    """This worker's share of one capture, its frames numbered on from ``frame``; returns
    the number of the last."""
    sensor = outbox.sensor
    share, drain, queue, raw = (sensor.process_share_many, sensor.drain, sensor.queue,
                                outbox.forward.raw)
    for batch in reader.batches():  # lists of frames: no per-frame generator resume
        frames, left = iter(batch), len(batch)
        while left:
            # This worker's frames are processed, the others only move the clock. A call
            # returns after any frame that may have queued something, so what is queued
            # then is that frame's (Sensor.process_share_many).
            taken = share(frames, left, workers, index)
            frame += taken
            left -= taken
            if queue or raw:
                outbox.collect(frame, drain())
        if frame - outbox.sent >= SEND_FRAMES or len(outbox.items) >= SEND_EVERY_ITEMS:
            if index == 0:
                outbox.progress = (path, reader.bytes_read, reader.bytes_total)
            outbox.send(frame)
    return frame


def _share_records(reader: PcapReader, path: str, outbox: _Outbox, frame: int, workers: int,
                   index: int) -> int:
    """:func:`_share` for a classic pcap, whose records the sensor reads in place
    (``PcapReader.record_runs`` and ``Sensor.process_pcap_records`` with this worker's
    share, as ``certwatch.replay`` does for one process): no frame copy and no tuple per
    frame. A call stops right after any frame that may have queued something, so what is
    queued then is that frame's; ``Sensor.records_taken`` numbers it."""
    sensor = outbox.sensor
    fmt = reader.record_format
    process, drain, queue, raw = (sensor.process_pcap_records, sensor.drain, sensor.queue,
                                  outbox.forward.raw)
    number = frame

    def consume(buf: Buffer, start: int, end: int) -> int:
        nonlocal number
        pos = start
        while True:
            pos = process(buf, pos, end, fmt, workers, index)
            taken = sensor.records_taken
            if not taken:  # the next record is not all before end: the reader's
                return pos
            number += taken
            if queue or raw:
                outbox.collect(number, drain())

    for _ in reader.record_runs(consume):
        if number - outbox.sent >= SEND_FRAMES or len(outbox.items) >= SEND_EVERY_ITEMS:
            if index == 0:
                outbox.progress = (path, reader.bytes_read, reader.bytes_total)
            outbox.send(number)
    return number


# -- the parent -----------------------------------------------------------------------------


class Templates:
    """The parent's copy of one worker's certificate event texts (``_Outbox.texts_sent``):
    the same certificates, in step because both see that worker's items in its order and
    clear at the same item."""

    def __init__(self) -> None:
        self._text: dict[str, str] = {}

    def take(self, items: list[Item]) -> None:
        """Keep the texts of certificate events in ``items``; give each Sighting its
        certificate's text."""
        texts = self._text
        for position, item in enumerate(items):
            sha256 = item[4]
            if sha256 is None:
                continue
            sighting = item[6]
            if isinstance(sighting, Sighting):
                tag, topic, key, text, _, timestamp, _ = item
                items[position] = (tag, topic, key, text, sha256, timestamp,
                                   sighting._replace(template=texts[sha256]))
                continue
            if len(texts) >= TEMPLATES:
                texts.clear()
            texts[sha256] = item[3]


def sighting_text(sighting: Sighting) -> str:
    """The event text one sensor would have written for this sighting: its certificate's
    earlier event with this one's time, id and place (the only members that differ, see
    ``EventBuilder._certificate_events``). Rare (a certificate announced again after its
    TTL, on a worker that sent its text before): decoded and encoded in full."""
    event = CertificateEvent.model_validate_json(sighting.template)
    extension = event.certwatch
    seen = extension.seen.model_copy(update={
        "role": sighting.role, "position": sighting.position, "server_ip": sighting.server_ip,
        "server_port": sighting.server_port, "server_name": sighting.server_name})
    return encode(event.model_copy(update={
        "timestamp": sighting.stamp,
        "event": event.event.model_copy(update={"id": sighting.event_id}),
        "certwatch": extension.model_copy(update={"seen": seen}),
    })).decode()


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    watermark: int = 0
    held: list[Item] = field(default_factory=list)
    snapshot: Snapshot | None = None
    ended: bool = False
    reading: bool = False
    templates: Templates = field(default_factory=Templates)


class Merger:
    """The parent's side: merges the workers' streams in frame order and applies what a
    single sensor decides across flows (anomaly rate limits, certificate TTL)."""

    def __init__(self, config: SensorConfig, workers: int, emit: Emit) -> None:
        self.emit = emit
        self.sensor = Sensor(config)  # never fed: the merged counters, the anomaly builder
        self.anomalies = AnomalyCounter(config.anomaly_report_interval)
        self.sensor.anomalies = self.anomalies
        self.announcements = Announcements(config.certificate_event_ttl,
                                           config.certificate_cache_size)
        self.certificates = 0
        self.emitted = 0
        self.snapshots: list[Snapshot | None] = [None] * workers
        self.max_stats_endpoints = config.max_stats_endpoints

    async def release(self, workers: list[_Worker]) -> None:
        """Emit, in frame order, every held event that no worker can still precede."""
        low = min(w.watermark for w in workers)
        ready: list[Item] = []
        for worker in workers:
            held = worker.held
            cut = 0
            while cut < len(held) and held[cut][0] <= low:
                cut += 1
            if cut:
                ready.extend(held[:cut])
                del held[:cut]
        ready.sort(key=_tag)  # stable: one frame's items stay in worker, then own, order
        stats: list[str] = []  # the traffic statistics of frame ``stats_tag``, to merge
        stats_tag = 0
        for tag, topic, key, text, sha256, timestamp, flow in ready:
            if stats and tag != stats_tag:
                await self._send_stats(stats)
                stats = []
            if topic == TRAFFIC_STATS_TOPIC:
                stats.append(text)
                stats_tag = tag
                continue
            if not topic:  # a raw anomaly: kind, detail
                assert not isinstance(flow, Sighting)
                report = self.anomalies.record(key, text, timestamp, flow)
                if report is not None:
                    await self._emit_model(report)
                continue
            if sha256 is not None:
                if not self.announcements.first_sighting(sha256, timestamp):
                    continue
                self.certificates += 1
                if isinstance(flow, Sighting):
                    text = sighting_text(flow)
            await self._send(topic, key, text)
        if stats:
            await self._send_stats(stats)

    async def _send_stats(self, texts: list[str]) -> None:
        """One frame's traffic statistics from every worker, summed per endpoint."""
        if len(texts) == 1:
            event = TrafficStatsEvent.model_validate_json(texts[0])
            await self._send(TRAFFIC_STATS_TOPIC, key_of(event), texts[0])
            return
        events = [TrafficStatsEvent.model_validate_json(text) for text in texts]
        merged, over = merge_traffic(events, self.max_stats_endpoints)
        for event in merged:
            await self._send(TRAFFIC_STATS_TOPIC, key_of(event), encode(event).decode())
        if over:
            report = self.anomalies.record(
                LIMIT_ANOMALY, f"{over} server endpoints beyond the limit of "
                f"{self.max_stats_endpoints} across the workers in one interval",
                merged[-1].timestamp.timestamp())
            if report is not None:
                await self._emit_model(report)

    async def _send(self, topic: str, key: str, text: str) -> None:
        self.emitted += 1
        await self.emit(topic, key, text)

    async def _emit_model(self, report: Anomaly) -> None:
        event = self.sensor.builder.anomaly(report)
        await self._send(topic_of(event), key_of(event), encode(event).decode())

    async def finish(self) -> None:
        """End of input: the anomaly counts not yet reported, as one event per kind."""
        self.sensor.stats.certificates = self.certificates
        self.sensor.now = max((s.now for s in self.snapshots if s is not None), default=0.0)
        for report in self.anomalies.flush(self.sensor.now):
            await self._emit_model(report)

    def update(self, index: int, snap: Snapshot) -> None:
        """Take a worker's counters and make the merged sensor's the sums."""
        self.snapshots[index] = snap
        snaps = [s for s in self.snapshots if s is not None]
        stats, flows = self.sensor.stats, self.sensor.flows
        stats.packets = sum(s.packets for s in snaps)
        stats.not_tcp = sum(s.not_tcp for s in snaps)
        stats.tls_flows = sum(s.tls_flows for s in snaps)
        stats.not_tls_flows = sum(s.not_tls_flows for s in snaps)
        stats.handshakes = sum((Counter(s.handshakes) for s in snaps), Counter())
        stats.established = sum(s.established for s in snaps)
        stats.certificates = self.certificates
        flows.created = sum(s.flows_created for s in snaps)
        flows.evicted = sum(s.flows_evicted for s in snaps)
        flows.expired = sum(s.flows_expired for s in snaps)


def merge_traffic(events: Sequence[TrafficStatsEvent],
                  bound: int) -> tuple[list[TrafficStatsEvent], int]:
    """Sum the events of one interval per endpoint (their ids, a function of the endpoint
    and the interval, agree; each direction's counts too), busiest first as a sensor
    orders them; at most ``bound`` of them, and the number of endpoints left out."""
    summed: dict[tuple[str, int, str], TrafficStatsEvent] = {}
    for event in events:
        where = (event.destination.ip, event.destination.port, event.network.transport)
        have = summed.get(where)
        if have is None:
            summed[where] = event
            continue
        net, traffic = have.network, have.certwatch.traffic
        more = event.certwatch.traffic
        source, dest = have.source, have.destination
        summed[where] = have.model_copy(update={
            "network": net.model_copy(update={"bytes": net.bytes + event.network.bytes,
                                              "packets": net.packets + event.network.packets}),
            "source": None if source is None or event.source is None else source.model_copy(
                update={"bytes": _sum(source.bytes, event.source.bytes),
                        "packets": _sum(source.packets, event.source.packets)}),
            "destination": dest.model_copy(update={
                "bytes": _sum(dest.bytes, event.destination.bytes),
                "packets": _sum(dest.packets, event.destination.packets)}),
            "certwatch": have.certwatch.model_copy(update={"traffic": traffic.model_copy(
                update={"connections": traffic.connections + more.connections,
                        "handshakes": traffic.handshakes + more.handshakes,
                        "failed_handshakes": traffic.failed_handshakes
                        + more.failed_handshakes})}),
        })
    ordered = sorted(summed.values(), key=lambda e: (-e.network.bytes, -e.network.packets))
    return ordered[:bound], max(0, len(ordered) - bound)


def _sum(a: int | None, b: int | None) -> int | None:
    """Two parts of a direction's count; unknown (None) if either part is (an event from a
    sensor without the split)."""
    return None if a is None or b is None else a + b


def _tag(item: Item) -> int:
    return item[0]


async def replay_workers(
    paths: Sequence[str],
    config: SensorConfig,
    workers: int,
    emit: Emit,
    progress: Progress | None = None,
    merger: Merger | None = None,
) -> tuple[ReplayReport, Sensor]:
    """Replay ``paths`` with ``workers`` processes; every merged event goes to ``emit`` in
    frame order. Returns the report and a sensor object holding the merged counters (for
    :func:`certwatch.replay.summary`). Raises :class:`WorkerError` if a worker dies; the
    other workers are then stopped."""
    started = time.perf_counter()
    merger = merger or Merger(config, workers, emit)
    context = multiprocessing.get_context("fork")  # the capture paths and config as they are
    pool: list[_Worker] = []
    for index in range(workers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=run_worker, name=f"certwatch-worker-{index}",
                                  args=(index, workers, list(paths), config, send), daemon=True)
        process.start()
        send.close()
        pool.append(_Worker(process, receive))
    report = ReplayReport()
    try:
        await _receive(pool, merger, report, progress)
    finally:
        for worker in pool:
            if not worker.ended:  # stopped early (an error, or cancelled): stop it too
                worker.process.terminate()
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        if progress is not None:
            progress.clear()
    await merger.finish()
    report.events = merger.emitted
    report.seconds = time.perf_counter() - started
    return report, merger.sensor


async def _receive(pool: list[_Worker], merger: Merger, report: ReplayReport,
                   progress: Progress | None) -> None:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()

    def sync_readers() -> None:
        # Read every worker not too far ahead of the slowest (see the module docstring).
        for worker in pool:
            want = not worker.ended and len(worker.held) < MAX_HELD
            if want and not worker.reading:
                loop.add_reader(worker.conn.fileno(), readable.set)
            elif worker.reading and not want:
                loop.remove_reader(worker.conn.fileno())
            worker.reading = want

    sync_readers()
    try:
        while not all(worker.ended for worker in pool):
            await readable.wait()
            readable.clear()
            for index, worker in enumerate(pool):
                if worker.reading and worker.conn.poll():
                    _take(index, worker, merger, report, progress)
            await merger.release(pool)
            sync_readers()
    finally:
        for worker in pool:
            if worker.reading:
                loop.remove_reader(worker.conn.fileno())
                worker.reading = False


def _take(index: int, worker: _Worker, merger: Merger, report: ReplayReport,
          progress: Progress | None) -> None:
    try:
        message = worker.conn.recv()
    except (EOFError, OSError) as error:
        worker.process.join(5)
        raise WorkerError(f"worker {index} (pid {worker.process.pid}) ended without finishing "
                          f"(exit code {worker.process.exitcode})") from error
    if message[0] == "batch":
        _, watermark, snap, items, where = message
        worker.watermark = watermark
        worker.templates.take(items)
        worker.held.extend(items)
        merger.update(index, snap)
        if progress is not None and where is not None:
            stats = merger.sensor.stats
            progress.update(where[0], where[1], where[2], stats.packets,
                            sum(stats.handshakes.values()))
        return
    _, snap, captures, failed, truncated, skipped = message
    worker.ended = True
    worker.watermark = END + 1
    merger.update(index, snap)
    if index == 0:  # every worker read the same files: take one's account of them
        report.captures, report.failed, report.truncated = captures, failed, truncated
        report.skipped_records = skipped


# -- ``certwatch replay --workers N`` -------------------------------------------------------


class TextLinesWriter(JsonLinesWriter):
    """A :class:`JsonLinesWriter` that also takes JSON text made elsewhere (a worker's)."""

    def write_text(self, text: str) -> None:
        self._stream.write(text)
        self._stream.write("\n")
        self.written += 1


def cmd_replay_workers(
    args: argparse.Namespace, policy: Policy | None, config: SensorConfig
) -> int:
    """``certwatch replay`` with ``--workers`` > 1: the same output as one worker.
    ``policy`` is None with ``--no-alerts``, else the detectors' policy."""
    problem = workers_refuse(args.captures, args.speed)
    if problem:
        print(f"certwatch: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with ExitStack() as stack:
        try:
            events = stack.enter_context(TextLinesWriter(args.events))
            alerts = events if args.alerts == args.events else stack.enter_context(
                JsonLinesWriter(args.alerts))
        except OSError as error:
            print(f"certwatch: cannot write to {error.filename}: {error.strerror}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        processor = None
        if not args.no_alerts:
            from processors.engine import Processor
            from processors.policy import Policy
            from processors.registry import DETECTORS

            processor = Processor(policy or Policy(), DETECTORS)
        try:
            report, sensor = asyncio.run(_pipeline(args, config, processor, events, alerts))
        except WorkerError as error:
            print(f"certwatch: {error}", file=sys.stderr)
            return EXIT_FAILURE
    print(summary(report, sensor, processor.stats if processor else None), file=sys.stderr)
    return EXIT_BAD_INPUT if report.failed else EXIT_OK


async def _pipeline(
    args: argparse.Namespace,
    config: SensorConfig,
    processor: Processor | None,
    events: TextLinesWriter,
    alerts: JsonLinesWriter,
) -> tuple[ReplayReport, Sensor]:
    """Workers -> merger -> events file, and -> in-memory bus -> processors (as one
    process does, through the same bus, so the processors see the same bytes)."""
    from certwatch.metrics import ProcessorCollector, SensorCollector, start_metrics

    bus: MemoryBus | None = None
    if processor is not None:
        from certwatch.bus.memory import MemoryBus

        bus = MemoryBus()

    async def emit(topic: str, key: str, text: str) -> None:
        events.write_text(text)
        if bus is not None:
            await bus.publish(topic, key, text.encode())

    merger = Merger(config, args.workers, emit)
    service: ProcessorService | None = None
    consumer: asyncio.Task[None] | None = None
    collectors: list[Collector] = [SensorCollector(merger.sensor)]
    if processor is not None and bus is not None:
        from certwatch.services import ProcessorService

        async def write_alert(alert: AlertEvent) -> None:
            alerts.write(alert)

        service = ProcessorService(processor, bus, on_alert=write_alert)
        consumer = asyncio.create_task(service.run(service.subscribe()))
        collectors.append(ProcessorCollector(
            processor, lambda: service.dead_letters if service is not None else 0,
            busy=lambda: service.busy_seconds if service is not None else 0.0))
    metrics = await start_metrics(args, collectors, lambda: (True, "replaying"))
    try:
        return await replay_workers(args.captures, config, args.workers, emit, Progress(),
                                    merger)
    finally:
        if bus is not None and consumer is not None:
            await bus.close()
            await consumer
        if metrics is not None:
            await metrics.close()


def workers_refuse(paths: Sequence[str], speed: float | None) -> str | None:
    """Why these options cannot run with ``--workers`` > 1, or None."""
    if "-" in paths:
        return "--workers: every worker reads the captures itself; stdin (-) can be read once"
    if speed:
        return "--speed paces one process; it cannot be used with --workers"
    return None
