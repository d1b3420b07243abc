"""The MQTT URL a user types, and what the alert publisher does with no broker at all.

No broker here: the "away" broker is a loopback port nobody listens on (the integration
tests in tests/integration/test_mqtt.py run against mosquitto).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from certwatch.bus import BrokerUnavailable, BusConfigError
from certwatch.bus.mqtt import MqttAlertPublisher, MqttSettings, parse_mqtt_url
from processors.engine import Processor
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from tests.support import DATA, handshakes, read_frames, run_sensor


def test_full_url() -> None:
    settings = parse_mqtt_url(
        "mqtt://user:pass@broker.example:1884/site-a/certwatch?client_id=cw-1&qos=0&keepalive=30")
    assert settings.host == "broker.example"
    assert settings.port == 1884
    assert settings.topic_prefix == "site-a/certwatch"
    assert settings.username == "user"
    assert settings.password is not None and settings.password.get_secret_value() == "pass"
    assert (settings.tls, settings.ca_file, settings.client_id) == (False, None, "cw-1")
    assert (settings.qos, settings.keepalive) == (0, 30)


@pytest.mark.parametrize(("url", "port", "tls"), [
    ("mqtt://broker", 1883, False),
    ("mqtts://broker", 8883, True),
    ("mqtts://broker:443", 443, True),
])
def test_default_port_and_prefix(url: str, port: int, tls: bool) -> None:
    settings = parse_mqtt_url(url)
    assert (settings.port, settings.tls, settings.topic_prefix) == (port, tls, "certwatch/alerts")
    assert (settings.qos, settings.username, settings.password) == (1, None, None)


def test_user_and_password_are_percent_decoded_and_ipv6_hosts_work() -> None:
    settings = parse_mqtt_url("mqtts://ops%40example:p%3A%2F%40ss@[::1]/alerts/?ca_file=/etc/ca.pem")
    assert (settings.host, settings.port, settings.topic_prefix) == ("::1", 8883, "alerts")
    assert settings.username == "ops@example"
    assert settings.password is not None
    assert settings.password.get_secret_value() == "p:/@ss"
    assert settings.ca_file == Path("/etc/ca.pem")
    assert settings.redacted_url() == "mqtts://ops%40example@[::1]:8883/alerts"


def test_the_password_never_shows() -> None:
    settings = parse_mqtt_url("mqtt://user:hunter2@broker/certwatch/alerts")
    for text in (repr(settings), str(settings), settings.redacted_url(),
                 settings.model_dump_json(), f"{settings!r}"):
        assert "hunter2" not in text
    assert "user" in settings.redacted_url()


@pytest.mark.parametrize(("url", "problem"), [
    ("http://broker", "mqtt:// or mqtts://"),
    ("mqtt://", "no host"),
    ("mqtt://broker:99999", "bad port"),
    ("mqtt://broker:x", "bad port"),
    ("mqtt://:secret@broker", "password but no username"),
    ("mqtt://broker/certwatch/+/alerts", "may not hold"),
    ("mqtt://broker/certwatch/#", "may not hold"),
    ("mqtt://broker/certwatch//alerts", "empty levels"),
    ("mqtt://broker?qos=3", "qos"),
    ("mqtt://broker?keepalive=soon", "keepalive"),
    ("mqtt://broker?colour=red", "unknown option(s) colour"),
    ("mqtt://broker?ca_file=/etc/ca.pem", "only makes sense with mqtts://"),
])
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(BusConfigError) as raised:
        parse_mqtt_url(url)
    assert problem in str(raised.value)


# -- the publisher with the broker away ------------------------------------------------------

@pytest.fixture(scope="module")
def alerts() -> list[AlertEvent]:
    processor = Processor(Policy(), DETECTORS)
    events = handshakes(run_sensor(read_frames(DATA / "zeek" / "tls-expired-cert.pcap")))
    return [alert for event in events for alert in processor.process(event)]


@pytest.fixture
def nobody() -> MqttSettings:
    """A loopback port with no broker behind it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return parse_mqtt_url(f"mqtt://127.0.0.1:{port}/certwatch/alerts")


async def test_without_a_broker_alerts_queue_up_to_the_bound_then_the_oldest_drop(
    nobody: MqttSettings, alerts: list[AlertEvent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="certwatch.mqtt")
    publisher = MqttAlertPublisher(nobody, max_queued=5, backoff_initial=0.02, backoff_max=0.05)
    await publisher.start()
    for alert in alerts:
        await publisher.publish_alert(alert)  # returns at once, raises nothing
    await asyncio.sleep(0.4)  # many refused attempts
    assert (publisher.queued, publisher.dropped, publisher.published) == (5, len(alerts) - 5, 0)
    assert publisher.running and not publisher.connected
    assert isinstance(publisher.last_error, BrokerUnavailable)
    assert not await publisher.flush(0.05)

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    attempts = [r for r in caplog.records if "still unusable" in r.getMessage()]
    assert len(warnings) == 1 and len(attempts) >= 3
    assert "127.0.0.1" in warnings[0].getMessage()

    await publisher.close(timeout=0.05)
    assert not publisher.running
    assert (publisher.queued, publisher.dropped) == (0, len(alerts))  # the rest, counted
    assert "5 alerts undelivered" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        publisher.offer(alerts[0])


async def test_check_connection_says_the_broker_is_unavailable(nobody: MqttSettings) -> None:
    with pytest.raises(BrokerUnavailable, match="refused"):
        await MqttAlertPublisher(nobody).check_connection()


async def test_an_unreadable_ca_file_fails_at_start(tmp_path: Path) -> None:
    settings = parse_mqtt_url(f"mqtts://127.0.0.1?ca_file={tmp_path / 'missing.pem'}")
    with pytest.raises(BusConfigError, match="CA file"):
        await MqttAlertPublisher(settings).start()


def test_the_mqtt_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from certwatch.cli_services import mqtt_settings_of

    monkeypatch.setenv("CERTWATCH_MQTT_PASSWORD", "s3cret:/@")
    settings = mqtt_settings_of("mqtt://alerts@127.0.0.1:1883/certwatch/alerts")
    assert settings.username == "alerts"
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cret:/@"
    assert "s3cret" not in repr(settings)
    explicit = mqtt_settings_of("mqtt://alerts:given@127.0.0.1:1883/certwatch/alerts")
    assert explicit.password is not None and explicit.password.get_secret_value() == "given"
