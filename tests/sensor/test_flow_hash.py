"""``sensor.flowhash``: which worker owns a frame, on the real captures of tests/data; and
``Sensor.process_share_many``, which decides it inline (its own header test, a cache of
other workers' flows, the hash written out), takes exactly the frames it says."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor import sensor as sensor_module
from sensor.config import SensorConfig
from sensor.decode import SUPPORTED_LINKTYPES, TcpSegment, decode_frame
from sensor.errors import DecodeError
from sensor.flowhash import NOT_A_FLOW, flow_owner
from sensor.sensor import Sensor
from tests.support import RAW_IP, Frame, captures, raw_frame, read_frames

ETHERNET = 1
Connection = frozenset[tuple[bytes, int]]


def connection_of(segment: TcpSegment) -> Connection:
    return frozenset({(segment.src_addr, segment.src_port), (segment.dst_addr, segment.dst_port)})


def decoded(frames: list[Frame]) -> list[tuple[Frame, TcpSegment | None]]:
    out: list[tuple[Frame, TcpSegment | None]] = []
    for frame in frames:
        try:
            segment = decode_frame(frame[1], frame[2])
        except DecodeError:
            segment = None
        out.append((frame, segment))
    return out


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_both_directions_of_every_connection_land_on_one_worker(capture: Path) -> None:
    frames = decoded(read_frames(capture))
    for workers in (2, 3, 5):
        owners: dict[Connection, set[int]] = defaultdict(set)
        directions: dict[Connection, set[tuple[bytes, int]]] = defaultdict(set)
        for (_, linktype, data), segment in frames:
            owner = flow_owner(linktype, data, workers)
            if segment is None:
                assert owner == NOT_A_FLOW
                continue
            assert 0 <= owner < workers
            key = connection_of(segment)
            owners[key].add(owner)
            directions[key].add((segment.src_addr, segment.src_port))
        assert all(len(found) == 1 for found in owners.values()), capture
        # The property is not vacuous: the captures have two-way connections.
        assert any(len(sides) == 2 for sides in directions.values()) or not owners


@pytest.mark.parametrize("name", ["ndpi/vxlan.pcap", "ndpi/ja3_lots_of_cipher_suites_2_anon.pcap"])
def test_tunnelled_traffic_goes_where_its_inner_flow_would_go_bare(name: str) -> None:
    """VXLAN and GTP-U frames are placed by the inner connection: the same worker as a
    plain IP frame of that connection (what the sensor keys the flow by)."""
    tunnelled = 0
    for (_, linktype, data), segment in decoded(read_frames(Path(__file__).parents[1] / "data"
                                                              / name)):
        if segment is None:
            continue
        bare = raw_frame(segment, segment.seq, b"")
        assert len(data) > len(bare)  # the frame really is encapsulated
        for workers in (2, 3, 4, 7):
            assert flow_owner(linktype, data, workers) == flow_owner(RAW_IP, bare, workers)
        tunnelled += 1
    assert tunnelled


def test_segmentation_offload_frames_take_the_slow_path_to_the_same_worker() -> None:
    """A frame captured before the NIC filled in the IPv4 total length (0) is decoded by
    the general path; it must still land with the rest of its connection."""
    frames = read_frames(Path(__file__).parents[1] / "data" / "zeek" / "tls1.2.pcap")
    checked = 0
    for _, linktype, data in frames:
        if linktype != ETHERNET or data[12:14] != b"\x08\x00":
            continue
        offloaded = data[:16] + b"\x00\x00" + data[18:]
        assert decode_frame(linktype, offloaded) is not None
        for workers in (2, 3, 5):
            assert flow_owner(linktype, offloaded, workers) == flow_owner(linktype, data, workers)
        checked += 1
    assert checked > 10


def test_frames_that_are_not_flows_belong_to_no_worker() -> None:
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    udp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes(4), bytes(4)) \
        + struct.pack("!HHHH", 53, 53, 8, 0)
    truncated_tcp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes(4),
                                bytes(4)) + bytes(8)
    assert flow_owner(ETHERNET, arp, 4) == NOT_A_FLOW
    assert flow_owner(RAW_IP, udp, 4) == NOT_A_FLOW
    assert flow_owner(RAW_IP, truncated_tcp, 4) == NOT_A_FLOW  # the sensor reports it
    assert flow_owner(147, bytes(60), 4) == NOT_A_FLOW  # a link type nobody decodes


@settings(max_examples=400, deadline=None)
@given(linktype=st.sampled_from(sorted(SUPPORTED_LINKTYPES | {147})),
       data=st.binary(max_size=120), workers=st.integers(1, 64))
def test_any_bytes_give_a_worker_or_no_flow_and_never_raise(
        linktype: int, data: bytes, workers: int) -> None:
    owner = flow_owner(linktype, data, workers)
    assert owner == NOT_A_FLOW or 0 <= owner < workers


@settings(max_examples=200, deadline=None)
@given(src=st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
       dst_seed=st.binary(min_size=16, max_size=16), sport=st.integers(0, 65535),
       dport=st.integers(0, 65535), workers=st.integers(2, 64))
def test_swapping_the_ends_never_changes_the_worker(
        src: bytes, dst_seed: bytes, sport: int, dport: int, workers: int) -> None:
    dst = dst_seed[:len(src)]
    template = TcpSegment(src, dst, sport, dport, 1, 0, 0x10, b"", ())
    forward = raw_frame(template, 1, b"x")
    backward = raw_frame(template._replace(src_addr=dst, dst_addr=src, src_port=dport,
                                           dst_port=sport), 1, b"y")
    assert flow_owner(RAW_IP, forward, workers) == flow_owner(RAW_IP, backward, workers)


def test_a_generated_capture_spreads_its_connections_over_the_workers(tmp_path: Path) -> None:
    """tlsgen's benchmark: consecutive client ports and addresses must not all hash alike
    (a hash keeping low bits of the sum would put every connection on one worker)."""
    capture = tmp_path / "bench.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "benchmark", str(capture),
                    "--connections", "400", "--concurrency", "20", "--app-segments", "0"],
                   check=True, capture_output=True, timeout=120)
    connections = {connection_of(segment): (linktype, data)
                   for (_, linktype, data), segment in decoded(read_frames(capture))
                   if segment is not None}
    assert len(connections) == 400
    for workers in (2, 3, 4, 8):
        shares = Counter(flow_owner(lt, data, workers) for lt, data in connections.values())
        assert set(shares) == set(range(workers))
        assert min(shares.values()) >= 400 / workers / 2, (workers, shares)


def taken_frames(frames: list[Frame], workers: int, index: int) -> list[bool]:
    """For each frame, whether worker ``index``'s sensor counted it, fed one frame a call."""
    sensor = Sensor(SensorConfig(name="test-sensor"))
    source = iter(frames)
    counted = []
    for _ in frames:
        before = sensor.stats.packets
        assert sensor.process_share_many(source, 1, workers, index) == 1
        counted.append(sensor.stats.packets - before == 1)
    return counted


def owned_frames(frames: list[Frame], workers: int, index: int) -> list[bool]:
    owners = [flow_owner(linktype, data, workers) for _, linktype, data in frames]
    return [owner == index or (owner == NOT_A_FLOW and index == 0) for owner in owners]


@pytest.mark.parametrize("kept", [sensor_module.OTHERS_KEPT, 1], ids=["cache", "cache-of-1"])
@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_worker_takes_every_frame_flow_owner_gives_it_and_no_other(
        capture: Path, kept: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also with the cache of other workers' flow keys emptied at every new key."""
    monkeypatch.setattr(sensor_module, "OTHERS_KEPT", kept)
    frames = read_frames(capture)
    for workers in (2, 3, 5):
        shares = [taken_frames(frames, workers, index) for index in range(workers)]
        for index, taken in enumerate(shares):
            assert taken == owned_frames(frames, workers, index), (workers, index)
        assert all(sum(column) == 1 for column in zip(*shares, strict=True))


def test_two_connections_differing_in_one_port_may_go_to_different_workers() -> None:
    """Not every frame goes one way: the inline hash spreads connections (the other tests
    would hold for a hash that put everything on worker 0)."""
    template = TcpSegment(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 40000, 443, 1, 0,
                          0x02, b"", ())
    frames: list[Frame] = [(1.0, ETHERNET, b"\x00" * 12 + b"\x08\x00"
                            + raw_frame(template._replace(src_port=40000 + n), 1, b""))
                           for n in range(64)]
    taken = taken_frames(frames, 2, 1)
    assert taken == owned_frames(frames, 2, 1)
    assert 16 < sum(taken) < 48


_TLS12 = read_frames(Path(__file__).parents[1] / "data" / "zeek" / "tls1.2.pcap")


@settings(max_examples=300, deadline=None)
@given(frame=st.integers(0, len(_TLS12) - 1), offset=st.integers(12, 59),
       value=st.integers(0, 255), workers=st.integers(2, 4))
def test_an_edited_header_is_taken_as_flow_owner_says(frame: int, offset: int, value: int,
                                                       workers: int) -> None:
    """One byte of the Ethernet, IPv4 or TCP header changed (EtherType, version and header
    length, total length, fragment field, protocol, addresses, ports, data offset,
    flags): whichever way the frame then goes (the inline test, the general path, no
    flow at all), it lands on the worker flow_owner names."""
    timestamp, linktype, data = _TLS12[frame]
    edited = data[:offset] + bytes([value]) + data[offset + 1:]
    frames = [*_TLS12[:frame], (timestamp, linktype, edited), *_TLS12[frame + 1:]]
    for index in range(workers):
        assert taken_frames(frames, workers, index) == owned_frames(frames, workers, index)
