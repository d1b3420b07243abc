"""The global buffer budget (issue 7): bytes buffered across all flows stay under
``SensorConfig.max_buffered_bytes``; the flows holding the most are dropped and counted
(``buffer_budget_exceeded``); legitimate handshakes in the same capture are still reported.

The flood is ``tools.tlsgen``'s ``flood-fill-buffers``: connections that each hold ~192 KiB
(a partial 2^18-byte ClientHello and out-of-order data beyond a hole), every buffer within
its per-flow bound, with 4 real TLS 1.2 handshakes spread over it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from certwatch.cli import main
from schemas.events import AnomalyEvent, HandshakeEvent, SensorEvent
from sensor.capture import open_capture
from sensor.config import DEFAULT_MAX_BUFFERED_BYTES, SensorConfig
from sensor.flows import Flow, FlowState
from sensor.sensor import BUDGET_EXCEEDED, Sensor
from tools.tlsgen.floods import FILL_IN_ORDER, FILL_OUT_OF_ORDER, LEGIT
from tools.tlsgen.scenarios import Options, build

FLOWS = 24
BUDGET = 1024 * 1024  # 1 MiB: room for ~5 filled flows, far more than a real handshake needs
HELD_PER_FLOW = FILL_IN_ORDER + FILL_OUT_OF_ORDER  # ~192 KiB, give or take a segment
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("budget") / "flood-fill-buffers.pcap"
    build("flood-fill-buffers", Options(connections=FLOWS)).write(path)
    return path


def held_by(flow: Flow) -> int:
    """What a flow really holds, read from its buffers (not from the sensor's accounting)."""
    held = 0
    if flow.reassemblers is not None:
        held += sum(r.buffered for r in flow.reassemblers)
    if flow.session is not None:
        held += flow.session.buffered
    held += sum(len(payload) for _d, _s, payload in flow.early or ())
    return held


def run(path: Path, config: SensorConfig, *, check_every: int = 0,
        ) -> tuple[Sensor, list[SensorEvent], int]:
    """Replay ``path`` in process; returns the sensor, its events and the largest total
    really buffered after any packet (measured every ``check_every`` packets, 0: never)."""
    sensor = Sensor(config)
    events: list[SensorEvent] = []
    peak = 0
    with open_capture(path) as reader:
        for n, (ts, linktype, data) in enumerate(reader):
            sensor.process(ts, linktype, data)
            events.extend(sensor.drain())
            if check_every and n % check_every == 0:
                total = sum(held_by(flow) for flow in sensor.flows)
                assert total == sensor.buffered  # the accounting follows the buffers
                peak = max(peak, total)
    events += sensor.finish()
    return sensor, events, peak


def anomaly_counts(events: list[SensorEvent]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for event in events:
        if isinstance(event, AnomalyEvent):
            counts[event.certwatch.anomaly.kind] += event.certwatch.anomaly.count
    return counts


def legit_established(events: list[SensorEvent]) -> set[str]:
    names = {e.tls.client.server_name or "" for e in events if isinstance(e, HandshakeEvent)
             and e.tls.established}
    return {name for name in names if name.startswith("legit")}


def test_without_pressure_the_flood_really_holds_its_bytes(flood: Path) -> None:
    # The default budget (64 MiB) is far above FLOWS x 192 KiB: nothing is dropped, and
    # every flooding flow is still in its handshake holding what it sent.
    sensor, events, peak = run(flood, SensorConfig(name="t"), check_every=50)
    assert BUDGET_EXCEEDED not in anomaly_counts(events)
    assert peak >= FLOWS * HELD_PER_FLOW * 0.95
    assert peak < DEFAULT_MAX_BUFFERED_BYTES
    assert len(legit_established(events)) == LEGIT
    assert sensor.buffered == 0  # everything given back at the end of the capture


def test_the_budget_bounds_the_sum_and_counts_each_dropped_flow(flood: Path) -> None:
    sensor, events, peak = run(flood, SensorConfig(name="t", max_buffered_bytes=BUDGET),
                               check_every=1)
    assert peak <= BUDGET
    counts = anomaly_counts(events)
    # Each drop frees one flow's ~192 KiB; the budget holds ~5 of them, so most of the
    # flooding flows were dropped, each counted once.
    assert FLOWS - BUDGET // HELD_PER_FLOW - 1 <= counts[BUDGET_EXCEEDED] <= FLOWS
    # A dropped flow never got a hello through: its end is reported as such (evicted);
    # the flows left are parsed past their hole at the end of the capture (and fail there).
    assert counts["tls_hello_incomplete"] == counts[BUDGET_EXCEEDED]
    assert counts["tcp_gap"] == FLOWS - counts[BUDGET_EXCEEDED]
    # The real handshakes, parsed while the flood was at its height, are all there.
    assert len(legit_established(events)) == LEGIT
    # Dropped flows are only counted from then on: no parsing state, nothing accounted.
    dropped = [f for f in sensor.flows if f.is_tls and f.state is FlowState.COUNTING]
    assert all(f.session is None and f.buffered == 0 for f in dropped)
    assert sensor.buffered == 0


def test_the_flows_holding_the_most_go_first(flood: Path) -> None:
    # With room for more than one flow, the flows still held at the end are the ones
    # holding the least: the budget never drops a small holder while a larger one stays.
    sensor = Sensor(SensorConfig(name="t", max_buffered_bytes=BUDGET))
    with open_capture(flood) as reader:
        for ts, linktype, data in reader:
            before = {f: f.buffered for f in sensor.flows if f.buffered}
            sensor.process(ts, linktype, data)
            # Dropped: a flooding flow (10.128.0.0/9) that held bytes and is now only
            # counted; the real handshakes' buffers also empty, by completing.
            dropped = [size for f, size in before.items()
                       if f.state is FlowState.COUNTING and f.addresses[0][:2] >= b"\x0a\x80"
                       and f.addresses[0][0] == 10]
            kept = [f.buffered for f in before if f.buffered]
            if dropped and kept:
                assert min(dropped) >= max(kept) - 1460  # the one growing may pass a peer
            sensor.drain()
    assert 0 < sensor.buffered <= BUDGET


def test_ordinary_captures_account_back_to_zero() -> None:
    # Captures with out-of-order segments, partial records and certificate chains split
    # over records: the accounting follows the buffers packet by packet and ends at zero.
    for name in ("zeek/tls1.2.pcap", "ndpi/steam.pcapng", "zeek/client-certificate.pcap",
                 "ndpi/tls_invalid_reads.pcap"):
        sensor, events, _peak = run(DATA / name, SensorConfig(name="t"), check_every=1)
        assert sensor.buffered == 0, name
        assert BUDGET_EXCEEDED not in anomaly_counts(events)


def test_replay_flag_sets_the_budget(flood: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    code = main(["replay", "--no-alerts", "--max-buffered-bytes", str(BUDGET),
                 "--events", str(out), str(flood)])
    assert code == 0
    kinds: Counter[str] = Counter()
    names = set()
    for line in out.read_text().splitlines():
        event = json.loads(line)
        anomaly = event.get("certwatch", {}).get("anomaly")
        if anomaly:
            kinds[anomaly["kind"]] += anomaly["count"]
        tls = event.get("tls", {})
        if tls.get("established"):
            names.add(tls.get("client", {}).get("server_name", ""))
    assert kinds[BUDGET_EXCEEDED] >= FLOWS - BUDGET // HELD_PER_FLOW - 1
    assert {n for n in names if n.startswith("legit")} == {f"legit{i}.example.com"
                                                          for i in range(LEGIT)}
