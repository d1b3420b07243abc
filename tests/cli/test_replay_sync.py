"""``replay_sync`` (no event loop, what ``certwatch replay --no-alerts`` runs) against the
event-loop ``replay``: the same events in the same order and the same report, over several
captures in one run, one missing and one cut short."""

from __future__ import annotations

import asyncio
from pathlib import Path

from certwatch.replay import ReplayReport, replay, replay_sync
from schemas.events import SensorEvent
from sensor.config import SensorConfig
from sensor.sensor import Sensor
from tests.support import DATA


def paths(tmp_path: Path) -> list[str]:
    raw = (DATA / "ndpi" / "443-curl.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    return [str(DATA / "zeek" / "tls1.2.pcap"), str(tmp_path / "missing.pcap"), str(cut),
            str(DATA / "ja4" / "latest.pcapng"), str(DATA / "quic" / "quic-ietf.pcap.gz")]


def fields(report: ReplayReport) -> tuple[object, ...]:
    return (report.captures, report.failed, report.truncated, report.skipped_records,
            report.events)


def test_sync_and_event_loop_replays_agree(tmp_path: Path) -> None:
    captures = paths(tmp_path)
    config = SensorConfig(name="test-sensor")
    by_loop: list[SensorEvent] = []

    async def emit(event: SensorEvent) -> None:
        by_loop.append(event)

    loop_report = asyncio.run(replay(captures, Sensor(config), emit))
    direct: list[SensorEvent] = []
    sync_report = replay_sync(captures, Sensor(config), direct.append)
    assert fields(sync_report) == fields(loop_report)
    assert sync_report.captures == 4 and sync_report.truncated == [captures[2]]
    assert [path for path, _ in sync_report.failed] == [captures[1]]
    assert sync_report.events == len(direct) > 10
    assert [e.model_dump() for e in direct] == [e.model_dump() for e in by_loop]
