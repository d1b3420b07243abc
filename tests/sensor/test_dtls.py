"""DTLS handshakes (sensor.dtls, sensor.udp_sessions): real captures against tshark and
Zeek, fragment reassembly in any order, the cookie exchange, bounds and robustness."""

from __future__ import annotations

import contextlib
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import HandshakeEvent
from sensor.config import SensorConfig
from sensor.dtls import (
    DTLS13,
    DtlsError,
    DtlsFragment,
    DtlsLimitError,
    DtlsSession,
    MessageAssembler,
    parse_fragments,
    parse_hello_verify_request,
    parse_records,
    tls_client_hello_body,
)
from sensor.errors import ParseError
from sensor.fingerprints import ja3
from sensor.sensor import Sensor
from sensor.tls.handshake import parse_client_hello
from sensor.udp import decode_udp
from tests.support import DATA, anomalies, certificates, handshakes, read_frames

RAW_IP = 101
DTLS12 = DATA / "dtls" / "dtls1_2.pcap.gz"
WEBRTC = DATA / "dtls" / "webrtc-stun.pcap.gz"
COOKIE = DATA / "dtls" / "dtls_session_id_and_coockie_both.pcap.gz"


def tshark(path: Path) -> list[dict[str, Any]]:
    view = json.loads(path.with_name(path.name + ".tshark.json").read_text())
    messages: list[dict[str, Any]] = view["handshake_messages"]
    return messages


def first(messages: list[dict[str, Any]], msg: str, **match: Any) -> dict[str, Any]:
    return next(m for m in messages if m["msg"] == msg
                and all(m.get(k) == v for k, v in match.items()))


def zeek_log(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    row = next(line for line in lines if not line.startswith("#")).split("\t")
    return dict(zip(fields, row, strict=True))


def run(path: Path) -> tuple[Sensor, list[Any]]:
    sensor = Sensor(SensorConfig(name="test-sensor"))
    events: list[Any] = []
    for ts, linktype, data in read_frames(path):
        sensor.process(ts, linktype, data)
        events += sensor.drain()
    return sensor, events + sensor.finish()


def datagrams(path: Path) -> list[tuple[float, bool, bytes]]:
    out: list[tuple[float, bool, bytes]] = []
    client: tuple[bytes, int] | None = None
    for ts, linktype, data in read_frames(path):
        datagram = decode_udp(linktype, data)
        if datagram is None:
            continue
        client = client or (datagram.src_addr, datagram.src_port)
        out.append((ts, (datagram.src_addr, datagram.src_port) == client, datagram.payload))
    return out


def record(content_type: int, payload: bytes, *, epoch: int = 0, seq: int = 0,
           version: int = 0xFEFD) -> bytes:
    """A DTLSPlaintext record (RFC 6347 4.1)."""
    return (struct.pack("!BHH", content_type, version, epoch) + seq.to_bytes(6, "big")
            + len(payload).to_bytes(2, "big") + payload)


def fragment(msg_type: int, body: bytes, message_seq: int, offset: int, length: int) -> bytes:
    """One handshake fragment (RFC 6347 4.2.2) of ``body``."""
    return (bytes([msg_type]) + len(body).to_bytes(3, "big") + message_seq.to_bytes(2, "big")
            + offset.to_bytes(3, "big") + length.to_bytes(3, "big")
            + body[offset : offset + length])


def udp_frame(payload: bytes, *, from_client: bool = True) -> bytes:
    a, b = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1])
    src, dst = (a, b) if from_client else (b, a)
    ports = (40000, 4433) if from_client else (4433, 40000)
    udp = struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst) + udp


def cookie_client_hello() -> bytes:
    """The first ClientHello body of the nDPI cookie capture, as sent (DTLS layout)."""
    _, _, payload = datagrams(COOKIE)[0]
    (rec,) = parse_records(payload)
    (frag,) = parse_fragments(rec.fragment)
    assert frag.msg_type == 1 and frag.offset == 0 and len(frag.data) == frag.length
    return frag.data


def only_handshake(events: list[Any]) -> HandshakeEvent:
    (event,) = handshakes(events)
    return event


# -- real captures ---------------------------------------------------------------------------


def test_dtls12_with_cookie_and_fragmented_certificate_matches_tshark_and_zeek() -> None:
    sensor, events = run(DTLS12)
    event = only_handshake(events)
    messages = tshark(DTLS12)
    zeek = zeek_log(DTLS12.with_name(DTLS12.name + ".ssl.log"))
    x509 = zeek_log(DTLS12.with_name(DTLS12.name + ".x509.log"))
    assert event.network.transport == "udp"
    assert (event.tls.version_protocol, event.tls.version) == ("dtls", "1.2")  # DTLSv12
    assert zeek["version"] == "DTLSv12" and event.tls.cipher == zeek["cipher"]
    server_hello = event.certwatch.tls.server_hello
    assert server_hello is not None
    assert f"0x{server_hello.cipher_suite_code}" == first(messages, "ServerHello")["cipher_suite"]
    hellos = [m["ja3"] for m in messages if m["msg"] == "ClientHello" and m.get("ja3")]
    assert event.tls.client.ja3 == hellos[0]
    assert event.tls.server.ja3s == first(messages, "ServerHello")["ja3s"]
    assert event.tls.established and zeek["established"] == "T"
    # The certificate came in five fragments (tshark: frames 6-10); reassembled it is the
    # one tshark and Zeek fingerprint.
    chain = first(messages, "Certificate", n_certs=1)["chain"]
    assert event.tls.server.hash is not None
    assert event.tls.server.hash.sha256 == chain[0]["sha256"] == x509["fingerprint"]
    (cert,) = certificates(events)
    assert cert.x509 is not None and cert.x509.serial_number is not None
    assert cert.x509.serial_number.upper() == x509["certificate.serial"]
    assert cert.certwatch.seen.server_port == 4400
    # RFC 6347 4.2.1: the server asked for a cookie first (tshark: ClientHello twice).
    assert sensor.udp.stats.cookie_exchanges == 1
    summary = event.certwatch.tls.client_hello
    assert summary is not None and summary.ja4 is not None and summary.ja4.startswith("dd2i")


def test_webrtc_dtls_between_stun_packets_with_a_client_certificate() -> None:
    sensor, events = run(WEBRTC)
    event = only_handshake(events)
    messages = tshark(WEBRTC)
    assert (event.tls.version_protocol, event.tls.version) == ("dtls", "1.0")
    sh = event.certwatch.tls.server_hello
    assert sh is not None and f"0x{sh.cipher_suite_code}" == first(messages, "ServerHello")[
        "cipher_suite"]
    assert event.tls.client.ja3 == first(messages, "ClientHello")["ja3"]
    server_chain = first(messages, "Certificate", from_client=False)["chain"]
    client_chain = first(messages, "Certificate", from_client=True)["chain"]
    assert event.tls.server.hash is not None and event.tls.client.hash is not None
    assert event.tls.server.hash.sha256 == server_chain[0]["sha256"]
    assert event.tls.client.hash.sha256 == client_chain[0]["sha256"]
    roles = sorted(c.certwatch.seen.role for c in certificates(events))
    assert roles == ["client", "server"]
    # STUN (first byte 0-3, RFC 7983) shares the 5-tuple: not DTLS, not an anomaly.
    assert not anomalies(events) and sensor.udp.stats.dtls_flows == 1


def test_cookie_exchange_capture_matches_tshark() -> None:
    sensor, events = run(COOKIE)
    event = only_handshake(events)
    messages = tshark(COOKIE)
    assert event.tls.client.ja3 == first(messages, "ClientHello")["ja3"]
    sh = event.certwatch.tls.server_hello
    assert sh is not None and f"0x{sh.cipher_suite_code}" == first(messages, "ServerHello")[
        "cipher_suite"]
    assert sensor.udp.stats.cookie_exchanges == 1


# -- fragments, cookies, records -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 120), min_size=1, max_size=10), st.randoms(use_true_random=False))
def test_any_fragmentation_order_and_repetition_gives_the_same_client_hello(
    sizes: list[int], rnd: random.Random
) -> None:
    body = cookie_client_hello()
    pieces, pos = [], 0
    for size in sizes:
        if pos >= len(body):
            break
        pieces.append((pos, min(size, len(body) - pos)))
        pos += size
    if pos < len(body):
        pieces.append((pos, len(body) - pos))
    pieces += rnd.sample(pieces, min(3, len(pieces)))  # retransmissions
    rnd.shuffle(pieces)
    session = DtlsSession()
    for seq, (offset, length) in enumerate(pieces):
        session.feed(True, record(22, fragment(1, body, 0, offset, length), seq=seq), 0.0)
    hello = session.session.record.client_hello
    assert hello == parse_client_hello(tls_client_hello_body(body))
    assert ja3(hello) == first(tshark(COOKIE), "ClientHello")["ja3"]


def test_cookie_is_removed_from_the_client_hello() -> None:
    body = cookie_client_hello()
    at = 35 + body[34]
    with_cookie = body[:at] + b"\x04abcd" + body[at + 1 :]
    assert tls_client_hello_body(with_cookie) == tls_client_hello_body(body)
    with pytest.raises(DtlsError):
        tls_client_hello_body(with_cookie[: at + 3])


def test_hello_verify_request() -> None:
    hvr = parse_hello_verify_request(b"\xfe\xff\x03xyz")
    assert (hvr.server_version, hvr.cookie) == (0xFEFF, b"xyz")
    with pytest.raises(DtlsError):
        parse_hello_verify_request(b"\xfe\xff\x05xyz")


def test_dtls13_unified_header_records() -> None:
    # RFC 9147 4: 001CSLEE; here S (16-bit sequence), L (length) and epoch bits 3.
    datagram = bytes([0x2F]) + b"\x01\x02" + b"\x00\x03" + b"abc" + bytes([0x20]) + b"\x07zz"
    first_record, second = parse_records(datagram)
    assert first_record.unified and (first_record.epoch, first_record.sequence) == (3, 0x0102)
    assert first_record.fragment == b"abc" and first_record.version == DTLS13
    # No L bit: the record runs to the end of the datagram.
    assert (second.sequence, second.fragment) == (7, b"zz")


def test_assembler_bounds() -> None:
    assembler = MessageAssembler(max_message=100, max_pending=4)
    assert assembler.add(DtlsFragment(1, 10, 0, 0, b"x" * 10))  # delivered, next is 1
    with pytest.raises(DtlsLimitError):
        assembler.add(DtlsFragment(2, 10, 5, 0, b"x" * 10))
    with pytest.raises(DtlsLimitError):
        assembler.add(DtlsFragment(2, 101, 1, 0, b"x"))
    with pytest.raises(DtlsError, match="disagree"):
        assembler.add(DtlsFragment(2, 20, 2, 0, b"x"))
        assembler.add(DtlsFragment(2, 30, 2, 1, b"x"))


def test_a_bound_reached_on_the_wire_is_counted() -> None:
    body = cookie_client_hello()
    hello = record(22, fragment(1, body, 0, 0, len(body)))
    far = record(22, fragment(16, body, 40, 0, 10), seq=1)  # message_seq 40 after 0
    sensor = Sensor(SensorConfig(name="test-sensor"))
    sensor.process(1.0, RAW_IP, udp_frame(hello))
    sensor.process(1.1, RAW_IP, udp_frame(far))
    events = sensor.finish()
    (limit,) = [a for a in anomalies(events) if a.certwatch.anomaly.kind == "dtls_limit"]
    assert "ahead" in limit.certwatch.anomaly.detail
    event = only_handshake(events)  # the ClientHello is still reported, marked failed
    assert event.certwatch.tls.ended_by == "parse_error" and event.tls.client.ja3


DTLS12_DATAGRAMS = datagrams(DTLS12)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(DTLS12_DATAGRAMS) - 1), st.integers(0, 1500), st.integers(-1, 1500),
       st.integers(1, 255))
def test_cut_or_damaged_datagrams_only_raise_parse_errors(
    index: int, cut: int, flip: int, xor: int
) -> None:
    session = DtlsSession()
    for number, (ts, from_client, payload) in enumerate(DTLS12_DATAGRAMS):
        if number == index:
            damaged = bytearray(payload[:cut])
            if 0 <= flip < len(damaged):
                damaged[flip] ^= xor
            payload = bytes(damaged)
        # A ParseError is counted by the sensor; any other exception fails the test.
        with contextlib.suppress(ParseError):
            session.feed(from_client, payload, ts)
