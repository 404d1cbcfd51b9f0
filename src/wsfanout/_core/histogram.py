"""Durations counted in buckets, as Prometheus histograms count them.

:class:`Buckets` is the accumulator the shell feeds (one ``bisect`` and two additions
per observation); :class:`Histogram` is the frozen value read from it, which a
metrics exporter turns into cumulative ``le`` buckets and a status page into
percentiles. The bounds are fixed per histogram, so a reader never sees more series
than there are bounds.
"""

from __future__ import annotations

import bisect
import itertools
import math

import attrs

from .errors import ConfigError, invalid

__all__ = ["PUBLISH_BOUNDS", "QUEUE_WAIT_BOUNDS", "Buckets", "Histogram", "Timings"]

PUBLISH_BOUNDS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
"""Seconds: a publish to a few subscribers takes microseconds, to thousands milliseconds."""

QUEUE_WAIT_BOUNDS = (
    0.0,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds; the first bound, 0, holds the messages written on the fast path, which
never waited in a queue."""


def _check_bounds(bounds: tuple[float, ...]) -> None:
    if not bounds:
        raise invalid("bounds", bounds, "must hold at least one bound", ConfigError)
    for value in bounds:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise invalid("bounds", bounds, "must be finite numbers", ConfigError)
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise invalid("bounds", bounds, "must be strictly increasing", ConfigError)


@attrs.frozen
class Histogram:
    """Observations counted per bucket: ``counts[i]`` holds those ``<= bounds[i]`` (and
    above the previous bound), the last count those above every bound."""

    bounds: tuple[float, ...]
    """Upper bounds of the buckets, strictly increasing; +Inf is implied after them."""
    counts: tuple[int, ...]
    """One count per bound, then the count above the last bound: ``len(bounds) + 1``."""
    sum: float = 0.0
    """The sum of every observation."""

    def __attrs_post_init__(self) -> None:
        _check_bounds(self.bounds)
        if len(self.counts) != len(self.bounds) + 1:
            raise invalid(
                "counts",
                self.counts,
                f"must hold len(bounds) + 1 = {len(self.bounds) + 1} counts",
                ConfigError,
            )

    @property
    def count(self) -> int:
        """How many observations there were."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` for every bound and +Inf, as Prometheus exposes them."""
        result = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (0 < q <= 1): the
        observations below it are at least ``q`` of all; ``inf`` past the last bound,
        ``nan`` without observations."""
        if not 0 < q <= 1:
            raise invalid("q", q, "must be > 0 and <= 1", ConfigError)
        total = self.count
        if not total:
            return math.nan
        for bound, running in self.cumulative():
            if running >= q * total:
                return bound
        return math.inf  # pragma: no cover - the last cumulative count is the total

    def with_zeros(self, extra: int) -> Histogram:
        """This histogram with ``extra`` more observations of 0 (in the first bucket
        whose bound is >= 0)."""
        if extra <= 0:
            return self
        index = bisect.bisect_left(self.bounds, 0.0)
        counts = list(self.counts)
        counts[index] += extra
        return Histogram(self.bounds, tuple(counts), self.sum)


class Buckets:
    """The accumulator behind a :class:`Histogram`: :meth:`observe` costs one bisect."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        _check_bounds(bounds)
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def histogram(self) -> Histogram:
        """What has been observed so far, as a frozen value."""
        return Histogram(self.bounds, tuple(self.counts), self.sum)


@attrs.frozen(kw_only=True)
class Timings:
    """A hub's latency histograms, read at one instant (``HubMonitor.timings()``)."""

    publish: Histogram
    """Per message published (or received from a backplane): seconds to offer it to
    every subscriber of its topic and write it to those that keep up."""
    publish_to_write: Histogram
    """Per message published: seconds until its frame was written for every
    subscriber that keeps up, frames corked until the loop iteration ends included."""
    queue_wait: dict[str, Histogram]
    """Per policy name, per message sent: seconds it waited in its subscriber's queue
    (0 for a message written on the fast path)."""
