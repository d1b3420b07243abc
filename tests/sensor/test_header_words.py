"""The four-word header test of ``Sensor.process`` / ``process_many`` takes only the frames
``decode_frame`` would decode to the same segment.

Untagged Ethernet/IPv4/TCP frames without IP options are tested in four words
(``sensor.decode.ETH_IPV4_TCP_WORDS``); frames with IP options go through ``Sensor._frame``
(the same checks field by field), everything else through ``decode_frame``. Whatever the
header bytes say, the sensor must end in the state it reaches when every frame is decoded
by ``decode_frame`` (the reference below): the same events, flows and anomaly counts.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.config import SensorConfig
from sensor.sensor import Sensor
from tests.support import DATA, Frame, handshakes, read_frames

CONFIG = SensorConfig(name="test-sensor")
# An untagged Ethernet/IPv4 TLS 1.2 handshake (28 frames), and a STARTTLS one (37 frames):
# TLS found after plain text, mid-stream.
ECDHE = DATA / "zeek" / "ecdhe.pcap"
STARTTLS = DATA / "zeek" / "smtp-starttls.pcap"

State = tuple[object, ...]


def _state(sensor: Sensor, events: list[str]) -> State:
    flows = sorted((f.keys[0], f.packets, f.bytes, f.state.value, f.last_seen, f.fins)
                   for f in sensor.flows)
    stats = sensor.stats
    final = [e.model_dump_json() for e in sensor.finish()]
    return (events, final, flows, stats.packets, stats.bytes, stats.not_tcp, stats.tls_flows,
            stats.not_tls_flows, dict(stats.handshakes), stats.established,
            dict(sensor.anomalies.totals), sensor.flows.created)


def _batched(frames: list[Frame]) -> State:
    sensor = Sensor(CONFIG)
    sensor.process_many(iter(frames), len(frames))
    return _state(sensor, [e.model_dump_json() for e in sensor.drain()])


def _one_by_one(frames: list[Frame]) -> State:
    sensor = Sensor(CONFIG)
    for frame in frames:
        sensor.process(*frame)
    return _state(sensor, [e.model_dump_json() for e in sensor.drain()])


def _decoded(frames: list[Frame]) -> State:
    """The reference: every frame decoded by decode_frame (``Sensor._general``), with the
    packet counters and clock kept as ``process`` keeps them."""
    sensor = Sensor(CONFIG)
    for timestamp, linktype, data in frames:
        sensor.stats.packets += 1
        sensor.stats.bytes += len(data)
        sensor.advance(timestamp)
        sensor._general(timestamp, linktype, data)
    return _state(sensor, [e.model_dump_json() for e in sensor.drain()])


def _with_options(frames: list[Frame], size: int) -> list[Frame]:
    """Every IPv4 frame with ``size`` bytes of IP options (NOPs, RFC 791 3.1) added."""
    out: list[Frame] = []
    for timestamp, linktype, data in frames:
        vihl, total = data[14], int.from_bytes(data[16:18], "big")
        if data[12:14] == b"\x08\x00" and vihl == 0x45:
            data = (data[:14] + bytes((vihl + size // 4,)) + data[15:16]
                    + (total + size).to_bytes(2, "big") + data[18:34] + b"\x01" * size
                    + data[34:])
        out.append((timestamp, linktype, data))
    return out


def _payload_view(state: State) -> State:
    """What IP options must not change: all but the frame byte total."""
    return state[:4] + state[5:]


def test_frames_without_options_take_the_word_test_and_agree_with_decoding() -> None:
    frames = read_frames(ECDHE)
    sensor = Sensor(CONFIG)
    sensor.process_many(iter(frames), len(frames))
    assert len(handshakes(sensor.drain() + sensor.finish())) == 1
    assert _batched(frames) == _decoded(frames) == _one_by_one(frames)


def test_ip_options_give_the_same_handshake_as_without() -> None:
    """IHL 6..15: the word test declines, ``_frame`` takes the frame on its own checks."""
    for capture in (ECDHE, STARTTLS):
        frames = read_frames(capture)
        plain = _batched(frames)
        for size in (4, 12, 40):
            optioned = _with_options(frames, size)
            state = _batched(optioned)
            assert state == _decoded(optioned) == _one_by_one(optioned)
            assert _payload_view(state) == _payload_view(plain)
            frame_bytes = plain[4]
            assert isinstance(frame_bytes, int)
            assert state[4] == frame_bytes + size * len(frames)


_FRAMES = {path: read_frames(path) for path in (ECDHE, STARTTLS)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capture=st.sampled_from([ECDHE, STARTTLS]),
    index=st.integers(min_value=0, max_value=27),
    # the Ethernet type, the IPv4 header and the TCP header up to the flags (offsets 12..47)
    edits=st.lists(st.tuples(st.integers(min_value=12, max_value=47),
                             st.integers(min_value=0, max_value=255)), max_size=3),
    cut=st.none() | st.integers(min_value=0, max_value=80),
)
def test_any_header_bytes_give_what_decoding_gives(
    capture: Path, index: int, edits: list[tuple[int, int]], cut: int | None
) -> None:
    """One frame of a real handshake with header bytes changed (Ethernet type, version
    and IHL, lengths, fragment field, protocol, data offset, flags) and maybe cut short:
    batched, one by one and fully decoded, the sensor ends in the same state."""
    frames = list(_FRAMES[capture])
    timestamp, linktype, data = frames[index]
    changed = bytearray(data)
    for offset, value in edits:
        if offset < len(changed):
            changed[offset] = value
    if cut is not None:
        del changed[cut:]
    frames[index] = (timestamp, linktype, bytes(changed))
    reference = _decoded(frames)
    assert _batched(frames) == reference
    assert _one_by_one(frames) == reference


def test_the_reference_finds_the_handshakes() -> None:
    """The reference runner is not vacuous: it finds the handshake of each capture."""
    for capture in (ECDHE, STARTTLS):
        sensor = Sensor(CONFIG)
        for timestamp, linktype, data in read_frames(capture):
            sensor.advance(timestamp)
            sensor._general(timestamp, linktype, data)
        assert len(handshakes(sensor.finish())) == 1


# Each header field the word test reads, set to a value that must send the frame elsewhere
# (or, for the lengths, change what is payload): (offset, bytes written there).
FIELD_EDITS = {
    "ethertype_ipv6": (12, b"\x86\xdd"),
    "ethertype_vlan": (12, b"\x81\x00"),
    "ip_version_6": (14, b"\x65"),
    "ihl_4": (14, b"\x44"),
    "ihl_6_without_options": (14, b"\x46"),
    "total_length_short": (16, b"\x00\x28"),
    "total_length_19": (16, b"\x00\x13"),
    "total_length_long": (16, b"\xff\xff"),
    "more_fragments": (20, b"\x20\x00"),
    "fragment_offset": (20, b"\x00\x01"),
    "dont_fragment": (20, b"\x40\x00"),
    "protocol_udp": (23, b"\x11"),
    "data_offset_4": (46, b"\x40"),
    "data_offset_15": (46, b"\xf0"),
    "flags_syn_fin": (47, b"\x03"),
    "flags_rst": (47, b"\x14"),
}


def test_every_field_the_word_test_reads_is_checked() -> None:
    """Each field edit above, in turn on every frame of a handshake: batched, one by one
    and fully decoded agree (a field the fast path failed to check would count or parse
    a frame that decode_frame rejects or reads otherwise)."""
    frames = _FRAMES[ECDHE]
    for name, (offset, value) in FIELD_EDITS.items():
        for index, (timestamp, linktype, data) in enumerate(frames):
            edited = list(frames)
            edited[index] = (timestamp, linktype,
                             data[:offset] + value + data[offset + len(value):])
            reference = _decoded(edited)
            assert _batched(edited) == reference, (name, index)
            assert _one_by_one(edited) == reference, (name, index)


def test_frames_cut_around_the_headers_agree() -> None:
    frames = _FRAMES[ECDHE]
    for cut in (14, 33, 34, 47, 48, 53, 54, 60):
        for index, (timestamp, linktype, data) in enumerate(frames):
            edited = list(frames)
            edited[index] = (timestamp, linktype, data[:cut])
            reference = _decoded(edited)
            assert _batched(edited) == reference, (cut, index)
            assert _one_by_one(edited) == reference, (cut, index)
