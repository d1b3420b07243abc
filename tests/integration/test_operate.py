"""Operating a processor against a real broker (Tansu on loopback): consumer lag on
``/metrics``, ``/readyz`` following the consuming side, ``topics create`` waiting for a
broker that is still starting, and ``--bus`` left to the environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path

import pytest

from certwatch.bus.kafka import KafkaBus
from certwatch.codec import encode
from certwatch.metrics import MetricsServer, ProcessorCollector, registry_of
from certwatch.services import ProcessorService
from certwatch.topics_admin import create_topics as lay_out_topics
from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent
from schemas.topics import HANDSHAKE_TOPIC
from tests.integration.brokers import TansuBroker, free_port
from tests.integration.conftest import settings_for
from tests.integration.test_end_to_end import (
    Children,
    children,  # noqa: F401  (fixture)
    create_topics,
    kafka_flags,
    tansu,  # noqa: F401  (fixture)
)
from tests.integration.test_readiness import get, wait_status
from tests.support import DATA, handshakes, read_frames, run_sensor

pytestmark = pytest.mark.integration

_LAG = re.compile(r'^certwatch_processor_consumer_lag\{partition="(\d+)",topic="([^"]+)"\} (\S+)$',
                  re.M)


def alerting_events(count: int) -> list[HandshakeEvent]:
    """``count`` copies of a real handshake with an expired certificate, each to a server of
    its own (own address and SNI), so every one raises alerts and the keys spread over the
    partitions."""
    template = next(e for e in handshakes(run_sensor(read_frames(
        DATA / "zeek" / "tls-expired-cert.pcap"))) if Processor(Policy(), DETECTORS).process(e))
    document = json.loads(encode(template))
    events = []
    for n in range(count):
        document["destination"]["ip"] = f"198.18.0.{n + 1}"
        document["tls"]["client"]["server_name"] = f"host{n}.example.org"
        events.append(HandshakeEvent.model_validate(document))
    return events


def lag_of(metrics: str) -> dict[tuple[str, int], float]:
    return {(topic, int(partition)): float(value)
            for partition, topic, value in _LAG.findall(metrics)}


@pytest.mark.timeout(60)
async def test_consumer_lag_rises_while_the_processor_is_stuck_and_falls_to_zero(
        tansu: TansuBroker) -> None:  # noqa: F811
    settings = settings_for(tansu.bootstrap)
    await lay_out_topics(settings, partitions=3, replication=1)
    events = alerting_events(40)
    async with KafkaBus(settings) as publisher:
        await publisher.publish_batch(
            [(HANDSHAKE_TOPIC, e.tls.client.server_name or "", encode(e), ()) for e in events])

    gate = asyncio.Event()  # the processor is "slow": its alert hook waits on the gate

    async def stuck(alert: AlertEvent) -> None:
        await gate.wait()

    bus = KafkaBus(settings)
    service = ProcessorService(Processor(Policy(), DETECTORS), bus, on_alert=stuck)
    server = MetricsServer(registry_of(ProcessorCollector(
        service.processor, lambda: service.dead_letters, bus.consumer_lag)),
        lambda: (True, "test"))
    port = await server.start("127.0.0.1", 0)
    work = asyncio.create_task(service.run())

    async def scrape() -> dict[tuple[str, int], float]:
        return lag_of((await asyncio.to_thread(get, port, "/metrics"))[1])

    try:
        lags: dict[tuple[str, int], float] = {}

        async def until(check: object, what: str) -> None:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                lags.clear()
                lags.update(await scrape())
                if callable(check) and check(lags):
                    return
                assert asyncio.get_running_loop().time() < deadline, f"{what}: {lags}"
                await asyncio.sleep(0.2)

        # Everything published is fetched, nothing is committed: all of it is lag, labelled
        # by the topic and partition it waits on.
        await until(lambda lag: sum(lag.values()) == len(events), "lag never reached 40")
        # Only the handshake topic has messages (the stats topic is consumed too, empty here).
        waiting = {key: value for key, value in lags.items() if value}
        assert {topic for topic, _ in waiting} == {HANDSHAKE_TOPIC}
        assert len(waiting) == 3
        assert service.processor.stats.events == len(events)  # handled, not yet committed
        gate.set()
        await until(lambda lag: len([k for k in lag if k[0] == HANDSHAKE_TOPIC]) == 3
                    and not any(lag.values()),
                    "lag never fell back to 0")
    finally:
        await bus.close()
        await server.close()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work


@pytest.mark.timeout(60)
async def test_processor_readyz_follows_its_consumer_and_the_broker(
        tansu: TansuBroker, children: Children) -> None:  # noqa: F811
    await create_topics(children, tansu)
    port = free_port()
    # A member silent for session_timeout_ms is gone for the broker: /readyz says so then.
    quick = {"CERTWATCH_KAFKA_SESSION_TIMEOUT_MS": "3000",
             "CERTWATCH_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
             "CERTWATCH_KAFKA_REQUEST_TIMEOUT_MS": "2000"}
    processor = children.start("processor", "processor", *kafka_flags(tansu),
                               "--metrics-port", str(port), env=quick)
    await wait_status(port, 200, 20)
    assert (await asyncio.to_thread(get, port, "/readyz"))[1] == "consuming\n"
    await asyncio.to_thread(tansu.stop)
    await wait_status(port, 503, 15)
    _, reason = await asyncio.to_thread(get, port, "/readyz")
    assert "broker" in reason or "joining" in reason, reason
    assert processor.process.poll() is None, processor.err()[-3000:]
    await asyncio.to_thread(tansu.start)
    await create_topics(children, tansu, "topics-again")
    await wait_status(port, 200, 30)
    assert await processor.terminate() == 0, processor.err()[-3000:]


@pytest.mark.timeout(60)
async def test_topics_create_waits_for_a_starting_broker_and_bus_comes_from_the_environment(
        tansu_path: str, children: Children, tmp_path: Path) -> None:  # noqa: F811
    broker = TansuBroker(tmp_path, tansu_path)  # not started yet
    # No --bus: the brokers are named by the environment.
    env = {"CERTWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
           "CERTWATCH_KAFKA_REQUEST_TIMEOUT_MS": "1000"}
    topics = children.start("topics", "topics", "create", "--partitions", "2",
                            "--replication-factor", "1", "--wait", "40", env=env)
    try:
        await asyncio.sleep(2.5)
        assert topics.process.poll() is None, topics.err()[-3000:]  # still trying
        await asyncio.to_thread(broker.start)
        assert await topics.wait(40) == 0, topics.err()[-3000:]
        assert "not ready" in topics.err()  # said once that it was waiting
        created = topics.stdout.read_text()
        assert f"created  {HANDSHAKE_TOPIC}" in created, created
    finally:
        broker.stop()


@pytest.mark.timeout(30)
async def test_topics_create_gives_up_after_its_wait_with_one_clear_error(
        children: Children) -> None:  # noqa: F811
    nobody = f"127.0.0.1:{free_port()}"
    topics = children.start("topics", "topics", "create", "--bus", f"kafka://{nobody}",
                            "--wait", "2", env={"CERTWATCH_KAFKA_REQUEST_TIMEOUT_MS": "500"})
    assert await topics.wait(20) == 1
    last = topics.err().strip().splitlines()[-1]
    assert last.startswith(f"certwatch: no usable broker at {nobody} after 2 s ("), last
    assert "attempts); last error:" in last

