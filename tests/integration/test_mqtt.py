"""MQTT fan-out of alerts against a real mosquitto on 127.0.0.1.

The alerts are the real ones: the sensor and the detectors run over a capture of a server
presenting an expired certificate, and what a subscriber receives is parsed back with the
alert schema.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import subprocess
import time
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from certwatch.bus import BrokerUnavailable, BusConfigError
from certwatch.bus.mqtt import MqttAlertPublisher, parse_mqtt_url
from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from tests.integration.brokers import MosquittoBroker, make_tls_files, mosquitto_binary
from tests.support import DATA, handshakes, read_frames, run_sensor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PREFIX = "certwatch/alerts"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start a mosquitto of its own with extra configuration lines (auth, TLS, persistence)."""
    started: list[MosquittoBroker] = []

    def launch(*config: str) -> MosquittoBroker:
        binary = mosquitto_binary()
        if binary is None:
            pytest.skip("mosquitto not found: apt-get install -y mosquitto")
        broker = MosquittoBroker(tmp_path, binary, extra_config=config)
        started.append(broker)
        broker.start()
        return broker

    yield launch
    for broker in started:
        broker.stop()


# -- the alerts -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def alerts() -> list[AlertEvent]:
    processor = Processor(Policy(), DETECTORS)
    events = handshakes(run_sensor(read_frames(DATA / "zeek" / "tls-expired-cert.pcap")))
    produced = [alert for event in events for alert in processor.process(event)]
    assert any(a.rule.name == "cert.expired" for a in produced)
    assert len({a.rule.name for a in produced}) > 2  # several topics, not one
    return produced


# -- helpers ----------------------------------------------------------------------------------

Received = list[tuple[str, AlertEvent, int]]


async def collect(client: aiomqtt.Client, into: Received) -> None:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        into.append((message.topic.value, AlertEvent.model_validate_json(message.payload),
                     message.qos))


async def wait_for(condition: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def subscriber(host: str, port: int, topic: str, into: Received, **kwargs: Any,
                     ) -> AsyncIterator[None]:
    async with aiomqtt.Client(host, port, **kwargs) as client:
        await client.subscribe(topic, qos=1)
        task = asyncio.create_task(collect(client, into))
        try:
            yield
        finally:
            task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome  # a message that was not an alert, say


def fast(url: str, *, max_queued: int = 10_000, max_inflight: int = 20,
         backoff_max: float = 0.3, timeout: float = 3.0) -> MqttAlertPublisher:
    """A publisher that retries quickly, so that outages in tests are short."""
    return MqttAlertPublisher(parse_mqtt_url(url), max_queued=max_queued,
                              max_inflight=max_inflight, backoff_initial=0.05,
                              backoff_max=backoff_max, timeout=timeout)


def by_topic(received: Received) -> dict[str, list[str]]:
    topics: dict[str, list[str]] = defaultdict(list)
    for topic, alert, _ in received:
        topics[topic].append(alert.event.id)
    return dict(topics)


def expected_by_topic(alerts: list[AlertEvent]) -> dict[str, list[str]]:
    topics: dict[str, list[str]] = defaultdict(list)
    for alert in alerts:
        topics[f"{PREFIX}/{alert.rule.name}"].append(alert.event.id)
    return dict(topics)


# -- tests ------------------------------------------------------------------------------------

async def test_subscriber_receives_each_alert_once_on_its_rule_topic(
    mqtt_broker: MosquittoBroker, alerts: list[AlertEvent]
) -> None:
    broker = mqtt_broker
    everything: Received = []
    expired: Received = []
    async with (
        subscriber(broker.host, broker.port, f"{PREFIX}/#", everything),
        subscriber(broker.host, broker.port, f"{PREFIX}/cert.expired", expired),
    ):
        publisher = fast(f"mqtt://{broker.host}:{broker.port}")  # the default prefix
        await publisher.start()
        for alert in alerts:
            await publisher.publish_alert(alert)
        assert await publisher.flush(10)
        await wait_for("every alert", lambda: len(everything) >= len(alerts))
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
        await publisher.close()

    # Exactly the alerts published, each on its rule's topic, in order within a topic
    # (MQTT 3.1.1 §4.6), with their whole content, at QoS 1.
    assert by_topic(everything) == expected_by_topic(alerts)
    sent = {a.event.id: a for a in alerts}
    for _, alert, qos in everything:
        assert alert == sent[alert.event.id]
        assert qos == 1
    assert [a.event.id for _, a, _ in expired] == [
        a.event.id for a in alerts if a.rule.name == "cert.expired"]
    assert (publisher.published, publisher.dropped, publisher.queued) == (len(alerts), 0, 0)
    assert not publisher.running


async def test_credentials_wrong_ones_fail_clearly_right_ones_work(
    brokers: Callable[..., MosquittoBroker], tmp_path: Path, alerts: list[AlertEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "certwatch",
                    "s3cret:/@"], check=True, capture_output=True)
    broker = brokers("allow_anonymous false", f"password_file {tmp_path / 'passwd'}")
    base = f"{broker.host}:{broker.port}/{PREFIX}"

    for url in (f"mqtt://certwatch:wrong@{base}", f"mqtt://{base}"):
        with pytest.raises(BusConfigError, match=r"refused.*username and password"):
            await fast(url).check_connection()

    # In the background the refusal is one ERROR naming the broker, never the password,
    # and the alerts wait in the queue.
    caplog.set_level(logging.DEBUG, logger="certwatch.mqtt")
    refused = fast(f"mqtt://certwatch:wrong@{base}", backoff_max=0.1)
    await refused.start()
    refused.offer(alerts[0])
    await wait_for("the refusal", lambda: refused.last_error is not None)
    await asyncio.sleep(0.4)  # several more refusals
    assert isinstance(refused.last_error, BusConfigError)
    assert (refused.published, refused.queued, refused.connected) == (0, 1, False)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"mqtt://certwatch@{broker.host}:{broker.port}" in errors[0].getMessage()
    assert "wrong" not in caplog.text
    await refused.close(timeout=0.1)
    assert refused.dropped == 1

    received: Received = []
    async with subscriber(broker.host, broker.port, f"{PREFIX}/#", received,
                          username="certwatch", password="s3cret:/@"):
        # The password has URL-reserved characters: percent-encoded in the URL.
        publisher = fast(f"mqtt://certwatch:s3cret%3A%2F%40@{base}")
        await publisher.check_connection()
        await publisher.start()
        for alert in alerts:
            publisher.offer(alert)
        await wait_for("every alert", lambda: len(received) >= len(alerts))
        await publisher.close()
    assert by_topic(received) == expected_by_topic(alerts)


async def test_tls_with_a_private_ca(
    brokers: Callable[..., MosquittoBroker], tmp_path: Path, alerts: list[AlertEvent]
) -> None:
    tls = make_tls_files(tmp_path)
    broker = brokers(f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}")
    base = f"{broker.host}:{broker.port}/{PREFIX}"

    # Plain MQTT against a TLS listener (the broker resets; aiomqtt reports it when no
    # CONNACK came within the timeout), and TLS without our CA: refused, with the reason.
    with pytest.raises(BrokerUnavailable):
        await fast(f"mqtt://{base}", timeout=0.5).check_connection()
    with warnings.catch_warnings():
        # paho leaves the socket of a failed TLS handshake to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(BusConfigError, match=r"CERTIFICATE_VERIFY_FAILED.*ca_file"):
            await fast(f"mqtts://{base}").check_connection()
        await asyncio.sleep(0.05)  # the event loop lets go of the executor's failure
        gc.collect()

    received: Received = []
    context = ssl.create_default_context(cafile=str(tls.ca))
    async with subscriber(broker.host, broker.port, f"{PREFIX}/#", received,
                          tls_context=context):
        publisher = fast(f"mqtts://{base}?ca_file={tls.ca}")
        await publisher.start()
        for alert in alerts:
            publisher.offer(alert)
        await wait_for("every alert", lambda: len(received) >= len(alerts))
        await publisher.close()
    assert by_topic(received) == expected_by_topic(alerts)


async def test_broker_restart_queued_alerts_arrive_beyond_the_bound_are_dropped(
    brokers: Callable[..., MosquittoBroker], tmp_path: Path, alerts: list[AlertEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Persistence keeps the subscriber's QoS 1 session across the restart, so it receives
    # what the broker accepted while it was not yet back.
    broker = brokers("persistence true", f"persistence_location {tmp_path}/")
    bound = 4
    before, during = alerts[:2], alerts[2:]
    assert len(during) > bound
    session = {"identifier": "certwatch-test-subscriber", "clean_session": False}
    caplog.set_level(logging.INFO, logger="certwatch.mqtt")

    received: Received = []
    publisher = fast(f"mqtt://{broker.host}:{broker.port}/{PREFIX}", max_queued=bound)
    async with subscriber(broker.host, broker.port, f"{PREFIX}/#", received,
                          **session):
        await publisher.start()
        for alert in before:
            publisher.offer(alert)
        await wait_for("the first alerts", lambda: len(received) == len(before))

    broker.stop()
    await wait_for("the publisher to notice", lambda: not publisher.connected)
    for alert in during:
        await publisher.publish_alert(alert)  # nothing escapes, nothing waits
    await asyncio.sleep(0.5)  # several reconnection attempts, all refused
    assert (publisher.queued, publisher.dropped, publisher.published) == (
        bound, len(during) - bound, len(before))
    assert publisher.running

    broker.start()
    assert await publisher.flush(10)
    async with subscriber(broker.host, broker.port, f"{PREFIX}/#", received,
                          **session):
        await wait_for("the queued alerts", lambda: len(received) >= len(before) + bound)
        await asyncio.sleep(0.3)
    await publisher.close()

    # The newest `bound` alerts made it, in order; the oldest ones of the outage are counted.
    assert by_topic(received) == expected_by_topic(before + during[-bound:])
    assert (publisher.published, publisher.dropped, publisher.reconnects) == (
        len(before) + bound, len(during) - bound, 1)
    # One line for the loss, one for the return, however many attempts failed in between.
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(notes) == 2, notes
    assert "unusable" in notes[0]
    assert "back after" in notes[1] and f"{len(during) - bound} dropped" in notes[1]


async def test_alerts_lost_in_flight_are_sent_again_in_order(
    mqtt_broker: MosquittoBroker, alerts: list[AlertEvent]
) -> None:
    broker = mqtt_broker
    # The publisher talks through a proxy that swallows its PUBLISH packets, then cuts the
    # connection: nothing reached the broker, nothing was acknowledged, so every alert must
    # be sent again on the next connection (QoS 1), the in-flight window before the rest.
    received: Received = []
    async with (
        subscriber(broker.host, broker.port, f"{PREFIX}/#", received),
        BlackholeProxy(broker.host, broker.port) as proxy,
    ):
        publisher = fast(f"mqtt://127.0.0.1:{proxy.port}/{PREFIX}", max_inflight=5)
        await publisher.start()
        await wait_for("the connection", lambda: publisher.connected)
        proxy.swallow = True
        for alert in alerts:
            publisher.offer(alert)
        await wait_for("the in-flight window", lambda: proxy.swallowed > 0)
        await asyncio.sleep(0.2)
        assert (publisher.published, publisher.queued) == (0, len(alerts))
        proxy.swallow = False
        await proxy.cut()
        assert await publisher.flush(10)
        await wait_for("every alert", lambda: len(received) >= len(alerts))
        await asyncio.sleep(0.3)
        await publisher.close()
    assert by_topic(received) == expected_by_topic(alerts)
    assert (publisher.published, publisher.dropped, publisher.reconnects) == (
        len(alerts), 0, 1)


# -- plumbing ---------------------------------------------------------------------------------

class BlackholeProxy:
    """TCP proxy to the broker; while ``swallow`` is set, client bytes are discarded."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.swallow = False
        self.swallowed = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self.cut()
        await self._server.wait_closed()

    async def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, broker_writer]
        for pump in (self._pump(reader, broker_writer, True),
                     self._pump(broker_reader, writer, False)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    from_client: bool) -> None:
        try:
            while data := await reader.read(65536):
                if from_client and self.swallow:
                    self.swallowed += len(data)
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # the other side went away: the proxy's job is done
        finally:
            writer.close()
