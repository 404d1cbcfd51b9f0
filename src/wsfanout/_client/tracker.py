"""A client's account of each topic's stream: where it is, and every message it lost.

Theory of operation
-------------------
Pure: it is told each frame's facts and answers with :class:`Gap` events, so the
Python client (and any other) can share it. Per topic it keeps the epoch and the last
offset accounted for, received or reported lost, and the ranges a gap notice announced
ahead of it (a notice comes before the next frame the client gets). Every offset of an
epoch after the first one the client heard of is then accounted for exactly once:

* a data frame at ``last + 1`` is in order; one further on reveals a *hole*: the
  offsets between, less those announced, were lost without a notice;
* a ``gap`` notice reports ranges with the server's reasons;
* a ``heartbeat`` past ``last`` reveals a loss at the tail, where no later frame
  would show it;
* a new epoch (in a frame, a heartbeat, or a ``resume`` frame's ``previous``) means the
  old stream is gone and how much of it was lost is unknown: a gap with no count.

A client resumes from :meth:`Tracker.positions`: everything up to each ``last`` is
either received or already reported, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from .._core.history import Position, Range
from .._core.streams import NO_TOPIC

__all__ = ["Gap", "Tracker", "TrackerStats", "subtract"]

Source = Literal["notice", "hole", "heartbeat", "epoch"]


@attrs.frozen(kw_only=True)
class Gap:
    """Messages of one topic the client lost: reported by the server, or found.

    ``source`` says how it was learnt: a gap ``notice`` (with the server's
    ``reasons``), a ``hole`` in the offsets of the frames received, a ``heartbeat``
    past the last offset received, or an ``epoch`` change (``previous`` is the epoch
    left; ``count`` is None, since how much was lost is unknown).
    """

    topic: str
    epoch: str
    ranges: tuple[Range, ...]
    count: int | None
    source: Source
    reasons: Mapping[str, int] = attrs.field(factory=dict, eq=False, hash=False)
    previous: str | None = None


@attrs.frozen(kw_only=True)
class TrackerStats:
    received: int = 0
    """Messages received in order (each message of a batch counts)."""
    duplicates: int = 0
    """Messages received again at or below an offset already accounted for (not delivered)."""
    gaps: int = 0
    """Gap events, of every source."""
    lost: int = 0
    """Messages lost, as counted by the gaps that know their count."""
    epoch_changes: int = 0
    """Times a topic's stream started a new epoch under the client."""


def subtract(ranges: Iterable[Range], removed: Iterable[Range]) -> tuple[Range, ...]:
    """``ranges`` without the offsets of ``removed`` (both ascending, inclusive pairs)."""
    cut = sorted(removed)
    result: list[Range] = []
    for first, last in ranges:
        start = first
        for low, high in cut:
            if high < start or low > last:
                continue
            if low > start:
                result.append((start, low - 1))
            start = max(start, high + 1)
            if start > last:
                break
        if start <= last:
            result.append((start, last))
    return tuple(result)


def _count(ranges: Iterable[Range]) -> int:
    return sum(last - first + 1 for first, last in ranges)


class _Cursor:
    __slots__ = ("announced", "epoch", "last")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch = epoch
        self.last = last
        self.announced: list[Range] = []
        """Ranges a notice reported, beyond ``last``: not holes when frames skip them."""


class Tracker:
    """Where a client stands in every topic it has heard of, and what it lost."""

    __slots__ = ("_cursors", "_duplicates", "_epochs", "_gaps", "_lost", "_received")

    def __init__(self, positions: Iterable[Position] = ()) -> None:
        self._cursors: dict[str, _Cursor] = {p.topic: _Cursor(p.epoch, p.offset) for p in positions}
        self._received = self._duplicates = self._gaps = self._lost = self._epochs = 0

    def positions(self) -> tuple[Position, ...]:
        """Where to resume from: each topic's epoch and last offset accounted for."""
        return tuple(Position(t, c.epoch, c.last) for t, c in self._cursors.items())

    def stats(self) -> TrackerStats:
        return TrackerStats(
            received=self._received,
            duplicates=self._duplicates,
            gaps=self._gaps,
            lost=self._lost,
            epoch_changes=self._epochs,
        )

    # -- what the client received --------------------------------------------------

    def message(self, position: Position, gaps: list[Gap]) -> bool:
        """A message at ``position`` arrived: append the gaps it reveals to ``gaps``;
        False if it is a duplicate (at or below what is accounted for)."""
        cursor = self._cursor(position.topic, position.epoch, gaps, start=position.offset - 1)
        offset = position.offset
        if offset <= cursor.last:
            self._duplicates += 1
            return False
        if offset > cursor.last + 1:
            self._hole(position.topic, cursor, offset - 1, "hole", gaps)
        cursor.last = offset
        if cursor.announced:
            self._settle(cursor)
        self._received += 1
        return True

    def notice(self, frame: Mapping[str, Any], gaps: list[Gap]) -> None:
        """A ``gap`` notice arrived."""
        topic = frame.get("t", NO_TOPIC)
        ranges = tuple((int(a), int(b)) for a, b in frame.get("ranges", ()))
        start = ranges[0][0] - 1 if ranges else 0
        cursor = self._cursor(topic, str(frame.get("e", "")), gaps, start=start)
        ahead = [(max(a, cursor.last + 1), b) for a, b in ranges if b > cursor.last]
        cursor.announced.extend(ahead)
        count = int(frame.get("count", _count(ranges)))
        reasons = {str(k): int(v) for k, v in dict(frame.get("reasons", {})).items()}
        self._report(
            Gap(
                topic=topic,
                epoch=cursor.epoch,
                ranges=ranges,
                count=count,
                source="notice",
                reasons=reasons,
            ),
            gaps,
        )
        self._settle(cursor)

    def heartbeat(self, frame: Mapping[str, Any], gaps: list[Gap]) -> None:
        """A ``heartbeat`` arrived: any offset it names past ``last`` was lost."""
        for topic, (epoch, offset) in dict(frame.get("offsets", {})).items():
            offset = int(offset)
            cursor = self._cursor(str(topic), str(epoch), gaps, start=offset)
            if offset > cursor.last:
                self._hole(str(topic), cursor, offset, "heartbeat", gaps)
                cursor.last = offset

    def resume(self, frame: Mapping[str, Any], gaps: list[Gap]) -> None:
        """A ``resume`` frame arrived: the replay of its topic follows."""
        topic = frame.get("t", NO_TOPIC)
        epoch = str(frame.get("e", ""))
        previous = frame.get("previous")
        cursor = self._cursors.get(topic)
        if previous is not None:  # the client's position is in no stream the server has
            self._new_epoch(topic, str(previous), epoch, gaps)
            self._cursors[topic] = _Cursor(epoch, 0)
        elif cursor is None or cursor.epoch != epoch:
            self._cursors[topic] = _Cursor(epoch, int(frame.get("since", 0)))

    # -- internals ----------------------------------------------------------------

    def _cursor(self, topic: str, epoch: str, gaps: list[Gap], *, start: int) -> _Cursor:
        """The topic's cursor in ``epoch``: a new topic starts just before ``start``; a
        new epoch is an epoch change, and starts before offset 1."""
        cursor = self._cursors.get(topic)
        if cursor is None:
            cursor = self._cursors[topic] = _Cursor(epoch, max(start, 0))
        elif cursor.epoch != epoch:
            self._new_epoch(topic, cursor.epoch, epoch, gaps)
            cursor = self._cursors[topic] = _Cursor(epoch, 0)
        return cursor

    def _new_epoch(self, topic: str, previous: str, epoch: str, gaps: list[Gap]) -> None:
        self._epochs += 1
        gap = Gap(
            topic=topic, epoch=epoch, ranges=(), count=None, source="epoch", previous=previous
        )
        self._report(gap, gaps)

    def _hole(
        self, topic: str, cursor: _Cursor, upto: int, source: Source, gaps: list[Gap]
    ) -> None:
        """Offsets ``(last, upto]`` never arrived: report those no notice announced."""
        missing = subtract([(cursor.last + 1, upto)], cursor.announced)
        cursor.announced = [(a, b) for a, b in cursor.announced if b > upto]
        if missing:
            gap = Gap(
                topic=topic,
                epoch=cursor.epoch,
                ranges=missing,
                count=_count(missing),
                source=source,
            )
            self._report(gap, gaps)

    def _settle(self, cursor: _Cursor) -> None:
        """Announced ranges that start right after ``last`` are accounted for now."""
        announced = sorted(cursor.announced)
        while announced and announced[0][0] <= cursor.last + 1:
            cursor.last = max(cursor.last, announced.pop(0)[1])
        cursor.announced = announced

    def _report(self, gap: Gap, gaps: list[Gap]) -> None:
        self._gaps += 1
        if gap.count is not None:
            self._lost += gap.count
        gaps.append(gap)
