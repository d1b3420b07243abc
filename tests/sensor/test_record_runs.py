"""``PcapReader.record_runs`` + ``Sensor.process_pcap_records`` (classic pcap records read in
place, what ``certwatch replay --no-alerts`` runs) against ``Sensor.process`` per frame.

The sensor repeats the counted-packet path of process inline and reads it from the file's
buffer instead of a frame copy, so: on every classic pcap of tests/data, on the pcapng ones
rewritten as classic pcap (big-endian with nanosecond times too), and on the first packets
of the quick benchmark capture, the same events in the same order, the same statistics and
flows, whatever the run size; and a damaged file is reported as the frame-list reader
reports it (the frames before the damage, ``truncated``, ``stop_reason``,
``skipped_records``), read from a mapped file or from a stream (gzip, a plain read).
"""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.capture import open_capture
from sensor.config import SensorConfig
from sensor.pcapfile import Buffer, PcapReader, open_source
from sensor.sensor import Sensor
from tests.sensor.test_process_many import _outcome, one_by_one
from tests.support import DATA, Frame, captures, read_frames

CONFIG = SensorConfig(name="test-sensor")
QUICK = Path(__file__).parents[2] / "bench" / ".cache" / "benchmark-s1-c2000-a20-p200.pcap"
SMALL_PCAP = DATA / "zeek" / "tls-1.2-protocol-error.pcap"


class Report(NamedTuple):
    truncated: bool
    stop_reason: str | None
    skipped_records: int
    bytes_read: int


def pcap_bytes(frames: list[Frame], *, order: str = "<", nanoseconds: bool = False) -> bytes:
    """A classic pcap file holding ``frames`` (one link type), in byte order ``order``."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    units = 1_000_000_000 if nanoseconds else 1_000_000
    linktype = frames[0][1] if frames else 1
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for timestamp, _, data in frames:
        ticks = round(timestamp * units)
        out.append(struct.pack(order + "IIII", ticks // units, ticks % units, len(data),
                               len(data)))
        out.append(data)
    return b"".join(out)


def in_place(path: str | Path, config: SensorConfig = CONFIG, max_bytes: int = 1 << 20,
             *, use_mmap: bool = True) -> tuple[tuple[object, ...], Report, list[int]]:
    """What the sensor gives reading the pcap at ``path`` in place, like ``one_by_one``;
    what the reader reports and the bytes each run took."""
    sensor = Sensor(config)
    events: list[str] = []
    reader = PcapReader(open_source(path, use_mmap=use_mmap))
    fmt = reader.record_format

    def consume(buf: Buffer, start: int, end: int) -> int:
        return sensor.process_pcap_records(buf, start, end, fmt)

    with reader:
        runs = []
        for taken in reader.record_runs(consume, max_bytes):
            runs.append(taken)
            events += [e.model_dump_json() for e in sensor.drain()]
        report = Report(reader.truncated, reader.stop_reason, reader.skipped_records,
                        reader.bytes_read)
    outcome = _outcome(sensor, events)
    return (*outcome, [e.model_dump_json() for e in sensor.finish()]), report, runs


def classic(path: Path) -> bool:
    with open_capture(path) as reader:
        return isinstance(reader, PcapReader)


PCAPS = [p for p in captures() if classic(p)]
OTHERS = [p for p in captures() if not classic(p)]


@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_pcap_read_in_place_gives_what_process_gives(capture: Path) -> None:
    expected = one_by_one(read_frames(capture), CONFIG)
    # A stream (gzip) is read in chunks; a plain file both mapped and streamed.
    got, report, _ = in_place(capture)
    assert got == expected
    assert not report.truncated and report.skipped_records == 0
    if capture.suffix == ".pcap":
        assert in_place(capture, max_bytes=1, use_mmap=False)[0] == expected


@pytest.mark.parametrize("capture", OTHERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pcapng_frames_rewritten_as_pcap_give_the_same_result(
    capture: Path, tmp_path: Path
) -> None:
    """Other byte order and time unit, other link types: the record formats the sensor
    reads headers and times with (the times survive nanoseconds exactly)."""
    frames = read_frames(capture)
    assert len({linktype for _, linktype, _ in frames}) == 1
    rewritten = tmp_path / "rewritten.pcap"
    rewritten.write_bytes(pcap_bytes(frames, order=">", nanoseconds=True))
    with open_capture(rewritten) as reader:
        again: list[Frame] = [(ts, linktype, data) for ts, linktype, data in reader]
    assert [f[2] for f in again] == [f[2] for f in frames]
    assert in_place(rewritten)[0] == one_by_one(again, CONFIG)


def test_any_run_size_gives_the_same_result() -> None:
    capture = DATA / "ndpi" / "443-curl.pcap"
    expected = one_by_one(read_frames(capture), CONFIG)
    raw = capture.read_bytes()
    size = len(raw) - 24
    sizes, pos = [], 24  # each record's size, header included
    while pos < len(raw):
        sizes.append(16 + struct.unpack_from("<I", raw, pos + 8)[0])
        pos += sizes[-1]
    for max_bytes in (1, 100, 1500, 5000, 1 << 20):
        got, report, runs = in_place(capture, max_bytes=max_bytes)
        assert got == expected, max_bytes
        assert sum(runs) == size == report.bytes_read - 24
        # A run is one record, or as many whole records as max_bytes holds: the next
        # record would not have fitted.
        done = 0
        for taken in runs[:-1]:
            count = 0
            while sum(sizes[done:done + count + 1]) <= taken:
                count += 1
            assert count >= 1 and sum(sizes[done:done + count]) == taken
            assert count == 1 or taken <= max_bytes
            assert taken + sizes[done + count] > max_bytes
            done += count
    assert len(in_place(capture, max_bytes=1 << 20)[2]) == 1


@pytest.mark.skipif(not QUICK.exists(), reason="quick benchmark capture not generated")
def test_the_quick_benchmark_captures_first_packets(tmp_path: Path) -> None:
    """Mostly packets of finished handshakes (the path read in place), with short timeouts
    so flows expire and close inside a run."""
    with open_capture(QUICK) as reader:
        frames = [frame for batch, _ in zip(reader.batches(), range(12), strict=False)
                  for frame in batch]
    head = tmp_path / "head.pcap"
    head.write_bytes(pcap_bytes(frames))
    frames = read_frames(head)
    expected = one_by_one(frames, CONFIG)
    assert sum(expected[1].handshakes.values()) >= 100  # type: ignore[attr-defined]
    assert in_place(head)[0] == expected
    config = SensorConfig(name="test-sensor", closed_linger=0.001, idle_timeout=0.011)
    assert in_place(head, config, max_bytes=7000)[0] == one_by_one(frames, config)


def batches_view(path: str) -> tuple[list[Frame], Report]:
    with open_capture(path) as reader:
        frames = [frame for batch in reader.batches() for frame in batch]
        return frames, Report(reader.truncated, reader.stop_reason, reader.skipped_records,
                              reader.bytes_read)


def assert_reported_alike(path: str, *, use_mmap: bool = True) -> None:
    frames, expected = batches_view(path)
    got, report, _ = in_place(path, use_mmap=use_mmap)
    assert got == one_by_one(frames, CONFIG)
    assert report == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_cut_is_reported_as_the_frame_lists_report_it(data: st.DataObject) -> None:
    raw = SMALL_PCAP.read_bytes()
    cut = data.draw(st.integers(24, len(raw)))
    use_mmap = data.draw(st.booleans())
    with tempfile.NamedTemporaryFile(suffix=".pcap") as tmp:
        tmp.write(raw[:cut])
        tmp.flush()
        assert_reported_alike(tmp.name, use_mmap=use_mmap)


@pytest.mark.parametrize("use_mmap", [True, False])
@pytest.mark.parametrize("record", [0, 5, -1])
@pytest.mark.parametrize("claim", [256 * 1024 + 1, 300 * 1024, 0xFFFFFFFF])
def test_a_record_claiming_too_many_bytes_ends_the_capture(
    tmp_path: Path, record: int, claim: int, use_mmap: bool
) -> None:
    """Even when the claimed length would still lie inside the run (300 KiB of a 1 MiB
    run): the sensor stops in front of it, and the reader reports it."""
    frames = read_frames(DATA / "ndpi" / "443-curl.pcap")
    raw = bytearray(pcap_bytes(frames) + b"\0" * (400 * 1024))
    pos = 24
    for _ in range(record % len(frames)):
        pos += 16 + struct.unpack_from("<I", raw, pos + 8)[0]
    struct.pack_into("<I", raw, pos + 8, claim)
    path = tmp_path / "claims.pcap"
    path.write_bytes(bytes(raw))
    assert_reported_alike(str(path), use_mmap=use_mmap)
    _, report, _ = in_place(path, use_mmap=use_mmap)
    assert report.skipped_records == 1 and f"claims {claim} bytes" in str(report.stop_reason)


def test_a_cut_gzip_stream_gives_the_records_before_the_cut(tmp_path: Path) -> None:
    blob = gzip.compress((DATA / "ndpi" / "443-curl.pcap").read_bytes())
    packed = tmp_path / "cut.pcap.gz"
    packed.write_bytes(blob[: len(blob) // 2])
    assert_reported_alike(str(packed))
    _, report, runs = in_place(packed)
    assert report.truncated and runs


def test_a_consumer_must_take_the_first_record_and_a_reader_is_read_once() -> None:
    with open_capture(SMALL_PCAP) as reader:
        assert isinstance(reader, PcapReader)
        with pytest.raises(ValueError):
            reader.record_runs(lambda buf, start, end: end, 0)
        with pytest.raises(RuntimeError, match="did not take a record"):
            next(reader.record_runs(lambda buf, start, end: start))
        with pytest.raises(RuntimeError, match="only be iterated once"):
            reader.batches()

