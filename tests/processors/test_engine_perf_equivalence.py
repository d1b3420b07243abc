"""The processor's memos (``processors.memo``, the detectors' bounded memo tables) change how
fast alerts come, never which: the same events give the same alerts, byte for byte (ids,
details, suppression counts), with every memo emptied before each detector call as with
them kept, on the generator's scenarios and on the real captures of ``tests/data``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from processors.base import Finding
from processors.detectors import keys
from processors.engine import Processor
from processors.memo import BoundedMemo, forget
from processors.policy import Policy
from processors.registry import DETECTORS
from schemas.events import HandshakeEvent
from tests.support import captures, handshakes, read_frames, run_sensor
from tools.tlsgen.scenarios import Options, build

SCENARIOS = {
    "benchmark": Options(connections=60, app_segments=1, concurrency=8),
    "steady-plus-burst": Options(connections=3),
    "wrong-host": Options(),
    "expired": Options(),
    "self-signed": Options(),
    "rogue-ca-for-pinned-host": Options(),
    "rc4": Options(),
    "dhe-1024": Options(),
    "weak-rsa-1024": Options(),
    "sha1-signature": Options(),
}


def _forgetful(processor: Processor) -> Processor:
    """``processor`` with every memo emptied before each detector looks at an event."""
    def wrap(inspect: Callable[[HandshakeEvent], list[Finding]], detector: object
             ) -> Callable[[HandshakeEvent], list[Finding]]:
        def call(event: HandshakeEvent) -> list[Finding]:
            forget()
            keys._signature_hash.cache_clear()
            for value in vars(detector).values():
                if isinstance(value, BoundedMemo):
                    value.clear()
            return inspect(event)
        return call

    processor._inspectors = [(name, wrap(inspect, processor.detectors[name]))
                             for name, inspect in processor._inspectors]
    return processor


def _run(processor: Processor, events: list[HandshakeEvent]) -> tuple[list[str], object]:
    alerts = [alert.model_dump_json(by_alias=True)
              for event in events for alert in processor.process(event)]
    stats = processor.stats
    return alerts, (stats.events, dict(stats.alerts), dict(stats.alerts_by_server),
                    stats.suppressed, dict(stats.detector_errors))


def _assert_same(policy: Policy, events: list[HandshakeEvent]) -> int:
    # Twice over the stream: the second pass hits the memos (and the suppression) warm.
    stream = events + [event.model_copy() for event in events]
    memoised = _run(Processor(policy, DETECTORS), stream)
    plain = _run(_forgetful(Processor(policy, DETECTORS)), stream)
    assert memoised == plain
    return len(memoised[0])


def _strict(roots: Path | None = None) -> Policy:
    """Short windows and no suppression, so that every finding becomes an alert."""
    return Policy.model_validate({
        "profile": "pci-dss-4",
        "suppress": {"default": timedelta(0)},
        "trust": {"system": roots is None, "ca_files": [str(roots)] if roots else []},
        "pins": [{"host": "*.example.com", "sha256": ["00" * 32]}],
        "rules": {"traffic.unexpected_source": {"learning_period": timedelta(seconds=1)},
                  "cert.expiring_soon": {"days": 400}},
    })


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_memos_do_not_change_the_alerts_of_a_scenario(name: str, tmp_path: Path) -> None:
    scenario = build(name, SCENARIOS[name])
    capture, roots = tmp_path / "capture.pcap", tmp_path / "roots.pem"
    scenario.write(capture)
    roots.write_bytes(scenario.roots_pem)
    events = handshakes(run_sensor(read_frames(capture)))
    assert events
    alerts = _assert_same(Policy.model_validate(scenario.policy(roots)), events)
    alerts += _assert_same(_strict(roots), events)
    if name != "benchmark":
        assert alerts  # every other scenario is built to raise something


def test_memos_do_not_change_the_alerts_of_the_real_captures() -> None:
    events = [event for capture in captures() for event in handshakes(run_sensor(
        read_frames(capture)))]
    assert len(events) > 30
    assert _assert_same(Policy(), events) > 0
    assert _assert_same(_strict(), events) > 0


def test_an_event_seen_again_after_another_is_judged_as_itself() -> None:
    """The per-event memos are keyed by identity: interleaving two servers' events (A, B, A)
    must not hand B's server key or time to A."""
    (capture,) = [c for c in captures() if c.name == "tls1.2.pcap"]
    (first,) = handshakes(run_sensor(read_frames(capture)))
    other = first.model_copy(update={
        "tls": first.tls.model_copy(update={"client": first.tls.client.model_copy(
            update={"server_name": "other.example"})}),
        "timestamp": first.timestamp + timedelta(days=3650),
    })
    policy = Policy.model_validate({"suppress": {"default": timedelta(0)}})
    memoised = _run(Processor(policy, DETECTORS), [first, other, first, other])
    plain = _run(_forgetful(Processor(policy, DETECTORS)), [first, other, first, other])
    assert memoised == plain
    servers = {json_line.split('"server_key":"', 1)[1].split('"', 1)[0]
               for json_line in memoised[0]}
    assert "other.example" in servers and len(servers) == 2
