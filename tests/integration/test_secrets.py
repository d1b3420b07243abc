"""MQTT with a password and TLS through ``certwatch processor``, and secrets kept out of sight:
the SASL and MQTT passwords given to the sensor and processor CLIs appear in none of their
log lines (debug level included), exit messages or ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from certwatch.bus.kafka import KafkaBus
from certwatch.codec import encode
from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent
from schemas.topics import HANDSHAKE_TOPIC
from tests.integration.brokers import (
    MosquittoBroker,
    TansuBroker,
    free_port,
    make_tls_files,
    mosquitto_binary,
)
from tests.integration.conftest import settings_for
from tests.integration.test_end_to_end import (
    Child,
    Children,
    children,  # noqa: F401  (fixture)
    create_topics,
    kafka_flags,
    scenario_capture,
    tansu,  # noqa: F401  (fixture)
    wait_until,
)
from tests.integration.test_readiness import get
from tests.support import DATA, handshakes, read_frames, run_sensor

pytestmark = pytest.mark.integration

MQTT_PASSWORD = "mqtt-Pa55:/@word-7f3a"  # URL-reserved characters on purpose
SASL_PASSWORD = "sasl-Pa55word-91c2e"
PREFIX = "secure/certwatch/alerts"


@pytest.fixture
def secured_mqtt(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Path]]:
    """mosquitto with a password file (``mosquitto_passwd -b``) and a TLS listener whose
    certificate is signed by a CA made here; yields the broker and the CA file."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto not found: apt-get install -y mosquitto")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "certwatch", MQTT_PASSWORD],
                   check=True, capture_output=True)
    tls = make_tls_files(tmp_path)
    broker = MosquittoBroker(tmp_path, binary, extra_config=[
        "allow_anonymous false", f"password_file {passwords}",
        f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"])
    broker.start()
    try:
        yield broker, tls.ca
    finally:
        broker.stop()


def alerting_events(count: int) -> list[HandshakeEvent]:
    template = handshakes(run_sensor(read_frames(DATA / "zeek" / "tls-expired-cert.pcap")))[0]
    document = json.loads(encode(template))
    events = []
    for n in range(count):
        document["destination"]["ip"] = f"198.18.2.{n + 1}"
        document["tls"]["client"]["server_name"] = f"secret-test{n}.example.org"
        events.append(HandshakeEvent.model_validate(document))
    return events


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert text, "nothing to look at: the check would prove nothing"
        for secret in (MQTT_PASSWORD, SASL_PASSWORD):
            assert secret not in text
            # Nor its URL-encoded or JSON-escaped spellings.
            assert secret.replace(":", "%3A").replace("/", "%2F").replace("@", "%40") not in text
            assert json.dumps(secret)[1:-1] not in text


def everything(child: Child) -> str:
    return child.err() + child.stdout.read_text(errors="replace")


@pytest.mark.timeout(60)
async def test_processor_publishes_alerts_to_mqtt_with_a_password_over_tls_and_leaks_nothing(
        tansu: TansuBroker, children: Children,  # noqa: F811
        secured_mqtt: tuple[MosquittoBroker, Path]) -> None:
    mqtt, ca = secured_mqtt
    await create_topics(children, tansu)
    port = free_port()
    env = {"CERTWATCH_MQTT_PASSWORD": MQTT_PASSWORD,
           # Set although PLAINTEXT does not use it: it must not show anywhere either.
           "CERTWATCH_KAFKA_SASL_PASSWORD": SASL_PASSWORD}
    url = f"mqtts://certwatch@{mqtt.host}:{mqtt.port}/{PREFIX}?ca_file={ca}"
    received: list[AlertEvent] = []
    context = ssl.create_default_context(cafile=str(ca))
    async with aiomqtt.Client(mqtt.host, mqtt.port, username="certwatch",
                              password=MQTT_PASSWORD, tls_context=context) as subscriber:
        await subscriber.subscribe(f"{PREFIX}/#", qos=1)

        async def collect() -> None:
            async for message in subscriber.messages:
                assert isinstance(message.payload, bytes)
                received.append(AlertEvent.model_validate_json(message.payload))

        reader = asyncio.create_task(collect())
        processor = children.start("processor", "-v", "processor", *kafka_flags(tansu),
                                   "--mqtt", url, "--metrics-port", str(port), env=env)
        events = alerting_events(3)
        async with KafkaBus(settings_for(tansu.bootstrap)) as bus:
            await bus.publish_batch([(HANDSHAKE_TOPIC, e.tls.client.server_name or "",
                                      encode(e), ()) for e in events])
        servers = {e.tls.client.server_name for e in events}
        await wait_until("the alerts of every event over MQTT", lambda: servers <= {
            a.tls.client.server_name for a in received if a.tls and a.tls.client}, timeout=30)
        pages = [(await asyncio.to_thread(get, port, path))[1]
                 for path in ("/metrics", "/readyz", "/healthz")]
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert await processor.terminate() == 0, processor.err()[-3000:]
    assert all(a.rule.name for a in received)
    assert "certwatch_alerts_total" in pages[0]
    assert "mqtts://certwatch@" in processor.err()  # the redacted URL is what is logged
    assert_no_secret(everything(processor), *pages)


@pytest.mark.timeout(60)
async def test_a_wrong_mqtt_password_stops_the_processor_with_the_reason_not_the_password(
        tansu: TansuBroker, children: Children,  # noqa: F811
        secured_mqtt: tuple[MosquittoBroker, Path]) -> None:
    mqtt, ca = secured_mqtt
    await create_topics(children, tansu)
    wrong = SASL_PASSWORD  # the wrong one for MQTT; it must not show either
    processor = children.start(
        "processor", "-v", "processor", *kafka_flags(tansu), "--mqtt",
        f"mqtts://certwatch@{mqtt.host}:{mqtt.port}/{PREFIX}?ca_file={ca}",
        env={"CERTWATCH_MQTT_PASSWORD": wrong})
    assert await processor.wait(30) == 1
    last = processor.err().strip().splitlines()[-1]
    assert last.startswith(f"certwatch: MQTT mqtts://certwatch@{mqtt.host}:{mqtt.port}/"), last
    assert "username and password" in last, last
    assert_no_secret(everything(processor))


@pytest.mark.timeout(60)
async def test_sasl_password_absent_from_sensor_and_processor_output_and_metrics(
        tansu: TansuBroker, children: Children, tmp_path: Path) -> None:  # noqa: F811
    # Tansu (memory storage) has no SASL users: every connection attempt fails, which is
    # exactly the path where a careless error message would print the credentials.
    env = {"CERTWATCH_KAFKA_SASL_USERNAME": "certwatch",
           "CERTWATCH_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
           "CERTWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
           "CERTWATCH_KAFKA_REQUEST_TIMEOUT_MS": "1000",
           "CERTWATCH_MQTT_PASSWORD": MQTT_PASSWORD}
    sasl_bus = ("--bus", f"kafka+sasl://{tansu.bootstrap}", "--no-idempotence")
    capture = scenario_capture(tmp_path / "steady.pcap", "steady-plus-burst", connections=5)
    port = free_port()
    sensor = children.start("sensor", "-v", "sensor", "--pcap", str(capture), "--speed", "600",
                            "--max-queued", "10", "--metrics-port", str(port), *sasl_bus,
                            env=env)
    metrics: list[str] = []

    def scraped() -> bool:
        status, page = get(port, "/metrics")
        if status == 200 and "certwatch_events_dropped_total" in page:
            metrics.append(page)
        return bool(metrics) or sensor.process.poll() is not None

    await wait_until("a /metrics page of the running sensor", scraped, timeout=20)
    processor = children.start(
        "processor", "-v", "processor", *sasl_bus, "--mqtt",
        f"mqtt://certwatch@127.0.0.1:{free_port()}/{PREFIX}", env=env)
    assert await processor.wait(40) == 1
    assert "cannot reach the broker" in processor.err()
    await sensor.wait(50)
    assert metrics, sensor.err()[-3000:]
    assert_no_secret(everything(sensor), everything(processor), *metrics)

