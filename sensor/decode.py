"""Raw frame to TCP segment: link layer, VLAN/MPLS/PPPoE, IPv4/IPv6, tunnels, TCP.

Contract of :func:`decode_frame`: a frame that is valid but carries no TCP over IP (ARP,
UDP, ICMP, a non-first IP fragment, LLC, ...) gives ``None``; malformed headers raise
:class:`sensor.errors.DecodeError` whose message says which header and what is wrong; a
link type this module does not decode raises :class:`sensor.errors.CaptureError` (fatal
for that input, see ``sensor.errors``). Callers may check :data:`SUPPORTED_LINKTYPES` up
front. A TCP segment comes back as a :class:`TcpSegment` tuple.

Tunnels are followed one level deep: IP-in-IP and 6in4, GRE (RFC 2784/2890: IP, Ethernet
bridging, ERSPAN type I/II), VXLAN (RFC 7348, UDP port 4789) and GTP-U (3GPP TS 29.281,
UDP port 2152); the segment carries the inner addresses and ports, and the VLAN ids of
both the outer and the inner frame, outermost first.

The payload is bounded by the IP length fields, which trims Ethernet padding (frames are
padded to 60 bytes, RFC 894); a frame cut by the snapshot length keeps what was captured.

Speed: untagged Ethernet/IPv4/TCP, the bulk of tap traffic, is decoded inline with two
``struct`` calls; anything else (and any error) takes the general path below.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from sensor.errors import CaptureError, DecodeError

__all__ = [
    "ETH_IPV4_ADDRS",
    "ETH_IPV4_ADDRS_TCP",
    "ETH_IPV4_TCP_ALL",
    "ETH_IPV4_TCP_FLAGS",
    "ETH_IPV4_TCP_HEAD",
    "ETH_IPV4_TCP_WORDS",
    "SUPPORTED_LINKTYPES",
    "TCP_PORTS_FLAGS",
    "TCP_PORTS_SEQ_ACK",
    "TCP_SEQ_ACK",
    "TcpSegment",
    "decode_frame",
    "format_addr",
]

# Link types (LINKTYPE_* numbers from the pcap link-type registry).
LINKTYPE_NULL = 0  # BSD loopback, address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD12 = 12  # DLT_RAW as written by most BSDs
LINKTYPE_RAW_BSD14 = 14  # DLT_RAW as written by OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108  # OpenBSD loopback, address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_BSD12,
        LINKTYPE_RAW_BSD14,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_MPLS_UNICAST = 0x8847
ETHERTYPE_MPLS_MULTICAST = 0x8848
# 802.1Q customer tag, 802.1ad service tag, and the pre-standard QinQ tag.
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
#: More stacked VLAN tags than this is treated as malformed (QinQ uses two).
MAX_VLAN_TAGS = 8

# IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
_PROTO_IPIP = 4
_PROTO_TCP = 6
_PROTO_UDP = 17
_PROTO_GRE = 47
_PROTO_IPV6 = 41
_PROTO_FRAGMENT = 44
_PROTO_AH = 51
# IPv6 extension headers sharing the (next header, length in 8-octet units - 1) shape:
# hop-by-hop, routing, destination options (RFC 8200 4.3-4.6), mobility (RFC 6275),
# HIP (RFC 7401), shim6 (RFC 5533).
_IPV6_GENERIC_EXT = frozenset({0, 43, 60, 135, 139, 140})
_IPV6_EXT = _IPV6_GENERIC_EXT | {_PROTO_AH, _PROTO_FRAGMENT}

# Address families written in NULL/LOOP headers: AF_INET is 2 everywhere; AF_INET6 is
# 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (Darwin) and 10 (Linux).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})

_IPV4 = struct.Struct("!BxH2xHxB2x4s4s")  # ver/ihl, total length, frag, proto, src, dst
_ETH_IPV4 = struct.Struct("!H" + _IPV4.format[1:])  # EtherType, then the IPv4 fields
#: For callers with their own fast path (``Sensor.process``): unpack, at offset 12 of an
#: Ethernet frame, (EtherType, version/IHL, total length, fragment field, protocol, source,
#: destination); and at a TCP header, (source port, destination port, data offset, flags).
ETH_IPV4_TCP_HEAD = _ETH_IPV4.unpack_from
TCP_PORTS_FLAGS = struct.Struct("!HH8xBB").unpack_from
#: (sequence number, acknowledgment number), unpacked at 4 bytes into a TCP header.
TCP_SEQ_ACK = struct.Struct("!II").unpack_from
#: (EtherType, version/IHL, total length, fragment field, protocol, data offset, flags) at
#: offset 12 of an Ethernet frame, the TCP part taken at offset 34 (IHL 5, see below): what
#: ``Sensor.process`` needs to count a packet, without making objects of the addresses and
#: ports (the flow key is one slice of the frame, ``sensor.flows.flow_key``).
ETH_IPV4_TCP_FLAGS = struct.Struct("!HBxH2xHxB2x8x12xBB").unpack_from
#: The same checks in four words, for the common case of an IPv4 header without options:
#: (EtherType << 16 | version/IHL << 8 | DSCP/ECN, total length, fragment field << 16 |
#: TTL << 8 | protocol, TCP data offset << 8 | flags) at offset 12 of an Ethernet frame.
#: Fewer objects and tests per packet than ETH_IPV4_TCP_FLAGS: ``head >> 8 == 0x080045``
#: is EtherType IPv4 with IHL 5, ``frag_proto & 0x1FFF00FF == 6`` a first (or only)
#: fragment of TCP (RFC 791 3.1).
ETH_IPV4_TCP_WORDS = struct.Struct("!IH2xI22xH").unpack_from
#: (source address, destination address, source port, destination port, sequence number,
#: acknowledgment number) at offset 26 of an Ethernet frame whose IPv4 header has IHL 5.
ETH_IPV4_ADDRS_TCP = struct.Struct("!4s4sHHII").unpack_from
#: (source address, destination address) at offset 26 of an Ethernet/IPv4 frame.
ETH_IPV4_ADDRS = struct.Struct("!4s4s").unpack_from
#: (source port, destination port, sequence number, acknowledgment number) at a TCP header.
TCP_PORTS_SEQ_ACK = struct.Struct("!HHII").unpack_from
#: Both in one call, the TCP header taken at offset 34 (where it is when the IPv4 header has
#: no options, IHL 5: nearly always); a caller checks the IHL before trusting the TCP part.
ETH_IPV4_TCP_ALL = struct.Struct("!H" + _IPV4.format[1:] + "HH8xBB").unpack_from
_IPV6 = struct.Struct("!IHBx16s16s")  # ver/class/flow, payload length, next header, src, dst
_TCP = struct.Struct("!HHIIBB")  # ports, seq, ack, data offset, flags
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U16_PAIR = struct.Struct("!HH")
# Tunnels (one level deep; see the module docstring).
VXLAN_PORT = 4789  # RFC 7348 5: IANA-assigned UDP destination port
GTPU_PORT = 2152  # 3GPP TS 29.281 4.4.2.3: GTP-U UDP destination port
_VXLAN_FLAG_I = 0x08  # RFC 7348 5: the VNI is valid; the only defined flag
_GTP_G_PDU = 0xFF  # TS 29.281 6.1: a G-PDU carries a user packet
_GRE_C, _GRE_R, _GRE_K, _GRE_S = 0x8000, 0x4000, 0x2000, 0x1000
_GRE_TEB = 0x6558  # Transparent Ethernet Bridging (RFC 1701 protocol type registry)
_GRE_ERSPAN = 0x88BE  # ERSPAN type I (no sequence number) and type II (with one)
_new = tuple.__new__  # builds a NamedTuple at half the cost of calling the class


class TcpSegment(NamedTuple):
    """One TCP segment with the addresses of the IP packet that carried it."""

    src_addr: bytes  # 4 bytes (IPv4) or 16 bytes (IPv6), network order
    dst_addr: bytes
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int  # FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80
    payload: bytes
    vlans: tuple[int, ...]  # VLAN ids, outermost first


def format_addr(addr: bytes) -> str:
    """Dotted IPv4 or RFC 5952 compressed IPv6 text for a 4- or 16-byte address.

    IPv4-mapped IPv6 addresses keep the dotted tail (RFC 5952 5), as tshark prints them.
    Raises ``ValueError`` for any other length.
    """
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def decode_frame(linktype: int, data: bytes) -> TcpSegment | None:
    """Decode one captured frame down to its TCP segment; see the module docstring."""
    if linktype == LINKTYPE_ETHERNET:
        if len(data) >= 54:
            # Fast path, untagged IPv4/TCP: one unpack for EtherType and IPv4, one for TCP.
            # It returns only a fully valid segment; anything else falls through to the
            # general path, which gives the precise answer or error.
            ethertype, vihl, total, frag, proto, src, dst = _ETH_IPV4.unpack_from(data, 12)
            if (
                ethertype == ETHERTYPE_IPV4
                and 0x45 <= vihl <= 0x4F
                and proto == _PROTO_TCP
                and not frag & 0x1FFF
            ):
                tcp = 14 + (vihl & 0x0F) * 4
                end = 14 + total
                if end > len(data):
                    end = len(data)
                if tcp + 20 <= end:
                    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, tcp)
                    start = tcp + (doff >> 4) * 4
                    if doff >= 0x50 and start <= end:
                        payload = data[start:end]
                        return _new(
                            TcpSegment, (src, dst, sport, dport, seq, ack, flags, payload, ())
                        )
        elif len(data) < 14:
            raise DecodeError(f"truncated Ethernet header ({len(data)} bytes)")
        return _ethertype(_U16.unpack_from(data, 12)[0], data, 14, (), len(data), 0)
    return _other_link(linktype, data)


def _other_link(linktype: int, data: bytes) -> TcpSegment | None:
    size = len(data)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14):
        if not size:
            raise DecodeError("empty raw IP frame")
        return _ip_by_version(data, 0, size, (), 0)
    if linktype == LINKTYPE_IPV4:
        return _ipv4(data, 0, size, (), 0)
    if linktype == LINKTYPE_IPV6:
        return _ipv6(data, 0, size, (), 0)
    if linktype == LINKTYPE_LINUX_SLL:
        # cooked v1: type, ARPHRD, address length, 8-byte address, protocol (16 bytes)
        if size < 16:
            raise DecodeError(f"truncated Linux cooked (SLL) header ({size} bytes)")
        return _ethertype(_U16.unpack_from(data, 14)[0], data, 16, (), size, 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        # cooked v2: protocol, reserved, ifindex, ARPHRD, type, address length, address
        if size < 20:
            raise DecodeError(f"truncated Linux cooked (SLL2) header ({size} bytes)")
        return _ethertype(_U16.unpack_from(data, 0)[0], data, 20, (), size, 0)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if size < 4:
            raise DecodeError(f"truncated loopback header ({size} bytes)")
        if linktype == LINKTYPE_LOOP:
            family = int.from_bytes(data[:4], "big")
        else:
            # Host byte order of the machine that captured: families are small numbers,
            # so a value with high bits set was written big-endian.
            family = int.from_bytes(data[:4], "little")
            if family > 0xFFFF:
                family = int.from_bytes(data[:4], "big")
        if family == _AF_INET:
            return _ipv4(data, 4, size, (), 0)
        if family in _AF_INET6:
            return _ipv6(data, 4, size, (), 0)
        return None
    raise CaptureError(f"unsupported link type {linktype}")


def _ethertype(
    ethertype: int, data: bytes, off: int, vlans: tuple[int, ...], size: int, depth: int
) -> TcpSegment | None:
    """Follow VLAN tags, MPLS and PPPoE from an EtherType at ``off`` down to IP; ``size``
    bounds what may be read, ``depth`` is 1 inside a tunnel."""
    while ethertype in VLAN_TPIDS:
        if len(vlans) >= MAX_VLAN_TAGS:
            raise DecodeError(f"more than {MAX_VLAN_TAGS} stacked VLAN tags")
        if size - off < 4:
            raise DecodeError("truncated VLAN tag")
        tci, ethertype = _U16_PAIR.unpack_from(data, off)
        vlans = (*vlans, tci & 0x0FFF)  # IEEE 802.1Q 9.6: the VID is the low 12 bits
        off += 4
    if ethertype == ETHERTYPE_IPV4:
        return _ipv4(data, off, size, vlans, depth)
    if ethertype == ETHERTYPE_IPV6:
        return _ipv6(data, off, size, vlans, depth)
    if ethertype in (ETHERTYPE_MPLS_UNICAST, ETHERTYPE_MPLS_MULTICAST):
        return _mpls(data, off, vlans, size, depth)
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        return _pppoe(data, off, vlans, size, depth)
    return None


def _mpls(
    data: bytes, off: int, vlans: tuple[int, ...], size: int, depth: int
) -> TcpSegment | None:
    # RFC 3032 2.1: 4-byte entries; the bottom-of-stack bit is the low bit of byte 2.
    while True:
        if size - off < 4:
            raise DecodeError("truncated MPLS label stack")
        bottom = data[off + 2] & 0x01
        off += 4
        if bottom:
            break
    # No protocol field follows the stack: the first nibble tells IP apart from pseudowire
    # control words (0) and other payloads, which we leave alone.
    if off >= size or data[off] >> 4 not in (4, 6):
        return None
    return _ip_by_version(data, off, size, vlans, depth)


def _pppoe(
    data: bytes, off: int, vlans: tuple[int, ...], size: int, depth: int
) -> TcpSegment | None:
    # RFC 2516 4: ver/type, code, session id, length; then the PPP protocol (RFC 1661).
    if size - off < 8:
        raise DecodeError("truncated PPPoE session header")
    protocol = _U16.unpack_from(data, off + 6)[0]
    if protocol == 0x0021:
        return _ipv4(data, off + 8, size, vlans, depth)
    if protocol == 0x0057:
        return _ipv6(data, off + 8, size, vlans, depth)
    return None


def _ip_by_version(
    data: bytes, off: int, end: int, vlans: tuple[int, ...], depth: int
) -> TcpSegment | None:
    version = data[off] >> 4
    if version == 4:
        return _ipv4(data, off, end, vlans, depth)
    if version == 6:
        return _ipv6(data, off, end, vlans, depth)
    raise DecodeError(f"IP version {version} is neither 4 nor 6")


def _ipv4(data: bytes, off: int, end: int, vlans: tuple[int, ...], depth: int) -> TcpSegment | None:
    """IPv4 header at ``off`` (RFC 791 3.1); ``end`` bounds what may be read."""
    if end - off < 20:
        raise DecodeError(f"truncated IPv4 header ({end - off} bytes)")
    vihl, total, frag, proto, src, dst = _IPV4.unpack_from(data, off)
    if vihl >> 4 != 4:
        raise DecodeError(f"IP version {vihl >> 4} where IPv4 was announced")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        raise DecodeError(f"IPv4 header length {ihl} is below 20")
    if end - off < ihl:
        raise DecodeError(f"truncated IPv4 options ({end - off} of {ihl} bytes)")
    if total:
        if total < ihl:
            raise DecodeError(f"IPv4 total length {total} is below the header length {ihl}")
        end = min(end, off + total)
    # total == 0 is left as captured: senders using TCP segmentation offload are captured
    # before the NIC fills in the length.
    if frag & 0x1FFF:
        return None  # a non-first fragment has no TCP header
    if proto == _PROTO_TCP:
        return _tcp(data, off + ihl, end, src, dst, vlans)
    if depth == 0:
        return _tunnel(proto, data, off + ihl, end, vlans)
    return None


def _ipv6(data: bytes, off: int, end: int, vlans: tuple[int, ...], depth: int) -> TcpSegment | None:
    """IPv6 header at ``off`` (RFC 8200 3) and its extension header chain (RFC 8200 4)."""
    if end - off < 40:
        raise DecodeError(f"truncated IPv6 header ({end - off} bytes)")
    vtcfl, plen, nxt, src, dst = _IPV6.unpack_from(data, off)
    if vtcfl >> 28 != 6:
        raise DecodeError(f"IP version {vtcfl >> 28} where IPv6 was announced")
    off += 40
    if plen:  # zero: a jumbogram (RFC 2675) or segmentation offload; keep what was captured
        end = min(end, off + plen)
    # Every extension header is at least 8 bytes, so this loop ends within the frame.
    while True:
        if nxt == _PROTO_TCP:
            return _tcp(data, off, end, src, dst, vlans)
        if nxt in _IPV6_EXT:
            if end - off < 8:
                raise DecodeError(f"truncated IPv6 extension header {nxt}")
            if nxt == _PROTO_FRAGMENT:
                # RFC 8200 4.5: only the first fragment (offset 0) carries the TCP header.
                if _U16.unpack_from(data, off + 2)[0] & 0xFFF8:
                    return None
                length = 8
            elif nxt == _PROTO_AH:
                length = (data[off + 1] + 2) * 4  # RFC 4302 2.2: in 4-octet units, minus 2
            else:
                length = (data[off + 1] + 1) * 8
            if end - off < length:
                raise DecodeError(f"truncated IPv6 extension header {nxt}")
            nxt = data[off]
            off += length
            continue
        if depth == 0:
            return _tunnel(nxt, data, off, end, vlans)
        return None  # ICMPv6, ESP, no next header, ...


def _tcp(
    data: bytes, off: int, end: int, src: bytes, dst: bytes, vlans: tuple[int, ...]
) -> TcpSegment:
    """TCP header at ``off`` (RFC 9293 3.1); the payload runs to ``end``."""
    if end - off < 20:
        raise DecodeError(f"truncated TCP header ({end - off} bytes)")
    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, off)
    hlen = (doff >> 4) * 4
    if hlen < 20:
        raise DecodeError(f"TCP data offset {doff >> 4} is below 5")
    if end - off < hlen:
        raise DecodeError(f"truncated TCP options ({end - off} of {hlen} bytes)")
    payload = data[off + hlen : end]
    return _new(TcpSegment, (src, dst, sport, dport, seq, ack, flags, payload, vlans))


# -- tunnels ---------------------------------------------------------------------------------


def _tunnel(
    proto: int, data: bytes, off: int, end: int, vlans: tuple[int, ...]
) -> TcpSegment | None:
    """The TCP segment inside a tunnel whose outer IP payload (protocol ``proto``) starts at
    ``off``; None when ``proto`` is no tunnel we follow. Inner packets are decoded with
    depth 1, so a tunnel inside a tunnel is not followed."""
    if proto == _PROTO_UDP:
        return _udp_tunnel(data, off, end, vlans)
    if proto == _PROTO_IPIP:  # IP-in-IP (RFC 2003)
        return _ipv4(data, off, end, vlans, 1)
    if proto == _PROTO_IPV6:  # 6in4 (RFC 4213 3.5), 6in6 (RFC 2473)
        return _ipv6(data, off, end, vlans, 1)
    if proto == _PROTO_GRE:
        return _gre(data, off, end, vlans)
    return None


def _udp_tunnel(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> TcpSegment | None:
    # UDP header (RFC 768): ports, length, checksum. Only the tunnel ports are looked into;
    # any other datagram (DNS, QUIC, ...) is no TCP and costs this one unpack.
    if end - off < 8:
        return None
    dport = _U16.unpack_from(data, off + 2)[0]
    if dport == VXLAN_PORT:
        return _vxlan(data, off + 8, end, vlans)
    if dport == GTPU_PORT:
        return _gtpu(data, off + 8, end, vlans)
    return None


def _inner_ethernet(
    data: bytes, off: int, end: int, vlans: tuple[int, ...], what: str
) -> TcpSegment | None:
    if end - off < 14:
        raise DecodeError(f"truncated Ethernet header inside {what} ({end - off} bytes)")
    return _ethertype(_U16.unpack_from(data, off + 12)[0], data, off + 14, vlans, end, 1)


def _vxlan(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> TcpSegment | None:
    # RFC 7348 5: flags (I set), 24 reserved bits, 24-bit VNI, 8 reserved bits, then the
    # inner Ethernet frame without its FCS.
    if end - off < 8:
        raise DecodeError(f"truncated VXLAN header ({end - off} bytes)")
    if not data[off] & _VXLAN_FLAG_I:
        return None  # RFC 7348 5: a receiver discards a packet without the I flag
    return _inner_ethernet(data, off + 8, end, vlans, "VXLAN")


def _gtpu(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> TcpSegment | None:
    # 3GPP TS 29.281 5.1: flags (version 1, PT 1, E/S/PN), message type, length of what
    # follows the first 8 bytes, TEID; 4 more bytes (sequence, N-PDU, next extension
    # type) when any of E/S/PN is set; then a chain of extension headers (5.2), each
    # ``length`` 4-octet units ending with the next type. A G-PDU carries an IP packet.
    if end - off < 8:
        raise DecodeError(f"truncated GTP-U header ({end - off} bytes)")
    flags, msg_type, length = data[off], data[off + 1], _U16.unpack_from(data, off + 2)[0]
    if flags >> 5 != 1 or not flags & 0x10 or msg_type != _GTP_G_PDU:
        return None  # GTP' or GTPv2 on the port, or signalling (echo, error indication)
    end = min(end, off + 8 + length)
    pos = off + 8
    if flags & 0x07:
        if end - pos < 4:
            raise DecodeError("truncated GTP-U optional fields")
        next_type = data[pos + 3] if flags & 0x04 else 0
        pos += 4
        # Each extension header is at least 4 bytes, so this loop ends within the packet.
        while next_type:
            if end - pos < 1 or data[pos] == 0 or end - pos < data[pos] * 4:
                raise DecodeError(f"truncated or empty GTP-U extension header {next_type}")
            size = data[pos] * 4
            next_type = data[pos + size - 1]
            pos += size
    if pos >= end or data[pos] >> 4 not in (4, 6):
        return None
    return _ip_by_version(data, pos, end, vlans, 1)


def _gre(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> TcpSegment | None:
    # RFC 2784 2: C, reserved0, version 0, protocol type; RFC 2890 adds K and S, each with
    # its 4-byte field after the optional checksum. Version 1 is PPTP's enhanced GRE and a
    # set routing bit the RFC 1701 source routes: neither is followed.
    if end - off < 4:
        raise DecodeError(f"truncated GRE header ({end - off} bytes)")
    flags, protocol = _U16_PAIR.unpack_from(data, off)
    if flags & 0x0007 or flags & _GRE_R:
        return None
    pos = off + 4 + 4 * (bool(flags & _GRE_C) + bool(flags & _GRE_K) + bool(flags & _GRE_S))
    if pos > end:
        raise DecodeError("truncated GRE optional fields")
    if protocol == ETHERTYPE_IPV4:
        return _ipv4(data, pos, end, vlans, 1)
    if protocol == ETHERTYPE_IPV6:
        return _ipv6(data, pos, end, vlans, 1)
    if protocol == _GRE_TEB:
        return _inner_ethernet(data, pos, end, vlans, "GRE")
    if protocol == _GRE_ERSPAN:
        # ERSPAN type II (draft-foschiano-erspan 4.1) has the sequence number and an
        # 8-byte header before the mirrored frame; type I has neither.
        return _inner_ethernet(data, pos + 8 if flags & _GRE_S else pos, end, vlans, "ERSPAN")
    return None
