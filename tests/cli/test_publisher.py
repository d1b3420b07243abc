"""The sensor's publisher: never blocks the capture, bounded, counts and reports its losses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from certwatch.bus import BrokerUnavailable, BusConfigError
from certwatch.bus.memory import MemoryBus
from certwatch.codec import encode
from certwatch.publisher import SensorPublisher
from schemas.events import AnomalyEvent, SensorEvent
from schemas.topics import (
    ANOMALY_TOPIC,
    CERTIFICATE_TOPIC,
    HANDSHAKE_TOPIC,
    TRAFFIC_STATS_TOPIC,
    topic_of,
)
from sensor.config import SensorConfig
from sensor.sensor import Sensor
from tests.support import DATA, captures, read_frames, run_sensor
from tools.tlsgen.scenarios import Options, build


class UnreachableBroker(MemoryBus):
    """The in-memory twin with a switch to make the broker unreachable: the fault a real
    broker shows when it is stopped (tests/integration does it with a real one)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        if self.down:
            raise BrokerUnavailable("connection refused")
        await super().publish(topic, key, value, headers)


def some_events() -> list[SensorEvent]:
    return run_sensor(read_frames(DATA / "ja4" / "latest.pcapng"))


async def collect(bus: MemoryBus, topics: list[str]) -> list[bytes]:
    seen: list[bytes] = []
    async for message in bus.subscribe(topics, "test"):
        seen.append(message.value)
    return seen


async def test_events_reach_the_bus_in_order() -> None:
    bus = MemoryBus()
    reader = asyncio.create_task(collect(bus, [HANDSHAKE_TOPIC]))
    await asyncio.sleep(0)
    publisher = SensorPublisher(bus)
    publisher.start()
    events = some_events()
    for event in events:
        publisher.offer(event)
    await publisher.close()
    await bus.close()
    handshakes = [e for e in events if e.event.dataset == "certwatch.tls.handshake"]
    assert len(await reader) == len(handshakes) > 0
    assert publisher.published == len(events) and publisher.dropped == 0


async def test_a_missing_broker_never_blocks_offer_and_drops_the_oldest() -> None:
    bus = UnreachableBroker()
    bus.down = True
    publisher = SensorPublisher(bus, max_queued=5, max_backoff=0.05)
    publisher.start()
    events = some_events()
    assert len(events) > 5
    for event in events:
        publisher.offer(event)  # returns at once although nothing can be delivered
    await asyncio.sleep(0.2)
    assert publisher.queued == 5
    assert publisher.dropped == len(events) - 5
    reader = asyncio.create_task(collect(bus, [ANOMALY_TOPIC, HANDSHAKE_TOPIC,
                                               CERTIFICATE_TOPIC, TRAFFIC_STATS_TOPIC]))
    await asyncio.sleep(0)
    bus.down = False  # the broker comes back
    await publisher.close()
    await bus.close()
    delivered = await reader
    assert publisher.queued == 0
    assert len(delivered) == 5  # the five newest were held and delivered


async def test_drops_are_reported_once_the_broker_is_back() -> None:
    bus = UnreachableBroker()
    sensor = Sensor(SensorConfig(name="t"))
    publisher = SensorPublisher(
        bus, max_queued=3, max_backoff=0.05,
        drop_report=lambda n: sensor.report_drops(
            "publish_dropped", "events dropped while the broker was unreachable", n),
    )
    reader = asyncio.create_task(collect(bus, [ANOMALY_TOPIC]))
    await asyncio.sleep(0)
    publisher.start()
    bus.down = True
    events = some_events()
    for event in events:
        publisher.offer(event)
    await asyncio.sleep(0.1)
    bus.down = False
    await publisher.close()
    await bus.close()
    reports = [AnomalyEvent.model_validate_json(v) for v in await reader]
    drops = [r for r in reports if r.certwatch.anomaly.kind == "publish_dropped"]
    assert len(drops) == 1
    assert drops[0].certwatch.anomaly.count == publisher.dropped == len(events) - 3
    assert sensor.anomalies.totals["publish_dropped"] == publisher.dropped


async def test_close_gives_up_after_its_deadline_and_counts_the_rest() -> None:
    bus = UnreachableBroker()
    bus.down = True
    publisher = SensorPublisher(bus, max_backoff=0.05)
    publisher.start()
    events = some_events()
    for event in events:
        publisher.offer(event)
    await publisher.close(timeout=0.2)
    assert publisher.dropped == len(events) and publisher.published == 0


class RefusingBroker(MemoryBus):
    """A broker that refuses every publish for good: what Kafka answers a producer whose
    settings it cannot honour (Tansu and idempotent producers)."""

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        raise BusConfigError("the broker does not support idempotent producers")


async def test_events_refused_for_good_are_counted_as_dropped_at_close() -> None:
    publisher = SensorPublisher(RefusingBroker(), max_backoff=0.05)
    publisher.start()
    events = some_events()
    for event in events:
        publisher.offer(event)
    await asyncio.sleep(0.1)
    await publisher.close(timeout=5)
    assert publisher.published == 0
    assert publisher.dropped == len(events) > 0


class FlappingBroker(MemoryBus):
    """Fails, accepts one batch, then fails again: a broker that comes back only briefly."""

    def __init__(self, pattern: list[bool]) -> None:
        super().__init__()
        self.pattern = pattern  # True: this publish succeeds

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        ok = self.pattern.pop(0) if self.pattern else True
        if not ok:
            raise BrokerUnavailable("connection refused")
        await super().publish(topic, key, value, headers)


async def test_every_dropped_event_is_in_some_loss_report() -> None:
    bus = FlappingBroker([False, False, True, False, False, False, False])
    sensor = Sensor(SensorConfig(name="t"))
    publisher = SensorPublisher(
        bus, max_queued=3, batch_size=1, max_backoff=0.02,
        drop_report=lambda n: sensor.report_drops("publish_dropped", "lost", n))
    reader = asyncio.create_task(collect(bus, [ANOMALY_TOPIC]))
    await asyncio.sleep(0)
    publisher.start()
    for event in some_events():
        publisher.offer(event)
        await asyncio.sleep(0.01)  # the capture keeps offering while the broker flaps
    await publisher.close()
    await bus.close()
    reports = [AnomalyEvent.model_validate_json(v) for v in await reader]
    reported = sum(r.certwatch.anomaly.count for r in reports
                   if r.certwatch.anomaly.kind == "publish_dropped")
    assert publisher.dropped > 0
    assert reported == publisher.dropped


async def _assert_published_bytes_are_encode(events: list[SensorEvent]) -> None:
    """Every event, offered in capture order, goes out on its topic, in order, as
    ``codec.encode`` makes it."""
    topics = (HANDSHAKE_TOPIC, CERTIFICATE_TOPIC, ANOMALY_TOPIC)
    bus = MemoryBus()
    readers = {topic: asyncio.create_task(collect(bus, [topic])) for topic in topics}
    await asyncio.sleep(0)
    publisher = SensorPublisher(bus, batch_size=7)
    publisher.start()
    for event in events:
        publisher.offer(event)
    await publisher.close()
    await bus.close()
    for topic in topics:
        expected = [encode(event) for event in events if topic_of(event) == topic]
        assert await readers[topic] == expected
    assert publisher.published == len(events)


async def test_published_bytes_are_the_codec_encoding_for_every_capture() -> None:
    """The publisher reuses the JSON text of the parts the sensor shares between events;
    what reaches the broker must still be byte for byte ``codec.encode`` (the processors
    and the SIEM read those bytes), on every capture of tests/data."""
    events = [event for capture in captures() for event in run_sensor(read_frames(capture))]
    assert len(events) > 50
    await _assert_published_bytes_are_encode(events)


async def test_published_bytes_are_the_codec_encoding_when_parts_repeat(tmp_path: Path) -> None:
    """Many connections to a few servers from a few client programs: the event builder
    shares the TLS blocks, chains and hello summaries between their events, so most of each
    event is reused text."""
    scenario = build("benchmark", Options(connections=120, app_segments=1, concurrency=16))
    capture = tmp_path / "benchmark.pcap"
    scenario.write(capture)
    events = run_sensor(read_frames(capture))
    assert len({encode(event) for event in events}) == len(events) > 120
    await _assert_published_bytes_are_encode(events)


class HangingBroker(MemoryBus):
    """A broker that takes a publish and never answers it (a stalled connection)."""

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        await asyncio.Event().wait()


async def test_the_batch_being_published_at_the_deadline_is_counted_as_dropped() -> None:
    publisher = SensorPublisher(HangingBroker(), batch_size=5)
    publisher.start()
    events = some_events()
    for event in events:
        publisher.offer(event)
    await asyncio.sleep(0.05)
    await publisher.close(timeout=0.1)
    assert publisher.published == 0
    assert publisher.dropped == len(events) > 5 and publisher.queued == 0
