"""traffic.spike and tls.handshake_failure_spike over synthetic handshake streams."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from processors.base import Finding
from processors.catalog import Severity
from processors.detectors.spikes import (
    HandshakeFailureSpikeDetector,
    SpikeCounter,
    TrafficSpikeDetector,
)
from processors.policy import Policy, TrafficSpike
from schemas.events import HandshakeEvent

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
Outcome = Literal["success", "failure", "unknown"] | None
_COUNTER = iter(range(10**9))


def handshake(when: datetime, *, sni: str | None = "api.example.com",
              outcome: Outcome = "success", client: str = "198.51.100.7",
              server: str = "203.0.113.10", port: int = 443) -> HandshakeEvent:
    """A minimal handshake event, as the sensor would publish it."""
    return HandshakeEvent.model_validate({
        "@timestamp": when,
        "event": {"id": f"e{next(_COUNTER)}", "kind": "event", "category": ["network"],
                  "type": ["connection"], "dataset": "certwatch.tls.handshake",
                  "outcome": outcome},
        "observer": {"name": "tap-1"},
        "source": {"ip": client, "port": 50000},
        "destination": {"ip": server, "port": port},
        "network": {"type": "ipv6" if ":" in server else "ipv4"},
        "tls": {"version": "1.3", "established": outcome == "success",
                "client": {"server_name": sni}},
        "certwatch": {"tls": {"ended_by": "established" if outcome == "success" else "alert"}},
    })


def policy(rule: str = "traffic.spike", **tunables: Any) -> Policy:
    return Policy.model_validate({"rules": {rule: tunables}})


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: the number of uniform draws whose product stays above e^-mean."""
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def window_events(counts: Sequence[int], outcome: Outcome = "success",
                  start: datetime = T0) -> Iterable[HandshakeEvent]:
    """``counts[i]`` handshakes spread evenly over minute ``i`` after ``start``."""
    for index, count in enumerate(counts):
        for n in range(count):
            yield handshake(start + index * MINUTE + n * MINUTE / count, outcome=outcome)


def run(detector: TrafficSpikeDetector | HandshakeFailureSpikeDetector,
        events: Iterable[HandshakeEvent]) -> list[tuple[HandshakeEvent, Finding]]:
    return [(event, finding) for event in events for finding in detector.inspect(event)]


def steady(windows: int, mean: float = 30, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [poisson(rng, mean) for _ in range(windows)]


def burst_windows(found: list[tuple[HandshakeEvent, Finding]]) -> list[int]:
    return [(datetime.fromisoformat(str(f.details["window_start"])) - T0) // MINUTE
            for _, f in found]


@pytest.mark.parametrize("tunables", [{}, {"min_ratio": 1.0}], ids=["defaults", "no-ratio"])
def test_steady_jittery_server_never_alerts(tunables: dict[str, Any]) -> None:
    counts = steady(500)
    assert min(counts) < 22 and max(counts) > 40  # it does jitter
    # Even without the ratio guard, the robust deviation alone stays quiet.
    assert run(TrafficSpikeDetector(policy(**tunables)), window_events(counts)) == []


def test_ten_fold_burst_alerts_once_per_burst_window_and_promptly() -> None:
    counts = steady(500)
    bursts = [100, 220, 221, 400]
    for index in bursts:
        counts[index] = 300
    found = run(TrafficSpikeDetector(policy()), window_events(counts))
    assert burst_windows(found) == bursts
    for event, finding in found:
        start = datetime.fromisoformat(str(finding.details["window_start"]))
        # Raised by the event that made the window a spike: well before the window ends.
        assert event.timestamp < start + MINUTE / 2
        assert finding.rule == "traffic.spike" and finding.severity is Severity.MEDIUM
        assert finding.identity == ("api.example.com",)
        median = float(str(finding.details["baseline_median"]))
        assert 27 <= median <= 33
        # Reported at the trigger, here 3 x the median (the deviation test asks for less).
        assert finding.details["count"] == math.ceil(3 * median)
        assert 3 <= float(str(finding.details["ratio"])) < 3.05
        assert 4 < float(str(finding.details["spread"])) < 8  # ~ sqrt(30)


def test_window_start_is_aligned_on_the_window_size() -> None:
    start = T0 + timedelta(seconds=17)  # traffic starting mid-minute
    counts = [30] * 20 + [200]
    found = run(TrafficSpikeDetector(policy()), window_events(counts, start=start))
    assert [f.details["window_start"] for _, f in found] == [
        (T0 + 20 * MINUTE).isoformat()]


@pytest.mark.parametrize(("learnt", "alerts"), [(9, False), (10, True)])
def test_warmup_is_respected(learnt: int, alerts: bool) -> None:
    counts = [30] * learnt + [300]
    found = run(TrafficSpikeDetector(policy(warmup_windows=10)), window_events(counts))
    assert bool(found) is alerts


@pytest.mark.parametrize(("burst", "alerts"), [(19, False), (20, True)])
def test_min_count_is_respected(burst: int, alerts: bool) -> None:
    counts = [2] * 30 + [burst]  # a quiet server: 19 is 9x its median yet too few to matter
    found = run(TrafficSpikeDetector(policy(min_count=20)), window_events(counts))
    assert bool(found) is alerts


def test_silent_windows_count_as_zeros() -> None:
    # Busy for 20 minutes, then silent for an hour: the baseline is now the silence.
    events = list(window_events([30] * 20))
    events += window_events([25], start=T0 + 80 * MINUTE)
    found = run(TrafficSpikeDetector(policy()), events)
    assert len(found) == 1 and found[0][1].details["baseline_median"] == 0
    assert found[0][1].details["ratio"] is None


def test_sustained_attack_keeps_alerting_then_becomes_normal() -> None:
    counts = steady(100) + steady(200, mean=300, seed=2)
    found = run(TrafficSpikeDetector(policy(history=60)), window_events(counts))
    alerted = burst_windows(found)
    # Every window alerts until the clipped attack fills half the history, then the new
    # level is learned (docs/detectors-traffic.md, "a sustained spike").
    assert alerted == list(range(100, 100 + len(alerted)))
    assert 25 <= len(alerted) <= 60


def test_failure_spike_counts_failures_only() -> None:
    detector = HandshakeFailureSpikeDetector(policy("tls.handshake_failure_spike"))
    rng = random.Random(3)
    events: list[HandshakeEvent] = []
    for minute in range(60):
        failures = 40 if minute in (30, 50) else rng.choice([0, 0, 1, 2])
        unknown = 60 if minute == 40 else 0  # aborted before an outcome: not a failure
        successes = 300 if minute == 45 else 30  # a busy minute, no failures
        at = T0 + minute * MINUTE
        events += [handshake(at + n * MINUTE / successes) for n in range(successes)]
        events += [handshake(at + n * MINUTE / 80, outcome="failure") for n in range(failures)]
        events += [handshake(at + n * MINUTE / 80, outcome="unknown") for n in range(unknown)]
    events.sort(key=lambda e: e.timestamp)
    found = run(detector, events)
    assert burst_windows(found) == [30, 50]
    assert {f.rule for _, f in found} == {"tls.handshake_failure_spike"}
    assert all(e.event.outcome == "failure" for e, _ in found)
    # The connection-rate rule sees the busy minute, not the failures.
    assert burst_windows(run(TrafficSpikeDetector(policy()), events)) == [45]


def test_server_that_never_failed_has_a_baseline_of_zeros() -> None:
    events = list(window_events([30] * 15))
    events += window_events([25], outcome="failure", start=T0 + 15 * MINUTE)
    found = run(HandshakeFailureSpikeDetector(policy("tls.handshake_failure_spike")), events)
    assert len(found) == 1 and found[0][1].details["count"] == 20  # min_count


def test_slightly_out_of_order_events_give_the_same_alerts() -> None:
    counts = steady(300)
    for index in (80, 200):
        counts[index] = 300
    in_order = list(window_events(counts))
    rng = random.Random(5)
    # Arrival order perturbed by up to ±3 s: events cross window boundaries both ways.
    shuffled = sorted(in_order, key=lambda e: e.timestamp + timedelta(seconds=rng.uniform(-3, 3)))
    assert shuffled != in_order
    expected = burst_windows(run(TrafficSpikeDetector(policy()), in_order))
    assert expected == [80, 200]
    assert burst_windows(run(TrafficSpikeDetector(policy()), shuffled)) == expected


def test_late_event_is_counted_in_the_current_window() -> None:
    detector = TrafficSpikeDetector(policy(min_count=1, min_ratio=1.0, threshold=1.0))
    late = handshake(T0 + 59 * MINUTE + timedelta(seconds=59))
    events = list(window_events([1] * 60)) + list(window_events([1], start=T0 + 60 * MINUTE))
    assert run(detector, events) == []
    # median 1, spread 1: 2 in the current window (minute 60) alerts, though late says 59.
    found = detector.inspect(late)
    assert [f.details["window_start"] for f in found] == [(T0 + 60 * MINUTE).isoformat()]


def test_flush_changes_nothing_but_keeps_baselines_current() -> None:
    counts = steady(120)
    counts[70] = 0
    counts[100] = 300
    lazy, flushed = TrafficSpikeDetector(policy()), TrafficSpikeDetector(policy())
    found_lazy, found_flushed = [], []
    for event in window_events(counts):
        found_lazy += lazy.inspect(event)
        flushed.flush(event.timestamp)
        found_flushed += flushed.inspect(event)
    assert found_lazy == found_flushed and len(found_lazy) == 1


def test_keys_are_separate_and_bounded() -> None:
    counter = SpikeCounter("traffic.spike", TrafficSpike(history=10), max_keys=100)
    for key in range(1000):
        counter.observe(f"server-{key}", T0, True)
    assert len(counter) == 100 and counter.evicted == 900
    # A key back after a billion windows: its history stays at `history` entries.
    counter.observe("server-999", T0 + 10**9 * MINUTE, True)
    series = counter._series["server-999"]
    assert len(series.history) == 10 and set(series.history) == {0}


def test_disabled_rule_finds_nothing() -> None:
    counts = [30] * 20 + [300]
    detector = TrafficSpikeDetector(policy(enabled=False))
    assert run(detector, window_events(counts)) == []
