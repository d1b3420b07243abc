"""The flow table: one entry per TCP connection, bounded, expired by capture time.

A flow is stored under both of its directional keys so the per-packet lookup is one dict
access with no canonicalisation; the value says which direction the packet travels.
Direction 0 is whoever sent the first packet we saw; which side is the TLS client is
learnt from the SYN or, mid-stream, from who sends the ClientHello.
"""

from __future__ import annotations

from collections import OrderedDict
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


class FlowState(Enum):
    DETECTING = "detecting"  # looking at the first payloads for a TLS hello
    HANDSHAKE = "handshake"  # reassembling and parsing both directions
    COUNTING = "counting"  # handshake over or not TLS: packets are only counted
    CLOSED = "closed"  # FIN/RST seen both ways: kept briefly so stragglers don't start a flow


class Flow:
    """One TCP connection. Holds parsing state only while the handshake is in progress."""

    __slots__ = (
        "bytes",
        "client_direction",
        "detect_segments",
        "early",
        "fins",
        "first_seen",
        "held",
        "is_tls",
        "keys",
        "last_seen",
        "next_seq",
        "packets",
        "prefix",
        "prefix_start",
        "reassemblers",
        "session",
        "session_start",
        "state",
        "vlans",
    )

    def __init__(self, key: FlowKey, timestamp: float) -> None:
        src, dst, sport, dport, vlans = key
        self.keys = (key, (dst, src, dport, sport, vlans))
        self.vlans = vlans
        self.first_seen = timestamp
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

    @property
    def addresses(self) -> tuple[bytes, bytes]:
        """(address of direction 0's sender, address of direction 1's sender)."""
        return self.keys[0][0], self.keys[0][1]

    @property
    def ports(self) -> tuple[int, int]:
        return self.keys[0][2], self.keys[0][3]

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
        """Free everything the handshake needed; from now on the flow is only counted."""
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
        self._entries: dict[FlowKey, tuple[Flow, int]] = {}
        # id(flow) -> flow, in creation order. An OrderedDict, not a dict: finding a dict's
        # first item skips every slot deleted before it (until the next resize), so under a
        # flood evicting the oldest flow cost ~35 us at 262,144 flows (1M half-open flows:
        # 141 s); the OrderedDict's linked list makes it O(1) for ~60 bytes a flow.
        self._flows: OrderedDict[int, Flow] = OrderedDict()
        self.created = 0
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._flows)

    def lookup(self, key: FlowKey) -> tuple[Flow, int] | None:
        return self._entries.get(key)

    def entry_getter(self) -> Callable[[FlowKey], tuple[Flow, int] | None]:
        """:meth:`lookup` without the method call, for the per-packet path: the bound
        ``get`` of the table's dict (which is never replaced)."""
        return self._entries.get

    def is_full(self) -> bool:
        return len(self._flows) >= self.max_flows

    def add(self, flow: Flow) -> None:
        self._entries[flow.keys[0]] = (flow, 0)
        self._entries[flow.keys[1]] = (flow, 1)
        self._flows[id(flow)] = flow
        self.created += 1

    def remove(self, flow: Flow) -> None:
        for key in flow.keys:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is flow:
                del self._entries[key]
        self._flows.pop(id(flow), None)

    def oldest(self) -> Flow:
        """The flow created longest ago."""
        return next(iter(self._flows.values()))

    def idle_since(self, now: float, timeouts: dict[FlowState, float]) -> list[Flow]:
        """Flows whose last packet is older than their state's idle timeout."""
        return [f for f in self._flows.values() if now - f.last_seen > timeouts[f.state]]

    def __iter__(self) -> Iterator[Flow]:
        return iter(list(self._flows.values()))
