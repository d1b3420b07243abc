"""Cases found by running the sensor over the shared corpus against tshark, nDPI, Zeek and
Suricata (``make corpus-check``), each on the real capture copied into tests/data.

Where tshark reads the bytes wrong (draft-14 ServerHello, a malformed ClientHello's JA3),
the expected values here are what the bytes mean by the RFCs and the drafts, worked out by
hand in the comments, and what Suricata's or nDPI's own expected output says.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from schemas.events import HandshakeEvent
from sensor.decode import TcpSegment
from tests.support import (
    DATA,
    RAW_IP,
    Frame,
    anomalies,
    handshakes,
    raw_frame,
    read_frames,
    run_sensor,
    tcp_segments,
    tshark_view,
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # JA3 is defined as MD5


def by_client_port(capture: Path) -> dict[int, HandshakeEvent]:
    return {e.source.port: e for e in handshakes(run_sensor(read_frames(capture)))}


def anomaly_kinds(capture: Path) -> set[str]:
    return {a.certwatch.anomaly.kind for a in anomalies(run_sensor(read_frames(capture)))}


# ---- TLS 1.3 drafts before 22: ServerHello without session id and compression -------------


def test_draft16_server_hellos_are_read_like_tshark_reads_them() -> None:
    for name, cipher in (("tls13draft16-ff52.a01.pcap", "1303"),
                         ("tls13draft16-chrome55.0.2879.0-canary.pcap", "cca9")):
        capture = DATA / "zeek" / name
        view = tshark_view(capture)["handshake_messages"]
        assert isinstance(view, list)
        expected = {m["ja3s"] for m in view if m["msg"] == "ServerHello"}
        events = handshakes(run_sensor(read_frames(capture)))
        assert len(events) == 2
        for event in events:
            assert event.tls.version == "1.3"
            detail = event.certwatch.tls.server_hello
            assert detail is not None and detail.cipher_suite_code == cipher
            assert detail.selected_version.startswith("TLSv1.3-draft")
            assert event.tls.server.ja3s in expected
        assert "tls_handshake_error" not in anomaly_kinds(capture)


def test_draft14_server_hello_with_version_0x0304_in_the_version_field() -> None:
    # Body: 0304, random, c02b, extensions (0049: key_share 0x0028 of 0x45 bytes). tshark
    # expects a session id there and shows cipher 0xacad; Suricata's test says TLS 1.3
    # draft with this JA3.
    (event,) = handshakes(run_sensor(read_frames(DATA / "suricata" / "tls13-draft14.pcap")))
    assert event.tls.version == "1.3"
    assert event.tls.client.ja3 == "65825469c473e48f3ee2571129256ab0"
    assert event.tls.cipher == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"  # 0xc02b
    assert event.tls.server.ja3s == md5("772,49195,40")


# ---- HelloRetryRequest: JA3S of the first ServerHello, version/cipher of the real one ------


def test_ja3s_after_a_hello_retry_request_describes_the_retry_request() -> None:
    differ = 0
    for capture in (DATA / "ndpi" / "steam.pcapng", DATA / "suricata" / "tls13-draft22.pcap"):
        events = by_client_port(capture)
        view = [m for m in tshark_view(capture)["handshake_messages"]  # type: ignore[attr-defined]
                if m["msg"] == "ServerHello"]
        firsts: dict[int, dict[str, str]] = {}
        lasts: dict[int, dict[str, str]] = {}
        for msg in view:
            port = int(msg["dst"].rpartition(":")[2])
            firsts.setdefault(port, msg)
            lasts[port] = msg
        retried = [port for port in firsts if firsts[port] is not lasts[port]]
        assert retried, f"{capture.name} has a HelloRetryRequest"
        for port in retried:
            event = events[port]
            assert event.tls.server.ja3s == firsts[port]["ja3s"]
            differ += firsts[port]["ja3s"] != lasts[port]["ja3s"]
            detail = event.certwatch.tls.server_hello
            assert detail is not None and not detail.hello_retry_request
            assert detail.cipher_suite_code == lasts[port]["cipher_suite"][2:]
            assert detail.ja3s_string is not None
            assert md5(detail.ja3s_string) == firsts[port]["ja3s"]
            assert event.certwatch.tls.certificate_encrypted  # the real ServerHello is 1.3
    assert differ >= 2, "the retry request and the real ServerHello differ in JA3S"


def test_a_lone_hello_retry_request_still_names_version_and_cipher() -> None:
    # tumblr.pcap (nDPI) has a client that closes after the HelloRetryRequest; here the
    # draft-22 capture is cut right after its HelloRetryRequest (frame 6).
    capture = DATA / "suricata" / "tls13-draft22.pcap"
    hrr = tshark_view(capture)["handshake_messages"][1]  # type: ignore[index]
    assert hrr["frame"] == 6
    (event,) = handshakes(run_sensor(read_frames(capture)[:6]))
    assert event.tls.version == "1.3" and not event.tls.established
    assert event.tls.cipher == "TLS_AES_128_GCM_SHA256"  # 0x1301, as tshark says
    assert event.tls.server.ja3s == hrr["ja3s"]
    detail = event.certwatch.tls.server_hello
    assert detail is not None and detail.hello_retry_request
    assert not event.certwatch.tls.certificate_encrypted  # no certificate was sent at all


# ---- tls_invalid_reads.pcap: lenient where unambiguous, strict where not; GTP-U -------------


def test_empty_compression_list_is_tolerated_and_reported() -> None:
    capture = DATA / "ndpi" / "tls_invalid_reads.pcap"
    events = by_client_port(capture)
    event = events[3967]
    # nDPI: [TLSv1][JA3S: 53611273a714cb4789c8222932efd5a7][Cipher: TLS_RSA_WITH_RC4_128_MD5]
    assert event.tls.version == "1.0"
    assert event.tls.cipher == "TLS_RSA_WITH_RC4_128_MD5"
    assert event.tls.server.ja3s == "53611273a714cb4789c8222932efd5a7"
    # No extensions: JA3 has three empty fields (tshark's string stops at the error).
    assert event.tls.client.ja3 == md5("769,4-5-10-9-100-98-3-6-19-18-37,,,")
    reported = anomalies(run_sensor(read_frames(capture)))
    irregular = [a for a in reported if a.certwatch.anomaly.kind == "tls_handshake_irregular"]
    assert sum(a.certwatch.anomaly.count for a in irregular) == 2  # empty list, stray byte


def test_a_client_hello_inside_gtpu_is_found_and_its_garbage_reported() -> None:
    # Frame 12: GTP-U (UDP 2152) carrying 10.191.139.17:58552 -> 54.221.224.45:443, whose
    # ClientHello has random bytes after the SNI (tshark: [Malformed Packet], an ALPN
    # extension of 11 bytes announcing 47241). The extension list cannot be delimited, so
    # the handshake is not reported, but the flow is seen and the error counted for it.
    reported = anomalies(run_sensor(read_frames(DATA / "ndpi" / "tls_invalid_reads.pcap")))
    errors = [a for a in reported if a.certwatch.anomaly.kind == "tls_handshake_error"]
    assert any(
        a.source is not None and a.destination is not None
        and (a.source.ip, a.source.port) == ("10.191.139.17", 58552)
        and (a.destination.ip, a.destination.port) == ("54.221.224.45", 443)
        for a in errors
    )


def test_gtpu_capture_reports_the_inner_connection() -> None:
    # nDPI: TCP 192.168.147.177:58496 <-> 151.121.193.160:443, TLSv1.2.
    capture = DATA / "ndpi" / "ja3_lots_of_cipher_suites_2_anon.pcap"
    (event,) = handshakes(run_sensor(read_frames(capture)))
    assert (event.source.ip, event.source.port) == ("192.168.147.177", 58496)
    assert (event.destination.ip, event.destination.port) == ("151.121.193.160", 443)
    (hello,) = [m for m in tshark_view(capture)["handshake_messages"]  # type: ignore[attr-defined]
                if m["msg"] == "ClientHello"]
    assert event.tls.client.ja3 == hello["ja3"] and event.tls.version == "1.2"


# ---- zero bytes on ACKs (heuristic_tcp_ack_payload.pcap) -----------------------------------


def with_ack_padding(frames: list[Frame]) -> list[Frame]:
    """The conversation with, before every data segment, a bare ACK carrying 2 zero bytes
    at that segment's sequence number, and 2 zero bytes on the SYN-ACK: what the hosts of
    nDPI's heuristic_tcp_ack_payload.pcap send."""
    out: list[Frame] = []
    for ts, segment in tcp_segments(frames):
        if segment.flags == 0x12:
            out.append((ts, RAW_IP, raw_frame(segment, segment.seq, b"\0\0")))
            continue
        if segment.payload:
            ack = TcpSegment(*segment[:6], 0x10, b"", segment.vlans)
            out.append((ts, RAW_IP, raw_frame(ack, segment.seq, b"\0\0")))
        out.append((ts, RAW_IP, raw_frame(segment, segment.seq, segment.payload)))
    return out


def summary(events: list[HandshakeEvent]) -> list[tuple[object, ...]]:
    return [(e.tls.version, e.tls.cipher, e.tls.server.ja3s, e.tls.client.ja3,
             [c.hash.sha256 for c in e.certwatch.tls.server_chain], e.tls.established)
            for e in events]


def test_zero_padded_acks_do_not_corrupt_the_stream() -> None:
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")
    clean = run_sensor(frames)
    padded = run_sensor(with_ack_padding(frames))
    assert summary(handshakes(padded)) == summary(handshakes(clean))
    assert handshakes(clean)[0].certwatch.tls.server_chain
    assert not [a for a in anomalies(padded) if a.certwatch.anomaly.kind == "tls_record_error"]


def test_zero_bytes_that_are_stream_data_are_kept() -> None:
    # The same conversation in 2-byte bare-ACK segments: every chunk of zeros inside the
    # certificates is held, then added when the next segment starts after it.
    frames = read_frames(DATA / "zeek" / "tls1.2.pcap")
    out: list[Frame] = []
    for ts, segment in tcp_segments(frames):
        if not segment.payload:
            out.append((ts, RAW_IP, raw_frame(segment, segment.seq, b"")))
            continue
        bare = TcpSegment(*segment[:6], 0x10, b"", segment.vlans)
        for at in range(0, len(segment.payload), 2):
            out.append((ts, RAW_IP, raw_frame(bare, segment.seq + at,
                                              segment.payload[at:at + 2])))
    assert any(p == b"\0\0" for _, _, f in out if (p := f[-2:]) and len(f) == 42)
    assert summary(handshakes(run_sensor(out))) == summary(handshakes(run_sensor(frames)))

