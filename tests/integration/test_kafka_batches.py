"""KafkaBus.publish_batch's record batches against a real Kafka-protocol broker (Tansu).

The publisher builds one record batch per partition itself (aiokafka's batch API) instead of
one ``send()`` per message, so it chooses the partitions: these tests hold it to what
aiokafka's own producer does with the same keys, to per-key order, to its size checks and
its failure accounting, and with compression on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from certwatch.bus import BrokerUnavailable, Message
from certwatch.bus.kafka import KafkaBus, MessageRejected, Outgoing, client_kwargs
from certwatch.publisher import SensorPublisher
from certwatch.settings import KafkaSettings, TopicNames, available_compressions
from certwatch.topics_admin import create_topics
from schemas.events import HandshakeEvent
from tests.integration.brokers import TansuBroker
from tests.integration.conftest import settings_for
from tests.support import DATA, handshakes, read_frames, run_sensor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# Server names as the sensor keys handshakes (SNI, else ip:port); one empty, one not ASCII.
KEYS = [f"server-{n}.example" for n in range(60)] + [
    "", "192.0.2.7:443", "[2001:db8::1]:8443", "bücher.example", "x" * 300]


def topic_names(unique: str) -> TopicNames:
    return TopicNames(handshake=f"hs-{unique}", certificate=f"cert-{unique}",
                      traffic_stats=f"stats-{unique}", anomaly=f"anomaly-{unique}",
                      alerts=f"alerts-{unique}", deadletter=f"dead-{unique}")


async def read(bus: KafkaBus, topic: str, group: str, count: int, within: float = 15.0
               ) -> list[Message]:
    """The first ``count`` messages of ``topic`` for a new group (fails after ``within``)."""
    taken: list[Message] = []

    async def collect(batches: AsyncIterator[list[Message]]) -> None:
        async for batch in batches:
            taken.extend(batch)
            if len(taken) >= count:
                return

    await asyncio.wait_for(collect(bus.subscribe_batches([topic], group)), within)
    return taken


async def partitioned(settings: KafkaSettings, unique: str, partitions: int) -> str:
    """A new topic of ``partitions`` partitions (the handshake topic of fresh names)."""
    named = settings.model_copy(update={"topics": topic_names(unique)})
    await create_topics(named, partitions=partitions, replication=1)
    return named.topics.handshake


async def test_each_key_lands_where_aiokafkas_own_producer_puts_it(
        kafka_settings: KafkaSettings, unique: str) -> None:
    topic = await partitioned(kafka_settings, unique, partitions=6)
    # The reference: aiokafka's producer with its default partitioner (the Java client's).
    reference = AIOKafkaProducer(**client_kwargs(kafka_settings), enable_idempotence=False)
    await reference.start()
    try:
        expected = {}
        for key in KEYS:
            sent = await reference.send_and_wait(topic, b"reference", key=key.encode())
            expected[key] = sent.partition
    finally:
        await reference.stop()
    assert len(set(expected.values())) == 6  # the keys spread over every partition
    async with KafkaBus(kafka_settings) as bus:
        await bus.publish_batch([(topic, key, b"ours", ()) for key in KEYS])
        got = await read(bus, topic, f"g-{unique}", 2 * len(KEYS))
    ours = {message.key: message.partition for message in got if message.value == b"ours"}
    assert ours == expected


async def test_order_per_key_holds_across_batches_and_full_record_batches(
        kafka_broker: TansuBroker, unique: str) -> None:
    # Record batches of 2 KiB: a publish of 1 KB messages fills several per partition.
    settings = settings_for(kafka_broker.bootstrap, max_batch_size=2048)
    topic = await partitioned(settings, unique, partitions=3)
    keys = KEYS[:7]
    sent: list[Outgoing] = [
        (topic, keys[n % len(keys)], f"{n:04d}".encode() + b"." * 1000, (("n", b"%d" % n),))
        for n in range(210)]
    async with KafkaBus(settings) as bus:
        for start in range(0, len(sent), 70):  # three publishes
            await bus.publish_batch(sent[start:start + 70])
        got = await read(bus, topic, f"g-{unique}", len(sent))
    assert len(got) == len(sent)
    for key in keys:
        mine = [message for message in got if message.key == key]
        assert len({message.partition for message in mine}) == 1
        mine.sort(key=lambda message: message.offset)
        assert [(m.value, m.headers) for m in mine] == [
            (value, headers) for _, k, value, headers in sent if k == key]


async def test_a_message_too_large_for_a_request_is_refused_before_anything_is_sent(
        kafka_settings: KafkaSettings, unique: str) -> None:
    topic = f"large-{unique}"
    async with KafkaBus(kafka_settings) as bus:
        await bus.publish(topic, "k", b"first")
        with pytest.raises(MessageRejected, match="larger than"):
            await bus.publish_batch([(topic, "k", b"small", ()),
                                     (topic, "k", b"x" * (1024 * 1024 + 1), ())])
        await bus.publish(topic, "k", b"last")
        got = await read(bus, topic, f"g-{unique}", 2)
    assert [message.value for message in got] == [b"first", b"last"]


@pytest.mark.skipif("zstd" not in available_compressions(),
                    reason="no zstd codec for aiokafka (package cramjam)")
async def test_zstd_compressed_events_arrive_whole(
        kafka_broker: TansuBroker, unique: str) -> None:
    """Real handshake events (a chain repeated across them) through the sensor's publisher
    with zstd, read back byte for byte by a consumer, keys on their partitions."""
    settings = settings_for(kafka_broker.bootstrap, compression="zstd")
    topic = await partitioned(settings, unique, partitions=4)
    events = handshakes(run_sensor(read_frames(DATA / "ja4" / "latest.pcapng")))
    assert len(events) > 3
    offered = events * 20
    async with KafkaBus(settings) as bus:
        publisher = SensorPublisher(bus, batch_size=50)
        sent = [(topic, key, publisher.encode(event), ()) for event, key in
                ((event, f"key-{n % 5}") for n, event in enumerate(offered))]
        await bus.publish_batch(sent)
        got = await read(bus, topic, f"g-{unique}", len(sent))
    assert sorted(message.value for message in got) == sorted(value for _, _, value, _ in sent)
    for message in got:
        assert isinstance(HandshakeEvent.model_validate_json(message.value), HandshakeEvent)
    by_key = {message.key: {m.partition for m in got if m.key == message.key}
              for message in got}
    assert all(len(partitions) == 1 for partitions in by_key.values())


async def test_a_batch_fails_fast_while_the_broker_is_away_and_goes_through_after(
        tansu_path: str, tmp_path: Path) -> None:
    """A batch publish fails with BrokerUnavailable (retriable) within about the request
    timeout while the broker is away; once it is back the same batch is written whole."""
    with TansuBroker(tmp_path, tansu_path) as broker:
        assert isinstance(broker, TansuBroker)
        settings = settings_for(broker.bootstrap, request_timeout_ms=1000)
        topic = "outage-batches"
        async with KafkaBus(settings) as bus:
            await bus.publish(topic, "warm-up", b"-")
            broker.stop()
            messages: list[Outgoing] = [(topic, KEYS[n % 9], b"%d" % n, ()) for n in range(90)]
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable) as failure:
                await bus.publish_batch(messages)
            assert failure.value.retriable and time.monotonic() - started < 1.0 + 1.0
            assert not bus.reachable
            broker.start()  # same port, empty storage
            # Tansu 0.6 accepts records for a topic that vanished with the restart but never
            # serves them: the retry goes to a topic of the new broker.
            messages = [("after-" + topic, key, value, ()) for _, key, value, _ in messages]
            deadline = time.monotonic() + 20
            while True:
                try:
                    await bus.publish_batch(messages)
                    break
                except BrokerUnavailable:
                    assert time.monotonic() < deadline, "no recovery after the restart"
            assert bus.reachable
            got = await read(bus, "after-" + topic, "g-outage", len(messages))
    assert sorted(message.value for message in got) == sorted(v for _, _, v, _ in messages)
