"""Classic pcap out of TCP conversations: handshake, MSS-sized segments, FIN, interleaved.

A :class:`TcpConversation` is a list of application writes per side; :func:`tcp_frames`
turns one into Ethernet/IPv4-or-IPv6/TCP frames with consistent sequence and
acknowledgment numbers (RFC 9293 3.4): SYN, SYN-ACK, ACK, each write cut at the MSS with PSH
on its last segment, a pure ACK from the receiver every second segment (RFC 9293 3.8.6.3's
delayed ACK) and when the turn passes, then a FIN exchange. :func:`write_capture` merges
many conversations by time into one file while holding only the open ones in memory, so
a capture of any size streams to disk.

Addresses are whatever the conversation says (the scenarios use 10.0.0.0/8, 192.0.2.0/24
and 2001:db8::/32); this module writes a file and sends nothing. TCP checksums are left zero
(as on captures from NICs with checksum offload); IPv4 header checksums are computed.
"""

from __future__ import annotations

import heapq
import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

LINKTYPE_ETHERNET = 1
PCAP_MAGIC_US = 0xA1B2C3D4  # microsecond timestamps
SNAPLEN = 262_144
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD

_RECORD = struct.Struct("<IIII")
_TCP = struct.Struct("!HHIIBBHHH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")

Close = Literal["client_fin", "server_fin", "rst", "none"]
Write = tuple[int, bytes]
"""An application write: side (0 client, 1 server) and the bytes it sends."""


@dataclass(frozen=True, slots=True)
class TcpConversation:
    """One TCP connection to render. ``writes`` may be a generator: it is consumed only
    when the conversation's packets are due, which keeps a long capture's memory flat."""

    client: tuple[str, int]
    server: tuple[str, int]
    start: float
    writes: Iterable[Write]
    close: Close = "client_fin"
    isn: tuple[int, int] = (1_000_000, 2_000_000)


@dataclass(slots=True)
class CaptureStats:
    connections: int = 0
    packets: int = 0
    bytes: int = 0
    first: float | None = None
    last: float | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    """Capture time between a conversation's consecutive packets, in seconds."""

    packet_gap: float = 0.000_2
    mss: int = 1460


class PcapWriter:
    """A streaming writer of classic pcap (microsecond timestamps, Ethernet link type)."""

    def __init__(self, stream: BinaryIO, *, snaplen: int = SNAPLEN) -> None:
        self._stream = stream
        stream.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, snaplen,
                                 LINKTYPE_ETHERNET))

    def write(self, timestamp: float, frame: bytes) -> None:
        micros = round(timestamp * 1_000_000)
        seconds, micros = divmod(micros, 1_000_000)
        self._stream.write(_RECORD.pack(seconds, micros, len(frame), len(frame)))
        self._stream.write(frame)


def _mac(address: bytes) -> bytes:
    return b"\x02\x00" + address[-4:]  # locally administered, derived from the IP


class _Framer:
    """Builds frames for one conversation: the fixed headers are computed once."""

    __slots__ = ("_addrs", "_ip_sum", "_ipid", "_macs", "_ports", "_v6")

    def __init__(self, conv: TcpConversation) -> None:
        c, s = ipaddress.ip_address(conv.client[0]), ipaddress.ip_address(conv.server[0])
        if c.version != s.version:
            raise ValueError(f"client {c} and server {s} are not the same IP version")
        self._v6 = c.version == 6
        self._addrs = (c.packed, s.packed)
        self._ports = (conv.client[1], conv.server[1])
        ethertype = struct.pack("!H", ETHERTYPE_IPV6 if self._v6 else ETHERTYPE_IPV4)
        self._macs = (_mac(s.packed) + _mac(c.packed) + ethertype,
                      _mac(c.packed) + _mac(s.packed) + ethertype)
        # RFC 791 3.1 header checksum: the constant words' sum is kept, the length and
        # identification are added per packet.
        words = struct.unpack("!2H", c.packed) if not self._v6 else (0,)
        swords = struct.unpack("!2H", s.packed) if not self._v6 else (0,)
        self._ip_sum = 0x4500 + 0x4000 + 0x4006 + sum(words) + sum(swords)
        self._ipid = [0, 0]

    def frame(self, side: int, seq: int, ack: int, flags: int, payload: bytes,
              options: bytes = b"") -> bytes:
        src, dst = self._addrs[side], self._addrs[1 - side]
        sport, dport = self._ports[side], self._ports[1 - side]
        tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                        (5 + len(options) // 4) << 4, flags, 64240, 0, 0) + options + payload
        if self._v6:
            ip = _IPV6.pack(6 << 28, len(tcp), 6, 64, src, dst)
        else:
            total = 20 + len(tcp)
            ipid = self._ipid[side] = (self._ipid[side] + 1) & 0xFFFF
            s = self._ip_sum + total + ipid
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            ip = _IPV4.pack(0x45, 0, total, ipid, 0x4000, 64, 6, ~s & 0xFFFF, src, dst)
        return self._macs[side] + ip + tcp


def tcp_frames(conv: TcpConversation, timing: Timing = Timing()) -> Iterator[tuple[float, bytes]]:
    """The frames of one conversation with their capture times, in order."""
    f = _Framer(conv)
    mss, gap = timing.mss, timing.packet_gap
    t = conv.start
    nxt = [conv.isn[0], conv.isn[1]]  # next sequence number each side sends
    mss_option = struct.pack("!BBH", 2, 4, mss)  # RFC 9293 3.2 MSS option
    yield t, f.frame(0, nxt[0], 0, SYN, b"", mss_option)
    nxt[0] += 1
    t += gap
    yield t, f.frame(1, nxt[1], nxt[0], SYN | ACK, b"", mss_option)
    nxt[1] += 1
    t += gap
    yield t, f.frame(0, nxt[0], nxt[1], ACK, b"")
    unacked = 0
    last_side = 0
    for side, data in conv.writes:
        if side != last_side and unacked:
            unacked = 0  # the new sender's first segment carries the acknowledgment
        last_side = side
        for offset in range(0, len(data), mss):
            chunk = data[offset : offset + mss]
            flags = ACK | PSH if offset + mss >= len(data) else ACK
            t += gap
            yield t, f.frame(side, nxt[side], nxt[1 - side], flags, chunk)
            nxt[side] += len(chunk)
            unacked += 1
            if unacked == 2:
                t += gap
                yield t, f.frame(1 - side, nxt[1 - side], nxt[side], ACK, b"")
                unacked = 0
    if conv.close == "none":
        return
    if conv.close == "rst":
        t += gap
        yield t, f.frame(last_side, nxt[last_side], nxt[1 - last_side], RST | ACK, b"")
        return
    first = 0 if conv.close == "client_fin" else 1
    for side in (first, 1 - first):
        t += gap
        yield t, f.frame(side, nxt[side], nxt[1 - side], FIN | ACK, b"")
        nxt[side] += 1
    t += gap
    yield t, f.frame(first, nxt[first], nxt[1 - first], ACK, b"")


@dataclass(order=True)
class _Active:
    timestamp: float
    order: int
    frame: bytes = field(compare=False)
    rest: Iterator[tuple[float, bytes]] = field(compare=False)


def write_capture(
    path: str | Path,
    conversations: Iterable[TcpConversation],
    timing: Timing = Timing(),
) -> CaptureStats:
    """Write ``conversations`` (sorted by ``start``) into a pcap at ``path``, their packets
    merged by time; ties keep the order of the conversations. Memory holds the open
    conversations only. Raises ValueError when the input is not sorted by start."""
    stats = CaptureStats()
    heap: list[_Active] = []
    order = 0
    previous_start = float("-inf")
    with open(path, "wb", buffering=1 << 20) as stream:
        writer = PcapWriter(stream)
        pending = iter(conversations)
        upcoming = next(pending, None)
        while heap or upcoming is not None:
            if upcoming is not None and (not heap or upcoming.start <= heap[0].timestamp):
                if upcoming.start < previous_start:
                    raise ValueError("conversations must be sorted by start time")
                previous_start = upcoming.start
                if stats.first is None:
                    stats.first = upcoming.start
                frames = tcp_frames(upcoming, timing)
                ts, frame = next(frames)
                heapq.heappush(heap, _Active(ts, order, frame, frames))
                order += 1
                stats.connections += 1
                upcoming = next(pending, None)
                continue
            active = heapq.heappop(heap)
            writer.write(active.timestamp, active.frame)
            stats.packets += 1
            stats.bytes += len(active.frame)
            stats.last = active.timestamp
            following = next(active.rest, None)
            if following is not None:
                active.timestamp, active.frame = following
                heapq.heappush(heap, active)
    return stats
