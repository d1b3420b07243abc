"""L2-L4 decoding on frames built by hand with struct, and on every real capture."""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.capture import open_capture
from sensor.decode import SUPPORTED_LINKTYPES, TcpSegment, decode_frame, format_addr
from sensor.errors import CaptureError, DecodeError

DATA = Path(__file__).resolve().parents[1] / "data"

SRC4, DST4 = socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.7")
SRC6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
DST6 = socket.inet_pton(socket.AF_INET6, "2001:db8:0:0:1::2")
PAYLOAD = b"\x16\x03\x01\x00\x05hello"
MACS = bytes.fromhex("020000000001 020000000002")


def tcp(
    payload: bytes = PAYLOAD, *, options: bytes = b"", flags: int = 0x18, doff: int | None = None
) -> bytes:
    words = doff if doff is not None else 5 + len(options) // 4
    head = struct.pack("!HHIIBBHHH", 51000, 443, 1000, 2000, words << 4, flags, 65535, 0, 0)
    return head + options + payload


def ipv4(
    body: bytes,
    *,
    proto: int = 6,
    options: bytes = b"",
    frag: int = 0,
    total: int | None = None,
    ihl: int | None = None,
    version: int = 4,
) -> bytes:
    words = ihl if ihl is not None else 5 + len(options) // 4
    length = total if total is not None else 4 * (5 + len(options) // 4) + len(body)
    head = struct.pack(
        "!BBHHHBBH4s4s", version << 4 | words, 0, length, 1, frag, 64, proto, 0, SRC4, DST4
    )
    return head + options + body


def ipv6(body: bytes, *, nxt: int = 6, plen: int | None = None) -> bytes:
    length = plen if plen is not None else len(body)
    return struct.pack("!IHBB16s16s", 6 << 28, length, nxt, 64, SRC6, DST6) + body


def ext(nxt: int, size8: int = 0) -> bytes:
    """A generic IPv6 extension header of (size8 + 1) * 8 bytes."""
    return bytes([nxt, size8]) + b"\x01\x04\0\0\0\0" + b"\0" * (8 * size8)


def eth(ethertype: int, body: bytes) -> bytes:
    return MACS + struct.pack("!H", ethertype) + body


def vlan(tpid: int, vid: int, inner: int) -> bytes:
    return struct.pack("!HHH", tpid, (5 << 13) | vid, inner)


def expect_v4(
    seg: TcpSegment | None, payload: bytes = PAYLOAD, vlans: tuple[int, ...] = ()
) -> None:
    assert seg is not None
    assert (format_addr(seg.src_addr), seg.src_port) == ("192.0.2.1", 51000)
    assert (format_addr(seg.dst_addr), seg.dst_port) == ("198.51.100.7", 443)
    assert (seg.seq, seg.ack, seg.flags) == (1000, 2000, 0x18)
    assert seg.payload == payload
    assert seg.vlans == vlans


def expect_v6(seg: TcpSegment | None, payload: bytes = PAYLOAD) -> None:
    assert seg is not None
    assert format_addr(seg.src_addr) == "2001:db8::1"
    assert format_addr(seg.dst_addr) == "2001:db8::1:0:0:2"  # RFC 5952 4.2.3: first run
    assert (seg.src_port, seg.dst_port, seg.payload) == (51000, 443, payload)


# --- Ethernet and what rides on it -----------------------------------------------------


def test_ethernet_ipv4_tcp() -> None:
    expect_v4(decode_frame(1, eth(0x0800, ipv4(tcp()))))


def test_ethernet_padding_is_trimmed_by_ip_length() -> None:
    frame = eth(0x0800, ipv4(tcp(b"")))
    padded = frame + b"\0" * (60 - len(frame))
    expect_v4(decode_frame(1, padded), payload=b"")
    expect_v4(decode_frame(1, eth(0x0800, ipv4(tcp(b"ab"))) + b"\0" * 6), payload=b"ab")


def test_snaplen_cut_keeps_what_was_captured() -> None:
    frame = eth(0x0800, ipv4(tcp()))
    expect_v4(decode_frame(1, frame[:-4]), payload=PAYLOAD[:-4])


def test_tcp_options_and_ipv4_options() -> None:
    opts = b"\x02\x04\x05\xb4\x01\x01\x04\x02"  # MSS, NOP, NOP, SACK-permitted
    expect_v4(decode_frame(1, eth(0x0800, ipv4(tcp(options=opts), options=b"\x01" * 8))))


def test_tso_zero_total_length_uses_captured_length() -> None:
    expect_v4(decode_frame(1, eth(0x0800, ipv4(tcp(), total=0))))


@pytest.mark.parametrize(
    ("tags", "vids"),
    [
        ([(0x8100, 42)], (42,)),
        ([(0x88A8, 100), (0x8100, 200)], (100, 200)),  # 802.1ad QinQ
        ([(0x9100, 7), (0x8100, 4095)], (7, 4095)),  # pre-standard QinQ
    ],
)
def test_vlan_stacks(tags: list[tuple[int, int]], vids: tuple[int, ...]) -> None:
    types = [tpid for tpid, _ in tags[1:]] + [0x0800]
    body = b"".join(
        struct.pack("!HH", (3 << 13) | vid, nxt) for (_, vid), nxt in zip(tags, types, strict=True)
    )
    expect_v4(decode_frame(1, eth(tags[0][0], body + ipv4(tcp()))), vlans=vids)


def test_too_many_vlan_tags() -> None:
    body = struct.pack("!HH", 1, 0x8100) * 9 + ipv4(tcp())
    with pytest.raises(DecodeError, match="VLAN"):
        decode_frame(1, eth(0x8100, body))


def test_mpls_label_stack_over_ipv4_and_ipv6() -> None:
    def label(value: int, bottom: bool) -> bytes:
        return struct.pack("!I", value << 12 | (int(bottom) << 8) | 64)

    stack = label(16, False) + label(17, False) + label(18, True)
    expect_v4(decode_frame(1, eth(0x8847, stack + ipv4(tcp()))))
    expect_v6(decode_frame(1, eth(0x8847, label(3, True) + ipv6(tcp()))))
    # an Ethernet pseudowire behind a control word is not IP
    assert decode_frame(1, eth(0x8847, label(3, True) + b"\0" * 4 + eth(0x0800, b""))) is None


def test_vlan_then_mpls() -> None:
    frame = eth(0x8100, struct.pack("!HH", 10, 0x8847) + struct.pack("!I", 1 << 8) + ipv4(tcp()))
    expect_v4(decode_frame(1, frame), vlans=(10,))


def test_pppoe_session() -> None:
    pppoe = struct.pack("!BBHHH", 0x11, 0, 0x1234, len(ipv4(tcp())) + 2, 0x0021)
    expect_v4(decode_frame(1, eth(0x8864, pppoe + ipv4(tcp()))))
    pppoe6 = struct.pack("!BBHHH", 0x11, 0, 0x1234, 0, 0x0057)
    expect_v6(decode_frame(1, eth(0x8864, pppoe6 + ipv6(tcp()))))
    lcp = struct.pack("!BBHHH", 0x11, 0, 0x1234, 4, 0xC021)
    assert decode_frame(1, eth(0x8864, lcp + b"\x01\x01\x00\x04")) is None


# --- other link types -------------------------------------------------------------------


def test_linux_cooked_sll_and_sll2() -> None:
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", 0x0800)
    expect_v4(decode_frame(113, sll + ipv4(tcp())))
    sll2 = struct.pack("!HHIHBB8s", 0x86DD, 0, 3, 1, 4, 6, b"\x02" * 8)
    expect_v6(decode_frame(276, sll2 + ipv6(tcp())))
    sll_vlan = struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x8100) + struct.pack("!HH", 9, 0x0800)
    expect_v4(decode_frame(113, sll_vlan + ipv4(tcp())), vlans=(9,))


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_by_version_nibble(linktype: int) -> None:
    expect_v4(decode_frame(linktype, ipv4(tcp())))
    expect_v6(decode_frame(linktype, ipv6(tcp())))


def test_raw_ipv4_and_ipv6_link_types() -> None:
    expect_v4(decode_frame(228, ipv4(tcp())))
    expect_v6(decode_frame(229, ipv6(tcp())))
    with pytest.raises(DecodeError, match="IP version 6"):
        decode_frame(228, ipv6(tcp()))


@pytest.mark.parametrize("family", [24, 28, 30, 10])
@pytest.mark.parametrize("order", ["little", "big"])
def test_null_loopback_in_either_host_order(family: int, order: str) -> None:
    v4 = (2).to_bytes(4, order)  # type: ignore[arg-type]
    v6 = family.to_bytes(4, order)  # type: ignore[arg-type]
    expect_v4(decode_frame(0, v4 + ipv4(tcp())))
    expect_v6(decode_frame(0, v6 + ipv6(tcp())))


def test_openbsd_loop_is_network_order() -> None:
    expect_v4(decode_frame(108, struct.pack("!I", 2) + ipv4(tcp())))
    expect_v6(decode_frame(108, struct.pack("!I", 24) + ipv6(tcp())))
    assert decode_frame(108, struct.pack("<I", 2) + ipv4(tcp())) is None  # AF 0x02000000


def test_unsupported_link_type_is_a_capture_error() -> None:
    assert 147 not in SUPPORTED_LINKTYPES
    with pytest.raises(CaptureError, match="147"):
        decode_frame(147, b"\0" * 64)


# --- IPv6 extension headers, fragments, tunnels -------------------------------------------


def test_ipv6_extension_header_chain() -> None:
    frag_first = struct.pack("!BBHI", 6, 0, 0x0001, 99)  # offset 0, more fragments
    chain = ext(43, 1) + ext(60) + ext(44) + frag_first
    expect_v6(decode_frame(1, eth(0x86DD, ipv6(chain + tcp(), nxt=0))))


def test_ipv6_authentication_header() -> None:
    ah = bytes([6, 4]) + b"\0" * 22  # (4 + 2) * 4 = 24 bytes
    expect_v6(decode_frame(1, eth(0x86DD, ipv6(ah + tcp(), nxt=51))))


def test_non_first_fragments_are_not_tcp() -> None:
    later6 = struct.pack("!BBHI", 6, 0, 185 << 3, 99)
    assert decode_frame(1, eth(0x86DD, ipv6(later6 + b"x" * 40, nxt=44))) is None
    assert decode_frame(1, eth(0x0800, ipv4(b"x" * 40, frag=185))) is None
    # the first IPv4 fragment (more-fragments set, offset 0) still has the TCP header
    expect_v4(decode_frame(1, eth(0x0800, ipv4(tcp(), frag=0x2000))))


def test_ip_in_ip_one_level() -> None:
    expect_v4(decode_frame(1, eth(0x0800, ipv4(ipv4(tcp()), proto=4))))
    expect_v6(decode_frame(1, eth(0x0800, ipv4(ipv6(tcp()), proto=41))))  # 6in4
    expect_v4(decode_frame(1, eth(0x86DD, ipv6(ipv4(tcp()), nxt=4))))
    assert decode_frame(1, eth(0x0800, ipv4(ipv4(ipv4(tcp()), proto=4), proto=4))) is None


def udp(dport: int, body: bytes, sport: int = 49152) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body


def vxlan(inner: bytes, flags: int = 0x08) -> bytes:
    return udp(4789, struct.pack("!B3xI", flags, 4242 << 8) + inner)


def gtpu(inner: bytes, flags: int = 0x30, extensions: bytes = b"") -> bytes:
    optional = b"\0\x01\0" + (extensions[:1] or b"\0") + extensions[1:] if flags & 7 else b""
    body = optional + inner
    return udp(2152, struct.pack("!BBHI", flags, 0xFF, len(body), 7) + body)


def gre(protocol: int, inner: bytes, flags: int = 0) -> bytes:
    extra = b"\0\0\0\x2a" * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000))
    return struct.pack("!HH", flags, protocol) + extra + inner


def test_vxlan_carries_an_inner_ethernet_frame_with_its_own_vlan() -> None:
    # RFC 7348 5: VNI after the I flag; the inner frame is Ethernet. VLAN ids of the
    # outer (7) and inner (9) frame are both kept, outermost first.
    inner = eth(0x8100, vlan(0x8100, 9, 0x0800)[2:] + ipv4(tcp()))
    frame = eth(0x8100, vlan(0x8100, 7, 0x0800)[2:] + ipv4(vxlan(inner), proto=17))
    expect_v4(decode_frame(1, frame), vlans=(7, 9))
    expect_v6(decode_frame(1, eth(0x86DD, ipv6(vxlan(eth(0x86DD, ipv6(tcp()))), nxt=17))))
    # Without the I flag a receiver discards the packet (RFC 7348 5).
    assert decode_frame(1, eth(0x0800, ipv4(vxlan(eth(0x0800, ipv4(tcp())), 0), proto=17))) is None


def test_gtpu_with_and_without_optional_fields_and_extension_headers() -> None:
    expect_v4(decode_frame(1, eth(0x0800, ipv4(gtpu(ipv4(tcp())), proto=17))))
    # S flag: sequence number, N-PDU, next type 0 (TS 29.281 5.1).
    expect_v4(decode_frame(1, eth(0x0800, ipv4(gtpu(ipv4(tcp()), 0x32), proto=17))))
    # E flag with a PDU Session Container (0x85) of one 4-byte unit, then no more.
    container = b"\x85" + b"\x01\x00\x01\x00"
    frame = eth(0x0800, ipv4(gtpu(ipv6(tcp()), 0x34, container), proto=17))
    expect_v6(decode_frame(1, frame))
    echo = udp(2152, struct.pack("!BBHI", 0x32, 1, 4, 0) + b"\0\0\0\0")  # Echo Request
    assert decode_frame(1, eth(0x0800, ipv4(echo, proto=17))) is None


def test_gre_ip_ethernet_and_erspan() -> None:
    expect_v4(decode_frame(1, eth(0x0800, ipv4(gre(0x0800, ipv4(tcp())), proto=47))))
    # RFC 2890: key and sequence number fields, RFC 2784 checksum field.
    frame = eth(0x0800, ipv4(gre(0x86DD, ipv6(tcp()), 0xB000), proto=47))
    expect_v6(decode_frame(1, frame))
    bridged = gre(0x6558, eth(0x0800, ipv4(tcp())), 0x2000)
    expect_v4(decode_frame(1, eth(0x86DD, ipv6(bridged, nxt=47))))
    # ERSPAN type II: sequence number set, 8-byte ERSPAN header, then the mirrored frame.
    erspan = gre(0x88BE, struct.pack("!HHI", 0x1000 | 5, 0, 0) + eth(0x0800, ipv4(tcp())), 0x1000)
    expect_v4(decode_frame(1, eth(0x0800, ipv4(erspan, proto=47))))
    # PPTP's enhanced GRE (version 1) is not followed.
    assert decode_frame(1, eth(0x0800, ipv4(gre(0x880B, b"\0" * 8, 0x2001), proto=47))) is None


def test_tunnels_are_followed_one_level_deep() -> None:
    twice = vxlan(eth(0x0800, ipv4(vxlan(eth(0x0800, ipv4(tcp()))), proto=17)))
    assert decode_frame(1, eth(0x0800, ipv4(twice, proto=17))) is None
    assert decode_frame(1, eth(0x0800, ipv4(gre(0x0800, ipv4(ipv4(tcp()), proto=4)),
                                            proto=47))) is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (eth(0x0800, ipv4(udp(4789, b"\x08\0\0"), proto=17)), "truncated VXLAN"),
        (eth(0x0800, ipv4(vxlan(b"\0" * 10), proto=17)), "Ethernet header inside VXLAN"),
        (eth(0x0800, ipv4(udp(2152, b"\x30\xff"), proto=17)), "truncated GTP-U header"),
        (eth(0x0800, ipv4(gtpu(b"", 0x34, b"\x85\x00"), proto=17)), "GTP-U extension"),
        (eth(0x0800, ipv4(b"\0\0", proto=47)), "truncated GRE header"),
        (eth(0x0800, ipv4(b"\x80\0\x08\0", proto=47)), "GRE optional fields"),
    ],
)
def test_malformed_tunnel_headers_raise_decode_error(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_frame(1, frame)


def test_vxlan_capture_yields_the_inner_connections() -> None:
    # ndpi/vxlan.pcap: nDPI's result lists the inner 10.10.20.4 -> 157.240.224.35:443.
    with open_capture(DATA / "ndpi" / "vxlan.pcap") as reader:
        segments = [s for _, lt, data in reader if (s := decode_frame(lt, data)) is not None]
    https = {(format_addr(s.src_addr), format_addr(s.dst_addr)) for s in segments
             if s.dst_port == 443}
    assert ("10.10.20.4", "157.240.224.35") in https


@pytest.mark.parametrize(
    "frame",
    [
        eth(0x0806, b"\0\x01\x08\x00\x06\x04\0\x01" + b"\0" * 20),  # ARP
        eth(0x0800, ipv4(struct.pack("!HHHH", 53, 53, 8, 0), proto=17)),  # UDP
        eth(0x0800, ipv4(b"\x08\0\0\0\0\0\0\0", proto=1)),  # ICMP
        eth(0x86DD, ipv6(b"\x80\0\0\0", nxt=58)),  # ICMPv6
        eth(0x86DD, ipv6(b"", nxt=59)),  # no next header
        MACS + struct.pack("!H", 46) + b"\xaa\xaa\x03" + b"\0" * 43,  # 802.3 + LLC
    ],
    ids=["arp", "udp", "icmp", "icmpv6", "no-next", "llc"],
)
def test_valid_but_not_tcp(frame: bytes) -> None:
    assert decode_frame(1, frame) is None


# --- malformed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linktype", "frame", "message"),
    [
        (1, MACS, "Ethernet"),
        (1, eth(0x0800, ipv4(tcp())[:19]), "truncated IPv4 header"),
        (1, eth(0x0800, ipv4(tcp(), ihl=4)), "header length 16"),
        (1, eth(0x0800, ipv4(tcp(), version=6)), "IP version 6"),
        (1, eth(0x0800, ipv4(tcp(), total=10)), "total length 10"),
        (1, eth(0x0800, ipv4(tcp(), ihl=15)), "truncated IPv4 options"),
        (1, eth(0x0800, ipv4(tcp(doff=4))), "data offset 4"),
        (1, eth(0x0800, ipv4(tcp(b"", doff=15))), "truncated TCP options"),
        (1, eth(0x0800, ipv4(tcp())[:30]), "truncated TCP header"),
        (1, eth(0x0800, ipv4(tcp(), total=30)), "truncated TCP header"),
        (1, eth(0x86DD, ipv6(tcp())[:39]), "truncated IPv6 header"),
        (1, eth(0x86DD, ipv6(ext(6, 2)[:20], nxt=0)), "extension header 0"),
        (1, eth(0x8100, b"\0\x01"), "VLAN"),
        (1, eth(0x8847, b"\0\0\0\0\0\0"), "MPLS"),
        (1, eth(0x8864, b"\x11\0\0\0"), "PPPoE"),
        (113, b"\0" * 15, "SLL"),
        (276, b"\0" * 19, "SLL2"),
        (0, b"\2\0", "loopback"),
        (101, b"", "empty"),
        (101, b"\x50" + b"\0" * 40, "IP version 5"),
    ],
)
def test_malformed_headers_raise_decode_error(linktype: int, frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_frame(linktype, frame)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SUPPORTED_LINKTYPES)), st.binary(max_size=120))
def test_random_bytes_decode_or_raise_decode_error(linktype: int, frame: bytes) -> None:
    try:
        seg = decode_frame(linktype, frame)
    except DecodeError:
        return
    assert seg is None or len(seg.payload) <= len(frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(0, 200))
def test_corrupted_real_header_never_crashes(noise: bytes, at: int) -> None:
    frame = bytearray(eth(0x8100, struct.pack("!HH", 5, 0x86DD) + ipv6(ext(60) + tcp(), nxt=0)))
    frame[at : at + len(noise)] = noise
    with contextlib.suppress(DecodeError):
        decode_frame(1, bytes(frame))


def test_format_addr() -> None:
    assert format_addr(SRC4) == "192.0.2.1"
    assert format_addr(bytes(15) + b"\x01") == "::1"
    assert format_addr(bytes(10) + b"\xff\xff" + SRC4) == "::ffff:192.0.2.1"


def test_every_frame_of_every_real_capture_decodes() -> None:
    # The corpus is TLS over TCP on Ethernet, NULL and raw IP: every frame must decode,
    # and the TLS ones (port 443 among them) must come out as TCP segments.
    tcp_segments = 0
    for path in sorted(DATA.glob("*/*.pcap*")):
        if path.suffix not in (".pcap", ".pcapng"):
            continue
        with open_capture(path) as reader:
            for frame in reader:
                seg = decode_frame(frame.linktype, frame.data)
                if seg is not None:
                    tcp_segments += 1
                    assert len(seg.src_addr) in (4, 16) and len(seg.payload) <= 65535
    assert tcp_segments > 300
