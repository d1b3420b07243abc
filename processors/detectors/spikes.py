"""``traffic.spike`` and ``tls.handshake_failure_spike``: handshakes (or failed handshakes) per
server key and per window of event time, against the key's learned baseline.

Mechanism (docs/detectors-traffic.md explains the method and every tunable):

* Windows are tumbling, ``window`` long, aligned on the Unix epoch, in **event time** (capture
  time in a replay). A key's current window is the newest one an event of that key fell in;
  an event older than that (small disorder between sensors or partitions) is counted in the
  current window rather than reopening a closed one.
* When an event of a later window arrives (or ``flush(now)`` is called), the current window
  closes: its count joins the key's history (the last ``history`` windows, empty windows in
  between counted as zeros) and the next window's alert trigger is computed once from the
  robust baseline of that history (``processors.baseline``).
* An alert is raised by the event whose arrival makes the running count reach the trigger:
  counts only grow within a window, so this is exactly the set of windows whose final count
  is a spike, reported within one event of becoming one instead of at the window's end. At
  most one finding per key and window.
* A window that alerted enters the history clipped to the largest count that would not have
  alerted (winsorised), so an attack cannot drag the baseline up to its own level quickly,
  while a lasting change of level is learned once it fills half the history.

``traffic.spike`` judges two rates of a server: connections (handshakes per server key, as
above) and, when the policy's ``bytes.enabled`` is set, bytes per server endpoint (ip:port)
from the sensor's ``certwatch.traffic.stats`` events. A stats event adds its byte count to the
window holding its interval's start, so the window should be a multiple of the sensor's
``stats_interval`` (both default to a minute). Several events for one endpoint and window
(several sensors, or sensors' workers) add up. The byte alert says ``bytes`` in its message
and ``details.rate``, and has its own identifier (``traffic.spike|ip:port|bytes``), so it is
suppressed apart from the connection-rate alert of the same server.

State is bounded: at most ``MAX_KEYS`` keys (least recently seen evicted, counted in
``evicted``), each with a fixed-size deque of ``history`` counts.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

from processors.base import Finding, event_time
from processors.baseline import Baseline, SpikeRule, robust_baseline
from processors.catalog import RULES
from processors.memo import event_server_key, microseconds
from processors.policy import Policy, TrafficSpike
from schemas.events import HandshakeEvent, TrafficStatsEvent
from schemas.topics import server_key

MAX_KEYS: Final = 100_000
"""Server keys tracked per detector (LRU). Not a policy field yet: a local default."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RATE_NAMES: Final = {"bytes": "byte"}  # the unit as a message names its rate
_MICROSECOND: Final = timedelta(microseconds=1)


def _microseconds(when: datetime) -> int:
    """Event time as integer microseconds since the epoch (naive times are taken as UTC);
    memoised per datetime object, since every time-based detector asks for it."""
    return microseconds(when)


class _Series:
    """One key's current window and the closed windows before it."""

    __slots__ = ("alerted", "baseline", "closed", "count", "history", "index", "trigger")

    def __init__(self, index: int, history: int) -> None:
        self.index = index
        self.count = 0
        self.alerted = False
        self.trigger: int | None = None
        """The smallest count that alerts in this window; None while warming up."""
        self.baseline: Baseline | None = None
        self.closed = 0
        """Closed windows so far (capped at warmup_windows: only the comparison matters)."""
        self.history: deque[int] = deque(maxlen=history)


class SpikeCounter:
    """Per-key windowed counts and the spike test, for one rule.

    ``observe(key, when, counted)`` advances the key's windows to ``when`` and, when
    ``counted``, adds one to the current window; it returns the finding when that makes the
    window a spike. Events that are not counted still advance the windows, so a key whose
    failures are usually zero has a baseline of zeros rather than none.
    """

    def __init__(self, rule: str, settings: TrafficSpike, max_keys: int = MAX_KEYS, *,
                 min_count: int | None = None, unit: str | None = None) -> None:
        """``unit`` names what is counted when it is not handshakes (``bytes``): it is then
        said in the message, ``details.rate`` and the identity; ``min_count`` overrides the
        settings' (a byte count is not a handshake count)."""
        self.rule = rule
        self._unit = unit
        self._severity = RULES[rule].severity
        self._window = settings.window
        self._window_us = max(1, settings.window // _MICROSECOND)
        self._warmup = settings.warmup_windows
        self._history = settings.history
        self._spike = SpikeRule(settings.min_count if min_count is None else min_count,
                                settings.threshold, settings.min_ratio)
        self._max_keys = max_keys
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self.evicted = 0
        """Keys forgotten because ``max_keys`` was reached (they start learning again)."""

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, key: str, when: datetime, counted: bool,
                amount: int = 1) -> Finding | None:
        """Account one handshake (``amount`` units) of ``key`` at event time ``when``; the
        finding, if any."""
        index = microseconds(when) // self._window_us
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(index, self._history)
            if len(self._series) > self._max_keys:
                self._series.popitem(last=False)
                self.evicted += 1
        else:
            self._series.move_to_end(key)
            if index > series.index:  # else late or same-window: nothing to close
                self._advance(series, index)
        if not counted:
            return None
        series.count += amount
        if series.trigger is None or series.alerted or series.count < series.trigger:
            return None
        series.alerted = True
        return self._finding(key, series)

    def flush(self, now: datetime) -> None:
        """Close every window that ended by event time ``now`` (the newest event time seen).

        Alerts never wait for a window to close (see the module docstring), so this returns
        nothing: it brings every baseline up to ``now`` (silent keys learn their zeros). The
        result is the same as closing lazily at the key's next event; it costs one pass over
        the keys, so call it at most once per window.
        """
        index = _microseconds(now) // self._window_us
        for series in self._series.values():
            self._advance(series, index)

    def _advance(self, series: _Series, index: int) -> None:
        """Close the current window and the empty ones up to ``index``, open ``index``."""
        if index <= series.index:
            return  # late or same-window event: counted in the current window
        # Winsorise: a window that alerted is learned as the largest count that would not
        # have, so an attack does not become the baseline before it fills half the history.
        closing = series.count if series.trigger is None else min(series.count,
                                                                  series.trigger - 1)
        series.history.append(closing)
        series.history.extend([0] * min(index - series.index - 1, self._history))
        series.closed = min(series.closed + index - series.index, self._warmup)
        series.index, series.count, series.alerted = index, 0, False
        if series.closed >= self._warmup:
            series.baseline = robust_baseline(series.history)
            series.trigger = self._spike.trigger(series.baseline)
        else:
            series.baseline, series.trigger = None, None

    def _finding(self, key: str, series: _Series) -> Finding:
        baseline = series.baseline
        assert baseline is not None  # a trigger is only set together with its baseline
        start = _EPOCH + series.index * self._window_us * _MICROSECOND
        ratio = series.count / baseline.median if baseline.median else None
        what = "failed handshakes" if self.rule == "tls.handshake_failure_spike" else "handshakes"
        times = f"{ratio:.1f}x" if ratio is not None else "far above"
        if self._unit is not None:
            return self._unit_finding(key, series, baseline, start, times, ratio)
        return Finding(
            rule=self.rule,
            severity=self._severity,
            message=(f"{series.count} {what} to {key} in the {self._window} window starting "
                     f"{start.isoformat()}: {times} its baseline (median "
                     f"{baseline.median:g}, spread {baseline.spread:.1f})"),
            identity=(key,),
            details={"window_start": start.isoformat(), "count": series.count,
                     "baseline_median": baseline.median,
                     "spread": round(baseline.spread, 3),
                     "ratio": None if ratio is None else round(ratio, 3)},
        )


    def _unit_finding(self, key: str, series: _Series, baseline: Baseline, start: datetime,
                      times: str, ratio: float | None) -> Finding:
        unit = self._unit
        assert unit is not None
        return Finding(
            rule=self.rule,
            severity=self._severity,
            message=(f"{_RATE_NAMES.get(unit, unit)} rate spike: {series.count} {unit} to {key} "
                     f"in the {self._window} "
                     f"window starting {start.isoformat()}: {times} its baseline (median "
                     f"{baseline.median:g}, spread {baseline.spread:.1f})"),
            identity=(key, unit),
            details={"rate": unit, "window_start": start.isoformat(), "count": series.count,
                     "baseline_median": baseline.median,
                     "spread": round(baseline.spread, 3),
                     "ratio": None if ratio is None else round(ratio, 3)},
        )


class TrafficSpikeDetector:
    """``traffic.spike``: handshakes per server key far above the key's baseline."""

    rules: ClassVar[tuple[str, ...]] = ("traffic.spike",)

    def __init__(self, policy: Policy) -> None:
        settings = policy.rules.traffic_spike
        self._enabled = settings.enabled
        self.counter = SpikeCounter(self.rules[0], settings)
        self.bytes: SpikeCounter | None = None
        """The byte-rate counter per ip:port, when the policy enables it."""
        if settings.enabled and settings.bytes.enabled:
            self.bytes = SpikeCounter(self.rules[0], settings, min_count=settings.bytes.min_bytes,
                                      unit="bytes")

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """A finding when this handshake makes its window a spike (at most one per window)."""
        if not self._enabled:
            return []
        finding = self.counter.observe(event_server_key(event), event_time(event), True)
        return [] if finding is None else [finding]

    def inspect_stats(self, event: TrafficStatsEvent) -> list[Finding]:
        """A finding when this interval's bytes make the endpoint's window a byte-rate spike
        (at most one per endpoint and window); nothing unless bytes are enabled."""
        if self.bytes is None:
            return []
        key = server_key(None, event.destination.ip, event.destination.port)
        when = event.event.start or event.timestamp
        finding = self.bytes.observe(key, when, True, event.network.bytes)
        return [] if finding is None else [finding]

    def flush(self, now: datetime) -> None:
        """Close the windows that ended by event time ``now`` (see ``SpikeCounter.flush``)."""
        self.counter.flush(now)
        if self.bytes is not None:
            self.bytes.flush(now)


class HandshakeFailureSpikeDetector:
    """``tls.handshake_failure_spike``: handshakes with ``event.outcome == "failure"`` per
    server key far above the key's baseline of failures. Every handshake of the key moves its
    windows forward, so a server that never fails has a baseline of zeros, not none."""

    rules: ClassVar[tuple[str, ...]] = ("tls.handshake_failure_spike",)

    def __init__(self, policy: Policy) -> None:
        settings = policy.rules.handshake_failure_spike
        self._enabled = settings.enabled
        self.counter = SpikeCounter(self.rules[0], settings)

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """A finding when this failed handshake makes its window a spike."""
        if not self._enabled:
            return []
        failed = event.event.outcome == "failure"
        finding = self.counter.observe(event_server_key(event), event_time(event), failed)
        return [] if finding is None else [finding]

    def flush(self, now: datetime) -> None:
        """Close the windows that ended by event time ``now`` (see ``SpikeCounter.flush``)."""
        self.counter.flush(now)
