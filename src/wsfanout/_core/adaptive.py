"""Pacing from the drain rate: a slow reader gets fewer, fuller frames.

Theory of operation
-------------------
``Adaptive`` batches queued messages into frames of at most ``max_bytes`` and, once it
knows how fast a subscriber's write buffer drains (the snapshot's ``drain_rate``),
paces them: one frame every ``interval`` carrying what the reader takes in that time,
so what waits does so in the queue, where conflation keeps it fresh, and not in the
write buffer and the kernel, where it only grows stale. Where the kernel reports its
delivery rate (``TCP_INFO``), the rate paced to is the lower of the two: a slow network
shows in the delivery rate, a slow reader behind a fast one only in the drain rate.

Its levels are paces, a geometric ladder of quarter-octaves (each about 19% slower
than the one before) from a full frame every ``interval`` down to
:data:`SLOWEST_PACE`. Level 0 does not pace at all: a subscriber that keeps up, or
whose drain rate was never measured, gets everything at once. Level ``k`` allows
``budget`` bytes per frame and one frame every ``budget / pace`` seconds, where the
budget is ``pace * interval`` (never under ``min_bytes``; a slower pace then spaces
frames of ``min_bytes`` further apart). The level in force is the one whose pace is
nearest to ``fraction`` of the drain rate, so the buffer empties between frames.

A measurement that shows the level in force faster than its target means the reader
fell behind what it was sent (the unpaced start of every subscriber, or a probe), and
what it could not read waits in buffers the hub does not see: the kernel's, and the
client's own receive buffer and library, which on a short link take hundreds of
kilobytes before the write buffer holds anything. Pacing at ``fraction`` of the drain
rate would leave that backlog, stale, in front of everything it sends, for a long time.
So it first *drains*: it paces at ``drain`` of the rate while measurements keep coming
(a measurement comes only while the kernel holds unsent bytes, so while the client's
buffers are full), and goes to ``fraction`` of it once ``hold`` seconds pass without
one (a draining that BBR, for one, also does after its start-up).

It changes level at most once every ``hold`` seconds. A pace below the reader's speed
leaves the write buffer empty, and an empty buffer says nothing of how much faster the
reader could go; so after ``probe`` seconds without a new measurement it tries the next
faster level, and stays there until a measurement says otherwise. A probe that a
measurement proves too fast becomes a ceiling: later probes stop below it, for
:data:`CEILING_PROBES` probe periods, since each probe past what the reader takes
fills buffers no one can see (the kernel's, the client's) before the write buffer
shows it.

A client that acknowledges (docs/protocol.md) says what its application has taken,
past every buffer: its ``ack_rate`` replaces both rates, nothing is drained (nothing
waits unseen), and while more than :func:`~wsfanout.lowlevel.window` bytes of what was
written are untaken (``unacked``), what is queued waits for its next acknowledgement.
That window bounds the unpaced start and every probe: they can put no more than a
fifth of a second of the reader's rate (8 KiB before it is known) out of the queue's
reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .acks import window
from .builtins import Batch, Throttle, _check_combine
from .decision import NEUTRAL, Decision
from .errors import PolicyError, invalid
from .guarantees import BatchIntegrity, Guarantee, LevelBound, Lossless, StepsApart
from .ladder import Ladder, check_hold
from .policy import Policy
from .rules import DEFAULT_MAX_MESSAGES
from .snapshot import Snapshot
from .validate import size

__all__ = ["CEILING_PROBES", "RATIO", "SLOWEST_PACE", "Adaptive"]

RATIO = 2**0.25
"""How much faster each level's pace is than the next one's (a quarter-octave)."""

SLOWEST_PACE = 1000.0
"""Bytes per second: the pace of the ladder's last level."""

CEILING_PROBES = 6
"""Probe periods during which a pace proved too fast is not probed again."""


def _check_interval(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_hold(instance, attribute, value)


def _check_fraction(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid("fraction", value, "must be a number")
    if not 0 < value <= 1:
        raise invalid("fraction", value, "must be > 0 and <= 1")


def _check_drain(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid("drain", value, "must be a number, or None")
    if not 0 < value <= 1:
        raise invalid("drain", value, "must be > 0 and <= 1, or None")


def _check_probe(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_hold(instance, attribute, value)


@attrs.frozen
class _State:
    """What Adaptive remembers of the drain rate: the last value seen, since when,
    whether the level in force is a probe above what that value says, the level a probe
    found too fast (and when), whether it drains, and the kernel's delivery rate."""

    rate: float | None
    seen_at: float
    probing: bool
    ceiling: int = 0
    ceiling_at: float = -math.inf
    draining: bool = False
    delivery: float | None = None


@attrs.frozen(repr=False)
class Adaptive(Ladder):
    """Batch queued messages into frames and pace them to the subscriber's drain rate.

    ``drain`` (a fraction of the drain rate, None: never) is the pace while what a reader
    fell behind on drains from buffers the hub cannot see: see the module docstring.

    A reader that keeps up (or was never measured) gets every message at once, as
    ``Batch`` gives it what accumulated. A slower one gets one frame every ``interval``
    seconds holding about what it reads in that time (``fraction`` of its drain rate),
    at most ``max_bytes`` and at least ``min_bytes`` (frames then come less often), at
    most one change of pace every ``hold`` seconds. ``combine`` joins the payloads as
    ``Batch``'s does. After ``probe`` seconds without a new measurement, it tries a
    faster pace (None: never). Pair it with ``ConflateByKey``, ``SkipToLatest`` or
    ``DropOldest``: pacing holds messages back, and something must keep them fresh.
    """

    interval: float = attrs.field(default=0.1, validator=_check_interval)
    max_bytes: int = attrs.field(default=65536, validator=size)
    min_bytes: int = attrs.field(default=1024, validator=size)
    combine: str | Callable[[Sequence[bytes]], bytes] = attrs.field(
        default="lines", validator=_check_combine
    )
    fraction: float = attrs.field(default=0.9, validator=_check_fraction)
    hold: float = attrs.field(default=1.0, validator=check_hold)
    probe: float | None = attrs.field(default=10.0, validator=_check_probe)
    drain: float | None = attrs.field(default=0.5, validator=_check_drain)
    announce: bool = attrs.field(default=False)
    reads = frozenset(
        [
            "now",
            "queued_messages",
            "queued_bytes",
            "lag",
            "write_buffer",
            "last_send",
            "memo",
            "drain_rate",
            "delivery_rate",
            "unacked",
            "ack_rate",
        ]
    )
    _paces: tuple[float, ...] = attrs.field(init=False, eq=False, repr=False)
    _policies: tuple[Policy, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.announce, bool):
            raise invalid("announce", self.announce, "must be True or False")
        if self.min_bytes > self.max_bytes:
            raise PolicyError(
                f"min_bytes={self.min_bytes!r} must be <= max_bytes={self.max_bytes!r}",
                name="min_bytes",
                value=self.min_bytes,
            )
        fastest = self.max_bytes / self.interval
        count = max(1, math.ceil(math.log(fastest / SLOWEST_PACE, RATIO)) + 1)
        paces = tuple(max(SLOWEST_PACE, fastest / RATIO**k) for k in range(count))
        object.__setattr__(self, "_paces", paces)
        unpaced = self._batch(self.max_bytes)
        levels: list[Policy] = [unpaced]
        for pace in paces:
            budget = max(self.min_bytes, min(self.max_bytes, round(pace * self.interval)))
            levels.append(self._batch(budget) | Throttle(rate=pace / budget))
        object.__setattr__(self, "_policies", tuple(levels))

    def _batch(self, budget: int) -> Batch:
        return Batch(max_messages=DEFAULT_MAX_MESSAGES, max_bytes=budget, combine=self.combine)

    @property
    def paces(self) -> tuple[float, ...]:
        """The pace of each level from level 1 on, in bytes per second."""
        return self._paces

    def level_policies(self) -> tuple[Policy, ...]:
        return self._policies

    def level_names(self) -> tuple[str, ...]:
        return ("unpaced", *(f"{_rate_text(pace)}" for pace in self._paces))

    def target(self, drain_rate: float | None) -> int:
        """The level whose pace is nearest to ``fraction`` of ``drain_rate`` (0: unpaced)."""
        if drain_rate is None:
            return 0
        pace = self.fraction * drain_rate
        fastest = self._paces[0]
        if pace >= fastest:
            return 0
        if pace <= 0:
            return len(self._paces)
        nearest = round(math.log(fastest / pace, RATIO)) + 1
        return min(max(nearest, 1), len(self._paces))

    def initial_state(self) -> object:
        return _State(None, -math.inf, False)

    def decide(self, snapshot: Snapshot) -> Decision:
        decision = super().decide(snapshot)
        unacked = snapshot.unacked
        if unacked is not None and unacked > window(snapshot.ack_rate):
            # The client's application has a window's worth still to take: what is
            # queued waits here, fresh, until it acknowledges (which asks again).
            return attrs.evolve(decision, send_at=math.inf)
        return decision

    def observe(self, snapshot: Snapshot, level: int, state: object) -> object:
        assert isinstance(state, _State)
        acked = snapshot.ack_rate
        rate: float | None
        delivery: float | None
        if acked is not None:
            # The client says what its application takes: past every buffer, so nothing
            # waits unseen (no draining) and the path's rate says nothing more.
            rate, delivery = acked, None
        else:
            rate, delivery = snapshot.drain_rate, snapshot.delivery_rate
        if rate == state.rate:
            return state if delivery == state.delivery else attrs.evolve(state, delivery=delivery)
        # A new measurement. If it ends a probe by saying the probed pace was too fast,
        # that pace is a ceiling for a while. If it says the pace in force is too fast
        # (a probe, or the unpaced start), what the reader did not take waits unseen:
        # drain it. Each measurement while draining says the buffers are still full.
        ceiling, ceiling_at = state.ceiling, state.ceiling_at
        overshot = self.target(_lower(rate, delivery)) > level
        if state.probing and overshot:
            ceiling, ceiling_at = level, snapshot.now
        draining = self.drain is not None and acked is None and (state.draining or overshot)
        return _State(rate, snapshot.now, False, ceiling, ceiling_at, draining, delivery)

    def choose(self, snapshot: Snapshot, level: int, state: object) -> tuple[int, str, object]:
        assert isinstance(state, _State)
        rate = _lower(state.rate, state.delivery)
        if state.draining and state.seen_at + self.hold <= snapshot.now:
            state = attrs.evolve(state, draining=False)  # no measurement for a hold: drained
        if state.draining and rate is not None and self.drain is not None:
            target = self.target(rate * self.drain / self.fraction)
            if target != level:
                return target, f"drain_rate {rate:.0f} B/s: draining what it fell behind on", state
            return level, "", state
        target = self.target(rate)
        if state.probing:
            target = min(target, level)  # stay at the probe until a measurement says
        if (
            self.probe is not None
            and level > 0
            and target >= level
            and state.seen_at + self.probe <= snapshot.now
            and (
                level - 1 > state.ceiling
                or state.ceiling_at + CEILING_PROBES * self.probe <= snapshot.now
            )
        ):
            target = level - 1
            state = attrs.evolve(state, seen_at=snapshot.now, probing=True)
            cause = f"no new drain rate for {self.probe!r}s: probing a faster pace"
            return target, cause, state
        if target == level:
            return level, "", state
        if rate is None:
            return target, "no drain rate measured", state
        return target, f"drain_rate {rate:.0f} B/s", state

    def hints(self, snapshot: Snapshot, level: int, state: object) -> Decision:
        assert isinstance(state, _State)
        if self.probe is None or not level or not snapshot.queued_messages:
            return NEUTRAL
        due = state.seen_at + self.probe
        if state.draining and self.drain is not None:
            # No probe while draining, and draining ends a hold after the last
            # measurement: a recheck before then would find nothing to do, at once again.
            due = max(due, state.seen_at + self.hold)
        if level - 1 <= state.ceiling:
            # The next faster pace is a ceiling: no probe until it expires (a recheck
            # at an earlier time would find nothing to do, and come due again at once).
            due = max(due, state.ceiling_at + CEILING_PROBES * self.probe)
        return Decision(recheck_at=due)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (
            StepsApart(self.hold),
            LevelBound(),
            BatchIntegrity(DEFAULT_MAX_MESSAGES, self.max_bytes, self.combine),
            Lossless(),
        )


def _lower(drain: float | None, delivery: float | None) -> float | None:
    """The rate to pace to: the drain rate, or the kernel's delivery rate if lower (the
    path is slower than what leaves the buffer says); None before a drain rate."""
    if drain is None or delivery is None:
        return drain
    return min(drain, delivery)


def _rate_text(pace: float) -> str:
    if pace >= 1e6:
        return f"{pace / 1e6:.3g} MB/s"
    if pace >= 1e3:
        return f"{pace / 1e3:.3g} kB/s"
    return f"{pace:.3g} B/s"
