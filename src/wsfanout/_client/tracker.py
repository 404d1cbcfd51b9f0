"""A client's account of each topic's stream: where it is, and every message it lost.

Theory of operation
-------------------
Pure: it is told each frame's facts and answers with :class:`Gap` events, so the
Python client (and any other) can share it. It follows the same rules as the
JavaScript client (``wsfanout.js``, docs/js-client.md), so both count alike. Per topic
it keeps the epoch, the last offset *accounted for* (received or reported lost), the
last offset *received* (or where the client began to follow the stream), and the
ranges a gap notice announced beyond what is accounted for (a notice may announce
offsets that come after frames still on their way). Every offset of an epoch after
the first one the client heard of is then received, or reported lost, exactly once:

* a data frame at offset ``n`` accounts for everything below it: what was neither
  received nor announced is a hole (source ``offsets``);
* a ``gap`` notice reports, with the server's reasons, only what the client did not
  know yet (source ``notice``);
* a ``heartbeat`` accounts for everything up to the offsets it names: past the last
  offset accounted for is a loss at the tail (source ``heartbeat``); a stream the
  client had not heard of starts there;
* a new epoch (in a frame, a heartbeat or a ``resume`` frame) means the old stream is
  gone and how much of it was lost is unknown (source ``epoch``, no count).

A client resumes from the last offset *received* of each stream
(:meth:`Tracker.positions`), so offsets it was told it lost after that one are asked
for again: what the server's history still holds of them comes back, and is counted
as ``recovered``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from .._core.history import Position, Range
from .._core.streams import NO_TOPIC

__all__ = ["Gap", "Tracker", "TrackerStats", "uncovered"]

GapSource = Literal["notice", "offsets", "heartbeat", "epoch"]


@attrs.frozen(kw_only=True)
class Gap:
    """Messages of one topic the client lost: reported by the server, or found.

    ``source`` says how it was learnt: a gap ``notice`` (with the server's ``reasons``
    and ``keys``), a hole in the ``offsets`` of the frames received, a ``heartbeat``
    past the last offset accounted for, or an ``epoch`` change (``previous`` is where
    the client stood in the epoch left; ``count`` is None and ``ranges`` empty, since
    how much was lost is unknown).
    """

    topic: str
    epoch: str
    ranges: tuple[Range, ...]
    count: int | None
    source: GapSource
    reasons: Mapping[str, int] = attrs.field(factory=dict, eq=False, hash=False)
    keys: tuple[str, ...] = ()
    previous: Position | None = None


@attrs.frozen(kw_only=True)
class TrackerStats:
    received: int = 0
    """Messages received, new (each message of a batch counts)."""
    duplicates: int = 0
    """Messages received again, at or below the last one received (not delivered)."""
    gaps: int = 0
    """Gap events, of every source."""
    lost: int = 0
    """Messages reported lost: the sum of the counts of the gaps that know theirs."""
    recovered: int = 0
    """Messages reported lost, then received all the same (replayed after a reconnect)."""
    epoch_changes: int = 0
    """Times a topic's stream started a new epoch under the client."""


def uncovered(known: Iterable[Range], first: int, last: int) -> list[Range]:
    """The parts of ``[first, last]`` that no range of ``known`` (ascending, disjoint)
    covers."""
    parts: list[Range] = []
    low = first
    for start, end in known:
        if low > last or start > last:
            break
        if end < low:
            continue
        if start > low:
            parts.append((low, start - 1))
        low = end + 1
    if low <= last:
        parts.append((low, last))
    return parts


def _count(ranges: Iterable[Range]) -> int:
    return sum(last - first + 1 for first, last in ranges)


class _Stream:
    __slots__ = ("accounted", "announced", "epoch", "received")

    def __init__(self, epoch: str, accounted: int | None, received: int | None) -> None:
        self.epoch = epoch
        self.accounted = accounted
        """The last offset received or reported lost; None until the client knows."""
        self.received = received
        """The last offset received, or where the client began to follow the stream."""
        self.announced: list[Range] = []
        """Ranges a notice reported lost beyond ``accounted``, ascending, disjoint."""


class Tracker:
    """Where a client stands in every topic it has heard of, and what it lost."""

    __slots__ = ("_duplicates", "_epochs", "_gaps", "_lost", "_received", "_recovered", "_streams")

    def __init__(self, positions: Iterable[Position] = ()) -> None:
        self._streams: dict[str, _Stream] = {
            p.topic: _Stream(p.epoch, p.offset, p.offset) for p in positions
        }
        self._received = self._duplicates = self._gaps = 0
        self._lost = self._recovered = self._epochs = 0

    def positions(self) -> tuple[Position, ...]:
        """Where to resume from: the last offset received of each stream (or where the
        client began to follow it)."""
        return tuple(
            Position(topic, stream.epoch, stream.received)
            for topic, stream in self._streams.items()
            if stream.received is not None
        )

    def stats(self) -> TrackerStats:
        return TrackerStats(
            received=self._received,
            duplicates=self._duplicates,
            gaps=self._gaps,
            lost=self._lost,
            recovered=self._recovered,
            epoch_changes=self._epochs,
        )

    # -- what the client received --------------------------------------------------

    def message(self, position: Position, gaps: list[Gap]) -> bool:
        """A message at ``position`` arrived: append the gaps it reveals to ``gaps``;
        False if it is a duplicate, not to be delivered."""
        topic, offset = position.topic, position.offset
        stream = self._stream(topic, position.epoch, gaps)
        if stream.received is not None and offset <= stream.received:
            self._duplicates += 1
            return False
        announced = any(first <= offset <= last for first, last in stream.announced)
        if announced or (stream.accounted is not None and offset <= stream.accounted):
            self._recovered += 1  # reported lost, and replayed all the same
        self._reach(topic, stream, offset, "offsets", seen=True, gaps=gaps)
        stream.received = offset
        self._received += 1
        return True

    def notice(self, frame: Mapping[str, Any], gaps: list[Gap]) -> None:
        """A ``gap`` notice arrived: report what of it the client did not know yet."""
        topic = str(frame.get("t", NO_TOPIC))
        stream = self._stream(topic, str(frame["e"]), gaps)
        news: list[Range] = []
        floor = (stream.accounted or 0) + 1
        for first, last in frame["ranges"]:
            parts = uncovered(stream.announced, max(int(first), floor), int(last))
            stream.announced = sorted([*stream.announced, *parts])
            news += parts
        reasons = {str(k): int(v) for k, v in dict(frame.get("reasons") or {}).items()}
        keys = tuple(str(k) for k in frame.get("keys") or ())
        self._report(topic, stream, news, "notice", gaps, reasons=reasons, keys=keys)

    def heartbeat(self, frame: Mapping[str, Any], gaps: list[Gap]) -> None:
        """A ``heartbeat`` arrived: everything up to the offsets it names is accounted for."""
        for topic, (epoch, last) in dict(frame["offsets"]).items():
            stream = self._stream(str(topic), str(epoch), gaps)
            self._reach(str(topic), stream, int(last), "heartbeat", seen=False, gaps=gaps)

    def resume(self, frame: Mapping[str, Any], gaps: list[Gap]) -> None:
        """A ``resume`` frame arrived: the replay of its topic follows."""
        topic = str(frame.get("t", NO_TOPIC))
        epoch = str(frame["e"])
        stream = self._streams.get(topic)
        if frame.get("previous") is not None and stream is not None and stream.epoch == epoch:
            # Our position is in no stream of the server's (past its end): start over.
            self._new_epoch(topic, stream, epoch, gaps)
        else:
            self._stream(topic, epoch, gaps)

    # -- internals ----------------------------------------------------------------

    def _stream(self, topic: str, epoch: str, gaps: list[Gap]) -> _Stream:
        """The stream of ``topic``, moved to ``epoch``: a new epoch is a gap of unknown
        size, and its offsets start again from 1."""
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream(epoch, None, None)
        elif stream.epoch != epoch:
            self._new_epoch(topic, stream, epoch, gaps)
        return stream

    def _new_epoch(self, topic: str, stream: _Stream, epoch: str, gaps: list[Gap]) -> None:
        previous = Position(topic, stream.epoch, stream.received or 0)
        stream.epoch, stream.accounted, stream.received, stream.announced = epoch, 0, 0, []
        self._epochs += 1
        self._gaps += 1
        gaps.append(
            Gap(topic=topic, epoch=epoch, ranges=(), count=None, source="epoch", previous=previous)
        )

    def _reach(
        self,
        topic: str,
        stream: _Stream,
        last: int,
        source: GapSource,
        *,
        seen: bool,
        gaps: list[Gap],
    ) -> None:
        """Everything up to ``last`` is accounted for (``last`` itself received, if
        ``seen``): report what was neither received nor announced, and move on."""
        before = last - 1 if seen else last
        accounted = stream.accounted
        if accounted is not None and before > accounted:
            self._report(
                topic, stream, uncovered(stream.announced, accounted + 1, before), source, gaps
            )
        if accounted is None:
            stream.accounted = stream.received = last  # where the client starts following
        elif last > accounted:
            stream.accounted = last
        kept = [(first, end) for first, end in stream.announced if end > last]
        if kept and kept[0][0] <= last:
            kept[0] = (last + 1, kept[0][1])
        stream.announced = kept

    def _report(
        self,
        topic: str,
        stream: _Stream,
        ranges: list[Range],
        source: GapSource,
        gaps: list[Gap],
        *,
        reasons: Mapping[str, int] | None = None,
        keys: tuple[str, ...] = (),
    ) -> None:
        count = _count(ranges)
        if not count:
            return
        self._gaps += 1
        self._lost += count
        gaps.append(
            Gap(
                topic=topic,
                epoch=stream.epoch,
                ranges=tuple(ranges),
                count=count,
                source=source,
                reasons=dict(reasons or {}),
                keys=keys,
            )
        )
