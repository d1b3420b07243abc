"""Raw frame to UDP datagram, for the frames :func:`sensor.decode.decode_frame` found to
carry no TCP (the UDP handshake path: QUIC and DTLS).

Contract of :func:`decode_udp`: a frame whose IP payload is a UDP datagram gives a
:class:`UdpDatagram`; any other valid frame (ARP, ICMP, TCP, a non-first IP fragment) gives
``None``; malformed headers raise :class:`sensor.errors.DecodeError`. The payload is bounded
by the UDP length field (RFC 768) and by the IP length, so Ethernet padding is trimmed.

Scope: Ethernet with 802.1Q/QinQ tags, Linux cooked v1/v2, raw IP, BSD loopback; IPv4 and
IPv6 with its extension headers. Tunnels (GRE, VXLAN, GTP-U), MPLS and PPPoE, which the TCP
decoder follows, are not followed here. A first IP fragment whose datagram continues in
other fragments (MF set) is reported as ``fragmented``: IP reassembly is not done, so such
a datagram's payload is partial and callers skip it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from sensor.decode import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD12,
    LINKTYPE_RAW_BSD14,
    MAX_VLAN_TAGS,
    VLAN_TPIDS,
)
from sensor.errors import DecodeError

_PROTO_UDP = 17
_PROTO_FRAGMENT = 44
_IPV6_SKIPPED = frozenset({0, 43, 60, 135, 139, 140})  # RFC 8200 4.3-4.6 and the like
_IPV4 = struct.Struct("!BxH2xHxB2x4s4s")
_IPV6 = struct.Struct("!IHBx16s16s")
_UDP = struct.Struct("!HHH")
_U16 = struct.Struct("!H")


class UdpDatagram(NamedTuple):
    """One UDP datagram with the addresses of the IP packet that carried it."""

    src_addr: bytes
    dst_addr: bytes
    src_port: int
    dst_port: int
    payload: bytes
    vlans: tuple[int, ...]
    fragmented: bool = False


def decode_udp(linktype: int, data: bytes) -> UdpDatagram | None:
    """Decode one captured frame down to its UDP datagram; see the module docstring."""
    size = len(data)
    if linktype == LINKTYPE_ETHERNET:
        if size < 14:
            raise DecodeError(f"truncated Ethernet header ({size} bytes)")
        return _ethertype(_U16.unpack_from(data, 12)[0], data, 14)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14,
                    LINKTYPE_IPV4, LINKTYPE_IPV6):
        return _ip(data, 0, size, ())
    if linktype == LINKTYPE_LINUX_SLL and size >= 16:
        return _ethertype(_U16.unpack_from(data, 14)[0], data, 16)
    if linktype == LINKTYPE_LINUX_SLL2 and size >= 20:
        return _ethertype(_U16.unpack_from(data, 0)[0], data, 20)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP) and size >= 4:
        return _ip(data, 4, size, ())
    return None


def _ethertype(ethertype: int, data: bytes, off: int) -> UdpDatagram | None:
    vlans: tuple[int, ...] = ()
    while ethertype in VLAN_TPIDS:
        if len(vlans) >= MAX_VLAN_TAGS:
            raise DecodeError(f"more than {MAX_VLAN_TAGS} stacked VLAN tags")
        if len(data) - off < 4:
            raise DecodeError("truncated VLAN tag")
        tci, ethertype = struct.unpack_from("!HH", data, off)
        vlans = (*vlans, tci & 0x0FFF)  # IEEE 802.1Q 9.6: the VID is the low 12 bits
        off += 4
    if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return _ip(data, off, len(data), vlans)
    return None


def _ip(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> UdpDatagram | None:
    if off >= end:
        raise DecodeError("empty IP packet")
    version = data[off] >> 4
    if version == 4:
        return _ipv4(data, off, end, vlans)
    if version == 6:
        return _ipv6(data, off, end, vlans)
    raise DecodeError(f"IP version {version} is neither 4 nor 6")


def _ipv4(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> UdpDatagram | None:
    """IPv4 header (RFC 791 3.1)."""
    if end - off < 20:
        raise DecodeError(f"truncated IPv4 header ({end - off} bytes)")
    vihl, total, frag, proto, src, dst = _IPV4.unpack_from(data, off)
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or end - off < ihl:
        raise DecodeError(f"bad IPv4 header length {ihl}")
    if total:  # 0: segmentation offload, keep what was captured
        end = min(end, off + max(total, ihl))
    if proto != _PROTO_UDP or frag & 0x1FFF:
        return None
    return _udp(data, off + ihl, end, src, dst, vlans, bool(frag & 0x2000))


def _ipv6(data: bytes, off: int, end: int, vlans: tuple[int, ...]) -> UdpDatagram | None:
    """IPv6 header (RFC 8200 3) and its extension header chain (RFC 8200 4)."""
    if end - off < 40:
        raise DecodeError(f"truncated IPv6 header ({end - off} bytes)")
    _, plen, nxt, src, dst = _IPV6.unpack_from(data, off)
    off += 40
    if plen:
        end = min(end, off + plen)
    fragmented = False
    # Every extension header is at least 8 bytes, so this loop ends within the frame.
    while nxt != _PROTO_UDP:
        if nxt not in _IPV6_SKIPPED and nxt != _PROTO_FRAGMENT:
            return None
        if end - off < 8:
            raise DecodeError(f"truncated IPv6 extension header {nxt}")
        if nxt == _PROTO_FRAGMENT:
            offset_flags = _U16.unpack_from(data, off + 2)[0]
            if offset_flags & 0xFFF8:
                return None  # RFC 8200 4.5: only the first fragment has the UDP header
            fragmented = bool(offset_flags & 1)
            length = 8
        else:
            length = (data[off + 1] + 1) * 8
        nxt = data[off]
        off += length
        if off > end:
            raise DecodeError("truncated IPv6 extension header")
    return _udp(data, off, end, src, dst, vlans, fragmented)


def _udp(data: bytes, off: int, end: int, src: bytes, dst: bytes, vlans: tuple[int, ...],
         fragmented: bool) -> UdpDatagram:
    """UDP header (RFC 768): ports, length (header included), checksum."""
    if end - off < 8:
        raise DecodeError(f"truncated UDP header ({end - off} bytes)")
    sport, dport, length = _UDP.unpack_from(data, off)
    if length < 8 and not fragmented:
        # 0 is allowed for IPv6 jumbograms (RFC 2675 4); anything else below 8 is malformed.
        if length:
            raise DecodeError(f"UDP length {length} is below the header's 8 bytes")
    elif not fragmented:
        end = min(end, off + length)
    return UdpDatagram(src, dst, sport, dport, data[off + 8 : end], vlans, fragmented)
