"""``CaptureReader.batches``: the frames of a capture as lists, as a replay reads them.

The frames must be those tshark numbers (every shipped capture, pcap, pcapng and gzip), cut
into lists within the size and byte bounds, with damage reported as by one-at-a-time
reading: a cut file gives the frames before the cut, whatever the list size.
"""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.capture import open_capture
from sensor.pcapfile import RawFrame
from tests.support import DATA, captures, tshark_view

SMALL_PCAP = DATA / "zeek" / "tls-1.2-protocol-error.pcap"
SMALL_PCAPNG = DATA / "ja4" / "tls-non-ascii-alpn.pcapng"


def read_batches(path: Path, size: int, max_bytes: int = 1 << 30) -> list[list[RawFrame]]:
    with open_capture(path) as reader:
        return list(reader.batches(size, max_bytes))


def record_ends(raw: bytes) -> list[int]:
    """Where each record of a little-endian pcap ends, from its caplen fields alone."""
    ends, pos = [], 24
    while pos < len(raw):
        pos += 16 + struct.unpack_from("<I", raw, pos + 8)[0]
        ends.append(pos)
    return ends


def block_ends(raw: bytes) -> list[int]:
    """Where each pcapng block ends, from the little-endian length fields alone."""
    ends, pos = [], 0
    while pos < len(raw):
        pos += struct.unpack_from("<I", raw, pos + 4)[0]
        ends.append(pos)
    return ends


@pytest.mark.parametrize("path", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_batches_hold_the_frames_tshark_numbers(path: Path) -> None:
    messages = cast(list[dict[str, Any]], tshark_view(path)["handshake_messages"])
    handshake_frames = {msg["frame"]: msg["time"] for msg in messages}
    with open_capture(path) as reader:
        lists = list(reader.batches(7))
        assert not reader.truncated and reader.skipped_records == 0
        assert reader.bytes_read == reader.bytes_total == path.stat().st_size
    assert all(1 <= len(frames) <= 7 for frames in lists)
    frames = [frame for frames in lists for frame in frames]
    assert len(frames) >= max(handshake_frames, default=1)
    for number, time in handshake_frames.items():
        assert frames[number - 1][0] == pytest.approx(time, abs=1e-6)


@pytest.mark.parametrize("path", [SMALL_PCAP, SMALL_PCAPNG, DATA / "quic" / "quic-29.pcap.gz"])
def test_any_list_size_gives_the_same_frames(path: Path) -> None:
    frames = [frame for frames in read_batches(path, 1) for frame in frames]
    for size in (2, 5, 4096):
        lists = read_batches(path, size)
        assert [frame for frames in lists for frame in frames] == frames
        # Lists are full but for the last one when only the count bounds them.
        assert [len(f) for f in lists[:-1]] == [size] * (len(lists) - 1)
    with open_capture(path) as reader:
        assert [tuple(frame) for frame in reader] == frames


def test_a_list_ends_once_it_read_max_bytes_of_input() -> None:
    raw = SMALL_PCAP.read_bytes()
    ends = record_ends(raw)
    record_size = {e: e - s for s, e in zip([24, *ends], ends, strict=False)}
    for max_bytes in (1, 100, 1000, 5000):
        lists = read_batches(SMALL_PCAP, 4096, max_bytes)
        assert sum(map(len, lists)) == len(ends)
        done = 0
        for frames in lists[:-1]:
            read = [record_size[ends[done + i]] for i in range(len(frames))]
            # Under the bound before its last frame, at or over it with it.
            assert sum(read[:-1]) < max_bytes <= sum(read)
            done += len(frames)


def test_bytes_read_is_the_end_of_each_list() -> None:
    ends = record_ends(SMALL_PCAP.read_bytes())
    with open_capture(SMALL_PCAP) as reader:
        done = 0
        for frames in reader.batches(3):
            done += len(frames)
            assert reader.bytes_read == ends[done - 1]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_cut_gives_the_frames_before_it(data: st.DataObject) -> None:
    ng = data.draw(st.booleans())
    source = SMALL_PCAPNG if ng else SMALL_PCAP
    raw = source.read_bytes()
    ends = block_ends(raw) if ng else [24, *record_ends(raw)]  # 24: the file header alone
    full = [frame for frames in read_batches(source, 4096) for frame in frames]
    cut = data.draw(st.integers(ends[0] if ng else 24, len(raw)))
    size = data.draw(st.integers(1, 40))
    max_bytes = data.draw(st.sampled_from([1, 300, 1 << 20]))
    with tempfile.NamedTemporaryFile(suffix=".cap") as tmp:
        tmp.write(raw[:cut])
        tmp.flush()
        with open_capture(tmp.name) as reader:
            frames = [f for frames in reader.batches(size, max_bytes) for f in frames]
            truncated = reader.truncated
    assert frames == full[: len(frames)]
    assert truncated is (cut not in ends)
    if not ng:  # a pcap's every record is a frame
        assert len(frames) == sum(end <= cut for end in ends[1:])


def test_a_cut_gzip_stream_still_delivers_the_list_being_filled(tmp_path: Path) -> None:
    plain = [f for frames in read_batches(DATA / "ndpi" / "443-curl.pcap", 4096) for f in frames]
    blob = gzip.compress((DATA / "ndpi" / "443-curl.pcap").read_bytes())
    packed = tmp_path / "cut.pcap.gz"
    packed.write_bytes(blob[: len(blob) // 2])
    with open_capture(packed) as reader:
        lists = list(reader.batches(1 << 20))  # one list: the stream ends inside it
        assert reader.truncated is True and reader.stop_reason
    assert len(lists) == 1
    assert 0 < len(lists[0]) < len(plain)
    assert lists[0] == plain[: len(lists[0])]


def test_a_reader_is_read_once_and_sizes_are_checked() -> None:
    with open_capture(SMALL_PCAP) as reader:
        with pytest.raises(ValueError):
            reader.batches(0)
        assert next(reader.batches())
        with pytest.raises(RuntimeError, match="only be iterated once"):
            reader.batches()
        with pytest.raises(RuntimeError, match="only be iterated once"):
            list(reader)
