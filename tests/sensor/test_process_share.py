"""``Sensor.process_share`` (a ``--workers`` worker's per-frame entry) is ``flow_owner``
followed by ``process`` (this worker's frames) or ``advance`` (the others'), as the worker
loop was written before the owner test moved into the sensor's fast path.

Compared on every capture of tests/data and on a generated capture, for 2 and 3 workers
and every worker index: the same events, statistics, flows and anomaly counts; and the
workers' shares add up to the whole capture's packets and handshakes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sensor.config import SensorConfig
from sensor.flowhash import NOT_A_FLOW, flow_owner
from sensor.sensor import Sensor
from tests.support import Frame, captures, handshakes, read_frames

CONFIG = SensorConfig(name="test-sensor")


def _outcome(sensor: Sensor, events: list[str]) -> tuple[object, ...]:
    flows = sorted((f.keys[0], f.packets, f.bytes, f.state.value, f.last_seen)
                   for f in sensor.flows)
    return (events, sensor.stats, flows, dict(sensor.anomalies.totals), sensor.now,
            sensor.flows.created, sensor.flows.expired, sensor.flows.evicted)


def by_owner(frames: list[Frame], workers: int, index: int) -> tuple[object, ...]:
    sensor = Sensor(CONFIG)
    events: list[str] = []
    for timestamp, linktype, data in frames:
        owner = flow_owner(linktype, data, workers)
        if owner == index or (owner == NOT_A_FLOW and index == 0):
            sensor.process(timestamp, linktype, data)
        elif timestamp > sensor.now:
            sensor.advance(timestamp)
        events += [e.model_dump_json() for e in sensor.drain()]
    outcome = _outcome(sensor, events)
    return (*outcome, [e.model_dump_json() for e in sensor.finish()])


def shared(frames: list[Frame], workers: int, index: int) -> tuple[object, ...]:
    sensor = Sensor(CONFIG)
    events: list[str] = []
    for frame in frames:
        sensor.process_share(*frame, workers, index)
        events += [e.model_dump_json() for e in sensor.drain()]
    outcome = _outcome(sensor, events)
    return (*outcome, [e.model_dump_json() for e in sensor.finish()])


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_capture_shares_as_flow_owner_says(capture: Path) -> None:
    frames = read_frames(capture)
    for workers in (2, 3):
        for index in range(workers):
            assert shared(frames, workers, index) == by_owner(frames, workers, index)


def test_generated_capture_shares_add_up_to_the_whole(tmp_path: Path) -> None:
    capture = tmp_path / "share.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "benchmark", str(capture),
                    "--connections", "90", "--concurrency", "30", "--app-segments", "4"],
                   check=True, capture_output=True, timeout=120)
    frames = read_frames(capture)
    packets = established = 0
    for index in range(3):
        sensor = Sensor(CONFIG)
        for frame in frames:
            sensor.process_share(*frame, 3, index)
        found = handshakes(sensor.finish())
        assert 0 < len(found) < 90  # the connections spread over the workers
        assert shared(frames, 3, index) == by_owner(frames, 3, index)
        packets += sensor.stats.packets
        established += sensor.stats.established
    assert packets == len(frames)
    assert established == 90
