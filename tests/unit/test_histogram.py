"""Histograms count each observation in the first bucket whose bound is at least it."""

from __future__ import annotations

import math

import pytest

from wsfanout import ConfigError
from wsfanout._core.histogram import PUBLISH_BOUNDS, QUEUE_WAIT_BOUNDS, Buckets
from wsfanout.metrics import Histogram


def test_an_observation_on_a_bound_counts_in_that_bound_s_bucket() -> None:
    buckets = Buckets((0.0, 1.0, 2.0))
    for value in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 100.0):
        buckets.observe(value)
    histogram = buckets.histogram()
    assert histogram.counts == (1, 2, 2, 2)
    assert histogram.count == 7
    assert histogram.sum == pytest.approx(107.5)
    assert histogram.cumulative() == [(0.0, 1), (1.0, 3), (2.0, 5), (math.inf, 7)]


def test_the_histogram_is_a_copy_that_later_observations_leave_alone() -> None:
    buckets = Buckets((1.0,))
    buckets.observe(0.5)
    before = buckets.histogram()
    buckets.observe(0.5)
    assert before.count == 1
    assert buckets.histogram().count == 2


def test_quantiles_are_the_bound_of_the_bucket_that_reaches_them() -> None:
    histogram = Histogram((0.001, 0.01, 0.1), (90, 9, 1, 0), 0.5)
    assert histogram.quantile(0.5) == 0.001
    assert histogram.quantile(0.9) == 0.001
    assert histogram.quantile(0.95) == 0.01
    assert histogram.quantile(1.0) == 0.1
    assert Histogram((1.0,), (0, 3)).quantile(0.5) == math.inf
    assert math.isnan(Histogram((1.0,), (0, 0)).quantile(0.5))


def test_zeros_land_in_the_first_bucket_that_holds_zero() -> None:
    waits = Histogram(QUEUE_WAIT_BOUNDS, (0,) * (len(QUEUE_WAIT_BOUNDS) + 1))
    assert waits.with_zeros(5).counts[0] == 5
    assert waits.with_zeros(0) is waits
    assert waits.with_zeros(-3) is waits
    durations = Histogram(PUBLISH_BOUNDS, (0,) * (len(PUBLISH_BOUNDS) + 1))
    assert durations.with_zeros(2).counts[0] == 2  # 0 <= the smallest bound
    assert Histogram((-1.0, 1.0), (0, 0, 0)).with_zeros(1).counts == (0, 1, 0)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ((), r"^bounds=\(\) must hold at least one bound$"),
        ((1.0, 1.0), r"^bounds=\(1\.0, 1\.0\) must be strictly increasing$"),
        ((2.0, 1.0), r"^bounds=\(2\.0, 1\.0\) must be strictly increasing$"),
        ((1.0, math.inf), r"^bounds=\(1\.0, inf\) must be finite numbers$"),
        ((True,), r"^bounds=\(True,\) must be finite numbers$"),
    ],
)
def test_bad_bounds_are_refused_with_the_value(bounds: tuple[float, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Buckets(bounds)
    assert refused.value.name == "bounds"
    with pytest.raises(ConfigError, match=message):
        Histogram(bounds, (0,) * (len(bounds) + 1))


def test_counts_must_have_one_more_entry_than_bounds() -> None:
    with pytest.raises(
        ConfigError, match=r"^counts=\(1,\) must hold len\(bounds\) \+ 1 = 2 counts$"
    ):
        Histogram((1.0,), (1,))
    with pytest.raises(ConfigError, match=r"^q=0 must be > 0 and <= 1$"):
        Histogram((1.0,), (1, 0)).quantile(0)
