"""``Sensor.process_pcap_records`` with a worker's share (what a ``--workers`` worker runs on
a classic pcap: records read in place, ``certwatch.workers._share_records``) against
``Sensor.process_share`` frame by frame.

On every classic pcap of tests/data (mapped, and streamed in runs of one record), on the
pcapng ones rewritten as classic pcap, and on a generated capture whose packets are mostly
application data of finished handshakes: for 2 and 3 workers and each index, the same
events and anomalies tagged with the same frame number (a worker orders the merged output by
it), the same statistics, flows, clock and end-of-input events; and the shares add up to
the whole capture.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.config import SensorConfig
from sensor.pcapfile import Buffer, PcapReader, open_source
from sensor.sensor import Sensor, SensorStats
from tests.sensor.test_process_many import (
    _outcome,
    _sharing,
    _tag,
    share_one_by_one,
)
from tests.sensor.test_record_runs import OTHERS, PCAPS, SMALL_PCAP, pcap_bytes
from tests.support import Frame, read_frames

CONFIG = SensorConfig(name="test-sensor")


def share_in_place(path: Path, config: SensorConfig, workers: int, index: int,
                   max_bytes: int = 1 << 20, *, use_mmap: bool = True) -> tuple[object, ...]:
    """As a worker reads a classic pcap: calls until a run's records are all taken, tagging
    what each call leaves queued with the frame number ``records_taken`` adds up to."""
    sensor, recording = _sharing(config)
    tagged: list[tuple[int, str]] = []
    reader = PcapReader(open_source(path, use_mmap=use_mmap))
    fmt = reader.record_format
    number = 0

    def consume(buf: Buffer, start: int, end: int) -> int:
        nonlocal number
        pos = start
        while True:
            pos = sensor.process_pcap_records(buf, pos, end, fmt, workers, index)
            taken = sensor.records_taken
            if not taken:
                return pos
            number += taken
            tagged.extend(_tag(number, sensor, recording))

    with reader:
        for _ in reader.record_runs(consume, max_bytes):
            assert not sensor.queue and not recording.raw  # all tagged inside the run
        assert not reader.truncated and reader.skipped_records == 0
    assert number == len(read_frames(path))
    outcome = _outcome(sensor, tagged)
    return (*outcome, sensor.now, [e.model_dump_json() for e in sensor.finish()])


def _check_every_share(frames: list[Frame], path: Path, config: SensorConfig = CONFIG,
                       *, streamed: bool = False) -> None:
    total = len(frames)
    for workers in (2, 3):
        packets = 0
        for index in range(workers):
            expected = share_one_by_one(frames, config, workers, index)
            got = share_in_place(path, config, workers, index)
            assert got == expected, (workers, index)
            if streamed:
                assert share_in_place(path, config, workers, index, 1,
                                      use_mmap=False) == expected, (workers, index)
            stats = expected[1]
            assert isinstance(stats, SensorStats)
            packets += stats.packets
        # Every frame is some worker's, once (frames that are no flow: worker 0's).
        assert packets == total, workers


@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_pcap_shared_in_place_is_process_share_per_frame(capture: Path) -> None:
    _check_every_share(read_frames(capture), capture, streamed=capture.suffix == ".pcap")


@pytest.mark.parametrize("capture", OTHERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pcapng_frames_rewritten_as_pcap_share_the_same(capture: Path, tmp_path: Path) -> None:
    """Other link types (every frame through process_share's general owner test), other
    byte order and time unit."""
    frames = read_frames(capture)
    rewritten = tmp_path / "rewritten.pcap"
    rewritten.write_bytes(pcap_bytes(frames, order=">", nanoseconds=True))
    _check_every_share(read_frames(rewritten), rewritten)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 connections, 20 open at once, 5 data segments each after the handshake."""
    capture = tmp_path_factory.mktemp("bench") / "bench.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "benchmark", str(capture),
                    "--connections", "60", "--concurrency", "20", "--app-segments", "5"],
                   check=True, capture_output=True, timeout=120)
    return capture


def test_generated_capture_shares_in_place_as_per_frame(generated: Path) -> None:
    """Both workers find their handshakes, 60 in all, each what process_share finds."""
    frames = read_frames(generated)
    found = 0
    for index in range(2):
        expected = share_one_by_one(frames, CONFIG, 2, index)
        assert share_in_place(generated, CONFIG, 2, index, 4096) == expected
        stats = expected[1]
        assert isinstance(stats, SensorStats)
        assert 0 < stats.packets < len(frames)
        found += sum(stats.handshakes.values())
    assert found == 60


@settings(max_examples=12, deadline=None)
@given(max_bytes=st.integers(min_value=1, max_value=20_000), index=st.integers(0, 2),
       linger=st.sampled_from([0.0, 0.001, 10.0]))
def test_any_run_size_and_timeouts(generated: Path, max_bytes: int, index: int,
                                   linger: float) -> None:
    """Short timeouts make flows expire mid-run: a sweep's events belong to the frame that
    moved the clock, this worker's or another's."""
    config = SensorConfig(name="test-sensor", closed_linger=linger, idle_timeout=linger + 0.01)
    assert (share_in_place(generated, config, 3, index, max_bytes)
            == share_one_by_one(read_frames(generated), config, 3, index))


def test_one_process_in_place_is_unchanged_by_the_share_parameters() -> None:
    """Without ``workers`` a call takes the whole run (records_taken is all of them)."""
    path = SMALL_PCAP
    raw = path.read_bytes()
    sensor = Sensor(CONFIG)
    reader = PcapReader(open_source(path))
    start = 24
    stop = sensor.process_pcap_records(raw, start, len(raw), reader.record_format)
    reader.close()
    assert stop == len(raw)
    assert sensor.records_taken == sensor.stats.packets == len(read_frames(path))
