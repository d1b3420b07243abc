"""Flood scenarios: hostile traffic a tap sees, with a few real handshakes mixed in.

Each flood is a stream of frames computed on the fly (a million flows are never held in
memory), merged by capture time with the frames of the scenario's legitimate connections,
which a sensor must still report while it is flooded:

``flood-half-open``
    ``size`` flows that never complete: even ones a lone SYN, odd ones SYN, SYN-ACK, then
    the first 60 bytes of a ClientHello record (a hello recognised, never finished), to
    100 servers, 50,000 new flows per second of capture time.
``flood-syn``
    ``size`` SYNs from spoofed sources to one server (192.0.2.10:443), 50,000 per second;
    the legitimate handshakes go to that same server.
``flood-claim-16mb``
    ``size`` connections whose length fields claim more than any bound: a record header
    claiming 65,535 bytes (RFC 8446 5.1 caps records at 2^14 + 256), a ClientHello header
    claiming 2^24 - 1 bytes (16 MiB, RFC 8446 4's u24), and a server Certificate header
    claiming 16 MiB; each is followed by 64 KiB of what it claims. The first connection
    then really sends the 16 MiB ClientHello it announced.
``flood-one-byte``
    ``size`` segments of one byte each, round-robin over 4 client connections, each a
    ClientHello announcing 2^18 bytes (the parser's largest accepted message) padded by
    RFC 7685 padding: it is buffered and never completes within ``size`` bytes (the flood
    ends early if a stream runs out, past ~1,049,000 segments).
``flood-fill-buffers``
    ``size`` connections that each fill the buffers a sensor keeps per flow and then go
    quiet: a ClientHello announcing 2^18 bytes (as above) of which ``FILL_IN_ORDER`` bytes
    are sent in order (a partial handshake message to hold), then, after a hole of one
    segment, ``FILL_OUT_OF_ORDER`` bytes (out-of-order data to hold). Every buffer stays
    within its per-flow bound; only their sum across flows grows (``size`` x ~192 KiB).
    One connection every ``FILL_SPACING`` seconds.

Addresses: flooding clients come from 10.128.0.0/9, flooded servers are 192.0.2.100-199
(192.0.2.10 for the SYN flood); legitimate connections use ``scenarios``' addresses.
"""

from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tools.tlsgen import handshake as hs
from tools.tlsgen.pcap import (
    ACK,
    PSH,
    SYN,
    CaptureStats,
    PcapWriter,
    TcpConversation,
    Timing,
    tcp_frames,
)

FloodKind = Literal["half-open", "syn", "claim-16mb", "one-byte", "fill-buffers"]

#: Scenario name -> (kind, description, default size).
FLOODS: dict[str, tuple[FloodKind, str, int]] = {
    "flood-half-open": ("half-open", "N half-open flows (SYN only, or SYN, SYN-ACK and a "
                        "partial ClientHello) with 4 real handshakes", 1_000_000),
    "flood-syn": ("syn", "N spoofed SYNs to one server that also completes 4 real handshakes",
                  1_000_000),
    "flood-claim-16mb": ("claim-16mb", "N connections whose record/handshake lengths claim "
                         "up to 16 MiB, with 4 real handshakes", 300),
    "flood-one-byte": ("one-byte", "N one-byte segments of 4 ClientHellos that never "
                       "complete, with 4 real handshakes", 1_000_000),
    "flood-fill-buffers": ("fill-buffers", "N connections each holding ~192 KiB in a "
                           "sensor's buffers (partial hello, out-of-order data), with 4 real "
                           "handshakes", 1_000),
}
FLOWS_PER_SECOND = 50_000.0  # new flows (or SYNs) per second of capture time
CLAIM_FOLLOW = 64 * 1024  # bytes sent after each false claim
CLAIM_SPACING = 0.05  # seconds between the starts of two claim connections
ONE_BYTE_FLOWS = 4
ONE_BYTE_GAP = 0.000_05  # seconds between two one-byte segments
ONE_BYTE_HELLO_LENGTH = 2**18  # sensor.tls.records.DEFAULT_MAX_HANDSHAKE_LENGTH
FILL_IN_ORDER = 128 * 1024  # bytes of the announced ClientHello sent in order
FILL_OUT_OF_ORDER = 64 * 1024  # bytes sent after a hole of one segment
FILL_SPACING = 0.01  # seconds between the starts of two filling connections
LEGIT = 4
SYN_TARGET = ("192.0.2.10", 443)

_TCP = struct.Struct("!HHIIBBHHH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)  # RFC 9293 3.2


@dataclass(frozen=True, slots=True)
class Flood:
    """One flood: its kind, its size (flows, SYNs, connections or segments, see the module
    docstring) and when it starts (capture time, seconds since the epoch)."""

    kind: FloodKind
    size: int
    start: float

    @property
    def duration(self) -> float:
        """Capture seconds the flood lasts (the legitimate connections fall inside)."""
        if self.kind in ("half-open", "syn"):
            return self.size / FLOWS_PER_SECOND
        if self.kind == "claim-16mb":
            return 3.0 + self.size * CLAIM_SPACING  # the honest 16 MiB connection first
        if self.kind == "fill-buffers":
            return self.size * FILL_SPACING
        return self.size * ONE_BYTE_GAP

    def legit_offsets(self) -> list[float]:
        """Start offsets (seconds after ``start``) of the legitimate connections: spread
        over the flood, so that they are parsed while the flood is at its height."""
        return [self.duration * (i + 1) / (LEGIT + 1) for i in range(LEGIT)]

    def frames(self) -> Iterator[tuple[float, bytes]]:
        """The flood's frames in capture-time order, computed lazily."""
        if self.kind == "half-open":
            return _half_open(self)
        if self.kind == "syn":
            return _syn_flood(self)
        if self.kind == "claim-16mb":
            return _claims(self)
        if self.kind == "fill-buffers":
            return _fill_buffers(self)
        return _one_byte(self)


def flood_spec(name: str, size: int | None, start: float) -> Flood:
    """The flood of scenario ``name`` (a key of :data:`FLOODS`). Raises KeyError."""
    kind, _description, default = FLOODS[name]
    return Flood(kind, size if size is not None else default, start)


# -- frames -------------------------------------------------------------------------------


def _ip(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def _flooder(i: int) -> tuple[bytes, int]:
    """The i-th flooding client: 10.128.0.0/9 (2^23 addresses), then another port."""
    n = i % (1 << 23)
    return bytes((10, 128 | n >> 16, (n >> 8) & 0xFF, n & 0xFF)), 1024 + (i >> 23) % 60000


def _frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"", options: bytes = b"") -> bytes:
    """Ethernet + IPv4 + TCP; the IPv4 header checksum is computed (RFC 791 3.1), the TCP
    checksum left zero as on a capture from a NIC with checksum offload."""
    tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                    (5 + len(options) // 4) << 4, flags, 64240, 0, 0) + options + payload
    header = _IPV4.pack(0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return b"\x02\x00" + dst + b"\x02\x00" + src + b"\x08\x00" + header + tcp


class _Conn:
    """Sequence-number bookkeeping for one connection drawn by hand."""

    __slots__ = ("addrs", "nxt", "ports")

    def __init__(self, client: tuple[bytes, int], server: tuple[bytes, int], isn: int) -> None:
        self.addrs = (client[0], server[0])
        self.ports = (client[1], server[1])
        self.nxt = [isn, isn ^ 0x5A5A5A5A]

    def syn(self, side: int) -> bytes:
        flags = SYN if side == 0 else SYN | ACK
        frame = self.segment(side, flags, b"", _MSS_OPTION, ack=side == 1)
        self.nxt[side] = (self.nxt[side] + 1) & 0xFFFFFFFF
        return frame

    def segment(self, side: int, flags: int, payload: bytes, options: bytes = b"",
                *, ack: bool = True) -> bytes:
        frame = _frame(self.addrs[side], self.addrs[1 - side], self.ports[side],
                       self.ports[1 - side], self.nxt[side],
                       self.nxt[1 - side] if ack else 0, flags, payload, options)
        self.nxt[side] = (self.nxt[side] + len(payload)) & 0xFFFFFFFF
        return frame


def _partial_hello() -> bytes:
    hello = hs.records(hs.HANDSHAKE, hs.TLS10, hs.client_hello(
        random.Random("tlsgen-flood-hello"), cipher_suites=(0xC02F, 0x1301),
        server_name="half-open.example.com"))
    return hello[:60]


def _half_open(flood: Flood) -> Iterator[tuple[float, bytes]]:
    partial, gap = _partial_hello(), 1.0 / FLOWS_PER_SECOND
    for i in range(flood.size):
        t = flood.start + i * gap
        conn = _Conn(_flooder(i), (bytes((192, 0, 2, 100 + i % 100)), 443), i * 7919)
        yield t, conn.syn(0)
        if i % 2:
            yield t + gap / 3, conn.syn(1)
            yield t + 2 * gap / 3, conn.segment(0, ACK | PSH, partial)


def _syn_flood(flood: Flood) -> Iterator[tuple[float, bytes]]:
    gap, server = 1.0 / FLOWS_PER_SECOND, (_ip(SYN_TARGET[0]), SYN_TARGET[1])
    for i in range(flood.size):
        # Spoofed sources: a multiplicative hash spreads them over 10.128.0.0/9 and ports.
        conn = _Conn(_flooder((i * 2_654_435_761) % (1 << 31)), server, i * 104_729)
        yield flood.start + i * gap, conn.syn(0)


def _claim_connection(variant: int, start: float, follow: int,
                      index: int) -> Iterator[tuple[float, bytes]]:
    """One connection making claim ``variant`` (0 record, 1 ClientHello, 2 Certificate)
    and then sending ``follow`` bytes of what it claimed, in 1460-byte segments."""
    rng = random.Random(f"tlsgen-claim:{index}")
    conn = _Conn(_flooder(index), (bytes((192, 0, 2, 100 + index % 100)), 443), index * 31)
    t, gap = start, 0.000_2
    for frame in (conn.syn(0), conn.syn(1), conn.segment(0, ACK, b"")):
        yield t, frame
        t += gap
    side = 0
    stream: Iterator[bytes]
    if variant == 0:  # RFC 8446 5.1: a record's length must not exceed 2^14 (+256)
        stream = iter((b"\x16\x03\x01\xff\xff\x01\x00\xff\xfb", rng.randbytes(follow)))
    elif variant == 1:  # a u24 handshake length of 2^24 - 1 (RFC 8446 4)
        stream = _records(b"\x01\xff\xff\xff\x03\x03", 4 + follow)
    else:
        hello = hs.records(hs.HANDSHAKE, hs.TLS10, hs.client_hello(
            rng, cipher_suites=(0xC02F,), server_name=f"claim{index}.example.com"))
        yield t, conn.segment(0, ACK | PSH, hello)
        t += gap
        server_hello = hs.server_hello(rng, version=hs.TLS12, cipher_suite=0xC02F)
        side = 1
        stream = _records(server_hello + b"\x0b\xff\xff\xff", len(server_hello) + 4 + follow)
    for segment in _segments(stream, 1460):
        yield t, conn.segment(side, ACK | PSH, segment)
        t += gap


def _records(head: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of handshake messages, ``head`` then zeros, as records of 2^14
    bytes (RFC 8446 5.1), one record at a time: 16 MiB is never held at once."""
    for offset in range(0, total, hs.MAX_FRAGMENT):
        size = min(hs.MAX_FRAGMENT, total - offset)
        chunk = head[offset : offset + size]
        yield hs.record(hs.HANDSHAKE, hs.TLS12, chunk + bytes(size - len(chunk)))


def _segments(chunks: Iterable[bytes], mss: int) -> Iterator[bytes]:
    """The bytes of ``chunks`` re-cut into pieces of ``mss`` (the last may be shorter)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while len(pending) >= mss:
            yield pending[:mss]
            pending = pending[mss:]
    if pending:
        yield pending


def _claims(flood: Flood) -> Iterator[tuple[float, bytes]]:
    # The honest claimant first: a ClientHello header of 16 MiB followed by all of it,
    # so the sensor sees the claim made good and must still not buffer it.
    yield from _claim_connection(1, flood.start, (1 << 24) - 1 - 2, 0)
    for i in range(flood.size):
        yield from _claim_connection(i % 3, flood.start + 3.0 + i * CLAIM_SPACING,
                                     CLAIM_FOLLOW, i + 1)


def _one_byte_stream(index: int) -> Iterator[int]:
    """The bytes of one slow client (:func:`_long_hello`), one at a time."""
    for record in _long_hello(f"tlsgen-one-byte:{index}", f"slow{index}.example.com"):
        yield from record


def _long_hello(seed: str, server_name: str) -> Iterator[bytes]:
    """The records of a ClientHello whose header announces ONE_BYTE_HELLO_LENGTH bytes (the
    parser's bound, accepted) and whose extensions end in RFC 7685 padding filling the u16
    extensions block; zeros follow up to the announced length, as records of 2^14 bytes.
    Only a parser that waited for all 2^18 bytes could find the trailing zeros wrong."""
    body = hs.client_hello(random.Random(seed), cipher_suites=(0xC02F,),
                           server_name=server_name)[4:]
    at = _extensions_at(body)
    extensions = body[at + 2 :]
    padding = 0xFFFF - len(extensions) - 4
    head = (b"\x01" + ONE_BYTE_HELLO_LENGTH.to_bytes(3, "big") + body[:at] + b"\xff\xff"
            + extensions + b"\x00\x15" + padding.to_bytes(2, "big"))
    return _records(head, 4 + ONE_BYTE_HELLO_LENGTH)


def _extensions_at(body: bytes) -> int:
    """Offset of the extensions' length in a ClientHello body (RFC 8446 4.1.2)."""
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    return pos + 1 + body[pos]


def _one_byte(flood: Flood) -> Iterator[tuple[float, bytes]]:
    conns = [_Conn(_flooder(i), (bytes((192, 0, 2, 100 + i)), 443), i * 65_537)
             for i in range(ONE_BYTE_FLOWS)]
    streams = [_one_byte_stream(i) for i in range(ONE_BYTE_FLOWS)]
    t = flood.start
    for conn in conns:
        for frame in (conn.syn(0), conn.syn(1), conn.segment(0, ACK, b"")):
            yield t, frame
            t += ONE_BYTE_GAP
    for n in range(flood.size):
        k = n % ONE_BYTE_FLOWS
        byte = next(streams[k], None)
        if byte is None:
            return
        yield t + n * ONE_BYTE_GAP, conns[k].segment(0, ACK | PSH, bytes((byte,)))


def _fill_connection(index: int, start: float) -> Iterator[tuple[float, bytes]]:
    """One connection filling its buffers (see the module docstring), then going quiet."""
    conn = _Conn(_flooder(index), (bytes((192, 0, 2, 100 + index % 100)), 443), index * 131)
    t, gap = start, 0.000_01
    for frame in (conn.syn(0), conn.syn(1), conn.segment(0, ACK, b"")):
        yield t, frame
        t += gap
    hello = _long_hello(f"tlsgen-fill:{index}", f"fill{index}.example.com")
    segments = _segments(hello, 1460)
    sent = 0
    for segment in segments:  # in order: the record parser holds the partial message
        yield t, conn.segment(0, ACK | PSH, segment)
        t += gap
        sent += len(segment)
        if sent >= FILL_IN_ORDER:
            break
    hole = next(segments)
    conn.nxt[0] = (conn.nxt[0] + len(hole)) & 0xFFFFFFFF  # never sent: a hole
    sent = 0
    for segment in segments:  # beyond the hole: the reassembler holds them
        yield t, conn.segment(0, ACK | PSH, segment)
        t += gap
        sent += len(segment)
        if sent >= FILL_OUT_OF_ORDER:
            break


def _fill_buffers(flood: Flood) -> Iterator[tuple[float, bytes]]:
    for i in range(flood.size):
        yield from _fill_connection(i, flood.start + i * FILL_SPACING)


# -- the capture ------------------------------------------------------------------------


def write_flood(path: str | Path, flood: Flood, legit: Iterable[TcpConversation],
                timing: Timing | None = None) -> CaptureStats:
    """Write the flood merged by time with the ``legit`` conversations (few: their frames
    are held, the flood's are streamed) into a pcap at ``path``."""
    timing = timing or Timing()
    held = sorted(((t, n, frame) for n, conv in enumerate(legit)
                   for t, frame in tcp_frames(conv, timing)), key=lambda x: (x[0], x[1]))
    stats = CaptureStats(connections=len({n for _t, n, _f in held}))
    merged = heapq.merge(((t, f) for t, _n, f in held), flood.frames(), key=lambda x: x[0])
    with open(path, "wb", buffering=1 << 20) as stream:
        writer = PcapWriter(stream)
        for t, frame in merged:
            writer.write(t, frame)
            stats.packets += 1
            stats.bytes += len(frame)
            if stats.first is None:
                stats.first = t
            stats.last = t
    return stats
