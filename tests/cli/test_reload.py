"""SIGHUP policy reload: a good file takes effect between events, a bad one is refused and the
policy in force stays."""

from __future__ import annotations

from pathlib import Path

from certwatch.bus import Message
from certwatch.bus.memory import MemoryBus
from certwatch.codec import encode
from certwatch.reload import PolicyReloader
from certwatch.services import ProcessorService
from processors.engine import Processor
from processors.policy_file import load_policy
from processors.registry import DETECTORS
from schemas.alerts import AlertEvent
from schemas.topics import HANDSHAKE_TOPIC, key_of
from tests.support import DATA, handshakes, read_frames, run_sensor


async def alerts_for(service: ProcessorService, bus: MemoryBus, seen: list[AlertEvent],
                     capture: str) -> list[str]:
    before = len(seen)
    for event in handshakes(run_sensor(read_frames(DATA / "zeek" / capture))):
        await service.handle(Message(HANDSHAKE_TOPIC, key_of(event), encode(event)))
    return sorted({a.rule.name for a in seen[before:]})


async def test_reload_swaps_the_policy_and_refuses_a_bad_one(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  tls.deprecated_version: {min_version: '1.0'}\n")
    seen: list[AlertEvent] = []

    async def keep(alert: AlertEvent) -> None:
        seen.append(alert)

    bus = MemoryBus()
    service = ProcessorService(Processor(load_policy(policy), DETECTORS), bus, on_alert=keep)
    reloader = PolicyReloader(policy, service, DETECTORS)
    assert "tls.deprecated_version" not in await alerts_for(service, bus, seen, "tls1_1.pcap")

    policy.write_text("rules:\n  tls.deprecated_version: {min_version: '1.2'}\n")
    assert reloader.reload()
    assert "tls.deprecated_version" in await alerts_for(service, bus, seen, "tls1_1.pcap")

    policy.write_text("rules:\n  tls.deprecated_version: {min_version: 'soon'}\n")
    assert not reloader.reload()
    assert reloader.refused == 1
    # The policy in force (min 1.2) still applies; the same finding in the same window is
    # suppressed because the suppression memory carried over.
    assert service.processor.policy.rules.deprecated_version.min_version == "1.2"
    assert await alerts_for(service, bus, seen, "tls1_1.pcap") == []
    assert service.processor.stats.suppressed > 0
