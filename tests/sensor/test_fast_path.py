"""The per-packet fast path of ``Sensor.process`` / ``process_many`` (and a worker's,
``process_share_many``) is the general path.

Untagged Ethernet/IPv4/TCP frames are handled from the fields ``process_many`` unpacks
itself: counted packets and bare ACKs are only counted, and every other segment (SYNs,
hellos, FINs) is built there and handed on without ``decode_frame``. The same frames with
their Ethernet header stripped (LINKTYPE_RAW) can only go the general way, through
``decode_frame``; both must give the same events, flows and anomaly counts, on every
capture of tests/data and on a generated capture.
"""

from __future__ import annotations

import dis
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from sensor import flowhash
from sensor import sensor as sensor_module
from sensor.config import SensorConfig
from sensor.decode import LINKTYPE_ETHERNET
from sensor.flowhash import NOT_A_FLOW, flow_owner
from sensor.sensor import Sensor
from tests.support import RAW_IP, Frame, captures, handshakes, read_frames

CONFIG = SensorConfig(name="test-sensor")


def _as_raw_ip(frames: list[Frame]) -> list[Frame]:
    """Untagged Ethernet/IPv4 frames without their Ethernet header; the rest unchanged."""
    return [
        (ts, RAW_IP, data[14:])
        if linktype == LINKTYPE_ETHERNET and data[12:14] == b"\x08\x00" and len(data) > 14
        else (ts, linktype, data)
        for ts, linktype, data in frames
    ]


def _run(frames: list[Frame], batch: int = 4096) -> tuple[object, ...]:
    sensor = Sensor(CONFIG)
    events: list[str] = []
    source = iter(frames)
    while sensor.process_many(source, batch) == batch:
        events += [e.model_dump_json() for e in sensor.drain()]
    events += [e.model_dump_json() for e in sensor.drain()]
    flows = sorted((f.keys[0], f.packets, f.bytes, f.packets0, f.bytes0, f.state.value,
                    f.last_seen)
                   for f in sensor.flows)
    stats = sensor.stats
    final = [e.model_dump_json() for e in sensor.finish()]
    # Frame bytes differ by the stripped headers; everything else must not.
    return (events, final, flows, stats.packets, stats.not_tcp, stats.tls_flows,
            stats.not_tls_flows, dict(stats.handshakes), stats.established,
            stats.certificates, dict(sensor.anomalies.totals), sensor.flows.created)


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_path_gives_what_decoding_every_frame_gives(capture: Path) -> None:
    frames = read_frames(capture)
    assert _run(frames) == _run(_as_raw_ip(frames))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """80 connections, 30 open at once, 6 data segments each after the handshake."""
    capture = tmp_path_factory.mktemp("fast") / "fast.pcap"
    subprocess.run([sys.executable, "-m", "tools.tlsgen", "benchmark", str(capture),
                    "--connections", "80", "--concurrency", "30", "--app-segments", "6"],
                   check=True, capture_output=True, timeout=120)
    return read_frames(capture)


def test_generated_capture_fast_and_general_paths_agree(generated: list[Frame]) -> None:
    fast = _run(generated)
    events = fast[0]
    assert isinstance(events, list) and len(events) >= 80
    counts = fast[7]
    assert isinstance(counts, dict) and sum(counts.values()) == 80
    for batch in (1, 7):
        assert _run(generated, batch) == fast
    assert _run(_as_raw_ip(generated)) == fast


def test_untagged_ipv4_tcp_frames_are_never_decoded_twice(
    generated: list[Frame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame of the generated capture is untagged Ethernet/IPv4/TCP: the fast path
    takes all of them, SYNs, hellos and FINs included, so the handshakes are all there
    with the full decoder out of reach."""
    def no_decoding(linktype: int, data: bytes) -> None:
        raise AssertionError("decode_frame called for an untagged IPv4/TCP frame")

    monkeypatch.setattr(sensor_module, "decode_frame", no_decoding)
    batched = Sensor(CONFIG)
    assert batched.process_many(iter(generated), len(generated) + 1) == len(generated)
    assert len(handshakes(batched.finish())) == 80
    one_by_one = Sensor(CONFIG)
    for frame in generated:
        one_by_one.process(*frame)
    assert len(handshakes(one_by_one.finish())) == 80


def _share(frames: list[Frame], workers: int, index: int, batch: int) -> tuple[object, ...]:
    """A worker's view: process_share_many as a worker calls it (batch at most)."""
    sensor = Sensor(CONFIG)
    events: list[str] = []
    source = iter(frames)
    while sensor.process_share_many(source, batch, workers, index):
        events += [e.model_dump_json() for e in sensor.drain()]
    return _outcome(sensor, events)


def _share_per_frame(frames: list[Frame], workers: int, index: int) -> tuple[object, ...]:
    sensor = Sensor(CONFIG)
    events: list[str] = []
    for frame in frames:
        sensor.process_share(*frame, workers, index)
        events += [e.model_dump_json() for e in sensor.drain()]
    return _outcome(sensor, events)


def _outcome(sensor: Sensor, events: list[str]) -> tuple[object, ...]:
    """What a worker's sensor ends with: its events, its flows and counters."""
    stats = sensor.stats
    flows = sorted((f.keys[0], f.packets, f.bytes, f.packets0, f.bytes0, f.state.value,
                    f.last_seen)
                   for f in sensor.flows)
    return (events, [e.model_dump_json() for e in sensor.finish()], flows, stats.packets,
            stats.bytes, dict(stats.handshakes), dict(sensor.anomalies.totals))


def test_a_worker_never_decodes_an_untagged_ipv4_tcp_frame(
    generated: list[Frame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """process_share_many decides the owner of such frames inline, its own and the other
    workers': neither the sensor's decoder nor flow_owner's is reached."""
    def no_decoding(linktype: int, data: bytes) -> None:
        raise AssertionError("decode_frame called for an untagged IPv4/TCP frame")

    monkeypatch.setattr(sensor_module, "decode_frame", no_decoding)
    monkeypatch.setattr(flowhash, "decode_frame", no_decoding)
    found = 0
    for index in range(2):
        outcome = _share(generated, 2, index, len(generated))
        counts = outcome[5]
        assert isinstance(counts, dict)
        found += sum(counts.values())
    assert found == 80


def test_a_flow_seen_both_ways_decoded_and_fast_stays_with_one_worker(
        generated: list[Frame]) -> None:
    """Every other frame stripped of its Ethernet header (decoded in full, so its flow is
    opened by the general path) and the rest untagged Ethernet (the inline test, which
    takes a flow in the worker's table as its own without hashing): each worker still
    takes exactly flow_owner's frames, with the events of the per-frame method."""
    mixed = [frame if number % 2 else _as_raw_ip([frame])[0]
             for number, frame in enumerate(generated)]
    packets = 0
    for index in range(2):
        expected = _share_per_frame(mixed, 2, index)
        assert _share(mixed, 2, index, 64) == expected
        owners = [flow_owner(linktype, data, 2) for _, linktype, data in mixed]
        taken = expected[3]
        assert isinstance(taken, int)
        assert taken == sum(owner == index or (owner == NOT_A_FLOW and index == 0)
                            for owner in owners)
        packets += taken
    assert packets == len(mixed)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="CPython 3.11's specialization of a compare fused with its jump")
@pytest.mark.parametrize("name", ["process", "process_many", "process_share_many",
                                  "process_pcap_records"])
def test_no_per_packet_compare_is_kept_generic_by_a_long_jump(name: str) -> None:
    """sensor.sensor._SHORT_JUMPS: CPython 3.11 turns a compare into a fast int compare
    fused with its jump only when the jump follows it directly; a jump past 255 code units
    needs an EXTENDED_ARG between them and the compare stays a generic rich compare on
    every packet (what the traffic split cost, more than its own counting). The inlined
    fast paths are longer than that, so their tests must jump short."""
    code = getattr(getattr(Sensor, name), "__code__", None)
    if code is None:
        pytest.skip("a compiled build: no bytecode")
    ops = [ins for ins in dis.get_instructions(code) if ins.opname != "CACHE"]
    long_jumps = [f"{op.offset}: {op.argrepr}" for op, after in pairwise(ops)
                  if op.opname == "COMPARE_OP" and after.opname == "EXTENDED_ARG"]
    assert ops and not long_jumps
