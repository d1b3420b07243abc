"""``certwatch.traffic.stats`` on a real Kafka-protocol broker (Tansu), through the CLI.

``certwatch topics create`` lays the topic out, ``certwatch sensor --pcap`` publishes one
event per server endpoint and interval keyed by ``ip:port`` (the events ``certwatch replay``
prints), and a ``certwatch processor`` with the byte rate on reads them and publishes the
byte-rate alert the in-process replay raises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from schemas.alerts import AlertEvent
from schemas.events import TrafficStatsEvent
from schemas.topics import ALERT_TOPIC, TRAFFIC_STATS_TOPIC
from tests.integration.brokers import TansuBroker
from tests.integration.test_end_to_end import (
    ROOT,
    Children,
    TopicReader,
    children,  # noqa: F401  (a fixture)
    create_topics,
    kafka_flags,
    tansu,  # noqa: F401  (a fixture)
)
from tools.tlsgen.scenarios import Options, build

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
async def test_stats_land_on_their_topic_keyed_by_endpoint_and_feed_the_byte_rate(
        tansu: TansuBroker, children: Children, tmp_path: Path) -> None:  # noqa: F811
    scenario = build("byte-burst", Options(connections=4, app_segments=300))
    capture = tmp_path / "burst.pcap"
    scenario.write(capture)
    (tmp_path / "roots.pem").write_bytes(scenario.roots_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "trust": {"system": False, "ca_files": [str(tmp_path / "roots.pem")]},
        "rules": {"traffic.spike": {"bytes": {"enabled": True, "min_bytes": 1_000_000}}}}))
    events, alerts = tmp_path / "events.jsonl", tmp_path / "alerts.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "certwatch.cli", "replay", str(capture), "--policy", str(policy),
         "--events", str(events), "--alerts", str(alerts)],
        cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    expected_stats = sorted(line for line in events.read_text().splitlines()
                            if '"certwatch.traffic.stats"' in line)
    expected_alerts = {json.loads(line)["event"]["id"]
                       for line in alerts.read_text().splitlines()}
    assert len(expected_stats) == 21 and len(expected_alerts) == 1

    topics = await create_topics(children, tansu)
    assert TRAFFIC_STATS_TOPIC in topics.stdout.read_text() + topics.err()
    processor = children.start("processor", "processor", *kafka_flags(tansu), "--policy",
                               str(policy))
    await children.run("sensor", "sensor", "--pcap", str(capture), *kafka_flags(tansu))
    async with TopicReader(tansu, [TRAFFIC_STATS_TOPIC, ALERT_TOPIC]) as kafka:
        await kafka.wait_for("every stats event and the byte alert",
                             lambda: len(kafka.on(TRAFFIC_STATS_TOPIC)) >= len(expected_stats)
                             and set(kafka.alert_ids()) >= expected_alerts, timeout=45)
        on_topic = kafka.on(TRAFFIC_STATS_TOPIC)
        raised = [AlertEvent.model_validate_json(m.value) for m in kafka.on(ALERT_TOPIC)]
    assert await processor.terminate() == 0, processor.err()[-3000:]
    assert sorted(m.value.decode() for m in on_topic) == expected_stats
    server_ip, server_port = scenario.connections[0].server
    for message in on_topic:
        event = TrafficStatsEvent.model_validate_json(message.value)
        assert message.key == f"{event.destination.ip}:{event.destination.port}"
        assert message.key == f"{server_ip}:{server_port}"
    assert {a.event.id for a in raised} == expected_alerts
    assert raised[0].certwatch.alert.details["rate"] == "bytes"
