"""Per-interval traffic counts per server endpoint: the ``certwatch.traffic.stats`` topic.

Pure (no I/O, no clock): the sensor tells it when an interval of capture time ends, and
which flows exist. The counted-packet hot path is not touched: flows already count their
packets and payload bytes, so an interval's counts are *deltas* of those counters, taken

* at the interval's end, by walking the flow table once (:meth:`TrafficStats.close`), and
* when a flow is forgotten mid-interval (idle, evicted, reused port): :meth:`forget`.

UDP flows are those the sensor follows for a QUIC or DTLS handshake (``sensor.udp_sessions``:
other datagrams belong to no flow); their endpoints are counted apart from TCP's on the same
address and port (``network.transport``).

Each live flow keeps its counters as last reported (packed into one int: memory matters at
``max_flows``); a flow without such an entry is new in the interval, which is how
``connections`` is counted without a hook where flows are opened. The flow counts per
direction (``Flow.packets0``/``bytes0``, ``packets1``/``bytes1``); both summed are ECS
``network.bytes``/``network.packets`` (both ways), and what the client sent is ECS
``source.bytes``/``source.packets`` (the source side of a per-server event is its clients:
upload), what the server sent ``destination.bytes``/``destination.packets`` (download). The
client's direction is the flow's as the delta is taken (``_server_of``'s: known from the SYN
or a hello, else the likelier one), so a connection caught mid-stream is split as it is
attributed to its server.

Intervals are aligned on the Unix epoch (``floor(t / interval) * interval``), so several
sensors, or ``--workers`` sharing one capture, cut their counts at the same instants and
their events for one endpoint and interval can be summed (:func:`merge`). An interval
without traffic yields no event; an idle gap is skipped, not filled with empty intervals.

Bounded: at most ``max_endpoints`` endpoints per interval are counted by name. The counts of
the rest are summed into :attr:`IntervalStats.other` and reported by the sensor as one
``traffic_endpoints_limit`` anomaly per interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from schemas.base import EventFields, Observer
from schemas.events import (
    TrafficCounts,
    TrafficDestination,
    TrafficNetwork,
    TrafficSource,
    TrafficStatsEvent,
    TrafficStatsExtension,
)
from sensor.build import event_id
from sensor.decode import format_addr
from sensor.flows import Flow, likely_client_direction

DATASET: Final = "certwatch.traffic.stats"
LIMIT_ANOMALY: Final = "traffic_endpoints_limit"
MAX_OTHER_SEEN: Final = 65_536
"""Endpoints over the bound told apart per interval (for their number); beyond, "at least"."""
# A flow's packed snapshot, low bits first: direction 1's packets (40 bits) and bytes (64),
# direction 0's packets (40), then direction 0's bytes (the rest, unbounded). Six 30-bit
# digits while direction 0 sent under 64 GiB, the size a two-field snapshot had (an int's
# memory goes in 16-byte steps). The three bounded fields hold their counters modulo their
# width and deltas are taken modulo it too, so a flow may count past any field's width over
# its life; a delta is exact while one interval adds under 2**40 packets and 2**64 bytes to
# one direction of one flow: 2**40 packets at 10 million a second (ten times what a worker
# counts) take 30 hours, 2**64 bytes at 400 Gb/s 11 years.
_PACKETS_BITS: Final = 40
_PACKETS_MASK: Final = (1 << _PACKETS_BITS) - 1
_BYTES_BITS: Final = 64
_BYTES_MASK: Final = (1 << _BYTES_BITS) - 1
_DIR1_BITS: Final = _PACKETS_BITS + _BYTES_BITS  # where direction 0's packets start
_BYTES0_SHIFT: Final = _DIR1_BITS + _PACKETS_BITS

ServerEndpoint = tuple[bytes, int, bool]
"""(server address as on the wire: 4 or 16 bytes, server port, over UDP)."""


@dataclass(slots=True)
class Counts:
    """Mutable running counts of one endpoint (or of the endpoints over the bound).

    ``packets``/``bytes`` are both directions'; ``client_packets``/``client_bytes`` those
    the clients sent to the server (the server's are the differences)."""

    packets: int = 0
    bytes: int = 0
    connections: int = 0
    handshakes: int = 0
    failed_handshakes: int = 0
    client_packets: int = 0
    client_bytes: int = 0

    @property
    def server_packets(self) -> int:
        return self.packets - self.client_packets

    @property
    def server_bytes(self) -> int:
        return self.bytes - self.client_bytes

    def add(self, other: Counts) -> None:
        self.packets += other.packets
        self.bytes += other.bytes
        self.client_packets += other.client_packets
        self.client_bytes += other.client_bytes
        self.connections += other.connections
        self.handshakes += other.handshakes
        self.failed_handshakes += other.failed_handshakes


@dataclass(frozen=True, slots=True)
class IntervalStats:
    """One closed interval: ``[start, end)`` in capture seconds, the counts per endpoint
    (busiest first: bytes, then packets, then address and port, so the order does not depend
    on the order flows were seen), and what went over the endpoint bound."""

    start: float
    end: float
    endpoints: tuple[tuple[ServerEndpoint, Counts], ...]
    other: Counts
    other_endpoints: int


def interval_start(timestamp: float, interval: float) -> float:
    """The start of the epoch-aligned interval holding ``timestamp``."""
    return math.floor(timestamp / interval) * interval


def _server_of(flow: Flow, udp: bool) -> ServerEndpoint:
    """``flow.client_server()[1]`` without building the client's half (once per handshake),
    and the transport; a flow whose roles are unknown gets the likelier server
    (:func:`likely_client_direction`). Inline in ``TrafficStats._take``."""
    key = flow.key
    client = flow.client_direction
    if client is None:
        client = likely_client_direction(key[2], key[3])
    return (key[0], key[2], udp) if client == 1 else (key[1], key[3], udp)


def _snapshot(flow: Flow) -> int:
    """``flow``'s four counters packed into one int (see ``_PACKETS_BITS``)."""
    return ((flow.bytes0 << _PACKETS_BITS | flow.packets0 & _PACKETS_MASK) << _DIR1_BITS
            | (flow.bytes1 & _BYTES_MASK) << _PACKETS_BITS | flow.packets1 & _PACKETS_MASK)


def _order(item: tuple[ServerEndpoint, Counts]) -> tuple[int, int, int, bytes, int, bool]:
    (addr, port, udp), counts = item
    return (-counts.bytes, -counts.packets, len(addr), addr, port, udp)


class TrafficStats:
    """The current interval's counts per server endpoint, from the flows' own counters."""

    def __init__(self, interval: float, max_endpoints: int) -> None:
        if interval <= 0:
            raise ValueError("the interval must be positive (0 means: no TrafficStats)")
        self.interval = interval
        self.max_endpoints = max(1, max_endpoints)
        self.start: float | None = None
        self.boundary = -math.inf
        """Capture time at which the current interval ends (-inf before the first packet)."""
        self._counts: dict[ServerEndpoint, Counts] = {}
        self._other = Counts()
        self._other_endpoints: set[ServerEndpoint] = set()
        self._reported: dict[Flow, int] = {}  # flow -> _snapshot(flow), as last counted

    def begin(self, now: float) -> None:
        """Start counting in the interval holding ``now`` (first packet, or after a gap)."""
        self.start = interval_start(now, self.interval)
        self.boundary = self.start + self.interval

    def _slot(self, endpoint: ServerEndpoint) -> Counts:
        counts = self._counts.get(endpoint)
        if counts is not None:
            return counts
        if len(self._counts) < self.max_endpoints:
            counts = self._counts[endpoint] = Counts()
            return counts
        if len(self._other_endpoints) < MAX_OTHER_SEEN:
            # Only their number is reported; the set is bounded too (the count saturates).
            self._other_endpoints.add(endpoint)
        return self._other

    def _take(self, flow: Flow, packed: int | None, udp: bool) -> None:
        """Add ``flow``'s counts since ``packed`` (its snapshot; None: a new flow) to its
        endpoint (once per flow and interval, and when it ends: ``_server_of`` inline)."""
        key = flow.key
        client = flow.client_direction
        if client is None:
            client = likely_client_direction(key[2], key[3])
        counts = self._slot((key[0], key[2], udp) if client == 1 else (key[1], key[3], udp))
        packets0, sent0, packets1, sent1 = flow.packets0, flow.bytes0, flow.packets1, flow.bytes1
        if packed is None:
            counts.connections += 1
        else:  # modulo the fields' widths (see _PACKETS_BITS)
            packets1 = (packets1 - (packed & _PACKETS_MASK)) & _PACKETS_MASK
            sent1 = (sent1 - (packed >> _PACKETS_BITS & _BYTES_MASK)) & _BYTES_MASK
            packets0 = (packets0 - (packed >> _DIR1_BITS & _PACKETS_MASK)) & _PACKETS_MASK
            sent0 -= packed >> _BYTES0_SHIFT
        counts.packets += packets0 + packets1
        counts.bytes += sent0 + sent1
        if client:  # the client sends in direction 1
            counts.client_packets += packets1
            counts.client_bytes += sent1
        else:
            counts.client_packets += packets0
            counts.client_bytes += sent0

    def forget(self, flow: Flow, udp: bool = False) -> None:
        """``flow`` (a UDP flow if ``udp``) leaves its table: its last counts go to the
        current interval."""
        packed = self._reported.pop(flow, None)
        # Unchanged since last taken (an idle flow expiring): nothing to add, no slot.
        if packed != _snapshot(flow):
            self._take(flow, packed, udp)

    def handshake(self, flow: Flow, failed: bool, udp: bool = False) -> None:
        """A handshake of ``flow`` was reported (failed: not established)."""
        counts = self._slot(_server_of(flow, udp))
        counts.handshakes += 1
        counts.failed_handshakes += failed

    def close(self, flows: Iterable[Flow], end: float | None = None,
              udp_flows: Iterable[Flow] = ()) -> IntervalStats:
        """End the current interval: walk every live flow (TCP ``flows``, ``udp_flows``)
        once and take its deltas.

        ``end`` is the interval's nominal end unless given (the end of the input, earlier).
        The next interval starts when :meth:`begin` is called."""
        reported = self._reported
        for table, udp in ((flows, False), (udp_flows, True)):
            for flow in table:
                # Unchanged since last taken (most flows of a quiet link): no endpoint slot.
                packed = reported.get(flow)
                snap = ((flow.bytes0 << _PACKETS_BITS | flow.packets0 & _PACKETS_MASK)
                        << _DIR1_BITS | (flow.bytes1 & _BYTES_MASK) << _PACKETS_BITS
                        | flow.packets1 & _PACKETS_MASK)  # _snapshot, inline
                if packed != snap:
                    self._take(flow, packed, udp)
                    reported[flow] = snap
        start = self.start if self.start is not None else 0.0
        stats = IntervalStats(
            start=start,
            end=self.boundary if end is None else min(end, self.boundary),
            endpoints=tuple(sorted(self._counts.items(), key=_order)),
            other=self._other,
            other_endpoints=len(self._other_endpoints),
        )
        self._counts, self._other, self._other_endpoints = {}, Counts(), set()
        return stats


def merge(parts: Sequence[IntervalStats], max_endpoints: int) -> IntervalStats:
    """Sum the intervals of several sensors sharing the same flows' capture (``--workers``):
    one interval, counts per endpoint added, the endpoint bound applied again."""
    totals: dict[ServerEndpoint, Counts] = {}
    other, other_endpoints = Counts(), 0
    for part in parts:
        for endpoint, counts in part.endpoints:
            totals.setdefault(endpoint, Counts()).add(counts)
        other.add(part.other)
        other_endpoints += part.other_endpoints
    ordered = sorted(totals.items(), key=_order)
    for _, counts in ordered[max_endpoints:]:
        other.add(counts)
    return IntervalStats(
        start=min(p.start for p in parts), end=max(p.end for p in parts),
        endpoints=tuple(ordered[:max_endpoints]), other=other,
        other_endpoints=other_endpoints + max(0, len(ordered) - max_endpoints),
    )


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_events(stats: IntervalStats, observer: str,
              worker: int | None = None) -> list[TrafficStatsEvent]:
    """One ``certwatch.traffic.stats`` event per endpoint of ``stats``, in its order.

    The event id is a function of the observer, the interval start and the endpoint, so a
    replay (with any number of workers: their counts are merged first) gives the same ids;
    ``worker``, a live worker's index, is part of it too, since live workers each report
    their own share of an endpoint's interval."""
    extra = () if worker is None else (f"worker {worker}",)
    start, end = _time(stats.start), _time(stats.end)
    duration = max(0, round((stats.end - stats.start) * 1e9))
    observed = Observer(name=observer)
    events = []
    for (addr, port, udp), counts in stats.endpoints:
        ip = format_addr(addr)
        udp_part = ("udp",) if udp else ()  # TCP's ids stay what they were before UDP
        events.append(TrafficStatsEvent(
            timestamp=end,
            event=EventFields(
                id=event_id(observer, DATASET, repr(stats.start), ip, port, *udp_part, *extra),
                kind="metric", category=["network"], type=["info"], dataset=DATASET,
                start=start, end=end, duration=duration,
            ),
            observer=observed,
            source=TrafficSource(bytes=counts.client_bytes, packets=counts.client_packets),
            destination=TrafficDestination(ip=ip, port=port, bytes=counts.server_bytes,
                                           packets=counts.server_packets),
            network=TrafficNetwork(transport="udp" if udp else "tcp",
                                   type="ipv6" if len(addr) == 16 else "ipv4",
                                   bytes=counts.bytes, packets=counts.packets),
            certwatch=TrafficStatsExtension(traffic=TrafficCounts(
                connections=counts.connections, handshakes=counts.handshakes,
                failed_handshakes=counts.failed_handshakes)),
        ))
    return events


def limit_detail(stats: IntervalStats, bound: int) -> str | None:
    """The anomaly detail for the endpoints over the bound, or None when there were none."""
    if not stats.other_endpoints:
        return None
    other = stats.other
    many = "at least " if stats.other_endpoints >= MAX_OTHER_SEEN else ""
    return (f"{many}{stats.other_endpoints} server endpoints beyond the limit of {bound} in the "
            f"interval starting {_time(stats.start).isoformat()}: {other.bytes} bytes, "
            f"{other.packets} packets, {other.connections} connections, {other.handshakes} "
            "handshakes not reported per endpoint")
