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
what a reconnecting client resumes from, :meth:`GapTracker.since`) and how far it has
accounted for, received or reported, so each gap is reported once. It is pure: no I/O,
no clock; the ``raw`` framing carries no offsets, so there it reports the notices only.
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
    message sent to this subscriber alone), ``"gap"`` (a gap notice) or ``"control"``
    (another control frame); ``control`` is a control frame's JSON object.
    """

    kind: Literal["data", "gap", "control"]
    data: str | bytes
    messages: tuple[Position, ...] = ()
    control: Mapping[str, Any] | None = None
    gaps: tuple[Gap, ...] = ()


class _Topic:
    __slots__ = ("announced", "epoch", "received", "seen")

    def __init__(self, epoch: str, offset: int) -> None:
        self.epoch = epoch
        self.received = offset
        """The last offset received (or resumed from)."""
        self.seen = offset
        """The last offset accounted for: received, or reported missing."""
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
        gaps = [gap for place in places for gap in self._receive(place)]
        return self._report(Received("data", frame[newline + 1 :], places, None, tuple(gaps)))

    def notice(self, value: Mapping[str, Any], frame: str | bytes = "") -> Received:
        """A gap notice the application decoded itself (a custom ``Notify`` format):
        ``value`` has the protocol's keys (``t``, ``e``, ``ranges``, ...)."""
        topic, epoch = value.get("t", ""), value.get("e", "")
        ranges = tuple((int(first), int(last)) for first, last in value.get("ranges", ()))
        gap = Gap(
            topic,
            epoch,
            ranges,
            announced=True,
            reasons=dict(value.get("reasons", {})),
            keys=tuple(value.get("keys", ())),
        )
        if self.framing == "v1" and ranges:
            state = self._topics.get(topic)
            if state is None:  # lost before the first message: count on from there
                state = self._topics[topic] = _Topic(epoch, ranges[0][0] - 1)
            if state.epoch == epoch:
                state.announced = _merge(state.announced, ranges)
        return self._report(Received("gap", frame, (), value, (gap,)))

    @property
    def positions(self) -> dict[str, tuple[str, int]]:
        """Per topic, the epoch and the last offset received: where to resume from."""
        return {topic: (state.epoch, state.received) for topic, state in self._topics.items()}

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
                gaps += self._reach(topic, epoch, int(last), received=False)
        elif kind == "resume":
            topic, epoch = value.get("t", ""), value.get("e", "")
            previous = value.get("previous")
            state = self._topics.get(topic)
            if previous is not None:
                gaps.append(Gap(topic, epoch, (), announced=True, previous=previous))
                self._topics[topic] = _Topic(epoch, 0)
            elif state is None:
                self._topics[topic] = _Topic(epoch, int(value.get("since", 0)))
        return self._report(Received("control", frame, (), value, tuple(gaps)))

    def _receive(self, place: Position) -> list[Gap]:
        return self._reach(place.topic, place.epoch, place.offset, received=True)

    def _reach(self, topic: str, epoch: str, offset: int, *, received: bool) -> list[Gap]:
        """The stream of ``topic`` is at ``offset``: what between is neither received nor
        announced is an unannounced gap."""
        state = self._topics.get(topic)
        if state is None:  # the first we hear of it: nothing before counts as missed
            state = self._topics[topic] = _Topic(epoch, offset if received else 0)
            state.seen = offset
            return []
        gaps: list[Gap] = []
        if state.epoch != epoch:
            gaps.append(Gap(topic, epoch, (), announced=False, previous=state.epoch))
            self._topics[topic] = state = _Topic(epoch, 0)
            if not received:
                state.seen = offset
                return gaps
        end = offset - 1 if received else offset
        missing = _without(state.seen + 1, end, state.announced)
        if missing:
            gaps.append(Gap(topic, epoch, tuple(missing), announced=False))
        state.seen = max(state.seen, offset)
        state.announced = [(a, b) for a, b in state.announced if b > state.seen]
        if received:
            state.received = max(state.received, offset)
        return gaps


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
