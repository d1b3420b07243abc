"""Payload bytes never leave the sensor, except the certificates it reports.

Application data, plaintext protocols and the bytes of broken handshakes carry a marker here;
no event (handshake, certificate or anomaly) may contain it in any encoding a consumer could
decode: raw text, hex, base64.
"""

from __future__ import annotations

import base64
import struct

from schemas.events import SensorEvent
from sensor.decode import TcpSegment
from tests.support import (
    DATA,
    RAW_IP,
    Frame,
    certificates,
    raw_frame,
    read_frames,
    run_sensor,
    tcp_segments,
)

MARKER = b"CW-SECRET-7f3a9c-customer-card-4111111111111111"


def encodings(secret: bytes) -> list[str]:
    half = secret[: len(secret) // 2]  # a fragment of it is a leak too
    forms = []
    for piece in (secret, half):
        forms += [piece.decode(), piece.hex(), piece.hex().upper(),
                  base64.b64encode(piece).decode()[:-4]]
    return forms


def seg(src: int, dst: int, sport: int, dport: int, flags: int = 0x18) -> TcpSegment:
    return TcpSegment(bytes([127, 0, 0, src]), bytes([127, 0, 0, dst]), sport, dport, 0, 0,
                      flags, b"", ())


def application_data_after(frames: list[Frame]) -> list[Frame]:
    """Records of application data carrying the marker, in both directions, after the last
    byte each side of the capture's connection sent."""
    next_seq: dict[tuple[bytes, int], tuple[TcpSegment, int]] = {}
    last = 0.0
    for ts, segment in tcp_segments(frames):
        last = ts
        end = segment.seq + len(segment.payload)
        key = (segment.src_addr, segment.src_port)
        if key not in next_seq or end > next_seq[key][1]:
            next_seq[key] = (segment, end)
    record = b"\x17\x03\x03" + struct.pack("!H", len(MARKER) * 4) + MARKER * 4
    return [(last + 0.01 * i, RAW_IP, raw_frame(segment, end, record))
            for i, (segment, end) in enumerate(next_seq.values(), 1)]


def plaintext_flow(start: float) -> list[Frame]:
    client, server = seg(1, 2, 50000, 80), seg(2, 1, 80, 50000)
    return [
        (start, RAW_IP, raw_frame(seg(1, 2, 50000, 80, 0x02), 100, b"")),
        (start + 0.001, RAW_IP, raw_frame(seg(2, 1, 80, 50000, 0x12), 500, b"")),
        (start + 0.002, RAW_IP, raw_frame(client, 101, b"GET /" + MARKER + b" HTTP/1.1\r\n\r\n")),
        (start + 0.003, RAW_IP, raw_frame(server, 501, b"HTTP/1.1 200 OK\r\n\r\n" + MARKER)),
    ]


def broken_hello_flow(start: float, port: int, body: bytes) -> list[Frame]:
    record = b"\x16\x03\x01" + struct.pack("!H", len(body)) + body
    return [
        (start, RAW_IP, raw_frame(seg(3, 4, port, 443, 0x02), 1000, b"")),
        (start + 0.001, RAW_IP, raw_frame(seg(4, 3, 443, port, 0x12), 9000, b"")),
        (start + 0.002, RAW_IP, raw_frame(seg(3, 4, port, 443), 1001, record)),
        (start + 0.003, RAW_IP, raw_frame(seg(3, 4, port, 443, 0x11), 1001 + len(record), b"")),
    ]


def leaked(events: list[SensorEvent]) -> list[str]:
    documents = [event.model_dump_json() for event in events]
    return [form for form in encodings(MARKER) for doc in documents if form in doc]


def test_no_event_carries_application_data_plaintext_or_broken_handshake_bytes() -> None:
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")
    frames += application_data_after(frames)
    start = frames[-1][0] + 1
    frames += plaintext_flow(start)
    # Complete handshake messages that do not parse: a ClientHello whose session id and
    # lists are the marker, one cut inside its cipher list, and a message of unknown type.
    def message(kind: int, body: bytes) -> bytes:
        return bytes([kind]) + len(body).to_bytes(3, "big") + body
    frames += broken_hello_flow(start + 1, 51000, message(1, b"\x03\x03" + MARKER))
    frames += broken_hello_flow(start + 2, 51001, message(
        1, b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", 200) + MARKER))
    frames += broken_hello_flow(start + 3, 51002, message(0xFE, MARKER))
    events = run_sensor(frames)
    assert certificates(events), "the real handshake's certificates are reported"
    # The broken messages went through the parsers and were reported as errors.
    errors = [e for e in events if e.event.dataset == "certwatch.sensor.anomaly"
              and e.certwatch.anomaly.kind.startswith("tls_")]  # type: ignore[union-attr]
    assert errors, [e.model_dump_json() for e in events]
    assert leaked(events) == []


def test_certificates_do_leave_whole() -> None:
    """The one exception, checked so the test above cannot pass by reporting nothing."""
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")
    events = run_sensor(frames)
    (first, *_) = certificates(events)
    der = base64.b64decode(first.certwatch.der_base64)
    assert der[:1] == b"\x30" and len(der) > 300  # a DER SEQUENCE: the certificate itself
    documents = "".join(event.model_dump_json() for event in events)
    assert first.certwatch.der_base64 in documents
