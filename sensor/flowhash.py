"""Which of N workers owns a frame: a symmetric hash of the flow the sensor will see.

Pure and sans-IO. Contract of :func:`flow_owner`: for a frame the sensor decodes to a TCP
segment it returns :func:`endpoints_hash` ``% workers``, the same for both directions of a
connection (the two endpoints are added, and addition does not care about order) and in
every process (plain integer arithmetic, not ``hash()``, which is salted per process). For a frame
that is not a flow (not TCP over IP, malformed, a link type we do not decode) it returns
:data:`NOT_A_FLOW`: exactly one worker must account for such frames so totals add up.
It never raises: a malformed frame is :data:`NOT_A_FLOW` and the sensor reports it.

The flow is the one ``sensor.decode.decode_frame`` gives, so tunnelled traffic (GRE,
VXLAN, GTP-U, IP-in-IP) is placed by its inner addresses and ports, as the sensor keys
it. VLAN ids are left out: both directions carry the same ones, and the sensor keys the
flow by them within the worker anyway.

Speed (~0.6 µs a packet on the benchmark capture): untagged Ethernet/IPv4/TCP takes an
inline path with the checks of ``Sensor.process``'s own fast path (so the same flow), the
addresses unpacked straight to integers; anything else pays a full :func:`decode_frame`
and hashes the same integers, so a packet of one flow lands on one worker whichever path it
takes (an IPv4 total length of 0, segmentation offload, takes the general path).
"""

from __future__ import annotations

import struct

from sensor.decode import (
    ETHERTYPE_IPV4,
    LINKTYPE_ETHERNET,
    SUPPORTED_LINKTYPES,
    TCP_PORTS_FLAGS,
    decode_frame,
)
from sensor.errors import ParseError

__all__ = ["ETH_IPV4_ENDS", "GOLDEN", "NOT_A_FLOW", "PRIME", "endpoints_hash", "flow_owner"]

#: What :func:`flow_owner` returns for a frame that carries no TCP flow.
NOT_A_FLOW = -1
# EtherType, version/IHL, total length, fragment field, protocol, source, destination: the
# layout of ``sensor.decode.ETH_IPV4_TCP_HEAD`` with the addresses as integers.
_ETH_IPV4_HEAD = struct.Struct("!HBxH2xHxB2xII").unpack_from
#: The addresses (as integers) and ports of an untagged Ethernet/IPv4/TCP frame without IP
#: options, from offset 26: what ``Sensor.process_share_many`` hashes inline.
ETH_IPV4_ENDS = struct.Struct("!IIHH").unpack_from
PRIME = 4_294_967_291  # the largest prime below 2**32: folds IPv6-sized sums to 32 bits
GOLDEN = 2_654_435_761  # Knuth's multiplicative hash constant, 2**32 / phi


def endpoints_hash(src: int, dst: int, sport: int, dport: int) -> int:
    """A 16-bit hash of a connection's endpoints (addresses as integers), independent of
    direction: the two (address, port) numbers are summed, then mixed so that consecutive
    client ports and addresses spread over the workers."""
    total = (src << 16 | sport) + (dst << 16 | dport)
    # The top bits of the product depend on every bit of the sum (the low ones do not).
    # Sensor.process_share_many repeats this inline (as ((src + dst) << 16) + sport + dport,
    # the same sum: ports are below 2**16): keep the two the same.
    return ((total % PRIME) * GOLDEN & 0xFFFFFFFF) >> 16


def flow_owner(linktype: int, data: bytes, workers: int) -> int:
    """The worker (0..``workers``-1) owning this frame's flow, or :data:`NOT_A_FLOW`."""
    if linktype == LINKTYPE_ETHERNET and len(data) >= 54:
        ethertype, vihl, total, frag, proto, src, dst = _ETH_IPV4_HEAD(data, 12)
        if ethertype == ETHERTYPE_IPV4 and 0x45 <= vihl <= 0x4F and proto == 6 \
                and not frag & 0x1FFF:
            tcp = 14 + (vihl & 0x0F) * 4
            end = 14 + total
            if end > len(data):
                end = len(data)
            if tcp + 20 <= end:
                sport, dport, doff, _ = TCP_PORTS_FLAGS(data, tcp)
                if doff >= 0x50 and tcp + (doff >> 4) * 4 <= end:
                    return endpoints_hash(src, dst, sport, dport) % workers
    if linktype not in SUPPORTED_LINKTYPES:
        return NOT_A_FLOW
    try:
        segment = decode_frame(linktype, data)
    except ParseError:  # DecodeError: the sensor reports it (on the NOT_A_FLOW worker)
        return NOT_A_FLOW
    if segment is None:
        return NOT_A_FLOW
    return endpoints_hash(int.from_bytes(segment.src_addr, "big"),
                          int.from_bytes(segment.dst_addr, "big"),
                          segment.src_port, segment.dst_port) % workers
