"""The sensor: frames in, events out. Sans-IO; the app shell reads captures and publishes.

The per-packet path is deliberately short: decode the headers from raw bytes, one dict
lookup, two counter increments, and for the great majority of packets (flows whose
handshake is over, or that are not TLS) nothing more. Only flows still in their handshake
pay for reassembly and parsing.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count, islice
from struct import error as struct_error
from typing import TYPE_CHECKING

from schemas.events import SensorEvent
from sensor.anomalies import Anomaly, AnomalyCounter
from sensor.build import EventBuilder
from sensor.config import SensorConfig
from sensor.decode import (
    ETH_IPV4_ADDRS,
    ETH_IPV4_ADDRS_TCP,
    ETH_IPV4_TCP_ALL,
    ETH_IPV4_TCP_FLAGS,
    ETH_IPV4_TCP_WORDS,
    ETHERTYPE_IPV4,
    LINKTYPE_ETHERNET,
    SUPPORTED_LINKTYPES,
    TCP_PORTS_FLAGS,
    TCP_PORTS_SEQ_ACK,
    TCP_SEQ_ACK,
    TcpSegment,
    decode_frame,
)
from sensor.errors import DecodeError, ParseError
from sensor.flowhash import (
    ETH_IPV4_ENDS,
    GOLDEN,
    NOT_A_FLOW,
    PRIME,
    endpoints_hash,
    flow_owner,
)
from sensor.flows import (
    CLIENT_IS_1,
    CLIENT_KNOWN,
    NO_PREFIX,
    NO_START,
    SELF_KEYS,
    Flow,
    FlowKey,
    FlowParse,
    FlowState,
    FlowTable,
    flow_key,
)
from sensor.reassembly import StreamReassembler
from sensor.session import Side, TlsSession
from sensor.traffic import LIMIT_ANOMALY, TrafficStats, limit_detail, to_events
from sensor.udp_sessions import UdpSensor

if TYPE_CHECKING:
    from sensor.pcapfile import Buffer, PcapRecordFormat

log = logging.getLogger("certwatch.sensor")

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SEQ_MASK = 0xFFFFFFFF
SWEEP_EVERY = 1.0  # seconds of capture time between idle-flow sweeps
EARLY_SEGMENTS = 8  # out-of-order segments kept per flow while looking for a hello
MAX_ACK_PADDING = 6  # see is_ack_padding
HELLO_PREFIX = 6  # bytes needed to tell a hello: record header (5) + handshake type (1)
#: Anomaly kind of a handshake message parsed despite a departure from its grammar.
IRREGULAR_HANDSHAKE = "tls_handshake_irregular"
#: Anomaly kind of a flow that started like TLS and ended before any hello was complete.
HELLO_INCOMPLETE = "tls_hello_incomplete"
#: Anomaly kind of a flow whose buffers were dropped because all flows together held more
#: than ``SensorConfig.max_buffered_bytes``.
BUDGET_EXCEEDED = "buffer_budget_exceeded"
#: Keys of other workers' flows a worker's sensor remembers (process_share_many): ~100 bytes
#: each; the cache is emptied when full, which costs only hashing again.
OTHERS_KEPT = 65_536
# Enum members as module constants: ``FlowState.CLOSED`` is a class attribute lookup through
# the enum's metaclass (~75 ns here), several per segment on the handshake path.
_DETECTING, _HANDSHAKE = FlowState.DETECTING, FlowState.HANDSHAKE
_COUNTING, _CLOSED = FlowState.COUNTING, FlowState.CLOSED
_FIN_RST, _FIN_SYN_RST = FIN | RST, FIN | SYN | RST
# The four-word test (sensor.decode.ETH_IPV4_TCP_WORDS): EtherType 0x0800 and version 4 /
# IHL 5; fragment offset 0 and protocol 6 (TCP).
_ETH_IPV4_IHL5, _FRAG_PROTO, _TCP_FIRST = 0x080045, 0x1FFF00FF, 6
# _SHORT_JUMPS: the per-packet tests of the inlined fast paths are written inverted, the
# frame not taken handled right under the test (``if x != y: <other frames>`` then the fast
# path, not ``if x == y: <fast path>``): CPython 3.11 specializes a compare (to an int or
# float compare fused with its jump, COMPARE_OP_INT_JUMP) only when the jump follows it
# directly, and a jump past 255 code units needs an EXTENDED_ARG in between, which leaves
# the compare generic (a rich compare call, ~50 instructions more) for every packet. A fast
# path is that long; the traffic split's key compare pushed the header tests over the edge
# (tests/sensor/test_fast_path.py checks that no per-packet compare is left so).
_new_segment = tuple.__new__  # a TcpSegment without the class call (as sensor.decode does)
_NO_VLANS: tuple[int, ...] = ()
_CLIENT, _SERVER = Side.CLIENT, Side.SERVER
_from_bytes = int.from_bytes
#: For a pcap record read in place (Sensor.process_pcap_records): the four words of
#: sensor.decode.ETH_IPV4_TCP_WORDS and, between them, the flow key (frame bytes 26-38:
#: addresses then ports, sensor.flows.flow_key), from the offset of the record's 16-byte
#: header. Needs a frame of 48 bytes or more.
_RECORD_WORDS_KEY = struct.Struct("!28xIH2xI2x12s8xH").unpack_from


def seq_after(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (RFC 1982 serial arithmetic)."""
    return 0 < ((a - b) & SEQ_MASK) < 0x80000000


def _held_bytes(flow: Flow) -> int:
    return flow.buffered


def _fast_segment(data: bytes, tcp: int, flags: int, start: int, end: int) -> TcpSegment:
    """The segment of an untagged Ethernet/IPv4/TCP frame the fast path has checked, from
    its TCP header offset, flags and payload bounds."""
    if tcp == 34:
        src, dst, sport, dport, seq, ack = ETH_IPV4_ADDRS_TCP(data, 26)
    else:  # IPv4 options
        src, dst = ETH_IPV4_ADDRS(data, 26)
        sport, dport, seq, ack = TCP_PORTS_SEQ_ACK(data, tcp)
    return _new_segment(TcpSegment, (
        src, dst, sport, dport, seq, ack, flags, data[start:end], _NO_VLANS,
    ))


def hello_role(payload: bytes) -> Side | None:
    """Who sent this first payload, if it opens with a hello: a TLS handshake record holding
    a ClientHello or ServerHello (RFC 8446 5.1), or an SSLv2-format ClientHello (RFC 6101
    E.1: 2-byte header with the high bit set, message type 1)."""
    if len(payload) >= 6 and payload[0] == 0x16 and payload[1] == 3 and payload[2] <= 4:
        if payload[5] == 1:
            return _CLIENT
        if payload[5] == 2:
            return _SERVER
        return None
    if len(payload) >= 5 and payload[0] & 0x80 and payload[2] == 1 and payload[3] in (0, 3):
        return _CLIENT
    return None


def is_ack_padding(flags: int, payload: bytes) -> bool:
    """Whether a segment may be a bare ACK whose sender padded it with zero bytes counted
    in the IP length: flags ACK alone, 1..6 bytes (what pads a 54-byte frame to Ethernet's
    60-byte minimum), all zero. heuristic_tcp_ack_payload.pcap has such ACKs at the
    sequence number of the data that follows; taken as stream bytes they would put a
    record of content type 0 in front of a ServerHello. Such a segment is held back, not
    dropped: see ``Sensor._handshake_segment``."""
    return flags == ACK and 0 < len(payload) <= MAX_ACK_PADDING and not any(payload)


@dataclass(slots=True)
class SensorStats:
    """What the end-of-run summary and the metrics report."""

    packets: int = 0
    bytes: int = 0  # captured frame bytes (link layer included), as a capture tool counts them
    not_tcp: int = 0
    tls_flows: int = 0
    not_tls_flows: int = 0
    handshakes: Counter[str] = field(default_factory=Counter)
    established: int = 0
    certificates: int = 0


class Sensor:
    """Turns captured frames into handshake, certificate and anomaly events.

    Call :meth:`process` for every frame in capture order, take the events from
    :meth:`drain` whenever convenient, and call :meth:`finish` at the end of the input so
    unfinished handshakes are reported.
    """

    def __init__(self, config: SensorConfig | None = None) -> None:
        self.config = config or SensorConfig()
        self.flows = FlowTable(self.config.max_flows)
        # The global buffer budget: bytes held in every flow's buffers (each flow's share is
        # Flow.buffered), and the flows holding any (see _account).
        self.buffered = 0
        self._holders: dict[Flow, None] = {}
        self.stats = SensorStats()
        self.anomalies = AnomalyCounter(self.config.anomaly_report_interval)
        self.builder = EventBuilder(self.config)
        self._flow_entry = self.flows.entry_getter()
        # Flow keys of frames another worker owns (process_share_many): a cache, not state.
        self._others: dict[bytes, None] = {}
        #: How many records the last :meth:`process_pcap_records` call took (its return
        #: value is an offset; a worker numbers frames by this count).
        self.records_taken = 0
        self.now = 0.0
        self._next_sweep = 0.0
        self._events: list[SensorEvent] = []
        # QUIC and DTLS handshakes, fed only frames without TCP (see sensor.udp_sessions).
        # certwatch.traffic.stats: taken at interval boundaries and flow ends, never per
        # packet (sensor.traffic); None when SensorConfig.stats_interval is 0.
        self.traffic = (TrafficStats(self.config.stats_interval, self.config.max_stats_endpoints)
                        if self.config.stats_interval > 0 else None)
        self.udp = UdpSensor(self.config, self.builder, self.anomalies, self.stats, self._events,
                             traffic=self.traffic)
        self._timeouts = {
            FlowState.DETECTING: self.config.handshake_timeout,
            FlowState.HANDSHAKE: self.config.handshake_timeout,
            FlowState.COUNTING: self.config.idle_timeout,
            FlowState.CLOSED: self.config.closed_linger,
        }

    @property
    def pending(self) -> int:
        return len(self._events)

    @property
    def queue(self) -> list[SensorEvent]:
        """The list events are appended to, the same object for the sensor's lifetime (a
        replay loop tests it for emptiness per packet instead of calling :attr:`pending`).
        Read-only for callers: take events with :meth:`drain`."""
        return self._events

    def drain(self) -> list[SensorEvent]:
        """The events produced since the last call, in the order they happened."""
        events = self._events[:]
        self._events.clear()
        return events

    def process(self, timestamp: float, linktype: int, data: bytes) -> None:
        """Account for one captured frame."""
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(data)
        if timestamp > self.now:
            self.now = timestamp
            if timestamp >= self._next_sweep:
                self._sweep(timestamp)
        size = len(data)
        # inverted: a short jump (see _SHORT_JUMPS)
        if linktype != LINKTYPE_ETHERNET or size < 54:
            self._frame(timestamp, linktype, data)
            return
        # Fast path for the bulk of tap traffic, untagged Ethernet/IPv4/TCP with no IP
        # options, tested in four words (sensor.decode.ETH_IPV4_TCP_WORDS). The checks
        # are those of decode_frame's own fast path, so a packet taken here is one
        # decode_frame would decode to the same segment. A packet of a flow that is only
        # counted, or a bare ACK (no payload, no SYN/FIN/RST: nothing for detection or
        # reassembly, whatever the state), needs no segment or payload copy: only its
        # key and payload length. Any other segment of this shape is built here from the
        # fields already unpacked and handed to _segment with its flow, so it is neither
        # decoded nor looked up twice. Other frames go the general way (_frame).
        head, total, frag_proto, tcp_word = ETH_IPV4_TCP_WORDS(data, 12)
        # inverted: a short jump (see _SHORT_JUMPS)
        if head >> 8 != _ETH_IPV4_IHL5 or frag_proto & _FRAG_PROTO != _TCP_FIRST:
            self._frame(timestamp, linktype, data)
            return
        end = 14 + total
        if end > size:
            end = size
        # The data offset is at least 5 words (RFC 9293 3.1), so start <= end
        # also says the TCP header (20 bytes at 34) was captured.
        start = 34 + (tcp_word >> 12) * 4
        if tcp_word >= 0x5000 and start <= end:
            key = data[26:38]  # the flow key (sensor.flows.flow_key)
            flow = self._flow_entry(key)
            if flow is not None:
                state = flow.state
                if (
                    (state is _COUNTING and not tcp_word & _FIN_RST)
                    or (state is _CLOSED and not tcp_word & SYN)
                    or (start == end and not tcp_word & _FIN_SYN_RST)
                ):
                    if key == flow.fkey:  # direction 0 (Flow.packets0)
                        flow.packets0 += 1
                        flow.bytes0 += end - start
                    else:
                        flow.packets1 += 1
                        flow.bytes1 += end - start
                    flow.last_seen = timestamp
                    return
            self._segment(key, flow, _fast_segment(data, 34, tcp_word & 0xFF, start, end),
                          timestamp)
            return
        self._frame(timestamp, linktype, data)

    def _frame(self, timestamp: float, linktype: int, data: bytes) -> None:
        """A frame the four-word test of :meth:`process` does not take: Ethernet/IPv4/TCP
        with IP options is still taken without decode_frame (the same checks, field by
        field), anything else goes to :meth:`_general`. Counters and clock are the
        caller's."""
        if linktype == LINKTYPE_ETHERNET and len(data) >= 54:
            ethertype, vihl, total, frag, proto, doff, flags = ETH_IPV4_TCP_FLAGS(data, 12)
            if (
                ethertype == ETHERTYPE_IPV4
                and 0x45 <= vihl <= 0x4F
                and proto == 6
                and not frag & 0x1FFF
            ):
                tcp = 14 + (vihl & 0x0F) * 4
                end = 14 + total
                if end > len(data):
                    end = len(data)
                if tcp + 20 <= end:
                    if vihl != 0x45:  # IPv4 options: the TCP header is further on
                        _, _, doff, flags = TCP_PORTS_FLAGS(data, tcp)
                    start = tcp + (doff >> 4) * 4
                    if doff >= 0x50 and start <= end:
                        # The flow key (sensor.flows.flow_key): addresses then ports.
                        key = data[26:38] if tcp == 34 else data[26:34] + data[tcp : tcp + 4]
                        flow = self._flow_entry(key)
                        if flow is not None:
                            state = flow.state
                            if (
                                (state is _COUNTING and not flags & _FIN_RST)
                                or (state is _CLOSED and not flags & SYN)
                                or (start == end and not flags & _FIN_SYN_RST)
                            ):
                                if key == flow.fkey:  # direction 0 (Flow.packets0)
                                    flow.packets0 += 1
                                    flow.bytes0 += end - start
                                else:
                                    flow.packets1 += 1
                                    flow.bytes1 += end - start
                                flow.last_seen = timestamp
                                return
                        self._segment(key, flow, _fast_segment(data, tcp, flags, start, end),
                                      timestamp)
                        return
        self._general(timestamp, linktype, data)

    def process_share(
        self, timestamp: float, linktype: int, data: bytes, workers: int, index: int
    ) -> None:
        """:meth:`process` for worker ``index`` of ``workers`` sharing one capture by flow:
        a frame of this worker's flow (``sensor.flowhash.flow_owner``; frames that are no
        flow belong to worker 0) is processed, any other only lets capture time pass
        (:meth:`advance`) and is not counted.

        The same as calling ``flow_owner`` and then :meth:`process` or :meth:`advance`, but
        an untagged Ethernet/IPv4/TCP frame is unpacked once for both (the owner test sits
        in :meth:`process`'s fast path, whose header checks are ``flow_owner``'s), so a
        worker pays ~0.2 µs, not ~0.6 µs, for each frame of another worker's flow
        (tests/sensor/test_flow_hash.py compares the two)."""
        size = len(data)
        if linktype == LINKTYPE_ETHERNET and size >= 54:
            ethertype, vihl, total, frag, proto, src, dst, sport, dport, doff, flags = (
                ETH_IPV4_TCP_ALL(data, 12))
            if (
                ethertype == ETHERTYPE_IPV4
                and 0x45 <= vihl <= 0x4F
                and proto == 6
                and not frag & 0x1FFF
            ):
                tcp = 14 + (vihl & 0x0F) * 4
                end = 14 + total
                if end > size:
                    end = size
                if tcp + 20 <= end:
                    if vihl != 0x45:  # IPv4 options: the TCP header is further on
                        sport, dport, doff, flags = TCP_PORTS_FLAGS(data, tcp)
                    start = tcp + (doff >> 4) * 4
                    if doff >= 0x50 and start <= end:
                        if endpoints_hash(_from_bytes(src, "big"), _from_bytes(dst, "big"),
                                          sport, dport) % workers != index:
                            if timestamp > self.now:
                                self.advance(timestamp)
                            return
                        # From here on, process()'s fast path (keep the two the same).
                        stats = self.stats
                        stats.packets += 1
                        stats.bytes += size
                        if timestamp > self.now:
                            self.now = timestamp
                            if timestamp >= self._next_sweep:
                                self._sweep(timestamp)
                        key = src + dst + data[tcp : tcp + 4]  # sensor.flows.flow_key
                        flow = self._flow_entry(key)
                        if flow is not None:
                            state = flow.state
                            if (
                                (state is _COUNTING and not flags & _FIN_RST)
                                or (state is _CLOSED and not flags & SYN)
                                or (start == end and not flags & _FIN_SYN_RST)
                            ):
                                if key == flow.fkey:  # direction 0 (Flow.packets0)
                                    flow.packets0 += 1
                                    flow.bytes0 += end - start
                                else:
                                    flow.packets1 += 1
                                    flow.bytes1 += end - start
                                flow.last_seen = timestamp
                                return
                        seq, ack = TCP_SEQ_ACK(data, tcp + 4)
                        self._segment(key, flow, _new_segment(TcpSegment, (
                            src, dst, sport, dport, seq, ack, flags, data[start:end], _NO_VLANS,
                        )), timestamp)
                        return
        owner = flow_owner(linktype, data, workers)
        if owner == index or (owner == NOT_A_FLOW and index == 0):
            self.process(timestamp, linktype, data)
        elif timestamp > self.now:
            self.advance(timestamp)

    def process_share_many(
        self, frames: Iterator[tuple[float, int, bytes]], limit: int, workers: int, index: int
    ) -> int:
        """:meth:`process_share` for up to ``limit`` frames taken from ``frames``; returns how
        many were taken: fewer when ``frames`` ran out (0 once it is empty), or when it
        stopped right after a frame that needed more than counting (a segment, another kind
        of frame, a sweep of idle flows). Only such a frame can queue events or record
        anomalies, so whatever a caller finds queued after a call is the last frame's: a
        worker tags it with the frame number the counts add up to. A sensor takes one
        share: the same ``workers`` and ``index`` on every call (its flow table and cache
        hold that share's flows).

        For a worker's loop, as :meth:`process_many` is for a replay's: the fast path is
        repeated inline (keep it, :meth:`process_share`'s and :meth:`process_many`'s the
        same; tests/sensor/test_process_many.py compares them on every frame), with the
        four-word header test, so another worker's frame costs the test and two dict
        lookups, not a method call, an eleven-field unpack and the owner hash. A frame whose
        flow is in this sensor's table is this worker's without hashing: only this worker's
        frames open flows here, and a table key holds the addresses and ports the hash is
        made of. The keys found to be another worker's are kept (a bounded cache of a pure
        function of the key, emptied when full); the others are hashed inline
        (sensor.flowhash.endpoints_hash, ~0.2 µs of big-integer arithmetic)."""
        stats, entry_of, share = self.stats, self._flow_entry, self.process_share
        segment = self._segment
        # Module constants as locals: a LOAD_FAST each, on every packet.
        ethernet, words, ipv4_ihl5, frag_proto_mask, tcp_first = (
            LINKTYPE_ETHERNET, ETH_IPV4_TCP_WORDS, _ETH_IPV4_IHL5, _FRAG_PROTO, _TCP_FIRST)
        counting, closed, fin_rst, syn, fin_syn_rst = (
            _COUNTING, _CLOSED, _FIN_RST, SYN, _FIN_SYN_RST)
        addrs_tcp, new_segment, no_vlans = ETH_IPV4_ADDRS_TCP, _new_segment, _NO_VLANS
        ends, prime, golden, others = ETH_IPV4_ENDS, PRIME, GOLDEN, self._others
        now, next_sweep = self.now, self._next_sweep
        # As in process_many, the clock and this worker's packet and byte totals live in
        # locals: the clock written back before the call that ends a run, the totals at
        # the end (no call reads them).
        taken = packets = captured = 0
        for timestamp, linktype, data in islice(frames, limit):
            taken += 1
            if timestamp > now:  # every frame moves the clock, this worker's or not
                now = timestamp
                if timestamp >= next_sweep:
                    self.now = now
                    self._sweep(timestamp)
                    # The sweep may have queued events: this frame's, so stop after it.
                    # The frame is then handled by process_share (its clock is set).
                    share(timestamp, linktype, data, workers, index)
                    break
            size = len(data)
            # inverted: a short jump (see _SHORT_JUMPS)
            if linktype != ethernet or size < 54:
                self.now = now
                share(timestamp, linktype, data, workers, index)  # counts itself if it is ours
                break
            head, total, frag_proto, tcp_word = words(data, 12)
            # inverted: a short jump (see _SHORT_JUMPS)
            if head >> 8 != ipv4_ihl5 or frag_proto & frag_proto_mask != tcp_first:
                self.now = now
                share(timestamp, linktype, data, workers, index)  # counts itself if it is ours
                break
            end = 14 + total
            if end > size:
                end = size
            start = 34 + (tcp_word >> 12) * 4
            # inverted: a short jump (see _SHORT_JUMPS)
            if tcp_word < 0x5000 or start > end:
                self.now = now
                share(timestamp, linktype, data, workers, index)  # counts itself if it is ours
                break
            key = data[26:38]
            flow = entry_of(key)
            if flow is None:
                # Another worker's flow, or a new one of this worker's.
                if key in others:
                    continue
                src, dst, sport, dport = ends(data, 26)
                both = ((src + dst) << 16) + sport + dport
                if ((both % prime * golden & 0xFFFFFFFF) >> 16) % workers != index:
                    if len(others) >= OTHERS_KEPT:
                        others.clear()
                    others[key] = None
                    continue
            else:
                state = flow.state
                if (
                    (state is counting and not tcp_word & fin_rst)
                    or (state is closed and not tcp_word & syn)
                    or (start == end and not tcp_word & fin_syn_rst)
                ):
                    packets += 1
                    captured += size
                    if key == flow.fkey:  # direction 0 (Flow.packets0)
                        flow.packets0 += 1
                        flow.bytes0 += end - start
                    else:
                        flow.packets1 += 1
                        flow.bytes1 += end - start
                    flow.last_seen = timestamp
                    continue
            packets += 1
            captured += size
            self.now = now
            # _fast_segment, inline (the TCP header is at 34)
            src_addr, dst_addr, sport, dport, seq, ack = addrs_tcp(data, 26)
            segment(key, flow, new_segment(TcpSegment, (
                src_addr, dst_addr, sport, dport, seq, ack, tcp_word & 0xFF,
                data[start:end], no_vlans)), timestamp)
            break
            self.now = now
            share(timestamp, linktype, data, workers, index)  # counts itself if it is ours
            break
        else:  # no call since the clock was last written back
            self.now = now
        stats.packets += packets
        stats.bytes += captured
        return taken

    def process_many(self, frames: Iterator[tuple[float, int, bytes]], limit: int) -> int:
        """Account for up to ``limit`` frames taken from ``frames``, exactly as calling
        :meth:`process` for each; returns how many were taken (fewer than ``limit`` only when
        ``frames`` ran out). Events queue up as with :meth:`process`.

        For a replay loop: the fast path of :meth:`process` is repeated here inline (keep
        the two, :meth:`process_share`'s, :meth:`process_share_many`'s and
        :meth:`process_pcap_records`'s the same; tests/sensor/test_process_many.py,
        test_fast_path.py and test_record_runs.py compare them), so that the
        bulk of the packets cost no method call and no attribute lookups of the sensor
        (~0.3 µs of ~1 µs per packet)."""
        stats, entry_of, frame = self.stats, self._flow_entry, self._frame
        segment = self._segment
        # Module constants as locals: a LOAD_FAST each, on every packet.
        ethernet, words, ipv4_ihl5, frag_proto_mask, tcp_first = (
            LINKTYPE_ETHERNET, ETH_IPV4_TCP_WORDS, _ETH_IPV4_IHL5, _FRAG_PROTO, _TCP_FIRST)
        counting, closed, fin_rst, syn, fin_syn_rst = (
            _COUNTING, _CLOSED, _FIN_RST, SYN, _FIN_SYN_RST)
        addrs_tcp, new_segment, no_vlans = ETH_IPV4_ADDRS_TCP, _new_segment, _NO_VLANS
        now, next_sweep = self.now, self._next_sweep
        # The packet and byte totals and the sensor's clock (self.now) are kept in locals
        # and written back at the end, and the clock before every call that may read it.
        # The frames taken as one list (C calls): the count is its length, not an increment
        # per packet, and the loop steps through a list, not through islice.
        batch = list(islice(frames, limit))
        captured = 0
        for timestamp, linktype, data in batch:
            size = len(data)
            captured += size
            if timestamp > now:
                now = timestamp
                if timestamp >= next_sweep:
                    self.now = now
                    self._sweep(timestamp)
                    next_sweep = self._next_sweep
            # inverted: a short jump (see _SHORT_JUMPS)
            if linktype != ethernet or size < 54:
                self.now = now
                frame(timestamp, linktype, data)
                now, next_sweep = self.now, self._next_sweep
                continue
            head, total, frag_proto, tcp_word = words(data, 12)
            # inverted: a short jump (see _SHORT_JUMPS)
            if head >> 8 != ipv4_ihl5 or frag_proto & frag_proto_mask != tcp_first:
                self.now = now
                frame(timestamp, linktype, data)
                now, next_sweep = self.now, self._next_sweep
                continue
            end = 14 + total
            if end > size:
                end = size
            start = 34 + (tcp_word >> 12) * 4
            if tcp_word >= 0x5000 and start <= end:
                key = data[26:38]
                flow = entry_of(key)
                if flow is not None:
                    state = flow.state
                    if (
                        (state is counting and not tcp_word & fin_rst)
                        or (state is closed and not tcp_word & syn)
                        or (start == end and not tcp_word & fin_syn_rst)
                    ):
                        if key == flow.fkey:  # direction 0 (Flow.packets0)
                            flow.packets0 += 1
                            flow.bytes0 += end - start
                        else:
                            flow.packets1 += 1
                            flow.bytes1 += end - start
                        flow.last_seen = timestamp
                        continue
                self.now = now
                # _fast_segment, inline (the TCP header is at 34)
                src, dst, sport, dport, seq, ack = addrs_tcp(data, 26)
                segment(key, flow, new_segment(TcpSegment, (
                    src, dst, sport, dport, seq, ack, tcp_word & 0xFF, data[start:end],
                    no_vlans)), timestamp)
                now, next_sweep = self.now, self._next_sweep
                continue
            self.now = now
            frame(timestamp, linktype, data)
            now, next_sweep = self.now, self._next_sweep  # in step, whatever it did
        self.now = now
        taken = len(batch)
        stats.packets += taken
        stats.bytes += captured
        return taken

    def process_pcap_records(
        self, buf: Buffer, start: int, end: int, fmt: PcapRecordFormat,
        workers: int = 0, index: int = 0,
    ) -> int:
        """Account for the classic pcap records in ``buf[start:end]`` read in place, exactly
        as :meth:`process` for each frame; returns the offset of the first record not taken
        (``end`` when all were) and sets :attr:`records_taken` to how many it took: it stops
        in front of a record whose 16-byte header or captured bytes do not all lie before
        ``end``, or that claims more than ``fmt.max_caplen`` bytes, which is left to the
        reader (a :data:`sensor.pcapfile.RecordConsumer`, for
        :meth:`sensor.pcapfile.PcapReader.record_runs`). ``buf`` is a mapped file or bytes;
        ``start`` is the offset of a record header; ``fmt`` says how to read the headers.

        With ``workers`` (> 0), :meth:`process_share` for worker ``index`` instead, as
        :meth:`process_share_many` is for frame lists: another worker's frame only moves the
        clock, and the call also stops right after any frame that may have queued events or
        recorded anomalies (a segment, another kind of frame, a sweep of idle flows), so
        what a caller finds queued is the last record's: a worker tags it with the frame
        number :attr:`records_taken` adds up to (0 only when no record could be taken).
        A sensor takes one share: the same ``workers`` and ``index`` on every call.

        :meth:`process_many` without the frames: a packet that is only counted costs its
        record header, the four header words and the flow key, all read from ``buf``; no
        frame is copied. A segment past the counted-packet path gets its payload sliced
        from ``buf``, any other frame (the general decoder) its bytes. Keep the fast path
        the same as :meth:`process_many`'s and the owner test as
        :meth:`process_share_many`'s (tests/sensor/test_record_runs.py and
        test_share_records.py compare them on every frame of every test capture)."""
        header, unit, linktype, max_caplen = fmt
        stats, entry_of, frame = self.stats, self._flow_entry, self._frame
        segment = self._segment
        # Module constants as locals: a LOAD_FAST each, on every packet. A frame shorter
        # than ``fast`` cannot take the fast path (54 bytes of Ethernet/IPv4/TCP headers;
        # never, when the file is not Ethernet).
        fast = 54 if linktype == LINKTYPE_ETHERNET else 1 << 62
        words_key, ipv4_ihl5, frag_proto_mask, tcp_first = (
            _RECORD_WORDS_KEY, _ETH_IPV4_IHL5, _FRAG_PROTO, _TCP_FIRST)
        counting, closed, fin_rst, syn, fin_syn_rst = (
            _COUNTING, _CLOSED, _FIN_RST, SYN, _FIN_SYN_RST)
        addrs_tcp, new_segment, no_vlans = ETH_IPV4_ADDRS_TCP, _new_segment, _NO_VLANS
        ends, prime, golden, others = ETH_IPV4_ENDS, PRIME, GOLDEN, self._others
        now, next_sweep = self.now, self._next_sweep
        # As in process_many, the clock lives in a local (written back before every call
        # that may read it); the packet total is the loop's count and the byte total is the
        # records' span less their headers, both added at the end. A worker's share: the
        # other workers' frames are counted apart (``alien``) and taken off those totals,
        # so the counted-packet path is the same for both; a frame that needs more than the
        # inline path (the general path, a sweep) is left in ``held`` and handed to
        # process_share after the loop, which counts it if it is this worker's.
        pos = start
        taken = alien = alien_bytes = 0
        held = -1
        for taken in count():  # the count is the number of records taken
            try:
                sec, frac, size = header(buf, pos)
            except struct_error:  # fewer than 16 bytes left in buf: the reader's to report
                break
            at = pos + 16  # the frame
            stop = at + size
            if stop > end or size > max_caplen:
                break
            record, pos = pos, stop
            timestamp = sec + frac * unit
            if timestamp > now:  # every frame moves the clock, a worker's own or not
                now = timestamp
                if timestamp >= next_sweep:
                    self.now = now
                    self._sweep(timestamp)
                    next_sweep = self._next_sweep
                    if workers:  # the sweep's events are this frame's: stop after it
                        held = pos = record
                        break
            # inverted: a short jump (see _SHORT_JUMPS)
            if size < fast:
                if workers:
                    held = pos = record
                    break
                self.now = now
                frame(timestamp, linktype, buf[at:stop])
                now, next_sweep = self.now, self._next_sweep
                continue
            # The words and the key from the record's offset: no offset arithmetic
            # (each a new int object, so far into a buffer) and no slice.
            head, total, frag_proto, key, tcp_word = words_key(buf, record)
            # inverted: a short jump (see _SHORT_JUMPS)
            if head >> 8 != ipv4_ihl5 or frag_proto & frag_proto_mask != tcp_first:
                if workers:
                    held = pos = record
                    break
                self.now = now
                frame(timestamp, linktype, buf[at:stop])
                now, next_sweep = self.now, self._next_sweep
                continue
            tail = 14 + total
            if tail > size:
                tail = size
            payload = 34 + (tcp_word >> 12) * 4
            # inverted: a short jump (see _SHORT_JUMPS)
            if tcp_word < 0x5000 or payload > tail:
                if workers:
                    held = pos = record
                    break
                self.now = now
                frame(timestamp, linktype, buf[at:stop])
                now, next_sweep = self.now, self._next_sweep
                continue
            flow = entry_of(key)
            if flow is not None:
                state = flow.state
                if (
                    (state is counting and not tcp_word & fin_rst)
                    or (state is closed and not tcp_word & syn)
                    or (payload == tail and not tcp_word & fin_syn_rst)
                ):
                    if key == flow.fkey:  # direction 0 (Flow.packets0)
                        flow.packets0 += 1
                        flow.bytes0 += tail - payload
                    else:
                        flow.packets1 += 1
                        flow.bytes1 += tail - payload
                    flow.last_seen = timestamp
                    continue
            elif workers:
                # Another worker's flow, or a new one of this worker's: only this worker's
                # frames open flows here, so a flow in the table is this worker's unhashed.
                if key in others:
                    alien += 1
                    alien_bytes += size
                    continue
                src, dst, sport, dport = ends(buf, at + 26)  # sensor.flowhash.endpoints_hash
                both = ((src + dst) << 16) + sport + dport
                if ((both % prime * golden & 0xFFFFFFFF) >> 16) % workers != index:
                    if len(others) >= OTHERS_KEPT:
                        others.clear()
                    others[key] = None
                    alien += 1
                    alien_bytes += size
                    continue
            self.now = now
            # _fast_segment, inline (the TCP header is at 34)
            src_addr, dst_addr, sport, dport, seq, ack = addrs_tcp(buf, at + 26)
            segment(key, flow, new_segment(TcpSegment, (
                src_addr, dst_addr, sport, dport, seq, ack, tcp_word & 0xFF,
                buf[at + payload : at + tail], no_vlans)), timestamp)
            if workers:  # the segment may have queued events: stop after it
                taken += 1
                break
            now, next_sweep = self.now, self._next_sweep
        self.now = now
        stats.packets += taken - alien
        stats.bytes += pos - start - 16 * taken - alien_bytes
        if held < 0:
            self.records_taken = taken
            return pos
        # The held frame goes to process_share (its clock and any sweep are done here): it
        # processes and counts the frame if it is this worker's and leaves another's alone.
        sec, frac, size = header(buf, held)
        stop = held + 16 + size
        self.process_share(sec + frac * unit, linktype, buf[held + 16 : stop], workers, index)
        self.records_taken = taken + 1
        return stop

    def _general(self, timestamp: float, linktype: int, data: bytes) -> None:
        """A frame :meth:`process`'s fast path does not take (VLAN tags, IPv6, tunnels,
        other link types, malformed headers): decoded in full, then :meth:`_segment`."""
        if linktype not in SUPPORTED_LINKTYPES:
            self._anomaly("unsupported_linktype", f"link type {linktype} is not decoded",
                          timestamp)
            return
        try:
            segment = decode_frame(linktype, data)
        except DecodeError as error:
            self._anomaly(error.kind, str(error), timestamp)
            return
        if segment is None:
            self.stats.not_tcp += 1
            self.udp.process(timestamp, linktype, data)
            return
        key = flow_key(segment.src_addr, segment.dst_addr, segment.src_port, segment.dst_port,
                       segment.vlans)
        self._segment(key, self.flows.lookup(key), segment, timestamp)

    def _segment(
        self, key: FlowKey, found: Flow | None, segment: TcpSegment, timestamp: float
    ) -> None:
        """A TCP segment whose flow key is ``key`` and whose table entry is ``found``
        (looked up by the caller), past the counted-packet path."""
        flags = segment.flags
        # Counted by the counted path's test (key == fkey: direction 0's counters), which
        # is Flow.direction_of's (inline) but for a flow whose two keys are equal.
        if found is None or (found.state is _CLOSED and flags & SYN):
            if found is not None:
                self._forget(found, "rst")
            flow, direction = self._open_flow(key, timestamp), 0  # whose fkey is key
            flow.packets0 += 1
            flow.bytes0 += len(segment.payload)
        elif key == found.fkey:
            flow = found
            direction = 1 if found.fins & SELF_KEYS else 0
            flow.packets0 += 1
            flow.bytes0 += len(segment.payload)
        else:
            flow, direction = found, 1
            flow.packets1 += 1
            flow.bytes1 += len(segment.payload)
        flow.last_seen = timestamp
        state = flow.state
        if state is _HANDSHAKE:
            self._handshake_segment(flow, direction, segment, timestamp)
        elif state is _DETECTING:
            self._detect(flow, direction, segment, timestamp)
        if flags & _FIN_RST and flow.state is not _CLOSED:
            self._close_flags(flow, direction, flags, timestamp)

    def advance(self, timestamp: float) -> None:
        """Let time pass without a packet (a live sensor on a quiet link calls this every
        second or so): idle flows expire and their unfinished handshakes are reported."""
        if timestamp > self.now:
            self.now = timestamp
            if timestamp >= self._next_sweep:
                self._sweep(timestamp)

    def report_drops(self, kind: str, detail: str, count: int) -> SensorEvent:
        """An anomaly event for losses outside the sensor (the publisher dropping events
        while the broker was away), counted with the sensor's own anomalies."""
        self.anomalies.totals[kind] += count
        return self.builder.anomaly(Anomaly(kind, detail, self.now, count))

    def finish(self) -> list[SensorEvent]:
        """End of input: report every handshake still open, flush anomaly counts, and return
        the remaining events."""
        for flow in self.flows:
            if flow.state is _HANDSHAKE:
                self._drain_gaps(flow)
                self._end_session(flow, "capture_end")
        self.udp.finish(self.now)  # its handshakes count in the last interval too
        if self.traffic is not None and self.traffic.start is not None:
            self._report_traffic(self.now)
        for anomaly in self.anomalies.flush(self.now):
            self._events.append(self.builder.anomaly(anomaly))
        return self.drain()

    # -- flow lifecycle ------------------------------------------------------------------

    def _open_flow(self, key: FlowKey, timestamp: float) -> Flow:
        if self.flows.is_full():
            victim = self.flows.oldest()
            self._anomaly(
                "flow_table_full",
                f"flow table holds {self.flows.max_flows} flows; evicting the oldest",
                timestamp,
            )
            self._forget(victim, "evicted")
            self.flows.evicted += 1
        flow = Flow(key, timestamp)
        self.flows.add(flow)
        return flow

    def _forget(self, flow: Flow, reason: str) -> None:
        if flow.state is _HANDSHAKE:
            self._end_session(flow, reason)
        if self.traffic is not None:
            self.traffic.forget(flow)
        if flow.buffered:
            flow.drop_parsing_state()
            self._account(flow)
        self.flows.remove(flow)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY
        traffic = self.traffic
        if traffic is not None:
            if now >= traffic.boundary:
                # Before the idle flows go: the interval's counts are all in the flows now.
                if traffic.start is not None:
                    self._report_traffic(None)
                traffic.begin(now)
            # The sweep runs at the boundary itself, so the first packet of the next
            # interval is not counted in this one.
            self._next_sweep = min(self._next_sweep, traffic.boundary)
        for flow in self.flows.idle_since(now, self._timeouts):
            self._forget(flow, "idle_timeout")
            self.flows.expired += 1
        if len(self.udp):
            # UDP flows age with capture time too, not only when the next datagram comes:
            # on a link carrying only TCP, an unfinished QUIC handshake is still reported.
            self.udp.sweep(now)

    def _close_flags(self, flow: Flow, direction: int, flags: int, timestamp: float) -> None:
        if flags & RST:
            reason = "rst"
        else:
            flow.fins |= 1 << direction
            if flow.fins & 3 != 3:  # the other bits of fins are flags (sensor.flows)
                return
            reason = "fin"
        if flow.state is _HANDSHAKE:
            self._end_session(flow, reason)
        flow.drop_parsing_state()
        self._account(flow)
        flow.state = _CLOSED

    def _report_traffic(self, end: float | None) -> None:
        """Close the traffic interval (``end``: the end of input) and queue its events."""
        assert self.traffic is not None
        stats = self.traffic.close(self.flows, end, self.udp.flows())
        self._events.extend(to_events(stats, self.config.name, self.config.worker))
        detail = limit_detail(stats, self.traffic.max_endpoints)
        if detail is not None:
            self._anomaly(LIMIT_ANOMALY, detail, stats.end)

    # -- finding TLS -----------------------------------------------------------------------

    def _detect(self, flow: Flow, direction: int, segment: TcpSegment, timestamp: float) -> None:
        parse = flow.parse
        assert parse is not None  # a DETECTING flow has its parsing state
        seq = segment.seq
        flags = segment.flags
        if flags & SYN:
            # RFC 9293 3.4: the SYN takes one sequence number; data it carries follows it.
            seq = (seq + 1) & SEQ_MASK
            if direction:  # FlowParse.set_next_seq, inline
                parse.next_seq1 = seq
            else:
                parse.next_seq0 = seq
            if not flow.fins & CLIENT_KNOWN:  # client_direction is None
                flow.client_direction = direction if not flags & ACK else 1 - direction
        payload = segment.payload
        if not payload:
            return
        expected = parse.next_seq(direction)
        end = (seq + len(payload)) & SEQ_MASK
        if expected is not None:
            if seq_after(seq, expected):
                self._keep_early(flow, parse, direction, seq, payload)
                return
            if not seq_after(end, expected):
                return  # a retransmission of bytes already looked at
        parse.own_prefix()
        prefix = parse.prefix[direction]
        if prefix and seq == (parse.prefix_start[direction] + len(prefix)) & SEQ_MASK:
            prefix += payload
        else:
            prefix = payload
            parse.prefix_start[direction] = seq
        parse.set_next_seq(direction, end)
        if len(prefix) < HELLO_PREFIX:
            parse.prefix[direction] = prefix
            return
        parse.prefix[direction] = b""
        role = hello_role(prefix)
        if role is not None:
            self._start_session(flow, parse, direction, role, parse.prefix_start[direction],
                                prefix, timestamp)
            return
        parse.detect_segments += 1
        if parse.detect_segments >= self.config.detect_segments:
            flow.drop_parsing_state()  # COUNTING, and nothing kept for detection
            self._account(flow)
            self.stats.not_tls_flows += 1

    def _start_session(
        self, flow: Flow, parse: FlowParse, direction: int, role: Side, start_seq: int,
        data: bytes, timestamp: float,
    ) -> None:
        """Start following a handshake whose first bytes, ``data``, begin at ``start_seq``."""
        flow.client_direction = direction if role is _CLIENT else 1 - direction
        bound = self.config.max_buffered_per_direction
        reassemblers = parse.reassemblers = (StreamReassembler(max_buffered=bound),
                                             StreamReassembler(max_buffered=bound))
        reassemblers[direction].set_initial_sequence((start_seq - 1) & SEQ_MASK)
        other = 1 - direction
        other_start = (parse.prefix_start[other] if parse.prefix[other]
                       else parse.next_seq(other))
        if other_start is not None:
            reassemblers[other].set_initial_sequence((other_start - 1) & SEQ_MASK)
        parse.session = TlsSession()
        parse.session_start = timestamp
        flow.state = _HANDSHAKE
        flow.is_tls = True
        self.stats.tls_flows += 1
        self._add_payload(flow, direction, start_seq, data, timestamp)
        other_prefix = parse.prefix[other]
        if other_prefix and len(other_prefix) <= MAX_ACK_PADDING and not any(other_prefix):
            # Zeros the other side sent so far, on a SYN-ACK or ACK: maybe padding (see
            # is_ack_padding), held until its next data says.
            parse.own_held()[other] = (parse.prefix_start[other], other_prefix)
        elif other_prefix:
            self._add_payload(flow, other, parse.prefix_start[other], other_prefix, timestamp)
        for early_direction, early_seq, early_payload in parse.early or ():
            self._add_payload(flow, early_direction, early_seq, early_payload, timestamp)
        parse.prefix, parse.prefix_start = NO_PREFIX, NO_START
        parse.early = None
        self._account(flow)

    def _keep_early(
        self, flow: Flow, parse: FlowParse, direction: int, seq: int, payload: bytes
    ) -> None:
        if parse.early is None:
            parse.early = []
        if len(parse.early) < EARLY_SEGMENTS:
            parse.early.append((direction, seq, payload))
            self._account(flow)

    # -- the handshake -----------------------------------------------------------------------

    def _handshake_segment(
        self, flow: Flow, direction: int, segment: TcpSegment, timestamp: float
    ) -> None:
        """A segment of a flow in its handshake: the common case (in order, nothing held
        back) reassembled, parsed and accounted here in one call; the rest through
        :meth:`_add_payload` and :meth:`_feed`."""
        payload = segment.payload
        parse = flow.parse
        if not payload or parse is None:
            return
        seq = segment.seq
        held = parse.held[direction]
        if held is not None:
            # The next data decides what the held zeros were: padding if it starts at the
            # same sequence number (the stream's real bytes are there), else stream data.
            parse.held[direction] = None
            if held[0] != seq:
                self._add_payload(flow, direction, held[0], held[1], timestamp)
            if flow.parse is not parse:  # the held bytes ended the handshake
                return
        if segment.flags == ACK and len(payload) <= MAX_ACK_PADDING and not any(payload):
            # is_ack_padding: held back until the next data says what it is.
            parse.own_held()[direction] = (seq, payload)
            return
        reassemblers = parse.reassemblers
        if reassemblers is None:
            return
        try:
            data = reassemblers[direction].add(seq, payload)
        except ParseError as error:
            self._session_failed(flow, error, timestamp)
            return
        session = parse.session
        if data and session is not None:
            # _feed, inline: the TLS side of the sender (a session's flow knows its client)
            fins = flow.fins
            side = (_CLIENT if fins & CLIENT_KNOWN and (fins & CLIENT_IS_1 != 0) == direction
                    else _SERVER)
            record = session.record
            irregularities = record.irregularities
            try:
                done = session.feed(side, data, timestamp)
            except ParseError as error:
                self._anomaly(error.kind, str(error), timestamp, flow)
                done = True  # a parse error ends the session (TlsSession.feed)
            if record.irregularities is not irregularities:
                for detail in record.irregularities[len(irregularities):]:
                    self._anomaly(IRREGULAR_HANDSHAKE, detail, timestamp, flow)
            if done:
                self._emit(flow)
        self._account(flow)

    def _add_payload(
        self, flow: Flow, direction: int, seq: int, payload: bytes, timestamp: float
    ) -> None:
        parse = flow.parse
        if parse is None or parse.reassemblers is None:
            return
        try:
            data = parse.reassemblers[direction].add(seq, payload)
        except ParseError as error:
            self._session_failed(flow, error, timestamp)
            return
        self._feed(flow, direction, data, timestamp)
        self._account(flow)

    def _feed(self, flow: Flow, direction: int, data: bytes, timestamp: float) -> None:
        parse = flow.parse
        session = parse.session if parse is not None else None
        if session is None or not data:
            return
        irregular = len(session.record.irregularities)
        try:
            session.feed(flow.side(direction), data, timestamp)
        except ParseError as error:
            self._anomaly(error.kind, str(error), timestamp, flow)
        for detail in session.record.irregularities[irregular:]:
            self._anomaly(IRREGULAR_HANDSHAKE, detail, timestamp, flow)
        if session.done:
            self._emit(flow)

    def _session_failed(self, flow: Flow, error: ParseError, timestamp: float) -> None:
        self._anomaly(error.kind, str(error), timestamp, flow)
        if flow.session is not None:
            flow.session.record.parse_error = str(error)
        self._end_session(flow, "parse_error")

    def _drain_gaps(self, flow: Flow) -> None:
        """At the end of the capture, give up on holes (capture loss) and parse what follows
        them: a handshake after a lost segment is often still readable."""
        if flow.reassemblers is None:
            return
        for direction, reassembler in enumerate(flow.reassemblers):
            while flow.session is not None and reassembler.buffered:
                data = reassembler.skip_gap()
                self._anomaly("tcp_gap", "segment missing from the capture", self.now, flow)
                self._feed(flow, direction, data, self.now)

    def _end_session(self, flow: Flow, reason: str) -> None:
        if flow.session is not None:
            flow.session.close(reason)
            self._emit(flow)

    def _emit(self, flow: Flow) -> None:
        session = flow.session
        assert session is not None
        flow.drop_parsing_state()
        self._account(flow)
        record = session.record
        if not session.has_hello:
            if record.ended_by != "parse_error":  # a parse error was counted already
                # The flow opened like TLS but ended before a hello could be read: all a
                # half-open flood or a client trickling bytes leaves to see (issue 7).
                self._anomaly(HELLO_INCOMPLETE, f"TLS flow ended ({record.ended_by}) "
                              "before a complete hello", self.now, flow)
            return
        events = self.builder.handshake(flow, record)
        self.stats.handshakes[events.version_label] += 1
        self.stats.established += record.established
        self.stats.certificates += len(events.certificates)
        if self.traffic is not None:
            self.traffic.handshake(flow, events.handshake.event.outcome == "failure")
        self._events.append(events.handshake)
        self._events.extend(events.certificates)

    # -- the buffer budget (issue 7) ------------------------------------------------------------

    def _account(self, flow: Flow) -> None:
        """Bring ``flow``'s share of the global buffer budget up to date, after its buffers
        may have grown or shrunk; over the budget, drop the flows holding the most.

        Each buffer is bounded per flow (``max_buffered_per_direction``, the record
        parser's record and message bounds, ``EARLY_SEGMENTS``), but only this bounds their
        sum: an attacker filling every flow's buffers could otherwise hold max_flows x ~1 MiB.
        """
        held = 0
        parse = flow.parse
        if parse is not None:
            reassemblers = parse.reassemblers
            if reassemblers is not None:
                # StreamReassembler.buffered of both, without two property calls
                first, second = reassemblers[0].held, reassemblers[1].held
                if first is not None:
                    held = first.buffered
                if second is not None:
                    held += second.buffered
            session = parse.session
            if session is not None:
                held += session.buffered
            if parse.early:
                held += sum(len(early[2]) for early in parse.early)
        delta = held - flow.buffered
        if not delta:
            return
        flow.buffered = held
        self.buffered += delta
        if held:
            self._holders[flow] = None
        else:
            self._holders.pop(flow, None)
        if self.buffered > self.config.max_buffered_bytes:
            self._over_budget()

    def _over_budget(self) -> None:
        """Drop the parsing state of the flows holding the most buffered bytes, largest first,
        until 7/8 of the budget is left: the headroom makes the sort a rare event (an attacker
        has to send budget/8 more bytes to cause the next one), and the flows holding the
        most are those an attacker fills, while a legitimate handshake holds a partial
        record or certificate chain of a few KB. Each dropped flow is an anomaly; its
        handshake is reported as far as it went (ended by ``evicted``) and the flow is only
        counted from then on."""
        budget = self.config.max_buffered_bytes
        target = budget - budget // 8
        for victim in sorted(self._holders, key=_held_bytes, reverse=True):
            if self.buffered <= target:
                break
            self._anomaly(
                BUDGET_EXCEEDED,
                f"{self.buffered} bytes buffered across flows exceed the budget of {budget}; "
                f"dropping the flow holding the most ({victim.buffered})",
                self.now, victim,
            )
            if victim.state is _HANDSHAKE:
                self._end_session(victim, "evicted")
            victim.drop_parsing_state()
            self._account(victim)

    def _anomaly(
        self, kind: str, detail: str, timestamp: float, flow: Flow | None = None
    ) -> None:
        report: Anomaly | None = self.anomalies.record(
            kind, detail, timestamp, flow.client_server() if flow is not None else None
        )
        if report is not None:
            self._events.append(self.builder.anomaly(report))
