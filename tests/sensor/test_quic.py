"""QUIC Initial packets: RFC 9001 Appendix A vectors, real captures against tshark, and the
UDP path's bounds and robustness (sensor.quic, sensor.udp_sessions)."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.config import SensorConfig
from sensor.errors import ParseError
from sensor.fingerprints import alpn_chars
from sensor.quic import (
    INITIAL,
    MAX_CRYPTO_OFFSET,
    QUIC_V1,
    RETRY,
    CryptoStream,
    HandshakeFramer,
    QuicLimitError,
    QuicSession,
    decrypt_initial,
    initial_keys,
    parse_initial_frames,
    parse_long_header,
)
from sensor.sensor import Sensor
from sensor.tls.handshake import parse_client_hello, parse_server_hello
from sensor.tls.registry import is_grease
from sensor.udp import decode_udp
from tests.support import DATA, anomalies, certificates, handshakes, read_frames, run_sensor

RAW_IP = 101
DCID = bytes.fromhex("8394c8f03e515708")

# RFC 9001 Appendix A.2: the client's CRYPTO frame, then the protected 1200-byte packet.
RFC_CLIENT_CRYPTO = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff0801100104800075"
    "300901100f088394c8f03e51570806048000ffff"
)
RFC_CLIENT_PACKET = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)
# Appendix A.3: the server's payload (ACK + CRYPTO with the ServerHello) and its packet.
RFC_SERVER_PAYLOAD = bytes.fromhex(
    "02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739"
    "88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94"
    "0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00"
    "020304"
)
RFC_SERVER_PACKET = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)
RFC_RETRY = bytes.fromhex(
    "ff000000010008f067a5502a4262b5746f6b656e04a265ba2eff4d829058fb3f0f2496ba")
# Appendix A.5's 1-RTT packet: a short header, sent once the handshake is complete.
RFC_SHORT_PACKET = bytes.fromhex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb")

QUIC_CAPTURES = sorted((DATA / "quic").glob("*.pcap*.gz"))


# -- helpers: RFC 9001 5.3/5.4 protection, written from the RFC for crafting test packets ----


def _varint2(value: int) -> bytes:
    return (0x4000 | value).to_bytes(2, "big")


def protect_initial(payload: bytes, *, pn: int = 0, dcid: bytes = DCID) -> bytes:
    """A client's QUIC v1 Initial packet carrying ``payload``, 4-byte packet number, no
    token, empty Source Connection ID."""
    keys = initial_keys(dcid, QUIC_V1, server=False)
    first = 0xC3  # long header, fixed bit, Initial, packet number length 4
    header = (bytes([first]) + QUIC_V1.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
              + b"\x00" + b"\x00" + _varint2(4 + len(payload) + 16) + pn.to_bytes(4, "big"))
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header)
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sealed[:16]) + encryptor.finalize()
    masked = bytearray(header)
    masked[0] ^= mask[0] & 0x0F
    for i in range(4):
        masked[len(header) - 4 + i] ^= mask[1 + i]
    return bytes(masked) + sealed


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + (0x80000000 | offset).to_bytes(4, "big") + _varint2(len(data)) + data


def padded(frames: bytes, size: int = 1162) -> bytes:
    return frames + bytes(max(0, size - len(frames)))


def udp_frame(payload: bytes, *, from_client: bool = True, sport: int = 50000) -> bytes:
    """A raw IPv4/UDP frame (LINKTYPE_RAW) between 192.0.2.1:sport and 198.51.100.1:443."""
    a, b = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1])
    src, dst = (a, b) if from_client else (b, a)
    ports = (sport, 443) if from_client else (443, sport)
    udp = struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
    return ip + udp


def client_hello_body() -> bytes:
    frames = parse_initial_frames(RFC_CLIENT_CRYPTO)
    (offset, data), = frames.crypto
    assert offset == 0
    return data[4:]


def tshark(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.with_name(path.name + ".tshark.json").read_text())
    return loaded


def datagrams(path: Path) -> list[tuple[float, bool, bytes]]:
    """(time, sent by the client, UDP payload) of every datagram; the client is whoever
    sent the first one."""
    out: list[tuple[float, bool, bytes]] = []
    client: tuple[bytes, int] | None = None
    for ts, linktype, data in read_frames(path):
        datagram = decode_udp(linktype, data)
        if datagram is None:
            continue
        if client is None:
            client = (datagram.src_addr, datagram.src_port)
        out.append((ts, (datagram.src_addr, datagram.src_port) == client, datagram.payload))
    return out


# -- RFC 9001 Appendix A ------------------------------------------------------------------------


def test_rfc9001_initial_keys() -> None:
    client = initial_keys(DCID, QUIC_V1, server=False)
    server = initial_keys(DCID, QUIC_V1, server=True)
    assert client.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert client.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert client.hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    assert server.key.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert server.iv.hex() == "0ac1493ca1905853b0bba03e"
    assert server.hp.hex() == "c206b8d9b9f0f37644430b490eeaa314"


def test_rfc9001_client_initial_decrypts_to_the_published_client_hello() -> None:
    header = parse_long_header(RFC_CLIENT_PACKET)
    assert (header.packet_type, header.version, header.dcid, header.scid) == (
        INITIAL, QUIC_V1, DCID, b"")
    assert header.end == len(RFC_CLIENT_PACKET) == 1200
    packet = decrypt_initial(RFC_CLIENT_PACKET, header,
                             initial_keys(DCID, QUIC_V1, server=False))
    assert packet.packet_number == 2
    assert packet.payload == padded(RFC_CLIENT_CRYPTO)
    hello = parse_client_hello(client_hello_body())
    assert hello.server_name == "example.com"
    assert hello.alpn == (b"alpn",)
    assert hello.cipher_suites == (0x1301, 0x1302)
    assert any(ext.type == 0x39 for ext in hello.extensions)  # quic_transport_parameters


def test_rfc9001_server_initial_decrypts_to_the_published_payload() -> None:
    header = parse_long_header(RFC_SERVER_PACKET)
    assert header.scid == bytes.fromhex("f067a5502a4262b5") and header.dcid == b""
    packet = decrypt_initial(RFC_SERVER_PACKET, header, initial_keys(DCID, QUIC_V1, server=True))
    assert packet.packet_number == 1 and packet.payload == RFC_SERVER_PAYLOAD
    (offset, data), = parse_initial_frames(packet.payload).crypto
    assert offset == 0 and parse_server_hello(data[4:]).cipher_suite == 0x1301


def test_rfc9001_retry_is_recognised() -> None:
    header = parse_long_header(RFC_RETRY)
    assert header.packet_type == RETRY and header.token == b"token"


def test_the_test_helper_protects_like_rfc9001() -> None:
    # The packets crafted below are only as good as this helper: it must reproduce A.2.
    assert protect_initial(padded(RFC_CLIENT_CRYPTO), pn=2) == RFC_CLIENT_PACKET


def test_a_tampered_initial_is_a_parse_error() -> None:
    damaged = bytearray(RFC_CLIENT_PACKET)
    damaged[600] ^= 1
    session = QuicSession()
    with pytest.raises(ParseError, match="authenticate"):
        session.feed(True, bytes(damaged), 0.0)
    assert session.record.client_hello is None


def test_session_over_the_rfc_exchange() -> None:
    session = QuicSession()
    session.feed(True, RFC_CLIENT_PACKET, 1.0)
    session.feed(False, RFC_SERVER_PACKET, 1.1)
    assert not session.done  # the server's Handshake flight is still to come
    session.feed(True, RFC_SHORT_PACKET, 1.2)
    record = session.record
    assert session.done and record.established and record.ended_by == "established"
    assert record.client_hello is not None and record.client_hello.server_name == "example.com"
    assert record.server_hello is not None and record.server_hello.selected_version == 0x0304
    assert record.server_certificates == ()  # in Handshake packets: not visible


# -- real captures against tshark --------------------------------------------------------------


def _tshark_streams(view: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    streams: dict[str, dict[str, dict[str, Any]]] = {}
    for message in view["handshake_messages"]:
        streams.setdefault(message["stream"], {}).setdefault(message["msg"], message)
    return streams


def _ja4_parts(hello: dict[str, Any]) -> tuple[str, str]:
    """JA4's protocol/version/SNI/cipher-count characters and ALPN characters (JA4.md) as
    tshark's view of the ClientHello gives them (the extension count is not in it)."""
    versions = hello.get("supported_versions") or []
    # JA4.md: "the highest value" of supported_versions; a TLS 1.3 draft code (0x7fNN)
    # is numerically above 0x0304 and has no JA4 name, hence "00" (nDPI agrees).
    version = "00" if any("draft" in v for v in versions) else "13"
    ciphers = [c for c in hello["cipher_suites"] if not is_grease(int(c, 16))]
    alpn = hello.get("alpn") or []
    return (f"q{version}{'d' if hello.get('sni') else 'i'}{min(len(ciphers), 99):02d}",
            alpn_chars(alpn[0].encode()) if alpn else "00")


@pytest.mark.parametrize("path", QUIC_CAPTURES, ids=lambda p: p.name)
def test_capture_matches_tshark(path: Path) -> None:
    events = run_sensor(read_frames(path))
    ours = {(e.source.port, e.destination.port): e for e in handshakes(events)}
    streams = _tshark_streams(tshark(path))
    assert streams and len(ours) == len(streams)
    for messages in streams.values():
        hello, server = messages["ClientHello"], messages.get("ServerHello")
        port = int(hello["src"].rsplit(":", 1)[1])
        event = ours[(port, int(hello["dst"].rsplit(":", 1)[1]))]
        assert event.network.transport == "udp"
        assert event.tls.client.server_name == hello.get("sni")
        assert event.tls.client.ja3 == hello["ja3"]
        summary = event.certwatch.tls.client_hello
        assert summary is not None and summary.alpn == (hello.get("alpn") or [])
        head, alpn = _ja4_parts(hello)
        assert summary.ja4 is not None
        assert summary.ja4[:6] == head and summary.ja4[8:10] == alpn
        if server is not None:
            assert (event.tls.version_protocol, event.tls.version) == ("tls", "1.3")
            sh = event.certwatch.tls.server_hello
            assert sh is not None and f"0x{sh.cipher_suite_code}" == server["cipher_suite"]
            assert event.tls.server.ja3s == server["ja3s"]
        # The certificate travels in Handshake packets: never reported, never guessed.
        assert event.tls.server.hash is None and not event.certwatch.tls.server_chain
    assert not certificates(events)


def test_client_hello_split_over_two_initials_is_reassembled() -> None:
    # quic_frags_ch_in_multiple_packets: the ClientHello's CRYPTO data spans two datagrams.
    path = DATA / "quic" / "quic_frags_ch_in_multiple_packets.pcapng.gz"
    client = [d for _, from_client, d in datagrams(path) if from_client]
    first_alone = QuicSession()
    first_alone.feed(True, client[0], 0.0)
    assert first_alone.record.client_hello is None  # not complete after one datagram
    (event,) = handshakes(run_sensor(read_frames(path)))
    summary = event.certwatch.tls.client_hello
    # Offers TLS 1.3 drafts 27-29 too: JA4 version "00" (see _ja4_parts); no SNI: "i".
    assert summary is not None and summary.ja4 is not None and summary.ja4.startswith("q00i03")
    assert event.tls.cipher == "TLS_AES_128_GCM_SHA256"


# -- splits, cuts, bounds ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 300), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_crypto_frames_in_any_split_and_order_give_the_same_hello(
    sizes: list[int], rnd: Any
) -> None:
    (_, stream_bytes), = parse_initial_frames(RFC_CLIENT_CRYPTO).crypto
    cuts, pos = [], 0
    for size in sizes:
        if pos >= len(stream_bytes):
            break
        cuts.append((pos, stream_bytes[pos : pos + size]))
        pos += size
    if pos < len(stream_bytes):
        cuts.append((pos, stream_bytes[pos:]))
    pieces = cuts + rnd.sample(cuts, min(2, len(cuts)))  # some retransmitted
    rnd.shuffle(pieces)
    # Through the whole session: every piece in its own protected Initial packet.
    session = QuicSession()
    for pn, (offset, data) in enumerate(pieces):
        session.feed(True, protect_initial(padded(crypto_frame(offset, data)), pn=pn), 0.0)
    assert session.record.client_hello == parse_client_hello(client_hello_body())


def _quic29() -> list[tuple[float, bool, bytes]]:
    return datagrams(DATA / "quic" / "quic-29.pcap.gz")


QUIC29 = _quic29()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(QUIC29) - 1), st.integers(0, 1400), st.integers(-1, 1400),
       st.integers(1, 255))
def test_cut_or_damaged_datagrams_only_raise_parse_errors(
    index: int, cut: int, flip: int, xor: int
) -> None:
    session = QuicSession()
    for number, (ts, from_client, payload) in enumerate(QUIC29):
        if number == index:
            damaged = bytearray(payload[:cut])
            if 0 <= flip < len(damaged):
                damaged[flip] ^= xor
            payload = bytes(damaged)
        # A ParseError is counted by the sensor; any other exception fails the test.
        with contextlib.suppress(ParseError):
            session.feed(from_client, payload, ts)


def test_crypto_stream_bound_is_an_error() -> None:
    stream = CryptoStream(max_buffered=100)
    stream.add(200, bytes(60))
    with pytest.raises(QuicLimitError):
        stream.add(400, bytes(60))
    with pytest.raises(QuicLimitError):
        CryptoStream().add(MAX_CRYPTO_OFFSET, b"x")
    with pytest.raises(QuicLimitError):
        HandshakeFramer(max_message=10).feed(b"\x01\x00\x00\x0b")


def test_crypto_beyond_the_bound_is_counted_by_the_sensor() -> None:
    far = protect_initial(padded(crypto_frame(MAX_CRYPTO_OFFSET, b"x" * 10)))
    frames = [(1.0, RAW_IP, udp_frame(far)), (1.1, RAW_IP, udp_frame(RFC_CLIENT_PACKET))]
    events = run_sensor(frames)
    (limit,) = [a for a in anomalies(events) if a.certwatch.anomaly.kind == "quic_limit"]
    assert "exceeds the bound" in limit.certwatch.anomaly.detail
    assert not handshakes(events)  # the session ended on the bound: no hello was seen


def test_flow_table_bound_evicts_the_oldest_and_reports_it() -> None:
    config = SensorConfig(name="test-sensor")
    sensor = Sensor(config)
    sensor.udp.max_flows = 1
    sensor.process(1.0, RAW_IP, udp_frame(RFC_CLIENT_PACKET, sport=40000))
    sensor.process(2.0, RAW_IP, udp_frame(RFC_CLIENT_PACKET, sport=40001))
    events = sensor.finish()
    kinds = [a.certwatch.anomaly.kind for a in anomalies(events)]
    assert "udp_flow_table_full" in kinds and sensor.udp.stats.evicted == 1
    ended = sorted((e.source.port, e.certwatch.tls.ended_by) for e in handshakes(events))
    assert ended == [(40000, "evicted"), (40001, "capture_end")]


def test_other_udp_leaves_no_state() -> None:
    dns = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
    sensor = Sensor(SensorConfig(name="test-sensor"))
    for i in range(50):
        sensor.process(float(i), RAW_IP, udp_frame(dns, sport=1000 + i))
    assert len(sensor.udp) == 0 and not handshakes(sensor.finish())



def test_an_unfinished_quic_handshake_expires_while_only_tcp_flows_by() -> None:
    """Capture time moved by TCP traffic alone ages UDP flows: the QUIC handshake whose
    server never answered is reported without waiting for another datagram or the end."""
    from sensor.decode import TcpSegment
    from tests.support import RAW_IP, raw_frame

    (first, *_) = read_frames(DATA / "quic" / "quic-29.pcap.gz")
    sensor = Sensor()
    sensor.process(*first)
    syn = TcpSegment(bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2]), 40000, 443, 1, 0, 0x02,
                     b"", ())
    later = (first[0] + 3600.0, RAW_IP, raw_frame(syn, 1, b""))
    sensor.process(*later)
    (event,) = handshakes(sensor.drain())
    assert event.network.transport == "udp" and not event.tls.established
    assert event.certwatch.tls.ended_by == "idle_timeout"
