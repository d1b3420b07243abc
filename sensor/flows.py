"""The flow table: one entry per TCP connection, bounded, expired by capture time.

A flow is stored under both of its directional keys so the per-packet lookup is one dict
access with no canonicalisation; which direction a packet travels is only worked out on the
general path (:meth:`Flow.direction_of`), so the lookup yields the flow itself. Direction 0
is whoever sent the first packet we saw; which side is the TLS client is learnt from the
SYN or, mid-stream, from who sends the ClientHello.

Memory (issue 5: 100,000 flows open at once must fit in well under 150 MB):

* A flow key is one ``bytes`` (:func:`flow_key`): source address, destination address,
  source port, destination port, and for a tagged frame the VLAN ids then the address
  length. For untagged IPv4 it is exactly bytes 26..38 of an Ethernet frame whose IPv4
  header has no options (addresses and ports are contiguous there, RFC 791 3.1 and RFC 9293
  3.1), so the per-packet path makes it with one slice; 48 bytes an object against ~290 for
  a tuple of two addresses, two ports and a VLAN tuple, and one hash of 12 bytes per lookup.
* A flow keeps its counters, keys, state and a reference to its parsing state
  (:class:`FlowParse`), which exists only while the flow is detected or in its handshake;
  a counted flow costs its object, its two keys and its two dict entries.
* Creation order is a deque of flows with lazy deletion, not a second mapping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum
from struct import Struct

from sensor.reassembly import StreamReassembler
from sensor.session import Side, TlsSession

FlowKey = bytes
"""A directional flow key, see :func:`flow_key`."""
FlowTuple = tuple[bytes, bytes, int, int, tuple[int, ...]]
"""(source address, destination address, source port, destination port, VLAN ids)."""

# Shared placeholders of the per-direction lists a flow only sometimes needs; never written
# (FlowParse.own_prefix / FlowParse.own_held replace them with the flow's own lists first).
NO_PREFIX: list[bytes] = [b"", b""]
NO_START: list[int] = [0, 0]
NOTHING_HELD: list[tuple[int, bytes] | None] = [None, None]
NO_TIME = 0.0
_IPV4_KEY, _IPV6_KEY = 12, 36  # untagged key lengths: 2 addresses + 2 ports
# An untagged key's fields in one C call: split_key runs for every handshake (its event's
# endpoints and VLANs, the traffic statistics' server), and the generator of VLAN ids it
# ran for every key, tagged or not, cost more than the rest of it.
_SPLIT_IPV4 = Struct("!4s4sHH").unpack
_SPLIT_IPV6 = Struct("!16s16sHH").unpack
_NO_VLANS: tuple[int, ...] = ()
# Bits of Flow.fins above the two FIN bits (1 << direction): the flow started a TLS
# session; the client's direction is known; it is direction 1; the flow's two keys are
# equal (a connection from a port to itself).
_TLS_BIT, _CLIENT_KNOWN, _CLIENT_IS_1, _SELF_KEYS = 4, 8, 16, 32
#: The bits of ``Flow.fins`` saying the client's direction is known, and that it is 1: for
#: a per-packet caller that tells a sender's side without the ``client_direction`` call
#: (``sensor.sensor`` inlines ``side`` and ``direction_of``: keep them in step).
CLIENT_KNOWN, CLIENT_IS_1 = _CLIENT_KNOWN, _CLIENT_IS_1
#: The bit of ``Flow.fins`` saying the flow's two keys are equal (see ``direction_of``).
SELF_KEYS = _SELF_KEYS


def flow_key(src: bytes, dst: bytes, sport: int, dport: int, vlans: tuple[int, ...] = (),
             ) -> FlowKey:
    """The key of packets from ``src``:``sport`` to ``dst``:``dport`` with these VLAN ids.

    Untagged: addresses and ports, network order (12 bytes for IPv4, 36 for IPv6). Tagged:
    then each VLAN id in 2 bytes (a VID is 12 bits, IEEE 802.1Q 9.6) and the address length
    in one byte, so a tagged key has an odd length and never equals an untagged one, and
    IPv4 and IPv6 keys stay apart whatever the number of tags."""
    key = src + dst + (sport << 16 | dport).to_bytes(4, "big")
    if vlans:
        key += b"".join(v.to_bytes(2, "big") for v in vlans) + bytes((len(src),))
    return key


def split_key(key: FlowKey) -> FlowTuple:
    """The fields :func:`flow_key` was made of."""
    size = len(key)
    if size == _IPV4_KEY:
        return (*_SPLIT_IPV4(key), _NO_VLANS)
    if size == _IPV6_KEY:
        return (*_SPLIT_IPV6(key), _NO_VLANS)
    alen = key[-1]
    vlans = key[2 * alen + 4 : -1]
    ports = 2 * alen
    return (key[:alen], key[alen:ports], (key[ports] << 8) | key[ports + 1],
            (key[ports + 2] << 8) | key[ports + 3],
            tuple(int.from_bytes(vlans[i : i + 2], "big") for i in range(0, len(vlans), 2)))


def reverse_key(key: FlowKey) -> FlowKey:
    """The key of the packets going the other way."""
    size = len(key)
    alen = (size - 4) // 2 if size in (_IPV4_KEY, _IPV6_KEY) else key[-1]
    ports = 2 * alen
    return (key[alen:ports] + key[:alen] + key[ports + 2 : ports + 4] + key[ports : ports + 2]
            + key[ports + 4 :])


def likely_client_direction(sport: int, dport: int) -> int:
    """The client's direction of a flow whose roles no SYN or TLS hello told: direction 0
    (``sport`` -> ``dport``) sent first, but a capture or a flow table that starts
    mid-connection often sees the server speak first. A side on a system port (below 1024)
    facing one that is not is the server's; else a side in the dynamic range (49152 and up)
    facing one that is not is the client's (RFC 6335 section 6); else the first sender is
    taken for the client."""
    if (sport < 1024) != (dport < 1024):
        return 1 if sport < 1024 else 0
    if (sport >= 49152) != (dport >= 49152):
        return 0 if sport >= 49152 else 1
    return 0


class FlowState(Enum):
    DETECTING = "detecting"  # looking at the first payloads for a TLS hello
    HANDSHAKE = "handshake"  # reassembling and parsing both directions
    COUNTING = "counting"  # handshake over or not TLS: packets are only counted
    CLOSED = "closed"  # FIN/RST seen both ways: kept briefly so stragglers don't start a flow


# Members as module constants (an enum member looked up on its class costs a metaclass
# attribute lookup, ~75 ns; these are read per flow and per handshake).
_DETECTING, _COUNTING, _CLOSED = FlowState.DETECTING, FlowState.COUNTING, FlowState.CLOSED
_CLIENT, _SERVER = Side.CLIENT, Side.SERVER


class FlowParse:
    """What a flow needs while it is detected or in its handshake, dropped afterwards."""

    __slots__ = ("detect_segments", "early", "held", "next_seq0", "next_seq1", "prefix",
                 "prefix_start", "reassemblers", "session", "session_start")

    def __init__(self, session_start: float = NO_TIME) -> None:
        # Next sequence number expected per direction, from the SYN or the payload so far:
        # where reassembly starts when a hello is found (after STARTTLS, mid-stream). Two
        # slots, not a list: 80 bytes less for each flow being detected.
        self.next_seq0: int | None = None
        self.next_seq1: int | None = None
        self.detect_segments = 0
        # The first bytes of the current payload run per direction, so a hello cut into
        # segments of a few bytes is still recognised (RFC 793 allows any segmentation).
        # These and ``held`` are the shared, never-mutated NO_PREFIX / NO_START /
        # NOTHING_HELD until the flow needs its own (``own_prefix``, ``own_held``).
        self.prefix: list[bytes] = NO_PREFIX
        self.prefix_start: list[int] = NO_START
        # Segments that arrived ahead of a hole while detecting (direction, seq, payload):
        # replayed into the reassembler if a hello is found. Allocated only when needed.
        self.early: list[tuple[int, int, bytes]] | None = None
        # Per direction, a segment of zero bytes held back while the handshake is parsed
        # (seq, payload), until the next segment says whether it was data or ACK padding.
        self.held: list[tuple[int, bytes] | None] = NOTHING_HELD
        self.session: TlsSession | None = None
        # Capture time the session started, set when it does (read only for a session).
        self.session_start = session_start
        self.reassemblers: tuple[StreamReassembler, StreamReassembler] | None = None

    def next_seq(self, direction: int) -> int | None:
        """The next sequence number expected from ``direction`` (None: not known yet)."""
        return self.next_seq1 if direction else self.next_seq0

    def set_next_seq(self, direction: int, seq: int) -> None:
        if direction:
            self.next_seq1 = seq
        else:
            self.next_seq0 = seq

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


class Flow:
    """One TCP connection. Holds parsing state (``parse``) only while the handshake is in
    progress or TLS is still being looked for."""

    # Ten slots (112 bytes a flow; nine would cost as much, objects come in 16-byte steps):
    # the reverse key is the table's (and computed when needed), the client's direction and
    # a few flags are bits of ``fins``.
    __slots__ = ("buffered", "bytes0", "bytes1", "fins", "fkey", "last_seen", "packets0",
                 "packets1", "parse", "state")

    def __init__(self, key: FlowKey, timestamp: float) -> None:
        self.fkey = key
        self.last_seen = timestamp
        # Packets and payload bytes per direction: direction 0's are the packets whose key
        # is ``fkey``, direction 1's the others; the totals (``packets``, ``bytes``) are
        # sums, read off the per-packet path. Counted per direction, not as totals plus
        # direction 0's share, so a counted packet pays one key compare and two increments,
        # as many as the totals alone cost (the compare is the split's whole price). Four
        # plain ints, not two packed ones (packets in the high bits): every add would then
        # be a multi-digit one, slower than two single-digit adds in CPython and a boxed one
        # in the compiled build, and a field would need a bound. The key compare, not
        # ``direction_of``, so a flow from a port to itself (``SELF_KEYS``, whose two
        # directions no key tells apart) has all its packets in direction 0.
        self.packets0 = 0
        self.bytes0 = 0
        self.packets1 = 0
        self.bytes1 = 0
        self.state = _DETECTING
        # bit 1 << direction: that direction sent FIN; then _TLS_BIT, _CLIENT_KNOWN,
        # _CLIENT_IS_1, _SELF_KEYS
        self.fins = _SELF_KEYS if reverse_key(key) == key else 0
        self.parse: FlowParse | None = FlowParse()
        # Bytes this flow holds in buffers, as last accounted in the sensor's global budget
        # (``sensor.sensor.BufferBudget``, issue 7).
        self.buffered = 0

    @property
    def rkey(self) -> FlowKey:
        """The key of direction 1's packets."""
        return reverse_key(self.fkey)

    @property
    def keys(self) -> tuple[FlowKey, FlowKey]:
        """(key of direction 0's packets, key of direction 1's packets)."""
        return self.fkey, reverse_key(self.fkey)

    @property
    def client_direction(self) -> int | None:
        """The direction the TLS client sends in, None while not known."""
        fins = self.fins
        if not fins & _CLIENT_KNOWN:
            return None
        return 1 if fins & _CLIENT_IS_1 else 0

    @client_direction.setter
    def client_direction(self, value: int | None) -> None:
        fins = self.fins & ~(_CLIENT_KNOWN | _CLIENT_IS_1)
        if value is not None:
            fins |= _CLIENT_KNOWN | (_CLIENT_IS_1 if value else 0)
        self.fins = fins

    @property
    def key(self) -> FlowTuple:
        """Direction 0's key as its fields (source address, destination address, source
        port, destination port, VLAN ids)."""
        return split_key(self.fkey)

    @property
    def vlans(self) -> tuple[int, ...]:
        return split_key(self.fkey)[4]

    @property
    def is_tls(self) -> bool:
        """Whether a TLS (or QUIC/DTLS) session was started on this flow."""
        return bool(self.fins & _TLS_BIT)

    @is_tls.setter
    def is_tls(self, value: bool) -> None:
        self.fins = self.fins | _TLS_BIT if value else self.fins & ~_TLS_BIT

    @property
    def session(self) -> TlsSession | None:
        parse = self.parse
        return parse.session if parse is not None else None

    @property
    def reassemblers(self) -> tuple[StreamReassembler, StreamReassembler] | None:
        parse = self.parse
        return parse.reassemblers if parse is not None else None

    @property
    def early(self) -> list[tuple[int, int, bytes]] | None:
        parse = self.parse
        return parse.early if parse is not None else None

    @property
    def session_start(self) -> float:
        """Capture time the session started (``NO_TIME`` once the parsing state is gone)."""
        parse = self.parse
        return parse.session_start if parse is not None else NO_TIME

    @session_start.setter
    def session_start(self, value: float) -> None:
        if self.parse is None:
            self.parse = FlowParse(value)
        self.parse.session_start = value

    def direction_of(self, key: FlowKey) -> int:
        """The direction of a packet with this key (one of the flow's two). A flow whose two
        keys are equal (a connection from a port to itself) counts its packets as direction 1,
        the direction its second table entry named before."""
        return 0 if key == self.fkey and not self.fins & _SELF_KEYS else 1

    @property
    def addresses(self) -> tuple[bytes, bytes]:
        """(address of direction 0's sender, address of direction 1's sender)."""
        src, dst, _, _, _ = split_key(self.fkey)
        return src, dst

    @property
    def ports(self) -> tuple[int, int]:
        _, _, sport, dport, _ = split_key(self.fkey)
        return sport, dport

    def side(self, direction: int) -> Side:
        """The TLS role of the sender in ``direction`` (the client is known once a session
        has started)."""
        return _CLIENT if direction == self.client_direction else _SERVER

    def client_server(self) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
        """((client address, port), (server address, port)); when no SYN or hello told the
        roles, the likelier ones (:func:`likely_client_direction`)."""
        src, dst, sport, dport, _ = split_key(self.fkey)
        fins = self.fins
        if (fins & _CLIENT_IS_1 if fins & _CLIENT_KNOWN
                else likely_client_direction(sport, dport)):
            return (dst, dport), (src, sport)
        return (src, sport), (dst, dport)

    def drop_parsing_state(self) -> None:
        """Free everything the handshake needed; from now on the flow is only counted."""
        self.parse = None
        if self.state is not _CLOSED:
            self.state = _COUNTING

    # Last in the class: a method named ``bytes`` shadows the builtin in the class body
    # for the annotations after it.
    @property
    def packets(self) -> int:
        """Packets seen, both directions (off the per-packet path: it counts per direction)."""
        return self.packets0 + self.packets1

    @property
    def bytes(self) -> int:
        """Payload bytes seen (TCP or UDP payload), both directions."""
        return self.bytes0 + self.bytes1


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
        self._entries[flow.fkey] = flow
        self._entries[reverse_key(flow.fkey)] = flow
        self._order.append(flow)
        self._live += 1
        self.created += 1

    def _is_live(self, flow: Flow) -> bool:
        # A flow's two entries come and go together, and a key of a live flow is never
        # given to another (a packet with it finds this flow): one look is enough.
        return self._entries.get(flow.fkey) is flow

    def remove(self, flow: Flow) -> None:
        if not self._is_live(flow):
            return
        for key in (flow.fkey, reverse_key(flow.fkey)):
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
        # Each flow once: under its first key, compared by value (bytes == tests identity
        # first, so it costs what ``is`` does): mypyc-compiled code hands out fresh key
        # objects, and with ``is`` found no flow at all (bench/README.md, round 7).
        return [f for k, f in self._entries.items()
                if k == f.fkey and now - f.last_seen > timeouts[f.state]]

    def __iter__(self) -> Iterator[Flow]:
        """The live flows in creation order (a snapshot: the table may change meanwhile).

        The dict's order is the flows' creation order: both keys are inserted when a flow is
        added and never again while it lives. A flow's reverse key equals its key only for
        a flow from an address and port to themselves, and then the two are one entry."""
        return iter([f for k, f in self._entries.items() if k == f.fkey])
