"""``Sensor.process_many`` (the replay loop's batch entry) is ``Sensor.process`` per frame.

process_many repeats the counted-packet path of process inline, for speed; these tests hold
the two to the same result on every capture of tests/data and on a generated capture whose
packets are mostly application data of finished handshakes (the path being duplicated),
for any batch size: the same events in the same order, the same statistics and flows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.config import SensorConfig
from sensor.sensor import Sensor, SensorStats
from tests.support import Frame, captures, handshakes, read_frames


def _outcome(sensor: Sensor, events: list[str]) -> tuple[object, ...]:
    flows = sorted((f.keys[0], f.packets, f.bytes, f.state.value, f.last_seen)
                   for f in sensor.flows)
    return (events, sensor.stats, flows, dict(sensor.anomalies.totals),
            sensor.flows.created, sensor.flows.expired, sensor.flows.evicted)


def one_by_one(frames: list[Frame], config: SensorConfig) -> tuple[object, ...]:
    sensor = Sensor(config)
    events = []
    for frame in frames:
        sensor.process(*frame)
        events += [e.model_dump_json() for e in sensor.drain()]
    outcome = _outcome(sensor, events)
    return (*outcome, [e.model_dump_json() for e in sensor.finish()])


def batched(frames: list[Frame], config: SensorConfig, size: int) -> tuple[object, ...]:
    sensor = Sensor(config)
    events: list[str] = []
    source = iter(frames)
    taken = []
    while True:
        taken.append(sensor.process_many(source, size))
        events += [e.model_dump_json() for e in sensor.drain()]
        if taken[-1] < size:
            break
    assert sum(taken) == len(frames) and all(n == size for n in taken[:-1])
    outcome = _outcome(sensor, events)
    return (*outcome, [e.model_dump_json() for e in sensor.finish()])


CONFIG = SensorConfig(name="test-sensor")


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_capture_gives_the_same_result_batched(capture: Path) -> None:
    frames = read_frames(capture)
    expected = one_by_one(frames, CONFIG)
    for size in (1, 3, 4096):
        assert batched(frames, CONFIG, size) == expected, size


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """60 connections, 20 open at once, 5 data segments each after the handshake."""
    capture = tmp_path_factory.mktemp("bench") / "bench.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "benchmark", str(capture),
                    "--connections", "60", "--concurrency", "20", "--app-segments", "5"],
                   check=True, capture_output=True, timeout=120)
    return read_frames(capture)


def test_generated_capture_batched_is_per_frame(generated: list[Frame]) -> None:
    expected = one_by_one(generated, CONFIG)
    events = expected[0]
    assert isinstance(events, list) and len(events) >= 60
    stats = expected[1]
    assert isinstance(stats, SensorStats) and stats.packets == len(generated)
    assert sum(stats.handshakes.values()) == 60
    assert batched(generated, CONFIG, 4096) == expected


@settings(max_examples=15, deadline=None)
@given(size=st.integers(min_value=1, max_value=400),
       linger=st.sampled_from([0.0, 0.001, 10.0]))
def test_any_batch_size_and_timeouts(generated: list[Frame], size: int, linger: float) -> None:
    """Short timeouts make flows expire and close mid-batch (the sweep runs inside it)."""
    config = SensorConfig(name="test-sensor", closed_linger=linger, idle_timeout=linger + 0.01)
    assert batched(generated, config, size) == one_by_one(generated, config)


def test_batches_see_the_handshakes_the_tls12_capture_has() -> None:
    frames = read_frames(captures("tls1.2.pcap")[0])
    sensor = Sensor(CONFIG)
    assert sensor.process_many(iter(frames), len(frames) + 5) == len(frames)
    assert len(handshakes(sensor.finish())) == 1
