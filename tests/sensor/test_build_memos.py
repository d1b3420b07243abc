"""The event builder's memos (round 4 of issue 5) never change an event.

``sensor.build`` reuses the ``tls`` block, each chain's descriptions and models (by the
identity of the chain the session layer shares) and ``sensor.x509`` the digest of a DER it
has seen; ``certwatch.output`` writes a handshake event around the text of those shared
parts. Each test builds the same events with every memo bounded to one entry (so every
lookup misses or is emptied right after) and with the defaults (so repeated parts hit), on
real captures and on a generated one where 60 connections share 16 servers' chains, and compares
what a consumer reads: the JSON lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certwatch.output import JsonLinesWriter
from schemas.events import HandshakeEvent, SensorEvent
from sensor import build, x509
from sensor.config import SensorConfig
from tests.support import Frame, captures, certificates, handshakes, read_frames, run_sensor
from tools.tlsgen.scenarios import Options
from tools.tlsgen.scenarios import build as build_scenario


def _lines(events: list[SensorEvent], path: Path) -> list[str]:
    with JsonLinesWriter(str(path)) as writer:
        for event in events:
            writer.write(event)
    # Not splitlines(): a name may hold U+2028, which JSON leaves as it is.
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _without_memos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "MEMO_ENTRIES", 1)
    monkeypatch.setattr(build, "CHAIN_MEMO_ENTRIES", 1)
    monkeypatch.setattr(x509, "DIGEST_MEMO_ENTRIES", 1)


def _both_ways(frames: list[Frame], config: SensorConfig, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str], list[str]]:
    """(lines with memos, lines without, pydantic's own serialisation of the former)."""
    memoised = run_sensor(frames, config)
    with monkeypatch.context() as patch:
        _without_memos(patch)
        unmemoised = run_sensor(frames, config)
    pydantic = [e.model_dump_json(by_alias=True, exclude_none=True) for e in memoised]
    return (_lines(memoised, tmp_path / "a.jsonl"), _lines(unmemoised, tmp_path / "b.jsonl"),
            pydantic)


@pytest.fixture(scope="module")
def repeated_chains(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """60 connections of the benchmark mix: TLS 1.2 with shared 2-certificate chains."""
    path = tmp_path_factory.mktemp("memo") / "benchmark.pcap"
    build_scenario("benchmark", Options(seed=3, connections=60, app_segments=2,
                                        concurrency=10)).write(path)
    return read_frames(path)


@pytest.mark.parametrize("cut", [333, 517, 700])
def test_handshakes_cut_short_keep_their_outcome(
        cut: int, repeated_chains: list[Frame], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture ends while some connections are past their ServerHello: the same client
    software, server name, suite and chain as completed ones, but not established; the
    ``tls`` block is keyed on the outcome too."""
    frames = repeated_chains[:cut]
    config = SensorConfig(name="test-sensor")
    events = handshakes(run_sensor(frames, config))
    completed = {(e.tls.client.server_name, e.tls.cipher) for e in events if e.tls.established}
    assert any(not e.tls.established and e.tls.cipher
               and (e.tls.client.server_name, e.tls.cipher) in completed for e in events)
    memoised, unmemoised, pydantic = _both_ways(frames, config, tmp_path, monkeypatch)
    assert memoised == unmemoised == pydantic
    for doc in map(json.loads, memoised):
        if doc["event"]["dataset"] == "certwatch.tls.handshake":
            assert doc["tls"]["established"] == (doc["event"]["outcome"] == "success")


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_capture_gives_the_same_lines_with_and_without_memos(
        capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = SensorConfig(name="test-sensor", foxio_fingerprints=True)
    memoised, unmemoised, pydantic = _both_ways(read_frames(capture), config, tmp_path,
                                                monkeypatch)
    assert memoised == unmemoised
    assert memoised == pydantic


def test_repeated_chains_share_parts_and_give_the_same_lines(
        repeated_chains: list[Frame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = SensorConfig(name="test-sensor")
    events = run_sensor(repeated_chains, config)
    hs = handshakes(events)
    assert len(hs) == 60
    chained = [e for e in hs if e.certwatch.tls.server_chain]
    # The memos are in use: a leaf seen again is the same object (and so is ``tls``).
    first: dict[str, HandshakeEvent] = {}
    shared = 0
    for event in chained:
        leaf = event.certwatch.tls.server_chain[0]
        seen = first.setdefault(leaf.hash.sha256, event)
        if seen is not event:
            assert seen.certwatch.tls.server_chain[0] is leaf
            shared += 1
    assert shared == len(chained) - len(first) > 10
    memoised, unmemoised, pydantic = _both_ways(repeated_chains, config, tmp_path, monkeypatch)
    assert memoised == unmemoised == pydantic
    # Each connection still reports its own client and timing.
    sources = {(doc["source"]["ip"], doc["source"]["port"], doc["event"]["start"])
               for doc in map(json.loads, memoised)
               if doc["event"]["dataset"] == "certwatch.tls.handshake"}
    assert len(sources) == 60


@pytest.mark.parametrize("name", ['a,"certwatch":{"tls":{"x":1}}', 'q"uote\\', "é\u2028"])
def test_a_sensor_name_that_looks_like_json_keys_is_written_as_pydantic_writes_it(
        name: str, repeated_chains: list[Frame], tmp_path: Path) -> None:
    """The writer puts shared parts in place by finding keys in the text: an observer name
    (any text the operator gives) must not be taken for one."""
    events = run_sensor(repeated_chains[:200], SensorConfig(name=name))
    assert any(isinstance(e, HandshakeEvent) for e in events)
    lines = _lines(events, tmp_path / "events.jsonl")
    assert lines == [e.model_dump_json(by_alias=True, exclude_none=True) for e in events]
    assert all(json.loads(line)["observer"]["name"] == name for line in lines)


@pytest.mark.parametrize("parts", [3, 7, 40])
def test_certificates_are_announced_again_once_their_ttl_has_passed(
        parts: int, repeated_chains: list[Frame], monkeypatch: pytest.MonkeyPatch) -> None:
    """Certificate events follow the TTL rule whatever the memos skip: a certificate is
    announced at its first sighting and at each sighting at least ``ttl`` seconds after
    its last announcement (checked against that rule applied to the handshake events)."""
    times = [ts for ts, _, _ in repeated_chains]
    ttl = (max(times) - min(times)) / parts
    for memos in (True, False):
        with monkeypatch.context() as patch:
            if not memos:
                _without_memos(patch)
            events = run_sensor(repeated_chains, SensorConfig(name="t", certificate_event_ttl=ttl))
        last: dict[str, float] = {}
        expected = []
        for event in handshakes(events):
            start = event.timestamp.timestamp()
            for entry in event.certwatch.tls.server_chain:
                sha = entry.hash.sha256
                if sha not in last or start - last[sha] >= ttl:
                    last[sha] = start
                    expected.append((sha, event.timestamp))
        announced = [(e.hash.sha256, e.timestamp) for e in certificates(events)]
        assert announced == expected
        assert len({sha for sha, _ in announced}) < len(announced)  # some announced again
