"""The robust baseline of a count series, and the spike test against it. Pure: no state, no
clock, no I/O; ``processors.detectors.spikes`` owns the per-server windows.

The baseline of a series of per-window counts is its **median** (the centre) and its **MAD**
(median absolute deviation) scaled by 1.4826, which estimates the standard deviation of a
normal distribution while ignoring up to half the series as outliers. The spread is floored
at ``max(1, sqrt(median))``: counts of independent arrivals are Poisson-like, whose standard
deviation is the square root of the mean, so a perfectly steady series (MAD 0, e.g. a health
check every two seconds) is judged against the jitter a Poisson process of that rate would
show instead of alerting on one connection more than usual. docs/detectors-traffic.md has
the reasoning and the numbers.

A window is a spike when all of these hold (the tunables of ``policy.TrafficSpike``)::

    count >= min_count
    count >= min_ratio * median
    count - median >= threshold * spread
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

MAD_TO_SIGMA: Final = 1.4826
"""1 / Φ⁻¹(3/4): makes the MAD of normally distributed values estimate their standard deviation."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a series of counts looks like: its robust centre and spread (spread >= 1)."""

    median: float
    spread: float


def median(values: Collection[float]) -> float:
    """The median of a non-empty collection (mean of the two middle values if even)."""
    if not values:
        raise ValueError("the median of nothing")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def spread_floor(centre: float) -> float:
    """The smallest spread allowed: a Poisson count's standard deviation, at least 1."""
    return max(1.0, math.sqrt(max(centre, 0.0)))


def robust_baseline(counts: Collection[int]) -> Baseline:
    """Median and floored, scaled MAD of ``counts`` (non-empty)."""
    centre = median(counts)
    mad = median([abs(count - centre) for count in counts])
    return Baseline(centre, max(MAD_TO_SIGMA * mad, spread_floor(centre)))


@dataclass(frozen=True, slots=True)
class SpikeRule:
    """The three conditions a window's count must all meet to be a spike."""

    min_count: int
    threshold: float
    min_ratio: float

    def is_spike(self, count: int, baseline: Baseline) -> bool:
        """True when ``count`` is a spike against ``baseline``."""
        return (count >= self.min_count
                and count >= self.min_ratio * baseline.median
                and count - baseline.median >= self.threshold * baseline.spread)

    def trigger(self, baseline: Baseline) -> int:
        """The smallest count that is a spike against ``baseline``.

        Counts only grow during a window, so comparing the running count with this number is
        the whole per-event test. Computed in floating point, then nudged so that it agrees
        exactly with ``is_spike`` (``ceil`` of a product can land one off).
        """
        candidate = max(self.min_count,
                        math.ceil(self.min_ratio * baseline.median),
                        math.ceil(baseline.median + self.threshold * baseline.spread))
        while not self.is_spike(candidate, baseline):
            candidate += 1
        while candidate > 0 and self.is_spike(candidate - 1, baseline):
            candidate -= 1
        return candidate
