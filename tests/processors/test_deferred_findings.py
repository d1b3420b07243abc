"""The processor's cheaper paths decide exactly as the plain ones.

* Deferred findings (``processors.base.Pending``): a detector with ``candidates`` leaves its
  repeated findings unbuilt until the engine knows they alert. The alerts, byte for byte,
  and the counters must be those of the same processor asking every detector's ``inspect``.
* Suppression windows from the memoised event microseconds (``suppression.window_at``) are
  the windows ``datetime.timestamp()`` gives, for aware and naive times.
* Client addresses parsed by the dotted-quad fast path are what ``ipaddress`` parses.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.alerts import identifier_of
from processors.base import Finding, Pending
from processors.detectors.sources import _client_address
from processors.engine import Processor
from processors.memo import forget
from processors.policy import Policy
from processors.registry import DETECTORS
from processors.suppression import window_index
from schemas.events import HandshakeEvent
from tests.support import captures, handshakes, read_frames, run_sensor
from tools.tlsgen.scenarios import Options, build


def _eager(processor: Processor) -> Processor:
    """``processor`` asking every detector's ``inspect``: every finding built."""
    processor._inspectors = [(name, processor.detectors[name].inspect)
                             for name, _ in processor._inspectors]
    return processor


def _alerts(processor: Processor, events: list[HandshakeEvent]) -> tuple[list[str], object]:
    alerts = [alert.model_dump_json(by_alias=True)
              for event in events for alert in processor.process(event)]
    stats = processor.stats
    return alerts, (stats.events, dict(stats.alerts), dict(stats.alerts_by_server),
                    stats.suppressed, dict(stats.detector_errors))


def _same(policy: Policy, events: list[HandshakeEvent]) -> int:
    stream = events + [event.model_copy() for event in events]  # second pass: suppressed
    deferred = _alerts(Processor(policy, DETECTORS), stream)
    eager = _alerts(_eager(Processor(policy, DETECTORS)), stream)
    assert deferred == eager
    return len(deferred[0])


@pytest.mark.parametrize("name", ["benchmark", "self-signed", "rogue-ca-for-pinned-host",
                                  "expired"])
def test_deferred_findings_raise_the_same_alerts(name: str, tmp_path: Path) -> None:
    scenario = build(name, Options(connections=40, app_segments=1, concurrency=8)
                     if name == "benchmark" else Options())
    capture, roots = tmp_path / "capture.pcap", tmp_path / "roots.pem"
    scenario.write(capture)
    roots.write_bytes(scenario.roots_pem)
    events = handshakes(run_sensor(read_frames(capture)))
    # The scenario's own policy (its CA trusted) and the default one (the generator's CA
    # unknown: every TLS 1.2 handshake an untrusted chain, repeated and suppressed).
    _same(Policy.model_validate(scenario.policy(roots)), events)
    assert _same(Policy(), events) > 0
    # Without suppression every repeat alerts: each deferred finding gets built.
    assert _same(Policy.model_validate({"suppress": {"default": timedelta(0)}}), events) > 0


def test_deferred_findings_of_the_real_captures() -> None:
    events = [event for capture in captures() for event in handshakes(run_sensor(
        read_frames(capture)))]
    assert _same(Policy(), events) > 0


def test_a_pending_finding_builds_the_finding_inspect_returns() -> None:
    (capture,) = [c for c in captures() if c.name == "tls1.2.pcap"]
    (event,) = handshakes(run_sensor(read_frames(capture)))
    trust = Processor(Policy(), DETECTORS).detectors["trust"]
    (pending,) = trust.candidates(event)  # type: ignore[attr-defined]
    (finding,) = trust.inspect(event)
    assert isinstance(pending, Pending) and isinstance(finding, Finding)
    assert pending.build() == finding
    assert pending.identifier == identifier_of(finding) and pending.rule == finding.rule
    assert finding.details["judged_at"] == event.timestamp.isoformat()


_TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
_OFFSETS = st.one_of(st.none(), st.just(UTC),
                     st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m))))
_WINDOWS = st.one_of(st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(days=1),
                                      timedelta(seconds=0.1), timedelta(microseconds=7)]),
                     st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))


@settings(max_examples=500, deadline=None)
@given(_TIMES, _OFFSETS, _WINDOWS)
def test_suppression_windows_are_those_of_timestamp(when: datetime, tz: timezone | None,
                                                    window: timedelta) -> None:
    when = when.replace(tzinfo=tz)
    forget()
    try:
        stamp = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return  # a naive time the platform's local time cannot convert
    seconds = window.total_seconds()
    expected = int(stamp * 1e6) if seconds <= 0 else int(stamp // seconds)
    assert window_index(when, window) == expected


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.ip_addresses().map(str),
    st.lists(st.one_of(st.integers(0, 300).map(str),
                       st.sampled_from(["", "00", "01", "007", "0x1", " 1", "1 ", "\u0663"])),
             min_size=3, max_size=5).map(".".join),
    st.text(alphabet="0123456789.:abcdef%", max_size=24)))
def test_client_addresses_parse_as_ipaddress_does(text: str) -> None:
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        assert _client_address(text) is None
        return
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    ours = _client_address(text)
    assert ours == parsed and type(ours) is type(parsed)
