"""History: the recent part of each topic's stream, kept for clients that resume.

Theory of operation
-------------------
A :class:`History` is the bound, a frozen value: at most ``max_messages`` messages,
``max_bytes`` payload bytes and ``max_age`` seconds per topic, whichever is reached
first. A :class:`MemoryHistory` keeps each topic's most recent messages in offset
order under that bound (a single hub's history, and the local window of a hub on a
backplane, whose Redis stream holds the shared copy). Time is data: every call that
trims by age is given ``now``.

Reading is :meth:`MemoryHistory.read`: what is held after an offset, and the exact
offsets up to the stream's last that it no longer holds (:class:`Held`). A reconnecting
client's :class:`Position` (``TOPIC:EPOCH:OFFSET``, docs/protocol.md "Resuming") and
what its topic's stream holds make a :class:`ResumePlan` (:func:`plan_resume`): the
``resume`` frame, the gap notice for what history lost, and the messages to replay,
in order, each once. The shell sends the plan, then lets live messages through.

A reconnect storm (thousands of clients resuming from the same position at once) reads
history once per distinct starting point: :class:`Plans` shares one plan among the
clients that resume from one position while the topic's stream and its history are
unchanged.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from .control import gap_notice, resume_frame
from .errors import ConfigError, invalid
from .guarantees import CodeRepr
from .message import Message
from .streams import NO_TOPIC, Streams
from .validate import optional_duration, optional_size, size

__all__ = [
    "Held",
    "History",
    "MemoryHistory",
    "Plans",
    "Position",
    "Range",
    "ResumePlan",
    "missing_ranges",
    "parse_since",
    "plan_from",
    "plan_resume",
    "resume_after",
    "wanted",
]

Range = tuple[int, int]
"""Inclusive ``(first, last)`` offsets."""


def _setting(check: Callable[[Any, attrs.Attribute[Any], object], None]) -> Any:
    """``check``, raising :class:`ConfigError`: a history is a setting, not a policy."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
        try:
            check(instance, attribute, value)
        except ConfigError as exc:
            raise ConfigError(str(exc), name=exc.name, value=exc.value) from None

    return validate


@attrs.frozen(repr=False)
class History(CodeRepr):
    """How much of each topic's stream is kept for resuming clients.

    At most ``max_messages`` messages, ``max_bytes`` payload bytes (``None``: no byte
    bound) and ``max_age`` seconds (``None``: no age bound) per topic; the oldest go
    first. ``History(max_messages=1000, max_age=300)`` keeps the last thousand messages
    of each topic, none older than five minutes.
    """

    max_messages: int = attrs.field(default=1000, validator=_setting(size))
    max_bytes: int | None = attrs.field(default=None, validator=_setting(optional_size))
    max_age: float | None = attrs.field(default=None, validator=_setting(optional_duration))

    def __attrs_post_init__(self) -> None:
        if self.max_age == 0:
            raise invalid("max_age", 0, "must be > 0 (or None: no age bound)", ConfigError)


def check_history(history: object, name: str = "history") -> History | None:
    """``history`` as a setting: a :class:`History` or ``None``."""
    if history is not None and not isinstance(history, History):
        raise invalid(name, history, "must be a History(...) or None", ConfigError)
    return history


@attrs.frozen
class Held:
    """What a history holds of one topic after an offset.

    ``messages`` are held, ascending; ``missing`` are the offsets after the one asked
    for, up to ``last`` (the stream's last offset), that it does not hold.
    """

    messages: tuple[Message, ...]
    missing: tuple[Range, ...]


def missing_ranges(after: int, last: int, offsets: Iterable[int]) -> tuple[Range, ...]:
    """The offsets in ``(after, last]`` absent from ``offsets`` (ascending), as ranges."""
    ranges: list[Range] = []
    expected = after + 1
    for offset in offsets:
        if offset > expected:
            ranges.append((expected, min(offset - 1, last)))
        expected = max(expected, offset + 1)
    if expected <= last:
        ranges.append((expected, last))
    return tuple(ranges)


class _Topic:
    """One topic's messages, ascending by offset, in a list with a moving head."""

    __slots__ = ("bytes", "head", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.head = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.messages) - self.head

    def pop_oldest(self) -> None:
        message = self.messages[self.head]
        self.messages[self.head] = _GONE  # let it go now, not at the next compaction
        self.head += 1
        self.bytes -= message.size
        if self.head > 64 and self.head * 2 > len(self.messages):
            del self.messages[: self.head]
            self.head = 0

    def oldest(self) -> Message:
        return self.messages[self.head]

    def after(self, offset: int) -> Sequence[Message]:
        index = bisect.bisect_right(self.messages, offset, lo=self.head, key=_offset)
        return self.messages[index:]


def _offset(message: Message) -> int:
    return message.offset


_GONE = Message(0, b"", seq=-1, time=0.0)


class MemoryHistory:
    """Each topic's recent messages under a :class:`History` bound, in memory.

    Call :meth:`append` with every message of a stream as it is published, in offset
    order; :meth:`reset` when a topic's epoch changes (its old messages are no longer
    comparable); :meth:`read` to resume.
    """

    __slots__ = ("_topics", "limits")

    def __init__(self, limits: History) -> None:
        self.limits = limits
        self._topics: dict[str, _Topic] = {}

    def __repr__(self) -> str:
        return f"<MemoryHistory {self.limits!r}, {len(self._topics)} topics>"

    def append(self, message: Message, now: float) -> None:
        """Keep ``message`` (published at ``now``), then trim its topic to the bound."""
        name = NO_TOPIC if message.topic is None else message.topic
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        elif topic.messages and len(topic) and topic.messages[-1].offset >= message.offset:
            return  # already held (a repeat), or out of order: keep offsets ascending
        topic.messages.append(message)
        topic.bytes += message.size
        self._trim(topic, now)

    def reset(self, topic: str | None) -> None:
        """Forget a topic's messages: its stream starts a new epoch."""
        self._topics.pop(NO_TOPIC if topic is None else topic, None)

    def read(self, topic: str | None, after: int, last: int, now: float) -> Held:
        """The messages held after offset ``after``, and what of ``(after, last]`` is not."""
        held = self._topics.get(NO_TOPIC if topic is None else topic)
        if held is None:
            return Held((), missing_ranges(after, last, ()))
        self._trim(held, now)
        messages = tuple(m for m in held.after(after) if m.offset <= last)
        return Held(messages, missing_ranges(after, last, (m.offset for m in messages)))

    def first(self, topic: str | None, now: float) -> int | None:
        """The oldest offset held of ``topic``, if any."""
        held = self._topics.get(NO_TOPIC if topic is None else topic)
        if held is None:
            return None
        self._trim(held, now)
        return held.oldest().offset if len(held) else None

    def held(self, topic: str | None) -> tuple[int, int]:
        """``(messages, bytes)`` held of ``topic`` now (before trimming by age)."""
        held = self._topics.get(NO_TOPIC if topic is None else topic)
        return (0, 0) if held is None else (len(held), held.bytes)

    def topics(self) -> Iterator[str]:
        return iter(self._topics)

    def _trim(self, topic: _Topic, now: float) -> None:
        limits = self.limits
        max_bytes = math.inf if limits.max_bytes is None else limits.max_bytes
        oldest = -math.inf if limits.max_age is None else now - limits.max_age
        while len(topic) and (
            len(topic) > limits.max_messages
            or topic.bytes > max_bytes
            or topic.oldest().time < oldest
        ):
            topic.pop_oldest()


# -- resuming ------------------------------------------------------------------------


@attrs.frozen
class Position:
    """Where a client was in a topic's stream: the last offset it received, in ``epoch``.

    Written ``TOPIC:EPOCH:OFFSET`` in a ``since`` query parameter; the topic is ``""``
    for messages published without one.
    """

    topic: str
    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.epoch}:{self.offset}"

    @property
    def stream_topic(self) -> str | None:
        """The topic as ``Hub.publish`` takes it: ``None`` for the stream ``""``."""
        return None if self.topic == NO_TOPIC else self.topic


MAX_SINCE_LENGTH = 1024


def parse_since(text: str) -> Position:
    """Parse ``TOPIC:EPOCH:OFFSET`` (the topic may hold ``:``); errors name ``since``."""
    if not isinstance(text, str):
        raise invalid("since", text, "must be a str TOPIC:EPOCH:OFFSET", ConfigError)
    if len(text) > MAX_SINCE_LENGTH:
        raise invalid("since", text[:40] + "...", f"is longer than {MAX_SINCE_LENGTH}", ConfigError)
    parts = text.rsplit(":", 2)
    if len(parts) != 3:
        raise invalid("since", text, "is not TOPIC:EPOCH:OFFSET", ConfigError)
    topic, epoch, offset = parts
    if not epoch.isascii() or not epoch.isalnum():
        raise invalid("since", text, "has an epoch that is not letters and digits", ConfigError)
    if not offset.isascii() or not offset.isdigit() or len(offset) > 18:
        raise invalid("since", text, "has an offset that is not a number >= 0", ConfigError)
    return Position(topic, epoch, int(offset))


@attrs.frozen
class ResumePlan:
    """What a resuming client is sent for one topic, in this order: the ``resume`` frame,
    the gap notice (``None`` when nothing is missing), then ``messages``."""

    position: Position
    epoch: str
    """The stream's current epoch."""
    previous: str | None
    """The client's epoch, when it is not the stream's (or its offset is not in it)."""
    messages: tuple[Message, ...]
    missing: tuple[Range, ...]
    """Offsets of the current epoch, after the client's, that history no longer holds."""
    frame: str
    notice: str | None

    @property
    def complete(self) -> bool:
        return self.previous is None and not self.missing

    def replay(self, now: float) -> tuple[Message, ...]:
        """The messages to offer, as of ``now``: a policy that watches lag counts it from
        the replay, or a client away longer than its ``max_lag`` could never come back."""
        return tuple(message.retimed(now) for message in self.messages)

    @property
    def after(self) -> int:
        """The offset the client is at once the plan is sent (with what is missing)."""
        if self.messages:
            return self.messages[-1].offset
        return max([last for _, last in self.missing], default=self.since)

    @property
    def since(self) -> int:
        """The offset replaying starts after: the client's, or 0 in a new epoch."""
        return 0 if self.previous is not None else self.position.offset


def resume_after(position: Position, epoch: str, last: int) -> int:
    """The offset to read history after: the client's, or 0 when its position is not in
    this stream (another epoch, or past the stream's end, which no client of this
    epoch can have received)."""
    return 0 if _previous(position, epoch, last) is not None else position.offset


def _previous(position: Position, epoch: str, last: int) -> str | None:
    if position.epoch != epoch or position.offset > last:
        return position.epoch
    return None


def plan_resume(position: Position, epoch: str, last: int, held: Held) -> ResumePlan:
    """The plan for ``position`` in a stream at ``epoch`` whose last offset is ``last``,
    from ``held``: what history holds after :func:`resume_after`."""
    previous = _previous(position, epoch, last)
    messages, missing = held.messages, held.missing
    replay = (messages[0].offset, messages[-1].offset) if messages else None
    frame = resume_frame(
        position.topic,
        epoch,
        since=position.offset,
        replay=replay,
        complete=previous is None and not missing,
        previous=previous,
    )
    notice = None
    if missing:
        notice = gap_notice(position.topic, epoch, missing, {"history": _count(missing)})
    return ResumePlan(position, epoch, previous, messages, missing, frame, notice)


def _count(ranges: Iterable[Range]) -> int:
    return sum(last - first + 1 for first, last in ranges)


def wanted(positions: Iterable[Position], topics: frozenset[str] | None) -> list[Position]:
    """The positions a subscriber of ``topics`` (None: all) resumes: those of topics it
    receives, and of ``""`` (messages without a topic reach every subscriber)."""
    return [p for p in positions if topics is None or not p.topic or p.topic in topics]


def plan_from(
    streams: Streams,
    history: MemoryHistory | None,
    position: Position,
    *,
    every_topic: bool,
    now: float,
) -> ResumePlan | None:
    """The plan for ``position`` from one hub's ``streams`` and ``history``.

    A subscriber of named topics resuming a topic nobody published on gets the topic's
    new epoch; for a subscriber of ``every_topic``, such a position is ignored (None),
    so no client's made-up names create streams.
    """
    topic = position.stream_topic
    stream = streams.get(topic)
    if stream is None:
        if every_topic:
            return None
        stream = streams.ensure(topic)
    after = resume_after(position, stream.epoch, stream.last)
    if history is None:
        held = Held((), missing_ranges(after, stream.last, ()))
    else:
        held = history.read(topic, after, stream.last, now)
    return plan_resume(position, stream.epoch, stream.last, held)


class Plans:
    """Resume plans shared among clients that resume from the same position.

    A plan depends only on the position, the topic's stream (epoch and last offset) and
    what history holds, which, between two messages of the topic, changes only when its
    oldest messages age out. So a plan is kept while the stream's epoch and last offset
    and the oldest offset held are those it was made with; ``reads`` counts the reads of
    history (one per distinct position and state), for the hub's statistics.
    """

    __slots__ = ("_kept", "_topics", "reads")

    MAX_PLANS = 1024
    """Plans kept at most, over every topic: past it they all go (a plan holds its
    messages, which history may have let go; a storm of more distinct positions reads
    more, and is still served exactly)."""

    def __init__(self) -> None:
        self._topics: dict[str, tuple[tuple[str, int, int | None], dict[Position, ResumePlan]]]
        self._topics = {}
        self._kept = 0
        self.reads = 0

    def plan(
        self,
        streams: Streams,
        history: MemoryHistory | None,
        position: Position,
        *,
        every_topic: bool,
        now: float,
    ) -> ResumePlan | None:
        """:func:`plan_from`, read once per position while nothing it depends on moves."""
        topic = position.stream_topic
        stream = streams.get(topic)
        if stream is None:  # nothing to share: no stream, or one this call creates
            self.reads += 1
            return plan_from(streams, history, position, every_topic=every_topic, now=now)
        first = None if history is None else history.first(topic, now)
        state = (stream.epoch, stream.last, first)
        name = position.topic
        kept = self._topics.get(name)
        if kept is None or kept[0] != state:
            if kept is not None:
                self._kept -= len(kept[1])
            kept = self._topics[name] = (state, {})
        plans = kept[1]
        plan = plans.get(position)
        if plan is None:
            self.reads += 1
            plan = plan_from(streams, history, position, every_topic=every_topic, now=now)
            assert plan is not None  # its stream exists
            if self._kept >= self.MAX_PLANS:
                self._topics = {name: (state, {})}
                plans = self._topics[name][1]
                self._kept = 0
            plans[position] = plan
            self._kept += 1
        return plan
