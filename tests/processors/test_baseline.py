"""The robust baseline: median and scaled MAD with a Poisson floor, and the spike test."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.baseline import (
    MAD_TO_SIGMA,
    Baseline,
    SpikeRule,
    median,
    robust_baseline,
    spread_floor,
)

DEFAULT_RULE = SpikeRule(min_count=20, threshold=8.0, min_ratio=3.0)


def test_scale_makes_mad_estimate_a_normal_sigma() -> None:
    # The MAD of N(0, sigma) is sigma * invcdf(3/4); the constant undoes that.
    assert pytest.approx(1 / statistics.NormalDist().inv_cdf(0.75), rel=1e-4) == MAD_TO_SIGMA
    rng = random.Random(7)
    counts = [round(rng.gauss(1000, 40)) for _ in range(4001)]
    assert robust_baseline(counts).spread == pytest.approx(40, rel=0.08)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=80))
def test_median_agrees_with_statistics(values: list[int]) -> None:
    assert median(values) == statistics.median(values)


def test_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        median([])


def test_outliers_do_not_move_the_baseline() -> None:
    # A third of the windows wildly off (an attack learned by mistake) barely matters.
    clean = robust_baseline([30, 28, 33, 31, 29, 27, 32, 30, 34, 26] * 4)
    dirty = robust_baseline([30, 28, 33, 31, 29, 27, 32, 30, 34, 26] * 4 + [5000] * 15)
    assert abs(dirty.median - clean.median) <= 2
    assert dirty.spread < 3 * clean.spread


def test_perfectly_steady_series_gets_a_poisson_spread() -> None:
    # MAD is 0: without the floor one connection more than usual would be infinitely odd.
    steady = robust_baseline([100] * 60)
    assert steady.median == 100
    assert steady.spread == 10  # sqrt(100)
    assert not SpikeRule(min_count=1, threshold=8.0, min_ratio=1.0).is_spike(101, steady)
    assert SpikeRule(min_count=1, threshold=8.0, min_ratio=1.0).is_spike(180, steady)


def test_spread_is_at_least_one_even_for_an_idle_server() -> None:
    idle = robust_baseline([0] * 60)
    assert idle.spread == 1 and spread_floor(0) == 1 and spread_floor(0.25) == 1


def test_each_condition_is_needed() -> None:
    baseline = Baseline(median=30.0, spread=5.0)
    assert DEFAULT_RULE.is_spike(90, baseline)
    assert not DEFAULT_RULE.is_spike(89, baseline)  # below min_ratio x median
    low = Baseline(median=2.0, spread=1.0)
    assert not DEFAULT_RULE.is_spike(19, low)  # below min_count though 17 spreads above
    assert DEFAULT_RULE.is_spike(20, low)
    wide = Baseline(median=30.0, spread=20.0)
    assert not DEFAULT_RULE.is_spike(189, wide)  # 6.3x but only 7.95 spreads above
    assert DEFAULT_RULE.is_spike(190, wide)


@given(median_=st.floats(0, 5000, allow_nan=False), spread=st.floats(1, 500),
       min_count=st.integers(1, 100), threshold=st.floats(0.1, 20),
       min_ratio=st.floats(1, 10))
def test_trigger_is_the_smallest_spike(median_: float, spread: float, min_count: int,
                                       threshold: float, min_ratio: float) -> None:
    rule = SpikeRule(min_count, threshold, min_ratio)
    baseline = Baseline(median_, spread)
    trigger = rule.trigger(baseline)
    assert rule.is_spike(trigger, baseline)
    assert not rule.is_spike(trigger - 1, baseline)
    assert trigger <= math.ceil(max(min_count, min_ratio * median_,
                                    median_ + threshold * spread)) + 1
