"""SIGHUP end to end: ``certwatch processor --policy`` as a child process on Tansu; rewriting
the policy and sending SIGHUP changes the alerts of the events that follow; a broken policy
is refused with file:line in the log, the one in force stays, the process goes on.

(The sensor reads no policy: ``certwatch sensor`` has no ``--policy``, so there is nothing
to reload there.)
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from certwatch.bus.kafka import KafkaBus
from certwatch.codec import encode
from schemas.alerts import AlertEvent
from schemas.events import HandshakeEvent
from schemas.topics import ALERT_TOPIC, HANDSHAKE_TOPIC
from tests.integration.brokers import TansuBroker
from tests.integration.conftest import settings_for
from tests.integration.test_end_to_end import (
    Child,
    Children,
    TopicReader,
    children,  # noqa: F401  (fixture)
    create_topics,
    kafka_flags,
    tansu,  # noqa: F401  (fixture)
    wait_until,
)
from tests.support import DATA, handshakes, read_frames, run_sensor

pytestmark = pytest.mark.integration

DEPRECATED = "tls.deprecated_version"


def tls11_events(first: int, count: int) -> list[HandshakeEvent]:
    """The TLS 1.1 handshake of a real capture, to ``count`` servers of its own each."""
    (template, *_) = handshakes(run_sensor(read_frames(DATA / "zeek" / "tls1_1.pcap")))
    assert template.tls.version == "1.1"
    document = json.loads(encode(template))
    events = []
    for n in range(first, first + count):
        document["destination"]["ip"] = f"198.18.1.{n + 1}"
        document["tls"]["client"]["server_name"] = f"legacy{n}.example.org"
        events.append(HandshakeEvent.model_validate(document))
    return events


async def publish(tansu: TansuBroker, events: list[HandshakeEvent]) -> None:  # noqa: F811
    async with KafkaBus(settings_for(tansu.bootstrap)) as bus:
        await bus.publish_batch([(HANDSHAKE_TOPIC, e.tls.client.server_name or "", encode(e),
                                  ()) for e in events])


def rules_for(kafka: TopicReader, events: list[HandshakeEvent]) -> dict[str, set[str]]:
    """Rule names alerted per server name of ``events``."""
    names = {e.tls.client.server_name for e in events}
    found: dict[str, set[str]] = {name or "": set() for name in names}
    for message in kafka.on(ALERT_TOPIC):
        alert = AlertEvent.model_validate_json(message.value)
        document = json.loads(message.value)
        server = (document.get("tls") or {}).get("client", {}).get("server_name")
        if server in found:
            found[server].add(alert.rule.name)
    return found


async def processed(child: Child, count: int, timeout: float = 20) -> None:
    """Until the processor's log says it reloaded/refused ``count`` times (JSON lines)."""
    await wait_until(f"{count} reload outcomes", lambda: sum(
        "reloaded" in line or "not reloaded" in line for line in child.err().splitlines()
    ) >= count, timeout)


@pytest.mark.timeout(60)
async def test_sighup_changes_the_alerts_and_a_broken_policy_is_refused(
        tansu: TansuBroker, children: Children, tmp_path: Path) -> None:  # noqa: F811
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  tls.deprecated_version: {min_version: '1.0'}\n")
    await create_topics(children, tansu)
    processor = children.start("processor", "processor", *kafka_flags(tansu),
                               "--policy", str(policy))
    async with TopicReader(tansu, [ALERT_TOPIC]) as kafka:
        # 1. TLS 1.1 allowed: the other rules fire, not the deprecated-version one.
        before = tls11_events(0, 3)
        await publish(tansu, before)
        await kafka.wait_for("alerts of the first events",
                             lambda: all(rules_for(kafka, before).values()), timeout=30)
        assert not any(DEPRECATED in rules for rules in rules_for(kafka, before).values())

        # 2. TLS 1.2 required from now on.
        policy.write_text("rules:\n  tls.deprecated_version: {min_version: '1.2'}\n")
        processor.process.send_signal(signal.SIGHUP)
        await processed(processor, 1)
        after = tls11_events(10, 3)
        await publish(tansu, after)
        await kafka.wait_for("deprecated-version alerts after the reload", lambda: all(
            DEPRECATED in rules for rules in rules_for(kafka, after).values()), timeout=30)

        # 3. A broken policy: refused with file:line, the 1.2 minimum stays in force.
        policy.write_text("rules:\n  tls.deprecated_version: {min_version: 'soon'}\n")
        processor.process.send_signal(signal.SIGHUP)
        await processed(processor, 2)
        refusal = [line for line in processor.err().splitlines() if "not reloaded" in line]
        assert len(refusal) == 1 and f"{policy}:2:" in refusal[0], refusal
        assert processor.process.poll() is None
        still = tls11_events(20, 3)
        await publish(tansu, still)
        await kafka.wait_for("deprecated-version alerts under the old policy", lambda: all(
            DEPRECATED in rules for rules in rules_for(kafka, still).values()), timeout=30)
        await asyncio.sleep(0.5)
        assert not any(DEPRECATED in rules for rules in rules_for(kafka, before).values())
    assert await processor.terminate() == 0, processor.err()[-3000:]
