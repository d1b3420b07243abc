"""``certwatch.traffic.stats``: per-interval counts per server endpoint, on real captures.

The counts are checked against what the packets themselves hold (every TCP segment's
payload, decoded frame by frame) and against the flows' own counters, whatever the
interval; the interval boundary and the endpoint bound on generated captures whose timing
the test chooses.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.events import SensorEvent, TrafficStatsEvent
from schemas.topics import TRAFFIC_STATS_TOPIC, key_of, topic_of
from sensor.config import SensorConfig
from sensor.decode import LINKTYPE_RAW, TcpSegment
from sensor.flows import likely_client_direction
from sensor.sensor import Sensor
from sensor.traffic import LIMIT_ANOMALY
from sensor.udp import decode_udp
from tests.support import (
    DATA,
    Frame,
    anomalies,
    captures,
    handshakes,
    raw_frame,
    read_frames,
    run_sensor,
    tcp_segments,
)
from tools.tlsgen.scenarios import Options, build

REAL = [p for p in captures() if not p.name.endswith(".gz")]
NO_EXPIRY = {"idle_timeout": 1e12, "closed_linger": 1e12, "handshake_timeout": 1e12}


def stats(events: list[SensorEvent]) -> list[TrafficStatsEvent]:
    return [e for e in events if isinstance(e, TrafficStatsEvent)]


def ip_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


@pytest.mark.parametrize("capture", REAL[::3], ids=lambda p: p.name)
def test_totals_are_every_tcp_segment_of_the_capture(capture: Path) -> None:
    """Whatever the interval and whether flows expire, every TCP segment is counted once:
    the events' packets and bytes add up to the capture's TCP segments and payload."""
    frames = read_frames(capture)
    segments = [segment for _, segment in tcp_segments(frames)]
    for interval in (0.5, 60.0):
        events = run_sensor(frames, SensorConfig(name="t", stats_interval=interval))
        found = stats(events)
        assert sum(e.network.packets for e in found) == len(segments)
        assert sum(e.network.bytes for e in found) == sum(len(s.payload) for s in segments)
        assert all(topic_of(e) == TRAFFIC_STATS_TOPIC for e in found)


@pytest.mark.parametrize("capture", REAL[1::3], ids=lambda p: p.name)
def test_each_endpoint_gets_the_sum_of_its_flows_counters(capture: Path) -> None:
    """With flows never forgotten, an endpoint's counts over all intervals are the sums of
    the counters of the flows whose server it is; its connections are those flows, and its
    handshakes the handshake events to it."""
    sensor = Sensor(SensorConfig(name="t", stats_interval=1.0, **NO_EXPIRY))
    events: list[SensorEvent] = []
    for frame in read_frames(capture):
        sensor.process(*frame)
        events.extend(sensor.drain())
    events.extend(sensor.finish())
    expected: dict[str, Counter[str]] = {}
    for flow in sensor.flows:
        (addr, port) = flow.client_server()[1]
        ip = ip_text(addr)
        key = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        expected.setdefault(key, Counter()).update(
            packets=flow.packets, bytes=flow.bytes, connections=1)
    for hs in handshakes(events):
        ip, port = hs.destination.ip, hs.destination.port
        key = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        expected[key]["handshakes"] += 1
        expected[key]["failed"] += hs.event.outcome == "failure"
    got: dict[str, Counter[str]] = {}
    for event in stats(events):
        traffic = event.certwatch.traffic
        got.setdefault(key_of(event), Counter()).update(
            packets=event.network.packets, bytes=event.network.bytes,
            connections=traffic.connections, handshakes=traffic.handshakes,
            failed=traffic.failed_handshakes)
    assert {k: +v for k, v in got.items()} == {k: +v for k, v in expected.items()}


def burst_frames(tmp_path: Path) -> list[tuple[float, int, bytes]]:
    capture = tmp_path / "byte-burst.pcap"
    build("byte-burst", Options(connections=2, app_segments=30)).write(capture)
    return read_frames(capture)


def test_an_interval_holds_exactly_the_packets_before_its_boundary(tmp_path: Path) -> None:
    """Intervals are epoch-aligned minutes; a packet at or after the boundary belongs to the
    next interval, and an interval is reported once capture time reaches its end."""
    frames = burst_frames(tmp_path)
    sensor = Sensor(SensorConfig(name="t", stats_interval=60.0, **NO_EXPIRY))
    seen: list[tuple[float, TrafficStatsEvent]] = []
    for frame in frames:
        sensor.process(*frame)
        seen += [(frame[0], e) for e in sensor.drain() if isinstance(e, TrafficStatsEvent)]
    final = stats(sensor.finish())
    per_minute = Counter(int(ts // 60) for ts, _, _ in frames)
    for when, event in seen:
        start, end = event.event.start, event.event.end
        assert start is not None and end is not None
        assert start.timestamp() % 60 == 0 and end.timestamp() - start.timestamp() == 60
        assert start.timestamp() + 60 <= when  # emitted once capture time passed its end
        assert event.network.packets == per_minute[int(start.timestamp() // 60)]
    assert len(seen) == len(per_minute) - 1 and len(final) == 1
    last = final[0]
    assert last.timestamp == datetime.fromtimestamp(frames[-1][0], UTC)
    assert last.network.packets == per_minute[max(per_minute)]


def test_an_idle_gap_yields_no_empty_intervals_and_off_means_none(tmp_path: Path) -> None:
    frames = burst_frames(tmp_path)
    shifted = frames[: len(frames) // 2] + [(ts + 86_400, lt, d)
                                             for ts, lt, d in frames[len(frames) // 2:]]
    events = stats(run_sensor(shifted, SensorConfig(name="t", stats_interval=60.0)))
    minutes = {int(ts // 60) for ts, _, _ in shifted}
    assert len(events) == len(minutes)  # one server: one event per minute with packets
    assert not stats(run_sensor(frames, SensorConfig(name="t", stats_interval=0)))


def test_endpoints_beyond_the_bound_are_summed_into_one_anomaly() -> None:
    """``max_stats_endpoints`` endpoints are reported; the others' counts go into one
    ``traffic_endpoints_limit`` anomaly per interval, and the totals stay whole."""
    capture = next(p for p in REAL if p.name == "latest.pcapng")
    frames = read_frames(capture)
    whole = stats(run_sensor(frames, SensorConfig(name="t", stats_interval=1e9)))
    assert len(whole) > 2
    bounded = run_sensor(frames, SensorConfig(name="t", stats_interval=1e9,
                                              max_stats_endpoints=2))
    kept = stats(bounded)
    assert len(kept) == 2
    (limit,) = [a for a in anomalies(bounded) if a.certwatch.anomaly.kind == LIMIT_ANOMALY]
    detail = limit.certwatch.anomaly.detail
    assert detail.startswith(f"{len(whole) - 2} server endpoints beyond the limit of 2")
    left_out = sum(e.network.bytes for e in whole) - sum(e.network.bytes for e in kept)
    assert f": {left_out} bytes," in detail


def test_live_workers_sharing_an_endpoint_report_parts_with_distinct_ids(
        tmp_path: Path) -> None:
    """Live ``--workers`` split one server's connections between processes (the kernel's
    fanout keeps each connection whole): each worker reports its share of the endpoint's
    interval, the shares add up to what one sensor reports, and their ids differ so a SIEM
    keyed by ``event.id`` keeps both. A sensor alone keeps the id a replay always gave."""
    frames = burst_frames(tmp_path)
    def connection(frame: tuple[float, int, bytes]) -> frozenset[tuple[bytes, int]]:
        ((_, segment),) = tcp_segments([frame])
        return frozenset(((segment.src_addr, segment.src_port),
                          (segment.dst_addr, segment.dst_port)))

    connections = sorted({connection(f) for f in frames}, key=sorted)
    assert len(connections) > 2  # all to one server endpoint
    worker_of = {c: index % 2 for index, c in enumerate(connections)}
    shares = [[f for f in frames if worker_of[connection(f)] == w] for w in (0, 1)]
    interval = {"stats_interval": 1e9, **NO_EXPIRY}
    alone = stats(run_sensor(frames, SensorConfig(name="t", **interval)))
    parts = [stats(run_sensor(share, SensorConfig(name="t", worker=index, **interval)))
             for index, share in enumerate(shares)]
    assert len(alone) == 1 and [len(p) for p in parts] == [1, 1]
    (first,), (second,) = parts
    assert key_of(first) == key_of(second) == key_of(alone[0])
    assert first.event.start == second.event.start == alone[0].event.start
    assert first.event.id != second.event.id
    assert alone[0].event.id not in {first.event.id, second.event.id}
    assert first.network.packets + second.network.packets == alone[0].network.packets
    assert first.network.bytes + second.network.bytes == alone[0].network.bytes
    unnamed = [stats(run_sensor(share, SensorConfig(name="t", **interval)))[0].event.id
               for share in shares]
    assert unnamed[0] == unnamed[1]  # what the workers sent before: one id, a share lost


UDP_CAPTURES = sorted((DATA / "quic").glob("*.gz")) + sorted((DATA / "dtls").glob("*.gz"))


@pytest.mark.parametrize("capture", UDP_CAPTURES, ids=lambda p: p.name)
def test_quic_and_dtls_flows_are_counted_as_udp_endpoints(capture: Path) -> None:
    """A QUIC or DTLS flow's datagrams, from the first handshake datagram on (a DTLS
    handshake record or a QUIC long header), are its server endpoint's
    ``network.transport: udp`` counts (apart from TCP on the same port), with one connection
    per flow and its handshakes; datagrams before it (STUN) are no flow and not counted."""
    frames = read_frames(capture)
    events = run_sensor(frames, SensorConfig(name="t", stats_interval=1e9))
    udp_stats = [e for e in stats(events) if e.network.transport == "udp"]
    found = handshakes(events)
    assert found and all(h.network.transport == "udp" for h in found)
    expected: dict[tuple[str, int], Counter[str]] = {}
    for hs in found:
        client = (hs.source.ip, hs.source.port)
        server = (hs.destination.ip, hs.destination.port)
        counts = expected.setdefault(server, Counter())
        counts["handshakes"] += 1
        counts["connections"] += 1
        opened = False
        for _, linktype, data in frames:
            datagram = decode_udp(linktype, data)
            if datagram is None or not datagram.payload:
                continue
            ends = {(ip_text(datagram.src_addr), datagram.src_port),
                    (ip_text(datagram.dst_addr), datagram.dst_port)}
            first = datagram.payload[0]
            opened = opened or (ends == {client, server} and (first == 22 or first & 0x80))
            if opened and ends == {client, server}:
                counts["packets"] += 1
                counts["bytes"] += len(datagram.payload)
    got = {(e.destination.ip, e.destination.port): Counter(
        packets=e.network.packets, bytes=e.network.bytes,
        connections=e.certwatch.traffic.connections, handshakes=e.certwatch.traffic.handshakes)
        for e in udp_stats}
    assert got == expected
    assert len({e.event.id for e in stats(events)}) == len(stats(events))


def mid_stream(first_from_server: bool, client_port: int, server_port: int) -> list[Frame]:
    """A connection whose start the capture missed: no SYN, the first segment from the
    server or from the client, then one the other way; TLS application data, no hello."""
    client, server = bytes([10, 0, 0, 7]), bytes([192, 0, 2, 9])
    down = TcpSegment(server, client, server_port, client_port, 0, 1, 0x18, b"", ())
    up = TcpSegment(client, server, client_port, server_port, 1, 1, 0x10, b"", ())
    record = b"\\x17\\x03\\x03\\x00\\x05hello"
    segments = [(down, record), (up, b"")] if first_from_server else [(up, record), (down, b"")]
    return [(1_700_000_000.0 + n, LINKTYPE_RAW, raw_frame(segment, segment.seq, payload))
            for n, (segment, payload) in enumerate(segments)]


@pytest.mark.parametrize("first_from_server", [True, False])
@pytest.mark.parametrize(("client_port", "server_port"),
                         [(52930, 443), (60418, 8443), (55000, 5432)])
def test_a_connection_caught_mid_stream_is_counted_under_its_server(
        first_from_server: bool, client_port: int, server_port: int) -> None:
    """Without a SYN or a hello to tell the roles, the server is the side on the system port
    (or, between two unprivileged ports, the one outside the dynamic range), whichever side
    the capture saw first: not a client's ephemeral port reported as a server endpoint."""
    events = stats(run_sensor(mid_stream(first_from_server, client_port, server_port),
                              SensorConfig(name="t")))
    assert [(e.destination.ip, e.destination.port) for e in events] == [
        ("192.0.2.9", server_port)]
    assert events[0].network.packets == 2 and events[0].certwatch.traffic.connections == 1


@pytest.mark.parametrize(("sport", "dport", "client"), [
    (443, 50000, 1), (50000, 443, 0), (8443, 60000, 1), (60000, 8443, 0),
    (5000, 6000, 0), (50000, 60000, 0), (80, 443, 0)])
def test_the_likely_client_is_the_ephemeral_side_else_the_first_sender(
        sport: int, dport: int, client: int) -> None:
    assert likely_client_direction(sport, dport) == client
