"""``Sensor.process_many`` (the replay loop's batch entry) is ``Sensor.process`` per frame,
and ``Sensor.process_share_many`` (a ``--workers`` worker's) is ``Sensor.process_share``.

Both repeat the counted-packet path of process inline, for speed; these tests hold them to
the per-frame methods on every capture of tests/data and on a generated capture whose
packets are mostly application data of finished handshakes (the path being duplicated),
for any batch size: the same events in the same order, the same statistics and flows. For
process_share_many also the frame each event and anomaly comes from: a worker tags them
with the frame count its calls add up to, which orders the merged output.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.anomalies import Anomaly, AnomalyCounter
from sensor.config import SensorConfig
from sensor.sensor import Sensor, SensorStats
from tests.support import Frame, captures, handshakes, read_frames


def _outcome(sensor: Sensor, events: Sequence[object]) -> tuple[object, ...]:
    flows = sorted((f.keys[0], f.packets, f.bytes, f.packets0, f.bytes0, f.state.value,
                    f.last_seen)
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


# -- process_share_many ----------------------------------------------------------------------


class _Recording(AnomalyCounter):
    """Counts as the sensor's own counter does, and keeps every occurrence (kind, detail)
    so that a test can tell which frame recorded it (a worker forwards them so)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.raw: list[tuple[str, str]] = []

    def record(self, kind: str, detail: str, timestamp: float,
               flow: tuple[tuple[bytes, int], tuple[bytes, int]] | None = None,
               ) -> Anomaly | None:
        self.raw.append((kind, detail))
        return super().record(kind, detail, timestamp, flow)


def _sharing(config: SensorConfig) -> tuple[Sensor, _Recording]:
    sensor = Sensor(config)
    recording = sensor.anomalies = _Recording()
    return sensor, recording


def _tag(number: int, sensor: Sensor, recording: _Recording) -> list[tuple[int, str]]:
    """What frame ``number`` queued or recorded, tagged with it."""
    tagged = [(number, e.model_dump_json()) for e in sensor.drain()]
    tagged += [(number, f"{kind}: {detail}") for kind, detail in recording.raw]
    recording.raw.clear()
    return tagged


def share_one_by_one(frames: list[Frame], config: SensorConfig, workers: int,
                     index: int) -> tuple[object, ...]:
    sensor, recording = _sharing(config)
    tagged: list[tuple[int, str]] = []
    for number, frame in enumerate(frames, 1):
        sensor.process_share(*frame, workers, index)
        tagged += _tag(number, sensor, recording)
    outcome = _outcome(sensor, tagged)
    return (*outcome, sensor.now, [e.model_dump_json() for e in sensor.finish()])


def share_batched(frames: list[Frame], config: SensorConfig, workers: int, index: int,
                  size: int) -> tuple[object, ...]:
    """As a worker calls it: until ``frames`` runs out, tagging what each call leaves
    queued with the number of the last frame taken."""
    sensor, recording = _sharing(config)
    tagged: list[tuple[int, str]] = []
    source = iter(frames)
    number = 0
    while taken := sensor.process_share_many(source, size, workers, index):
        assert taken <= size
        number += taken
        tagged += _tag(number, sensor, recording)
    assert number == len(frames)
    assert not sensor.queue and not recording.raw
    outcome = _outcome(sensor, tagged)
    return (*outcome, sensor.now, [e.model_dump_json() for e in sensor.finish()])


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_capture_shares_the_same_batched(capture: Path) -> None:
    frames = read_frames(capture)
    for workers in (2, 3):
        for index in range(workers):
            expected = share_one_by_one(frames, CONFIG, workers, index)
            for size in (1, 5, 4096):
                assert share_batched(frames, CONFIG, workers, index, size) == expected, (
                    workers, index, size)


def test_generated_capture_shares_batched_as_per_frame(generated: list[Frame]) -> None:
    """Both workers' shares add up to the whole capture, and each is what process_share
    gives frame by frame."""
    packets = found = 0
    for index in range(2):
        expected = share_one_by_one(generated, CONFIG, 2, index)
        assert share_batched(generated, CONFIG, 2, index, 1024) == expected
        stats = expected[1]
        assert isinstance(stats, SensorStats)
        packets += stats.packets
        found += sum(stats.handshakes.values())
        assert 0 < stats.packets < len(generated)
    assert packets == len(generated) and found == 60


@settings(max_examples=15, deadline=None)
@given(size=st.integers(min_value=1, max_value=400), index=st.integers(0, 2),
       linger=st.sampled_from([0.0, 0.001, 10.0]))
def test_any_share_batch_size_and_timeouts(generated: list[Frame], size: int, index: int,
                                           linger: float) -> None:
    """Short timeouts make flows expire and close mid-batch: the sweep's events belong to
    the frame that moved the clock, this worker's or not."""
    config = SensorConfig(name="test-sensor", closed_linger=linger, idle_timeout=linger + 0.01)
    assert (share_batched(generated, config, 3, index, size)
            == share_one_by_one(generated, config, 3, index))
