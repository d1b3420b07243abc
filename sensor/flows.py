"""The flow table: one entry per TCP connection, bounded, expired by capture time.

A flow is stored under both of its directional keys so the per-packet lookup is one dict
access with no canonicalisation; which direction a packet travels is only worked out on the
general path (:meth:`Flow.direction_of`), so the lookup yields the flow itself. Direction 0
is whoever sent the first packet we saw; which side is the TLS client is learnt from the
SYN or, mid-stream, from who sends the ClientHello.

Memory (issue 5): most flows a tap sees are only counted, and a sensor holds up to
``max_flows`` of them, so a counted flow keeps nothing but its counters, its two keys (which
share their address and port objects) and shared placeholders for the parsing state;
creation order is a deque of flows with lazy deletion, not a second mapping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum

from sensor.reassembly import StreamReassembler
from sensor.session import Side, TlsSession

FlowKey = tuple[bytes, bytes, int, int, tuple[int, ...]]
"""(source address, destination address, source port, destination port, VLAN ids)."""

# Shared placeholders of the per-direction lists a flow only sometimes needs; never written
# (Flow.own_prefix / Flow.own_held replace them with the flow's own lists first).
NO_PREFIX: list[bytes] = [b"", b""]
NO_START: list[int] = [0, 0]
NOTHING_HELD: list[tuple[int, bytes] | None] = [None, None]
NO_SEQ: list[int | None] = [None, None]
NO_TIME = 0.0


class FlowState(Enum):
    DETECTING = "detecting"  # looking at the first payloads for a TLS hello
    HANDSHAKE = "handshake"  # reassembling and parsing both directions
    COUNTING = "counting"  # handshake over or not TLS: packets are only counted
    CLOSED = "closed"  # FIN/RST seen both ways: kept briefly so stragglers don't start a flow


class Flow:
    """One TCP connection. Holds parsing state only while the handshake is in progress."""

    __slots__ = (
        "buffered",
        "bytes",
        "client_direction",
        "detect_segments",
        "early",
        "fins",
        "held",
        "is_tls",
        "key",
        "last_seen",
        "next_seq",
        "packets",
        "prefix",
        "prefix_start",
        "reassemblers",
        "reverse_key",
        "session",
        "session_start",
        "state",
    )

    def __init__(self, key: FlowKey, timestamp: float) -> None:
        src, dst, sport, dport, vlans = key
        self.key = key
        self.reverse_key: FlowKey = (dst, src, dport, sport, vlans)
        self.last_seen = timestamp
        self.packets = 0
        self.bytes = 0
        self.state = FlowState.DETECTING
        self.client_direction: int | None = None
        # Next sequence number expected per direction, from the SYN or the payload so far:
        # where reassembly starts when a hello is found (after STARTTLS, mid-stream).
        self.next_seq: list[int | None] = [None, None]
        self.detect_segments = 0
        # The first bytes of the current payload run per direction, so a hello cut into
        # segments of a few bytes is still recognised (RFC 793 allows any segmentation).
        # Memory: these and ``held`` are the shared, never-mutated NO_PREFIX / NO_START /
        # NOTHING_HELD until the flow needs its own (``own_prefix``, ``own_held``).
        self.prefix: list[bytes] = NO_PREFIX
        self.prefix_start: list[int] = NO_START
        # Segments that arrived ahead of a hole while detecting (direction, seq, payload):
        # replayed into the reassembler if a hello is found. Allocated only when needed.
        self.early: list[tuple[int, int, bytes]] | None = None
        self.fins = 0  # bit 1 << direction: that direction sent FIN
        # Per direction, a segment of zero bytes held back while the handshake is parsed
        # (seq, payload), until the next segment says whether it was data or ACK padding.
        self.held: list[tuple[int, bytes] | None] = NOTHING_HELD
        self.is_tls = False
        self.session: TlsSession | None = None
        self.session_start = timestamp
        self.reassemblers: list[StreamReassembler] | None = None
        # Bytes this flow holds in buffers, as last accounted in the sensor's global budget
        # (``sensor.sensor.BufferBudget``, issue 7).
        self.buffered = 0

    @property
    def keys(self) -> tuple[FlowKey, FlowKey]:
        """(key of direction 0's packets, key of direction 1's packets)."""
        return self.key, self.reverse_key

    @property
    def vlans(self) -> tuple[int, ...]:
        return self.key[4]

    def direction_of(self, key: FlowKey) -> int:
        """The direction of a packet with this key (one of the flow's two). A flow whose two
        keys are equal (a connection from a port to itself) counts its packets as direction 1,
        the direction its second table entry named before."""
        return 1 if key == self.reverse_key else 0

    @property
    def addresses(self) -> tuple[bytes, bytes]:
        """(address of direction 0's sender, address of direction 1's sender)."""
        return self.key[0], self.key[1]

    @property
    def ports(self) -> tuple[int, int]:
        return self.key[2], self.key[3]

    def own_prefix(self) -> None:
        """Give the flow its own ``prefix`` and ``prefix_start`` lists before writing them."""
        if self.prefix is NO_PREFIX:
            self.prefix = [b"", b""]
            self.prefix_start = [0, 0]

    def own_held(self) -> list[tuple[int, bytes] | None]:
        """The flow's own ``held`` list, to write into."""
        if self.held is NOTHING_HELD:
            self.held = [None, None]
        return self.held

    def side(self, direction: int) -> Side:
        """The TLS role of the sender in ``direction`` (the client is known once a session
        has started)."""
        return Side.CLIENT if direction == self.client_direction else Side.SERVER

    def client_server(self) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
        """((client address, port), (server address, port)); direction 0 is the client when
        the roles are not known."""
        c = self.client_direction or 0
        return (self.addresses[c], self.ports[c]), (self.addresses[1 - c], self.ports[1 - c])

    def drop_parsing_state(self) -> None:
        """Free everything the handshake needed; from now on the flow is only counted.

        What is left points at shared placeholders (never written: only a DETECTING flow
        writes ``next_seq``), so a counted flow costs its counters and keys alone."""
        self.next_seq = NO_SEQ
        self.session_start = NO_TIME
        self.session = None
        self.reassemblers = None
        self.prefix = NO_PREFIX
        self.prefix_start = NO_START
        self.early = None
        self.held = NOTHING_HELD
        if self.state is not FlowState.CLOSED:
            self.state = FlowState.COUNTING


class FlowTable:
    """Flows by directional key, bounded to ``max_flows``; oldest flows are evicted first."""

    def __init__(self, max_flows: int) -> None:
        self.max_flows = max_flows
        self._entries: dict[FlowKey, Flow] = {}
        # Flows in creation order, removed lazily: a flow is live while its key still maps to
        # it. O(1) oldest (under a flood every new flow evicts one: a dict's first item would
        # skip every slot deleted since its last resize, ~35 us at 262,144 flows) for 8 bytes
        # a flow; compacted when dead entries outnumber live ones.
        self._order: deque[Flow] = deque()
        self._live = 0
        self.created = 0
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return self._live

    def lookup(self, key: FlowKey) -> Flow | None:
        return self._entries.get(key)

    def entry_getter(self) -> Callable[[FlowKey], Flow | None]:
        """:meth:`lookup` without the method call, for the per-packet path: the bound
        ``get`` of the table's dict (which is never replaced)."""
        return self._entries.get

    def is_full(self) -> bool:
        return self._live >= self.max_flows

    def add(self, flow: Flow) -> None:
        self._entries[flow.key] = flow
        self._entries[flow.reverse_key] = flow
        self._order.append(flow)
        self._live += 1
        self.created += 1

    def _is_live(self, flow: Flow) -> bool:
        entries = self._entries
        return entries.get(flow.key) is flow or entries.get(flow.reverse_key) is flow

    def remove(self, flow: Flow) -> None:
        if not self._is_live(flow):
            return
        for key in (flow.key, flow.reverse_key):
            if self._entries.get(key) is flow:
                del self._entries[key]
        self._live -= 1
        order = self._order
        if len(order) > 1024 and len(order) > 2 * self._live:
            self._order = deque(f for f in order if self._is_live(f))

    def oldest(self) -> Flow:
        """The flow created longest ago (the table must not be empty)."""
        order = self._order
        while not self._is_live(order[0]):
            order.popleft()
        return order[0]

    def idle_since(self, now: float, timeouts: dict[FlowState, float]) -> list[Flow]:
        """Flows whose last packet is older than their state's idle timeout."""
        # Each flow once: under its first key (the dict keeps the key object it was given).
        return [f for k, f in self._entries.items()
                if k is f.key and now - f.last_seen > timeouts[f.state]]

    def __iter__(self) -> Iterator[Flow]:
        """The live flows in creation order (a snapshot: the table may change meanwhile).

        The dict's order is the flows' creation order: both keys are inserted when a flow is
        added and never again while it lives."""
        return iter([f for k, f in self._entries.items() if k is f.key])
