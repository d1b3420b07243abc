"""Capture reading: real captures against tshark, crafted pcap/pcapng, gzip, stdin, damage."""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import struct
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.capture import open_capture
from sensor.decode import decode_frame, format_addr
from sensor.errors import CaptureError
from sensor.pcapfile import CaptureReader, Frame

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = sorted(p for p in DATA.glob("*/*") if p.suffix in (".pcap", ".pcapng"))
SMALL_PCAP = DATA / "zeek" / "tls-1.2-protocol-error.pcap"
SMALL_PCAPNG = DATA / "ja4" / "tls-non-ascii-alpn.pcapng"


def read_all(path: str | Path) -> tuple[list[Frame], CaptureReader]:
    with open_capture(path) as reader:
        return list(reader), reader


def split_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def test_corpus_is_present() -> None:
    assert len(CAPTURES) >= 20


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_capture_matches_tshark(path: Path) -> None:
    expected = json.loads(path.with_name(path.name + ".tshark.json").read_text())
    with open_capture(path) as reader:
        frames = list(reader)
        # By the magic number, not the name: nDPI's tls_invalid_reads.pcap is a pcapng.
        is_ng = path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
        assert reader.format == ("pcapng" if is_ng else "pcap")
        assert not reader.truncated and reader.skipped_records == 0
        assert reader.bytes_read == reader.bytes_total == path.stat().st_size
    assert frames
    for msg in expected["handshake_messages"]:
        frame = frames[msg["frame"] - 1]  # tshark numbers frames from 1
        assert frame.timestamp == pytest.approx(msg["time"], abs=1e-6)
        segment = decode_frame(frame.linktype, frame.data)
        assert segment is not None
        src, sport = split_endpoint(msg["src"])
        dst, dport = split_endpoint(msg["dst"])
        assert (segment.src_port, segment.dst_port) == (sport, dport)
        if (format_addr(segment.src_addr), format_addr(segment.dst_addr)) != (src, dst):
            # Tunnelled (VXLAN, GTP-U): tshark's addresses are the outer header's, ours
            # the inner connection's.
            assert ipaddress.ip_address(src).packed in frame.data[:64]
            assert ipaddress.ip_address(dst).packed in frame.data[:64]


def test_timestamps_never_go_backwards_much_in_real_captures() -> None:
    # A wrong timestamp unit (us read as ns, bad if_tsresol) shows as absurd dates.
    for path in CAPTURES:
        frames, _ = read_all(path)
        assert all(0 < f.timestamp < 2_000_000_000 for f in frames), path


# --- gzip and stdin -------------------------------------------------------------------


def test_gzip_is_detected_by_magic_not_name(tmp_path: Path) -> None:
    plain, _ = read_all(DATA / "ja4" / "latest.pcapng")
    packed = tmp_path / "capture.bin"
    packed.write_bytes(gzip.compress((DATA / "ja4" / "latest.pcapng").read_bytes()))
    with open_capture(packed) as reader:
        assert reader.format == "pcapng"
        frames = list(reader)
        assert reader.bytes_total == packed.stat().st_size
        assert reader.bytes_read == reader.bytes_total
        assert not reader.truncated
    assert frames == plain


def test_truncated_gzip_gives_a_prefix_and_sets_truncated(tmp_path: Path) -> None:
    plain, _ = read_all(DATA / "ndpi" / "443-curl.pcap")
    blob = gzip.compress((DATA / "ndpi" / "443-curl.pcap").read_bytes())
    packed = tmp_path / "cut.pcap.gz"
    packed.write_bytes(blob[: len(blob) // 2])
    frames, reader = read_all(packed)
    assert reader.truncated is True
    assert 0 < len(frames) < len(plain)
    assert frames == plain[: len(frames)]


@pytest.mark.parametrize("compress", [False, True])
def test_stdin_dash(monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    raw = (DATA / "zeek" / "tls1.2.pcap").read_bytes()
    plain, _ = read_all(DATA / "zeek" / "tls1.2.pcap")
    fed = gzip.compress(raw) if compress else raw
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(fed)))
    with open_capture("-") as reader:
        assert reader.bytes_total is None
        assert list(reader) == plain
        # no compressed size to report on a pipe: progress counts capture bytes
        assert reader.bytes_read == len(raw)


# --- crafted files --------------------------------------------------------------------


def pcap_bytes(
    records: list[tuple[int, int, bytes]],
    *,
    endian: str = "<",
    nano: bool = False,
    linktype: int = 1,
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for sec, frac, data in records:
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), len(data) + 4) + data)
    return b"".join(out)


def block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack(endian + "II", btype, size) + body + struct.pack(endian + "I", size)


def option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(endian: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def idb(linktype: int, opts: bytes = b"", endian: str = "<", snaplen: int = 0) -> bytes:
    end = option(0, b"", endian) if opts else b""
    return block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts + end, endian)


def epb(ifid: int, ts: int, data: bytes, endian: str = "<") -> bytes:
    head = struct.pack(endian + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(6, head + data, endian)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    frac = 123456789 if nano else 123456
    path = tmp_path / "x.pcap"
    path.write_bytes(
        pcap_bytes(
            [(1700000000, frac, b"abc"), (1700000001, 0, b"")],
            endian=endian,
            nano=nano,
            linktype=101,
        )
    )
    frames, reader = read_all(path)
    assert [(f.linktype, f.data) for f in frames] == [(101, b"abc"), (101, b"")]
    assert frames[0].timestamp == pytest.approx(1700000000 + frac * (1e-9 if nano else 1e-6))
    assert frames[1].timestamp == 1700000001.0
    assert reader.truncated is False


def test_pcap_linktype_ignores_fcs_bits(tmp_path: Path) -> None:
    # The upper bits of the link type field carry FCS length information.
    path = tmp_path / "fcs.pcap"
    path.write_bytes(pcap_bytes([(1, 0, b"x")], linktype=(1 << 28) | (4 << 26) | 1))
    assert read_all(path)[0][0].linktype == 1


def test_pcapng_two_interfaces_resolutions_and_sections(tmp_path: Path) -> None:
    ns = option(9, b"\x09")
    offset = option(14, struct.pack("<q", 100))
    pow2 = option(9, bytes([0x80 | 20]), ">")  # 2^-20 s units
    content = b"".join(
        [
            shb(),
            idb(1),  # if 0: Ethernet, default microseconds
            idb(101, ns + offset, snaplen=3),  # if 1: raw IP, nanoseconds, +100 s
            epb(0, 1_700_000_000_250_000, b"eth-frame"),
            block(4, b"\x00\x00\x00\x00"),  # name resolution block: skipped
            block(0x0BAD, b"custom"),  # unknown block type: skipped
            epb(1, 1_700_000_000_123_456_789, b"raw-frame"),
            epb(7, 1, b"no such interface"),  # counted as skipped
            block(3, struct.pack("<I", 9) + b"simple-pk"),  # SPB: interface 0, no timestamp
            # obsolete Packet Block on interface 1 at 5e9 ns
            block(2, struct.pack("<HHIIII", 1, 0, 1, 5_000_000_000 - (1 << 32), 3, 3) + b"obs"),
            shb(">"),  # second section, other byte order: interface ids start again
            idb(113, pow2, ">"),
            epb(0, 3 << 20, b"sll", ">"),
        ]
    )
    path = tmp_path / "two.pcapng"
    path.write_bytes(content)
    frames, reader = read_all(path)
    assert [(f.linktype, f.data) for f in frames] == [
        (1, b"eth-frame"),
        (101, b"raw-frame"),
        (1, b"simple-pk"),
        (101, b"obs"),
        (113, b"sll"),
    ]
    assert frames[0].timestamp == pytest.approx(1_700_000_000.25, abs=1e-9)
    assert frames[1].timestamp == pytest.approx(1_700_000_100.123456789, abs=1e-6)
    assert frames[2].timestamp == frames[1].timestamp  # an SPB has no time of its own
    assert frames[3].timestamp == pytest.approx(105.0)
    assert frames[4].timestamp == 3.0
    assert reader.skipped_records == 1
    assert reader.truncated is False


def test_simple_packet_block_is_cut_to_snaplen(tmp_path: Path) -> None:
    path = tmp_path / "spb.pcapng"
    path.write_bytes(shb() + idb(1, snaplen=4) + block(3, struct.pack("<I", 6) + b"abcdef"))
    assert [f.data for f in read_all(path)[0]] == [b"abcd"]


# --- damage ---------------------------------------------------------------------------


def record_ends(raw: bytes) -> list[int]:
    """Where each record of a little-endian pcap ends, from its caplen fields alone."""
    ends, pos = [], 24
    while pos < len(raw):
        pos += 16 + struct.unpack_from("<I", raw, pos + 8)[0]
        ends.append(pos)
    return ends


def test_every_cut_of_a_pcap_is_a_prefix(tmp_path: Path) -> None:
    raw = SMALL_PCAP.read_bytes()
    full, _ = read_all(SMALL_PCAP)
    ends = record_ends(raw)
    assert len(ends) == len(full) and ends[-1] == len(raw)
    path = tmp_path / "cut.pcap"
    for cut in range(len(raw) + 1):
        path.write_bytes(raw[:cut])
        if cut < 24:
            with pytest.raises(CaptureError, match=r"cut\.pcap"):
                open_capture(path)
            continue
        frames, reader = read_all(path)
        whole = sum(end <= cut for end in ends)
        assert frames == full[:whole], cut
        assert reader.truncated is (cut not in (24, *ends)), cut


def block_ends(raw: bytes) -> list[int]:
    """Where each pcapng block ends, from the little-endian length fields alone."""
    ends, pos = [], 0
    while pos < len(raw):
        pos += struct.unpack_from("<I", raw, pos + 4)[0]
        ends.append(pos)
    return ends


def test_every_cut_of_a_pcapng_is_a_prefix(tmp_path: Path) -> None:
    raw = SMALL_PCAPNG.read_bytes()
    full, _ = read_all(SMALL_PCAPNG)
    boundaries = block_ends(raw)
    assert boundaries[-1] == len(raw)
    path = tmp_path / "cut.pcapng"
    for cut in range(len(raw) + 1):
        path.write_bytes(raw[:cut])
        if cut < 12:
            with pytest.raises(CaptureError):
                open_capture(path)
            continue
        frames, reader = read_all(path)
        assert frames == full[: len(frames)], cut
        assert reader.truncated is (cut not in boundaries), cut
    assert len(frames) == len(full)


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "page.pcap"
    path.write_bytes(b"<html><body>404</body></html>\n")
    with pytest.raises(CaptureError) as info:
        open_capture(path)
    message = str(info.value)
    assert "page.pcap" in message and "3c 68 74 6d" in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "expect"), [(b"", "empty"), (b"\xd4\xc3\xb2", "too short"), (None, "cannot open")]
)
def test_empty_short_or_missing(tmp_path: Path, content: bytes | None, expect: str) -> None:
    path = tmp_path / "f.pcap"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=expect):
        open_capture(path)


def test_directory_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=str(tmp_path.name)):
        open_capture(tmp_path)


def test_gzip_of_garbage_is_a_capture_error(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"hello, not a capture"))
    with pytest.raises(CaptureError, match="68 65 6c 6c"):
        open_capture(path)
    path.write_bytes(b"\x1f\x8b" + b"\xff" * 40)  # gzip magic, corrupt header
    with pytest.raises(CaptureError, match=r"x\.gz"):
        open_capture(path)


def test_absurd_pcap_record_length_stops_reading(tmp_path: Path) -> None:
    good = pcap_bytes([(1, 0, b"first")])
    bad = struct.pack("<IIII", 2, 0, 300 * 1024, 300 * 1024) + b"\0" * 64
    path = tmp_path / "bad.pcap"
    path.write_bytes(good + bad)
    frames, reader = read_all(path)
    assert [f.data for f in frames] == [b"first"]
    assert reader.truncated is True
    assert reader.skipped_records == 1
    assert "claims" in str(reader.stop_reason)


def test_pcapng_bad_block_length_stops_but_sane_bad_blocks_are_skipped(tmp_path: Path) -> None:
    mismatched = bytearray(epb(0, 2, b"mismatch"))
    mismatched[-4:] = struct.pack("<I", 999)
    content = shb() + idb(1) + epb(0, 1, b"one") + bytes(mismatched) + epb(0, 3, b"three")
    path = tmp_path / "a.pcapng"
    path.write_bytes(content + struct.pack("<II", 6, 30) + b"\0" * 30)  # 30 % 4 != 0
    frames, reader = read_all(path)
    assert [f.data for f in frames] == [b"one", b"three"]
    assert reader.skipped_records == 2
    assert reader.truncated is True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_files_never_raise_while_iterating(data: st.DataObject) -> None:
    raw = bytearray(
        SMALL_PCAPNG.read_bytes() if data.draw(st.booleans()) else SMALL_PCAP.read_bytes()
    )
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with tempfile.NamedTemporaryFile(suffix=".cap") as tmp:
        tmp.write(raw)
        tmp.flush()
        try:
            reader = open_capture(tmp.name)
        except CaptureError:
            return  # header damage is reported up front
        with reader:
            for frame in reader:
                assert len(frame.data) <= 256 * 1024


def test_stdin_absent_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(CaptureError, match="empty"):
        open_capture("-")
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(CaptureError, match="no standard input"):
        open_capture("-")
