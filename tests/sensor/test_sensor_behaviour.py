"""How the sensor behaves at its edges: bounds, timeouts, garbage, TLS 1.3, licences."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.config import SensorConfig
from sensor.decode import TcpSegment
from tests.support import (
    DATA,
    RAW_IP,
    anomalies,
    certificates,
    handshakes,
    raw_frame,
    read_frames,
    run_sensor,
)


def segment(src_port: int, flags: int = 0x18, seq: int = 1000) -> TcpSegment:
    return TcpSegment(bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2]), src_port, 443, seq, 0,
                      flags, b"", ())


def test_tls13_handshakes_say_the_certificate_is_encrypted() -> None:
    events = handshakes(run_sensor(read_frames(DATA / "ja4" / "latest.pcapng")))
    tls13 = [e for e in events if e.tls.version == "1.3"]
    assert tls13, "latest.pcapng holds TLS 1.3 connections"
    for event in tls13:
        assert event.certwatch.tls.certificate_encrypted
        assert event.tls.server.hash is None and event.certwatch.tls.server_chain == []
        assert event.tls.established and event.certwatch.tls.ended_by == "established"
        assert event.tls.curve is not None  # from the key_share the server chose
    tls12 = [e for e in events if e.tls.version == "1.2"]
    assert tls12 and all(not e.certwatch.tls.certificate_encrypted for e in tls12)


def test_a_full_flow_table_evicts_the_oldest_and_says_so() -> None:
    frames = read_frames(DATA / "ja4" / "latest.pcapng")
    events = run_sensor(frames, SensorConfig(name="t", max_flows=2))
    reported = anomalies(events)
    assert any(a.certwatch.anomaly.kind == "flow_table_full" for a in reported)
    total = sum(a.certwatch.anomaly.count for a in reported
                if a.certwatch.anomaly.kind == "flow_table_full")
    assert total >= 1
    assert handshakes(events), "handshakes still come out while the table is full"


def test_an_unfinished_handshake_is_reported_when_its_flow_goes_idle() -> None:
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")[:5]  # up to the ServerHello
    last = frames[-1][0]
    # A packet of another flow an hour later moves capture time past the handshake timeout.
    later = (last + 3600.0, RAW_IP, raw_frame(segment(40000, flags=0x02), 1, b""))
    sensor_events = run_sensor([*frames, later])
    (event,) = handshakes(sensor_events)
    assert not event.tls.established and event.event.outcome == "failure"
    assert event.certwatch.tls.ended_by == "idle_timeout"
    assert event.tls.version == "1.2" and event.tls.cipher == "TLS_RSA_WITH_RC4_128_MD5"


def test_garbage_after_a_hello_header_fails_the_flow_and_is_counted() -> None:
    hello_header = bytes([0x16, 3, 1]) + struct.pack("!H", 60) + bytes([1]) + b"\xff" * 59
    frames = [
        (1.0, RAW_IP, raw_frame(segment(50000, flags=0x02, seq=999), 999, b"")),
        (1.1, RAW_IP, raw_frame(segment(50000), 1000, hello_header)),
    ]
    events = run_sensor(frames)
    kinds = {a.certwatch.anomaly.kind for a in anomalies(events)}
    assert kinds & {"tls_handshake_error", "tls_record_error"}
    assert handshakes(events) == []  # no hello could be read, so no handshake to report


def test_certificates_are_announced_once_per_ttl() -> None:
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")
    shifted = [(ts + 10.0, lt, data) for ts, lt, data in frames]
    # The same connection again, 10 s later: a new handshake, no new certificate events.
    events = run_sensor([*frames, *shifted])
    assert len(handshakes(events)) == 2
    assert len(certificates(events)) == 3


def test_foxio_fingerprints_only_when_asked() -> None:
    frames = read_frames(DATA / "ja4" / "tls-alpn-h2.pcap")
    plain = handshakes(run_sensor(frames))[0]
    assert plain.certwatch.tls.server_hello is not None
    assert plain.certwatch.tls.server_hello.ja4s is None
    assert all(c.certwatch.ja4x is None for c in plain.certwatch.tls.server_chain)
    foxio = handshakes(run_sensor(frames, SensorConfig(name="t", foxio_fingerprints=True)))[0]
    assert foxio.certwatch.tls.server_hello is not None
    assert foxio.certwatch.tls.server_hello.ja4s == "t1204h2_cca9_1428ce7b4018"
    assert [c.certwatch.ja4x for c in foxio.certwatch.tls.server_chain] == [
        "7d5dbb3783b4_ba7ce0880c07_7bf9a7bf7029",
        "7d5dbb3783b4_7d5dbb3783b4_41a019652939",
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20), st.sampled_from([1, 101, 113, 0]))
def test_random_frames_never_break_the_sensor(frames: list[bytes], linktype: int) -> None:
    run_sensor([(float(i), linktype, data) for i, data in enumerate(frames)])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_traffic_never_breaks_the_sensor(data: st.DataObject) -> None:
    frames = read_frames(DATA / "zeek" / "client-certificate.pcap")
    index = data.draw(st.integers(0, len(frames) - 1))
    ts, linktype, raw = frames[index]
    position = data.draw(st.integers(0, len(raw) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = raw[:position] + bytes([byte]) + raw[position + 1:]
    run_sensor([*frames[:index], (ts, linktype, mutated), *frames[index + 1:]])
