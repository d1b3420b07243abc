"""``certwatch.traffic.stats`` split by direction: ``source.*`` is what a server endpoint's
clients sent it (upload), ``destination.*`` what it sent them (download).

Checked against an independent count: the frames' TCP and UDP payloads parsed here with
``struct`` from the link, IP and transport headers (RFC 791, RFC 8200, RFC 9293, RFC 768),
and each connection's client taken from the capture itself (the sender of a SYN without
ACK) or from tshark's view of it (who sent the ClientHello), not from the sensor. Captures
whose traffic this small parser cannot read (tunnels) are left to the other tests.
"""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import SensorEvent, TrafficStatsEvent
from sensor.config import SensorConfig
from sensor.flowhash import flow_owner
from sensor.flows import Flow, flow_key
from sensor.traffic import TrafficStats
from tests.support import DATA, Frame, captures, endpoint, read_frames, run_sensor, tshark_view
from tools.tlsgen.scenarios import Options, build

End = tuple[str, int]  # (ip text, port)
Conn = tuple[str, frozenset[End]]  # (transport, both ends)
Split = tuple[int, int, int, int]  # client packets, client bytes, server packets, bytes

TUNNELLED = {"vxlan.pcap", "tls_invalid_reads.pcap", "ja3_lots_of_cipher_suites_2_anon.pcap"}
TCP_CAPTURES = [p for p in captures() if not p.name.endswith(".gz") and p.name not in TUNNELLED]
UDP_CAPTURES = [DATA / name for name in (
    "quic/quic-29.pcap.gz", "quic/quic-ietf.pcap.gz",
    "quic/quic_frags_ch_in_multiple_packets.pcapng.gz", "dtls/dtls1_2.pcap.gz",
    "dtls/dtls_session_id_and_coockie_both.pcap.gz")]


def config(interval: float = 60.0) -> SensorConfig:
    """Flows never forgotten: each connection keeps the client the sensor first found."""
    return SensorConfig(name="t", stats_interval=interval, idle_timeout=1e12,
                        closed_linger=1e12, handshake_timeout=1e12)


class Packet:
    """One TCP segment or UDP datagram as this test reads it."""

    __slots__ = ("payload", "proto", "src", "syn_only")

    def __init__(self, proto: str, src: End, payload: int, syn_only: bool) -> None:
        self.proto, self.src, self.payload, self.syn_only = proto, src, payload, syn_only


def parse(linktype: int, data: bytes) -> tuple[Packet, End] | None:
    """(packet, destination) of an untunnelled TCP or UDP frame, else None."""
    if linktype == 1:  # Ethernet, any 802.1Q / 802.1ad tags
        off, ethertype = 14, struct.unpack_from("!H", data, 12)[0]
        while ethertype in (0x8100, 0x88A8):
            ethertype = struct.unpack_from("!H", data, off + 2)[0]
            off += 4
        if ethertype not in (0x0800, 0x86DD):
            return None
    elif linktype == 0:  # BSD loopback: the address family, host order, then IP
        off = 4
    elif linktype == 101:  # raw IP
        off = 0
    else:
        raise AssertionError(f"link type {linktype} not read by this test")
    version = data[off] >> 4
    if version == 4:
        ihl, total = (data[off] & 0x0F) * 4, struct.unpack_from("!H", data, off + 2)[0]
        frag, proto = struct.unpack_from("!H", data, off + 6)[0], data[off + 9]
        if frag & 0x1FFF:
            return None
        src, dst = data[off + 12 : off + 16], data[off + 16 : off + 20]
        l4, end = off + ihl, off + total
    elif version == 6:
        plen, proto = struct.unpack_from("!HB", data, off + 4)
        src, dst = data[off + 8 : off + 24], data[off + 24 : off + 40]
        l4, end = off + 40, off + 40 + plen
    else:
        return None
    end = min(end, len(data))
    if proto not in (6, 17):
        return None
    sport, dport = struct.unpack_from("!HH", data, l4)
    if proto == 6:
        start, flags, kind = l4 + (data[l4 + 12] >> 4) * 4, data[l4 + 13], "tcp"
    else:
        start, flags, kind = l4 + 8, 0, "udp"
    source = (str(ipaddress.ip_address(src)), sport)
    return (Packet(kind, source, end - start, flags & 0x12 == 0x02),
            (str(ipaddress.ip_address(dst)), dport))


def tshark_clients(capture: Path) -> dict[Conn, End]:
    """Each connection's client as tshark saw it: the sender of its ClientHello."""
    clients: dict[Conn, End] = {}
    messages = tshark_view(capture).get("handshake_messages", [])
    assert isinstance(messages, list)
    for message in messages:
        if message["msg"] == "ClientHello":
            src, dst = endpoint(message["src"]), endpoint(message["dst"])
            clients.setdefault((message["transport"], frozenset((src, dst))), src)
    return clients


def independent_split(frames: list[Frame], clients: dict[Conn, End], udp: bool = False,
                      ) -> dict[tuple[str, int, str], Split]:
    """Per (server ip, server port, transport): what its clients sent, what it sent; a
    connection's client is the sender of its first SYN without ACK, else ``clients``', else
    the side not on port 443."""
    sent: dict[Conn, Counter[End]] = {}
    counted: dict[Conn, Counter[End]] = {}
    syn: dict[Conn, End] = {}
    for _, linktype, data in frames:
        parsed = parse(linktype, data)
        if parsed is None:
            continue
        packet, dst = parsed
        if (packet.proto == "udp") != udp or (udp and not packet.payload):
            continue  # the sensor follows UDP flows' datagrams with a payload
        conn = (packet.proto, frozenset((packet.src, dst)))
        sent.setdefault(conn, Counter())[packet.src] += packet.payload
        counted.setdefault(conn, Counter())[packet.src] += 1
        if packet.syn_only:
            syn.setdefault(conn, packet.src)
    split: dict[tuple[str, int, str], Split] = {}
    for conn, by_sender in sent.items():
        client = syn.get(conn) or clients.get(conn)
        if client is None:  # the rest of a connection whose start the capture missed
            https = [end for end in conn[1] if end[1] == 443]
            client = next(iter(conn[1] - set(https))) if len(https) == 1 else None
        assert client is not None, f"no SYN and no ClientHello tells the client of {conn}"
        (server,) = conn[1] - {client}
        before = split.get((*server, conn[0]), (0, 0, 0, 0))
        split[(*server, conn[0])] = (
            before[0] + counted[conn][client], before[1] + by_sender[client],
            before[2] + counted[conn][server], before[3] + by_sender[server])
    return split


def reported_split(events: list[SensorEvent] | list[TrafficStatsEvent],
                   ) -> dict[tuple[str, int, str], Split]:
    """The stats events' split per endpoint, summed over the intervals; each event's two
    directions add up to its ``network`` totals."""
    split: dict[tuple[str, int, str], Split] = {}
    for event in events:
        if not isinstance(event, TrafficStatsEvent):
            continue
        src, dst, net = event.source, event.destination, event.network
        assert src is not None
        assert src.packets is not None and src.bytes is not None
        assert dst.packets is not None and dst.bytes is not None
        assert (src.packets + dst.packets, src.bytes + dst.bytes) == (net.packets, net.bytes)
        where = (str(ipaddress.ip_address(dst.ip)), dst.port, net.transport)
        before = split.get(where, (0, 0, 0, 0))
        split[where] = (before[0] + src.packets, before[1] + src.bytes,
                        before[2] + dst.packets, before[3] + dst.bytes)
    return split


@pytest.mark.parametrize("capture", TCP_CAPTURES, ids=lambda p: p.name)
def test_each_server_endpoint_gets_what_its_clients_and_it_sent(capture: Path) -> None:
    """Over every interval (here seconds long, so a capture spans several), an endpoint's
    ``source`` counts are the TCP segments and payload bytes its clients sent it and its
    ``destination`` counts those it sent back."""
    frames = read_frames(capture)
    expected = independent_split(frames, tshark_clients(capture))
    assert expected
    events = run_sensor(frames, config(1.0))
    assert reported_split(events) == expected


def cut_mid_stream(capture: Path) -> list[Frame]:
    """``capture`` from the first frame its server sent after the ClientHello: no SYN, no
    hello, and the first packet the sensor sees is the server's (its flow's direction 0)."""
    frames = read_frames(capture)
    ((_, client),) = tshark_clients(capture).items()
    hello = None
    for n, (_, linktype, data) in enumerate(frames):
        parsed = parse(linktype, data)
        if parsed is None:
            continue
        if hello is None and parsed[0].src == client and parsed[0].payload:
            hello = n  # the ClientHello
        elif hello is not None and parsed[0].src != client:
            return frames[n:]
    raise AssertionError("the server sent nothing after the ClientHello")


@pytest.mark.parametrize("name", [
    "zeek/tls1.2.pcap", "ndpi/443-curl.pcap", "zeek/smtp-starttls.pcap",
    "zeek/client-certificate.pcap"])
def test_a_connection_caught_mid_stream_is_split_by_the_roles_inferred(name: str) -> None:
    """A capture starting mid-connection, with the server's packet first: the server is
    told by its port (443, or SMTP's 25), its bytes are ``destination``'s although it sent
    the flow's first packet, and its clients' are ``source``'s."""
    capture = DATA / name
    frames = cut_mid_stream(capture)
    expected = independent_split(frames, tshark_clients(capture))
    (_, client_bytes, _, server_bytes), = expected.values()
    assert client_bytes and server_bytes
    events = run_sensor(frames, config())
    assert reported_split(events) == expected


@pytest.mark.parametrize("capture", UDP_CAPTURES, ids=lambda p: p.name)
def test_quic_and_dtls_endpoints_are_split_too(capture: Path) -> None:
    """A QUIC or DTLS server's datagrams: what its clients sent (their Initials or
    ClientHellos and the rest) is ``source``'s, what it sent ``destination``'s."""
    frames = read_frames(capture)
    expected = independent_split(frames, tshark_clients(capture), udp=True)
    assert expected and all(split[1] and split[3] for split in expected.values())
    events = run_sensor(frames, config())
    assert {k: v for k, v in reported_split(events).items() if k[2] == "udp"} == expected


def test_two_workers_report_the_split_of_one(tmp_path: Path) -> None:
    """``replay --workers 2``: each endpoint's connections are shared by both workers, whose
    counts are merged per endpoint and interval; the events are one worker's, and the split
    is the capture's."""
    capture = tmp_path / "bench.pcap"
    build("benchmark", Options(connections=96, app_segments=4, concurrency=8)).write(capture)
    frames = read_frames(capture)
    owners: dict[End, set[int]] = {}
    for _, linktype, data in frames:
        parsed = parse(linktype, data)
        if parsed is not None and parsed[1][1] == 443:
            owners.setdefault(parsed[1], set()).add(flow_owner(linktype, data, 2))
    assert owners and all(found == {0, 1} for found in owners.values())
    lines = {}
    for workers in (1, 2):
        out = tmp_path / f"events-{workers}"
        subprocess.run([sys.executable, "-m", "certwatch.cli", "replay", "--no-alerts",
                        "--stats-interval", "1", "--workers", str(workers), "--events",
                        str(out), str(capture)], check=True, capture_output=True, timeout=120)
        lines[workers] = sorted(line for line in out.read_text().splitlines()
                                if '"certwatch.traffic.stats"' in line)
    assert lines[1] and lines[1] == lines[2]
    events = [TrafficStatsEvent.model_validate_json(line) for line in lines[2]]
    assert reported_split(events) == independent_split(frames, {})


# A flow whose counters went past the widths of the traffic statistics' packed snapshot
# (sensor.traffic._PACKETS_BITS: 40 bits of packets, 64 of bytes per direction): a flow
# that lives long enough on a fast link. Its counts per interval must stay exact, not fold
# a byte count into the packets or lose a wrap of a field.
_HUGE = st.integers(min_value=0, max_value=1 << 70)


@settings(max_examples=300, deadline=None)
@given(start=st.tuples(_HUGE, _HUGE, _HUGE, _HUGE),
       added=st.lists(st.tuples(st.integers(0, (1 << 40) - 1), st.integers(0, (1 << 64) - 1),
                                st.integers(0, (1 << 40) - 1), st.integers(0, (1 << 64) - 1)),
                      min_size=1, max_size=4),
       client=st.sampled_from([0, 1]))
def test_a_flow_counted_past_the_snapshot_widths_reports_exact_intervals(
        start: tuple[int, int, int, int], added: list[tuple[int, int, int, int]],
        client: int) -> None:
    flow = Flow(flow_key(bytes((192, 0, 2, 1)), bytes((198, 51, 100, 7)), 50_000, 443), 0.0)
    flow.client_direction = client
    flow.packets0, flow.bytes0, flow.packets1, flow.bytes1 = start
    stats = TrafficStats(60.0, 10)
    stats.begin(0.0)
    first = stats.close([flow]).endpoints
    assert [(c.packets, c.bytes, c.client_packets, c.client_bytes, c.connections)
            for _, c in first] == [(flow.packets, flow.bytes, start[2 * client],
                                   start[2 * client + 1], 1)]
    for n, (packets0, bytes0, packets1, bytes1) in enumerate(added, 1):
        flow.packets0 += packets0
        flow.bytes0 += bytes0
        flow.packets1 += packets1
        flow.bytes1 += bytes1
        stats.begin(60.0 * n)
        got = [(c.packets, c.bytes, c.server_packets, c.server_bytes, c.connections)
               for _, c in stats.close([flow]).endpoints]
        server = (packets0, bytes0) if client else (packets1, bytes1)
        changed = packets0 or bytes0 or packets1 or bytes1
        assert got == ([(packets0 + packets1, bytes0 + bytes1, *server, 0)] if changed else [])
