"""Kafka settings: sources and precedence, bus URLs, errors, secrets, aiokafka arguments."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import pytest
from aiokafka import codec

from certwatch.bus.kafka import (
    BrokerUnavailable,
    BusConfigurationError,
    KafkaBus,
    client_kwargs,
    consumer_kwargs,
    producer_kwargs,
    ssl_context,
)
from certwatch.settings import (
    KafkaSettings,
    SettingsError,
    available_compressions,
    load_settings,
    parse_bus_url,
)
from tests.integration.brokers import free_port, make_tls_files

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CERTWATCH_"):
            monkeypatch.delenv(name)


def test_flags_beat_environment_beat_file_beat_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "certwatch.yaml"
    file.write_text("kafka:\n  bootstrap_servers: file:9092\n  client_id: from-file\n"
                    "  linger_ms: 7\n  acks: 1\n  enable_idempotence: false\n"
                    "  topics:\n    alerts: file.alerts\n"
                    "mqtt:\n  whatever: belongs to another component\n")
    monkeypatch.setenv("CERTWATCH_SETTINGS", str(file))
    monkeypatch.setenv("CERTWATCH_KAFKA_CLIENT_ID", "from-env")
    monkeypatch.setenv("CERTWATCH_KAFKA_LINGER_MS", "8")
    monkeypatch.setenv("CERTWATCH_KAFKA_TOPICS__HANDSHAKE", "env.handshake")
    settings = load_settings(overrides={"linger_ms": 9, "client_id": None})
    assert settings.linger_ms == 9  # flag
    assert settings.client_id == "from-env"  # env (the flag was not given)
    assert settings.acks == 1 and settings.bootstrap_servers == ["file:9092"]  # file
    assert settings.topics.alerts == "file.alerts"  # file, nested
    assert settings.topics.handshake == "env.handshake"  # env, nested with __
    assert settings.topics.certificate == "certwatch.tls.certificate"  # default
    assert settings.request_timeout_ms == 30_000  # default


def test_toml_file_and_comma_separated_servers_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "certwatch.toml"
    file.write_text('[kafka]\ncompression = "gzip"\nclient_id = "toml"\n')
    monkeypatch.setenv("CERTWATCH_KAFKA_BOOTSTRAP_SERVERS", "k1:9092, [::1]:9093")
    settings = load_settings(file)
    assert (settings.compression, settings.client_id) == ("gzip", "toml")
    assert settings.bootstrap_servers == ["k1:9092", "[::1]:9093"]
    assert producer_kwargs(settings)["compression_type"] == "gzip"


def test_default_client_id_names_the_host() -> None:
    assert load_settings().client_id == f"certwatch-{socket.gethostname()}"


@pytest.mark.parametrize(("url", "servers", "protocol"), [
    ("kafka://h1:9092,h2:9093", ["h1:9092", "h2:9093"], "PLAINTEXT"),
    ("kafka://broker", ["broker:9092"], "PLAINTEXT"),
    ("kafka+ssl://[2001:db8::1]:9094/", ["[2001:db8::1]:9094"], "SSL"),
    ("kafka+sasl_ssl://[2001:db8::1]", ["[2001:db8::1]:9092"], "SASL_SSL"),
])
def test_bus_urls(url: str, servers: list[str], protocol: str) -> None:
    overrides = parse_bus_url(url)
    assert overrides == {"bootstrap_servers": servers, "security_protocol": protocol}


@pytest.mark.parametrize(("url", "complaint"), [
    ("mqtt://h:1883", "not a Kafka URL"),
    ("kafka+sasl://alice:secret@h:9092", "credentials do not belong in the URL"),
    ("kafka://h:9092/topic", "only host:port"),
    ("kafka://", "names no broker"),
])
def test_bad_bus_urls(url: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint) as error:
        parse_bus_url(url)
    assert "secret" not in str(error.value)


def test_every_bad_field_gets_its_own_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("kafka:\n  acks: two\n  linger_ms: -1\n  bootstrap_servers: 'a:1,b'\n"
                    "  colour: blue\n")
    with pytest.raises(SettingsError) as error:
        load_settings(file)
    lines = sorted(str(error.value).splitlines())
    assert len(lines) == 4
    assert lines[0].startswith("kafka.acks: Input should be 0, 1 or 'all'")
    assert lines[1].startswith("kafka.bootstrap_servers: 'b' is not host:port")
    assert lines[2].startswith("kafka.colour: Extra inputs are not permitted")
    assert lines[3].startswith("kafka.linger_ms: Input should be greater than or equal to 0")


def test_cross_field_rules() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(overrides={"acks": "1", "ssl_cafile": __file__,
                                 "security_protocol": "SASL_PLAINTEXT"})
    assert str(error.value).splitlines() == [
        "kafka: ssl_cafile is set but security_protocol is SASL_PLAINTEXT (use SSL or "
        "SASL_SSL)",
        "kafka: security_protocol SASL_PLAINTEXT needs sasl_username and sasl_password",
        "kafka: enable_idempotence needs acks=all (got acks=1); set enable_idempotence=false "
        "to use weaker acks",
    ]


@pytest.mark.parametrize(("name", "text", "complaint"), [
    ("s.ini", "", "use .yaml, .yml or .toml"),
    ("s.yaml", "kafka: [1, 2]\n", "expected a mapping"),
    ("s.toml", "kafka = [", "s.toml: "),
    ("missing.yaml", None, "No such file"),
])
def test_unusable_settings_files(tmp_path: Path, name: str, text: str | None,
                                 complaint: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(SettingsError, match=complaint):
        load_settings(tmp_path / name)


def test_zstd_is_the_default_and_every_codec_is_available() -> None:
    # pyproject asks for aiokafka[lz4,snappy,zstd]: a fresh install can use every codec.
    assert load_settings().compression == "zstd"
    assert set(available_compressions()) == {"none", "gzip", "snappy", "lz4", "zstd"}


def test_compression_without_its_library_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A hand-made install without cramjam (aiokafka without its extras); it cannot be shown
    # with the packages pyproject installs, hence the patch.
    monkeypatch.setattr(codec, "cramjam", None)
    assert available_compressions() == ("none", "gzip")
    assert load_settings().compression == "none"
    with pytest.raises(SettingsError, match="lz4 compression needs the 'cramjam' package"):
        load_settings(overrides={"compression": "lz4"})


def sasl_settings(port: int) -> KafkaSettings:
    return load_settings(overrides={
        "bootstrap_servers": f"127.0.0.1:{port}", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "alice", "sasl_password": PASSWORD,
        "request_timeout_ms": 1000})


async def test_the_password_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = sasl_settings(free_port())  # nobody listens there
    shown = [repr(settings), str(settings), "\n".join(settings.describe())]
    with pytest.raises(SettingsError) as invalid:
        load_settings(overrides={"sasl_password": PASSWORD, "sasl_username": "alice",
                                 "security_protocol": "SASL_PLAINTEXT", "linger_ms": "x"})
    bus = KafkaBus(settings)
    with pytest.raises(BrokerUnavailable) as unavailable:
        await bus.start()
    await bus.close()
    shown += [str(invalid.value), str(unavailable.value), caplog.text]
    assert all(PASSWORD not in text for text in shown)
    assert "sasl_password = **********" in shown[2]


def test_sasl_arguments() -> None:
    kwargs = client_kwargs(sasl_settings(9092))
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "alice"
    assert kwargs["sasl_plain_password"] == PASSWORD
    assert kwargs["ssl_context"] is None and kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert "sasl_mechanism" not in client_kwargs(load_settings())


def test_tls_context_verifies_the_broker_and_loads_an_encrypted_client_key(
        tmp_path: Path) -> None:
    files = make_tls_files(tmp_path, key_password=PASSWORD.encode())
    base = {"security_protocol": "SSL", "ssl_cafile": files.ca, "ssl_certfile": files.cert,
            "ssl_keyfile": files.key}
    context = ssl_context(load_settings(overrides=base | {"ssl_password": PASSWORD}))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "certwatch test CA"),),)
    with pytest.raises(BusConfigurationError, match="TLS settings") as error:
        ssl_context(load_settings(overrides=base | {"ssl_password": "wrong"}))
    assert PASSWORD not in str(error.value)


def test_idempotence_and_acks_reach_the_producer() -> None:
    kwargs = producer_kwargs(load_settings(overrides={"acks": "0",
                                                      "enable_idempotence": "false"}))
    assert (kwargs["acks"], kwargs["enable_idempotence"], kwargs["compression_type"]) == (
        0, False, "zstd")
    assert producer_kwargs(load_settings())["enable_idempotence"] is True
    off = producer_kwargs(load_settings(overrides={"compression": "none"}))
    assert off["compression_type"] is None


def test_the_fetch_wait_reaches_the_consumer_and_defaults_below_kafkas(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A processor's fetch waits at most ``fetch_max_wait_ms`` on the broker. Kafka's own
    500 ms left the processors of bench.kafka_e2e idle for 0.25-0.5 s with thousands of
    events waiting (a quiet partition's fetch holding up the busy ones; bench/README.md)."""
    kwargs = consumer_kwargs(load_settings(), "certwatch-processors")
    assert kwargs["fetch_max_wait_ms"] == 100 and kwargs["group_id"] == "certwatch-processors"
    assert kwargs["enable_auto_commit"] is False  # commits follow the alerts, not a timer
    monkeypatch.setenv("CERTWATCH_KAFKA_FETCH_MAX_WAIT_MS", "500")
    assert consumer_kwargs(load_settings(), "g")["fetch_max_wait_ms"] == 500
    with pytest.raises(SettingsError, match="fetch_max_wait_ms"):
        load_settings(overrides={"fetch_max_wait_ms": "0"})
