"""Reading what a wsfanout server sends: where each message stands, and what is missing.

Theory of operation
-------------------
A client hands every frame it receives to :meth:`GapTracker.feed`, which says what the
frame is (:class:`Received`: a data frame and the place of each message it carries, a
gap notice, another control frame) and which gaps it reveals (:class:`Gap`). A gap is
*announced* when the server said so (a gap notice: it dropped, skipped or conflated
those messages; a resume frame whose epoch changed), and *unannounced* when the client
finds it itself: an offset that jumps past what was received or announced, a heartbeat
ahead of it, an epoch that changed under it. With a server that keeps its promises
(docs/protocol.md), every loss while connected is announced, before any later message.

Per topic the tracker keeps the last offset received (:attr:`GapTracker.positions`,
what a reconnecting client resumes from, :meth:`GapTracker.since`), how far it has
accounted for, received or reported, and the announced offsets beyond that, so each
offset is reported once. It follows docs/protocol.md as wsfanout.js does: a stream
first heard of in a heartbeat starts at its offset; a notice alone gives no position
(what is below its ranges may still arrive); an offset at or below the last received
is a duplicate; another epoch restarts the stream at offset 0, so a heartbeat in it
reveals offsets 1 to N as lost. It is pure: no I/O, no clock; the ``raw`` framing
carries no offsets, so there it reports the notices only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["Gap", "GapTracker", "Position", "Received"]

Framing = Literal["raw", "v1"]
_GAP_PREFIX = '{"type":"gap"'


@attrs.frozen
class Position:
    """Where one message stands: its topic (``""`` for none), epoch, offset and key."""

    topic: str
    epoch: str
    offset: int
    key: str | None = None


@attrs.frozen
class Gap:
    """Offsets of one topic the client will not receive, and whether the server said so.

    ``ranges`` are inclusive ``(first, last)`` pairs, ``()`` when how much was lost is
    unknown (the epoch changed: ``previous`` is the old one). An announced gap also has
    the notice's ``reasons`` and conflated ``keys``.
    """

    topic: str
    epoch: str
    ranges: tuple[tuple[int, int], ...]
    announced: bool
    reasons: Mapping[str, int] = attrs.field(factory=dict)
    keys: tuple[str, ...] = ()
    previous: str | None = None

    @property
    def count(self) -> int | None:
        """How many messages are missing; ``None`` when unknown."""
        if not self.ranges and self.previous is not None:
            return None
        return sum(last - first + 1 for first, last in self.ranges)


@attrs.frozen
class Received:
    """What one frame was, and the gaps it revealed.

    ``kind`` is ``"data"`` (``data`` is the payload, ``messages`` the places of the
    messages it carries, several for a batch, none in the ``raw`` framing or for a
    message sent to this subscriber alone), ``"duplicate"`` (a data frame whose every
    message was received already: do not act on it again), ``"gap"`` (a gap notice) or
    ``"control"`` (another control frame); ``control`` is a control frame's JSON
    object. ``duplicates`` are the places of a data frame's messages received already,
    left out of ``messages``.
    """

    kind: Literal["data", "duplicate", "gap", "control"]
    data: str | bytes
    messages: tuple[Position, ...] = ()
    control: Mapping[str, Any] | None = None
    gaps: tuple[Gap, ...] = ()
    duplicates: tuple[Position, ...] = ()


class _Topic:
    __slots__ = ("announced", "epoch", "received", "seen")

    def __init__(self, epoch: str, offset: int | None) -> None:
        self.epoch = epoch
        self.received = offset
        """The last offset received (or where the client began to follow the stream):
        where it resumes from; None until the client learns where the stream stands."""
        self.seen = offset
        """The last offset accounted for: received, or reported missing; None as above."""
        self.announced: list[tuple[int, int]] = []
        """Announced ranges beyond ``seen``, ascending."""


class GapTracker:
    """Follows the streams a client receives and reports what it misses; see the module.

    ``framing`` is the subscriber's (``"v1"`` when the connection negotiated the
    ``wsfanout.v1`` subprotocol). ``since`` maps topics to the ``(epoch, offset)`` the
    client resumes from, so that what is missing after it counts from there.
    """

    def __init__(
        self, framing: Framing = "v1", *, since: Mapping[str, tuple[str, int]] | None = None
    ) -> None:
        if framing not in ("raw", "v1"):
            raise ValueError(f"framing={framing!r} must be 'raw' or 'v1'")
        self.framing: Framing = framing
        self._topics: dict[str, _Topic] = {
            topic: _Topic(epoch, offset) for topic, (epoch, offset) in (since or {}).items()
        }
        self.gaps: list[Gap] = []
        """Every gap reported so far, in order."""
        self.duplicates = 0
        """Messages received again (an offset not above the last one received of its
        stream), left out of :attr:`Received.messages`."""
        self.recovered = 0
        """Messages reported missing, then received all the same (replayed after a
        reconnect): ``lost - recovered`` are gone for good."""

    # -- what a client calls --------------------------------------------------------

    def feed(self, frame: str | bytes) -> Received:
        """One frame as received (``str`` for Text, ``bytes`` for Binary)."""
        if self.framing == "raw":
            if _is_text(frame, _GAP_PREFIX):
                return self.notice(json.loads(frame), frame)
            return Received("data", frame)
        newline = frame.find("\n") if isinstance(frame, str) else frame.find(b"\n")
        if newline < 0:
            return self._control(json.loads(frame), frame)
        header = json.loads(frame[:newline])
        places = _places(header)
        gaps: list[Gap] = []
        fresh: list[Position] = []
        again: list[Position] = []
        for place in places:
            (fresh if self._receive(place, gaps) else again).append(place)
        kind: Literal["data", "duplicate"] = "duplicate" if places and not fresh else "data"
        body = frame[newline + 1 :]
        return self._report(Received(kind, body, tuple(fresh), None, tuple(gaps), tuple(again)))

    def notice(self, value: Mapping[str, Any], frame: str | bytes = "") -> Received:
        """A gap notice the application decoded itself (a custom ``Notify`` format):
        ``value`` has the protocol's keys (``t``, ``e``, ``ranges``, ...).

        In the ``v1`` framing the gap holds only what the client did not know yet:
        offsets already received or already reported missing are left out (and a notice
        that tells nothing new reports no gap). A notice of a stream not seen yet gives
        no position in it: the offsets below the notice's are not known to be lost."""
        topic, epoch = value.get("t", ""), value.get("e", "")
        ranges = tuple((int(first), int(last)) for first, last in value.get("ranges", ()))
        gaps: list[Gap] = []
        if self.framing == "v1":
            state = self._stream(topic, epoch, gaps, announced=True)
            news: list[tuple[int, int]] = []
            for first, last in ranges:
                parts = _without(max(first, (state.seen or 0) + 1), last, state.announced)
                state.announced = _merge(state.announced, parts)
                news += parts
            ranges = tuple(news)
        if ranges:
            gaps.append(
                Gap(
                    topic,
                    epoch,
                    ranges,
                    announced=True,
                    reasons=dict(value.get("reasons", {})),
                    keys=tuple(value.get("keys", ())),
                )
            )
        return self._report(Received("gap", frame, (), value, tuple(gaps)))

    @property
    def positions(self) -> dict[str, tuple[str, int]]:
        """Per topic, the epoch and the last offset received (or where the client began
        to follow the stream, a heartbeat's offset): where to resume from. A stream the
        client knows only from a gap notice has no position yet."""
        return {
            topic: (state.epoch, state.received)
            for topic, state in self._topics.items()
            if state.received is not None
        }

    def since(self) -> list[str]:
        """The ``since`` values of a resume URL, ``TOPIC:EPOCH:OFFSET`` per topic
        (percent-encode them into the query string as usual)."""
        return [f"{topic}:{epoch}:{offset}" for topic, (epoch, offset) in self.positions.items()]

    @property
    def lost(self) -> int:
        """Messages reported missing so far (gaps of unknown size not counted)."""
        return sum(gap.count or 0 for gap in self.gaps)

    # -- internals --------------------------------------------------------------------

    def _report(self, received: Received) -> Received:
        self.gaps.extend(received.gaps)
        return received

    def _control(self, value: Mapping[str, Any], frame: str | bytes) -> Received:
        kind = value.get("type")
        if kind == "gap":
            return self.notice(value, frame)
        gaps: list[Gap] = []
        if kind == "heartbeat":
            for topic, (epoch, last) in value.get("offsets", {}).items():
                state = self._stream(topic, epoch, gaps, announced=False)
                self._reach(topic, state, int(last), gaps, received=False)
        elif kind == "resume":
            self._stream(value.get("t", ""), value.get("e", ""), gaps, announced=True)
        return self._report(Received("control", frame, (), value, tuple(gaps)))

    def _stream(self, topic: str, epoch: str, gaps: list[Gap], *, announced: bool) -> _Topic:
        """The state of ``topic``'s stream, moved to ``epoch``: another epoch than the one
        followed is a gap of unknown size, after which offsets count again from 0."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(epoch, None)
        elif state.epoch != epoch:
            gaps.append(Gap(topic, epoch, (), announced=announced, previous=state.epoch))
            state = self._topics[topic] = _Topic(epoch, 0)
        return state

    def _receive(self, place: Position, gaps: list[Gap]) -> bool:
        """A message at ``place``: False for a duplicate (at or below the last offset
        received of its stream), which changes nothing."""
        state = self._stream(place.topic, place.epoch, gaps, announced=False)
        offset = place.offset
        if state.received is not None and offset <= state.received:
            self.duplicates += 1
            return False
        if any(a <= offset <= b for a, b in state.announced) or (
            state.seen is not None and offset <= state.seen
        ):
            self.recovered += 1  # reported missing, replayed after all
        self._reach(place.topic, state, offset, gaps, received=True)
        state.received = offset
        return True

    def _reach(
        self, topic: str, state: _Topic, offset: int, gaps: list[Gap], *, received: bool
    ) -> None:
        """The stream of ``topic`` is at ``offset`` (received, or named by a heartbeat):
        what before it is neither received nor announced is an unannounced gap. A stream
        without a position starts there."""
        end = offset - 1 if received else offset
        if state.seen is None:
            state.seen = state.received = offset
        else:
            missing = _without(state.seen + 1, end, state.announced)
            if missing:
                gaps.append(Gap(topic, state.epoch, tuple(missing), announced=False))
            state.seen = max(state.seen, offset)
        state.announced = [
            (max(a, state.seen + 1), b) for a, b in state.announced if b > state.seen
        ]


def _is_text(frame: str | bytes, prefix: str) -> bool:
    if isinstance(frame, str):
        return frame.startswith(prefix)
    return frame.startswith(prefix.encode())


def _places(header: Mapping[str, Any]) -> tuple[Position, ...]:
    if "b" in header:
        return tuple(Position(topic, epoch, int(offset)) for offset, epoch, topic in header["b"])
    if "o" not in header:
        return ()  # a message sent to this subscriber alone: in no stream
    return (Position(header.get("t", ""), header["e"], int(header["o"]), header.get("k")),)


def _merge(ranges: list[tuple[int, int]], more: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted([*ranges, *more]):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def _without(first: int, last: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges of ``first..last`` that ``holes`` (ascending) do not cover."""
    result: list[tuple[int, int]] = []
    at = first
    for a, b in holes:
        if b < at:
            continue
        if a > last:
            break
        if a > at:
            result.append((at, a - 1))
        at = max(at, b + 1)
    if at <= last:
        result.append((at, last))
    return result
