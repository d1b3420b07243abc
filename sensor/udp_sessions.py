"""The sensor's UDP path: QUIC and DTLS handshakes out of frames that carry no TCP.

:meth:`UdpSensor.process` is called by :class:`sensor.sensor.Sensor` for such frames only,
so the TCP hot path never pays for it. It decodes the UDP datagram (:mod:`sensor.udp`),
finds the flow in a bounded table, and feeds QUIC (:class:`sensor.quic.QuicSession`) or
DTLS (:class:`sensor.dtls.DtlsSession`) sessions; when a handshake is over, the flow is only
counted, as on TCP, and its events are built by the same :class:`sensor.build.EventBuilder`
(``network.transport`` "udp", JA4 with the ``q`` or ``d`` prefix).

A flow starts only on a datagram that opens a handshake: a QUIC long header Initial of a
version we can decrypt (RFC 9000 17.2.2), or a DTLS handshake record holding a
ClientHello, HelloVerifyRequest or ServerHello (RFC 6347 4.1, 4.2.2). Every other
datagram of an unknown flow (DNS, RTP, STUN, ...) costs a decode and a dict lookup and
leaves nothing behind.

Bounds, each counted when reached: ``max_flows`` flows (the oldest is evicted:
``udp_flow_table_full``); handshake and idle timeouts in capture time; the per-session
bounds of the QUIC and DTLS modules (``quic_limit``, ``dtls_limit``); IP-fragmented
datagrams are not reassembled (``udp_ip_fragment``).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas.events import SensorEvent
from sensor.anomalies import Anomaly, AnomalyCounter
from sensor.config import SensorConfig
from sensor.dtls import DTLS_VERSIONS, DtlsSession
from sensor.errors import DecodeError, ParseError
from sensor.flows import Flow, FlowKey, flow_key
from sensor.quic import VERSIONS, QuicSession
from sensor.udp import decode_udp

if TYPE_CHECKING:
    from sensor.build import EventBuilder
    from sensor.sensor import SensorStats
    from sensor.traffic import TrafficStats

#: Default bound of the UDP flow table: UDP handshakes are a small share of a tap's flows.
DEFAULT_MAX_UDP_FLOWS = 16_384
SWEEP_EVERY = 1.0  # seconds of capture time between idle-flow sweeps
QUIC, DTLS = "q", "d"  # JA4's protocol characters


@dataclass(slots=True)
class UdpStats:
    """What the UDP path saw, for the summary and the tests."""

    datagrams: int = 0
    quic_flows: int = 0
    dtls_flows: int = 0
    handshakes: int = 0
    cookie_exchanges: int = 0
    evicted: int = 0
    expired: int = 0
    anomalies: Counter[str] = field(default_factory=Counter)


class UdpFlow:
    """One UDP flow with a QUIC or DTLS handshake: the shared :class:`Flow` counters
    (what the event builder reads) and the protocol session while it runs."""

    __slots__ = ("flow", "protocol", "session")

    def __init__(self, flow: Flow, protocol: str, session: QuicSession | DtlsSession) -> None:
        self.flow = flow
        self.protocol = protocol
        self.session: QuicSession | DtlsSession | None = session


def classify(payload: bytes) -> tuple[str, bool] | None:
    """(protocol, sent by the client) when ``payload`` opens a QUIC or DTLS handshake we
    can follow, else None. QUIC: a long header Initial of a known version, which only a
    client's first flight can be read from (the keys come from its DCID). DTLS: a handshake
    record whose first message is a ClientHello (client) or a HelloVerifyRequest or
    ServerHello (server: the capture started after the ClientHello)."""
    if len(payload) >= 7 and payload[0] & 0x80:
        version = int.from_bytes(payload[1:5], "big")
        params = VERSIONS.get(version)
        if params is not None:
            kind = (payload[0] >> 4) & 3
            if kind == (1 if params.v2_types else 0):  # RFC 9000 17.2, RFC 9369 3.2
                return QUIC, True
        return None
    if (len(payload) >= 26 and payload[0] == 22
            and int.from_bytes(payload[1:3], "big") in DTLS_VERSIONS
            and payload[3:5] == b"\x00\x00"):
        if payload[13] == 1:
            return DTLS, True
        if payload[13] in (2, 3):
            return DTLS, False
    return None


class UdpSensor:
    """The UDP handshake path of one sensor; shares its builder, anomaly counter, stats and
    event list, so events come out in the same order and shape as the TCP path's."""

    def __init__(self, config: SensorConfig, builder: EventBuilder, anomalies: AnomalyCounter,
                 stats: SensorStats, events: list[SensorEvent],
                 max_flows: int = DEFAULT_MAX_UDP_FLOWS,
                 traffic: TrafficStats | None = None) -> None:
        self.config = config
        self.traffic = traffic
        self.builder = builder
        self.anomalies = anomalies
        self.sensor_stats = stats
        self.events = events
        self.max_flows = max_flows
        self.stats = UdpStats()
        # Ordered: evicting the oldest must be O(1); a plain dict's first item is found by
        # skipping every deleted slot at its front, which a flood makes quadratic.
        self._flows: OrderedDict[FlowKey, tuple[UdpFlow, int]] = OrderedDict()
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._flows) // 2

    def flows(self) -> list[Flow]:
        """The flows in the table, each once (for the traffic statistics)."""
        return [udp_flow.flow for udp_flow in self._flows_once()]

    def process(self, timestamp: float, linktype: int, data: bytes) -> None:
        """Account for one frame that holds no TCP segment."""
        if timestamp >= self._next_sweep:
            self.sweep(timestamp)
        try:
            datagram = decode_udp(linktype, data)
        except DecodeError as error:
            self._anomaly(error.kind, str(error), timestamp)
            return
        if datagram is None or not datagram.payload:
            return
        self.stats.datagrams += 1
        key = flow_key(datagram.src_addr, datagram.dst_addr, datagram.src_port,
                       datagram.dst_port, datagram.vlans)
        entry = self._flows.get(key)
        if entry is None:
            kind = classify(datagram.payload)
            if kind is None:
                return
            entry = self._open(key, kind[0], kind[1], timestamp)
        udp_flow, direction = entry
        flow = udp_flow.flow
        if key == flow.fkey:  # as the TCP flows count direction 0 (Flow.packets0)
            flow.packets0 += 1
            flow.bytes0 += len(datagram.payload)
        else:
            flow.packets1 += 1
            flow.bytes1 += len(datagram.payload)
        flow.last_seen = timestamp
        session = udp_flow.session
        if session is None:
            return
        if datagram.fragmented:
            self._anomaly("udp_ip_fragment", "IP-fragmented datagram skipped (no IP "
                          "reassembly)", timestamp, flow)
            return
        self._feed(udp_flow, session, direction == flow.client_direction, datagram.payload,
                   timestamp)

    def finish(self, now: float) -> None:
        """End of input (at capture time ``now``): report every handshake still open."""
        for udp_flow in list(self._flows_once()):
            self._end(udp_flow, "capture_end")

    def sweep(self, now: float) -> None:
        """Forget flows idle past their timeout (the handshake timeout while a handshake
        runs, else the idle timeout), reporting unfinished handshakes."""
        self._next_sweep = now + SWEEP_EVERY
        for udp_flow in list(self._flows_once()):
            timeout = (self.config.handshake_timeout if udp_flow.session is not None
                       else self.config.idle_timeout)
            if now - udp_flow.flow.last_seen > timeout:
                self._forget(udp_flow, "idle_timeout")
                self.stats.expired += 1

    # -- internals -----------------------------------------------------------------------

    def _flows_once(self) -> list[UdpFlow]:
        return [entry[0] for entry in self._flows.values() if entry[1] == 0]

    def _open(self, key: FlowKey, protocol: str, from_client: bool,
              timestamp: float) -> tuple[UdpFlow, int]:
        if len(self._flows) >= 2 * self.max_flows:
            oldest = next(iter(self._flows.values()))[0]
            self._anomaly("udp_flow_table_full", f"UDP flow table holds {self.max_flows} "
                          "flows; evicting the oldest", timestamp, oldest.flow)
            self._forget(oldest, "evicted")
            self.stats.evicted += 1
        flow = Flow(key, timestamp)
        flow.client_direction = 0 if from_client else 1
        flow.session_start = timestamp
        flow.is_tls = True
        session: QuicSession | DtlsSession
        if protocol == QUIC:
            session = QuicSession()
            self.stats.quic_flows += 1
        else:
            session = DtlsSession()
            self.stats.dtls_flows += 1
        udp_flow = UdpFlow(flow, protocol, session)
        self._flows[flow.keys[0]] = (udp_flow, 0)
        self._flows[flow.keys[1]] = (udp_flow, 1)
        self.sensor_stats.tls_flows += 1
        return udp_flow, 0

    def _forget(self, udp_flow: UdpFlow, reason: str) -> None:
        self._end(udp_flow, reason)
        if self.traffic is not None:
            self.traffic.forget(udp_flow.flow, udp=True)
        for key in udp_flow.flow.keys:
            self._flows.pop(key, None)

    def _feed(self, udp_flow: UdpFlow, session: QuicSession | DtlsSession, from_client: bool,
              payload: bytes, timestamp: float) -> None:
        record = session.session.record if isinstance(session, DtlsSession) else session.record
        irregular = len(record.irregularities)
        try:
            session.feed(from_client, payload, timestamp)
        except ParseError as error:
            self._anomaly(error.kind, str(error), timestamp, udp_flow.flow)
        for detail in record.irregularities[irregular:]:
            self._anomaly("tls_handshake_irregular", detail, timestamp, udp_flow.flow)
        if session.done:
            self._emit(udp_flow)

    def _end(self, udp_flow: UdpFlow, reason: str) -> None:
        session = udp_flow.session
        if session is not None:
            session.close(reason)
            self._emit(udp_flow)

    def _emit(self, udp_flow: UdpFlow) -> None:
        session = udp_flow.session
        assert session is not None
        udp_flow.session = None
        if isinstance(session, DtlsSession):
            self.stats.cookie_exchanges += session.cookie_exchange
            has_hello, record = session.session.has_hello, session.session.record
        else:
            has_hello, record = session.has_hello, session.record
        if not has_hello:
            return
        events = self.builder.handshake(udp_flow.flow, record, ja4_transport=udp_flow.protocol)
        self.stats.handshakes += 1
        stats = self.sensor_stats
        stats.handshakes[events.version_label] += 1
        stats.established += record.established
        stats.certificates += len(events.certificates)
        self.events.append(events.handshake)
        self.events.extend(events.certificates)
        if self.traffic is not None:
            self.traffic.handshake(udp_flow.flow, events.handshake.event.outcome == "failure",
                                   udp=True)

    def _anomaly(self, kind: str, detail: str, timestamp: float,
                 flow: Flow | None = None) -> None:
        self.stats.anomalies[kind] += 1
        report: Anomaly | None = self.anomalies.record(
            kind, detail, timestamp, flow.client_server() if flow is not None else None)
        if report is not None:
            self.events.append(self.builder.anomaly(report))

