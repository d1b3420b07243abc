"""KafkaBus and create_topics against a real Kafka-protocol broker (Tansu) on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from certwatch.bus import Message
from certwatch.bus.kafka import BrokerUnavailable, BusConfigurationError, KafkaBus
from certwatch.settings import KafkaSettings, TopicNames
from certwatch.topics_admin import create_topics, create_topics_lines, describe_topics
from tests.integration.brokers import TansuBroker, TlsTerminator, free_port, make_tls_files
from tests.integration.conftest import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def topic_names(unique: str) -> TopicNames:
    return TopicNames(handshake=f"hs-{unique}", certificate=f"cert-{unique}",
                      traffic_stats=f"stats-{unique}", anomaly=f"anomaly-{unique}",
                      alerts=f"alerts-{unique}", deadletter=f"dead-{unique}")


async def take(messages: AsyncIterator[Message], count: int, within: float = 10.0
               ) -> list[Message]:
    """The next ``count`` messages. Keep a reference to ``messages`` while committing: an
    iterator that is garbage collected ends its subscription (and stops its consumer)."""
    async def collect() -> list[Message]:
        taken = []
        async for message in messages:
            taken.append(message)
            if len(taken) == count:
                break
        return taken

    return await asyncio.wait_for(collect(), within)


async def test_round_trip_keeps_key_value_headers_and_order_per_key(
        kafka_settings: KafkaSettings, unique: str) -> None:
    topic = f"roundtrip-{unique}"
    sent = [(topic, f"server-{i % 2}.example", f"event {i}".encode(), (("schema", b"1"),))
            for i in range(6)]
    async with KafkaBus(kafka_settings) as bus:
        await bus.publish(*sent[0])
        await bus.publish_batch(sent[1:])
        got = await take(bus.subscribe([topic], f"g-{unique}"), len(sent))
    assert sorted((m.key, m.value, m.headers) for m in got) == sorted(
        (key, value, headers) for _, key, value, headers in sent)
    for key in ("server-0.example", "server-1.example"):
        same_key = [m for m in got if m.key == key]
        assert len({m.partition for m in same_key}) == 1  # a key stays on one partition
        assert [m.value for m in same_key] == [v for _, k, v, _ in sent if k == key]
        assert [m.offset for m in same_key] == sorted(m.offset for m in same_key)


async def test_two_members_of_a_group_share_the_partitions(
        kafka_settings: KafkaSettings, unique: str) -> None:
    settings = kafka_settings.model_copy(update={"topics": topic_names(unique)})
    await create_topics(settings, partitions=4)
    topic, group = settings.topics.handshake, f"g-{unique}"
    async with KafkaBus(settings) as bus:
        members = [bus.subscribe([topic], group), bus.subscribe([topic], group)]
        received: list[list[Message]] = [[], []]

        async def drain(index: int) -> None:
            async for message in members[index]:
                received[index].append(message)

        tasks = [asyncio.create_task(drain(0)), asyncio.create_task(drain(1))]
        deadline = time.monotonic() + 20
        while not (len(bus.assignments()) == 2 and all(bus.assignments())
                   and sum(map(len, bus.assignments())) == 4):
            assert time.monotonic() < deadline, f"group never settled: {bus.assignments()}"
            await asyncio.sleep(0.1)
        first, second = bus.assignments()
        assert not first & second
        await bus.publish_batch([(topic, f"host-{i}", b"x", ()) for i in range(40)])
        while sum(map(len, received)) < 40:
            assert time.monotonic() < deadline, "messages not delivered"
            await asyncio.sleep(0.05)
        await bus.close()
        await asyncio.gather(*tasks)
    for index, owned in enumerate((first, second)):
        assert received[index], "one member got nothing"
        assert {(m.topic, m.partition) for m in received[index]} <= owned
    assert sorted(m.key for m in received[0] + received[1]) == sorted(
        f"host-{i}" for i in range(40))


async def test_a_new_member_resumes_after_the_committed_offset(
        kafka_settings: KafkaSettings, unique: str) -> None:
    settings = kafka_settings.model_copy(update={"topics": topic_names(unique)})
    await create_topics(settings, partitions=1)
    topic, group = settings.topics.alerts, f"g-{unique}"
    async with KafkaBus(settings) as bus:
        await bus.publish_batch([(topic, "k", f"{i}".encode(), ()) for i in range(5)])
        subscription = bus.subscribe([topic], group)
        first_pass = await take(subscription, 5)
        await bus.commit(first_pass[2])  # processed 0, 1, 2; then "crashed"
    async with KafkaBus(settings) as bus:
        resumed = await take(bus.subscribe([topic], group), 2)
    assert [m.value for m in resumed] == [b"3", b"4"]
    assert [m.offset for m in resumed] == [first_pass[3].offset, first_pass[4].offset]


async def test_publish_fails_fast_while_the_broker_is_down_and_recovers(
        tansu_path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with TansuBroker(tmp_path, tansu_path) as broker:
        assert isinstance(broker, TansuBroker)
        settings = settings_for(broker.bootstrap, request_timeout_ms=1500)
        async with KafkaBus(settings) as bus:
            await bus.publish("outage", "k", b"before")
            broker.stop()
            caplog.set_level(logging.WARNING, logger="certwatch.bus.kafka")
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable) as failure:
                    await bus.publish("outage", "k", b"during")
                assert time.monotonic() - started < 1.5 + 0.5
                assert failure.value.retriable
            ours = [r for r in caplog.records if r.name == "certwatch.bus.kafka"]
            assert len(ours) == 1 and "unavailable" in ours[0].getMessage()
            broker.start()  # same port, empty storage
            deadline = time.monotonic() + 15
            while True:
                try:
                    await bus.publish("outage", "k", b"after")
                    break
                except BrokerUnavailable:
                    assert time.monotonic() < deadline, "no recovery after the restart"
            # Read back on a topic of the new (empty) broker: Tansu 0.6 accepts the produce
            # to a topic that vanished with the restart but never serves those records.
            await bus.publish("after-outage", "k", b"after")
            got = await take(bus.subscribe(["after-outage"], "g-outage"), 1)
    assert got[0].value == b"after"


async def test_create_topics_lays_out_and_is_idempotent(
        kafka_settings: KafkaSettings, unique: str) -> None:
    settings = kafka_settings.model_copy(update={"topics": topic_names(unique)})
    first = await create_topics(settings, partitions=3, replication=1, retention_ms=3_600_000)
    assert [o.status for o in first] == ["created"] * 6
    names = [name for _, name in settings.topics]
    assert [o.name for o in first] == names
    infos = {info.name: info for info in await describe_topics(settings, names)}
    assert {info.partitions for info in infos.values()} == {3}
    # Tansu 0.6 stores and reports topic configs, so the layout is checked as Kafka would.
    assert infos[settings.topics.certificate].configs["cleanup.policy"] == "compact"
    assert "retention.ms" not in infos[settings.topics.certificate].configs
    for role in ("handshake", "traffic_stats", "anomaly", "alerts", "deadletter"):
        configs = infos[getattr(settings.topics, role)].configs
        assert configs["cleanup.policy"] == "delete"
        assert configs["retention.ms"] == "3600000"
    lines = await create_topics_lines(settings)
    assert lines[-1] == "0 created, 6 already existed"
    assert all(line.startswith("exists ") for line in lines[:-1])


async def test_idempotent_producer_refused_with_a_hint(kafka_broker: TansuBroker) -> None:
    settings = settings_for(kafka_broker.bootstrap, enable_idempotence=True)
    bus = KafkaBus(settings)
    with pytest.raises(BusConfigurationError, match="ENABLE_IDEMPOTENCE=false"):
        await bus.start()
    await bus.close()


async def test_tls_round_trip_verifies_the_broker_certificate(
        tansu_path: str, tmp_path: Path, unique: str) -> None:
    files = make_tls_files(tmp_path)
    tls_port = free_port()
    # Tansu advertises the terminator's port, so every connection goes through TLS.
    with TansuBroker(tmp_path, tansu_path, advertised_port=tls_port) as broker:
        assert isinstance(broker, TansuBroker)
        async with TlsTerminator(files, broker.port, tls_port):
            settings = settings_for(f"127.0.0.1:{tls_port}", security_protocol="SSL",
                                    ssl_cafile=files.ca, request_timeout_ms=2000)
            async with KafkaBus(settings) as bus:
                await bus.publish(f"tls-{unique}", "k", b"secret", (("h", b"v"),))
                got = await take(bus.subscribe([f"tls-{unique}"], f"g-{unique}"), 1)
            assert (got[0].value, got[0].headers) == (b"secret", (("h", b"v"),))

            (tmp_path / "other").mkdir()
            other_ca = make_tls_files(tmp_path / "other")
            untrusting = settings.model_copy(update={"ssl_cafile": other_ca.ca})
            bus = KafkaBus(untrusting)
            with pytest.raises(BrokerUnavailable):
                await bus.start()
            await bus.close()
