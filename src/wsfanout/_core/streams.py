"""Per-topic streams: every published message's offset, and every topic's epoch.

Each topic (``""`` for messages published without one) is a stream: its messages are
numbered 1, 2, 3, ... (their *offsets*) within an *epoch*, a short string that changes
whenever the stream's history is lost, so that offsets of different epochs are never
compared. Offsets are assigned once per published message, for every subscriber alike,
whatever their framing (docs/protocol.md). The epoch factory is the shell's: the core
draws no randomness of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["NO_TOPIC", "Stream", "Streams"]

NO_TOPIC = ""
"""The stream of messages published without a topic."""


class Stream:
    """One topic's epoch and the offset of its last message (0 before the first).

    ``seq`` is the hub's sequence number of that message (-1 before the first), so a
    heartbeat can tell which topics a subscriber of all topics was offered messages of.
    """

    __slots__ = ("epoch", "last", "seq")

    def __init__(self, epoch: str, last: int = 0) -> None:
        self.epoch = epoch
        self.last = last
        self.seq = -1

    def __repr__(self) -> str:
        return f"Stream({self.epoch!r}, last={self.last})"


class Streams:
    """The streams of one hub, created on a topic's first message."""

    __slots__ = ("_new_epoch", "_streams")

    def __init__(self, new_epoch: Callable[[], str]) -> None:
        self._new_epoch = new_epoch
        self._streams: dict[str, Stream] = {}

    def advance(self, topic: str | None) -> Stream:
        """The stream of ``topic``, its ``last`` offset moved on to the new message's."""
        name = NO_TOPIC if topic is None else topic
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream(self._new_epoch())
        stream.last += 1
        return stream

    def ensure(self, topic: str | None) -> Stream:
        """The stream of ``topic``, created (at offset 0 of a new epoch) if it has none."""
        name = NO_TOPIC if topic is None else topic
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream(self._new_epoch())
        return stream

    def place(self, topic: str | None, epoch: str, offset: int) -> tuple[Stream, bool]:
        """Move ``topic``'s stream to ``offset`` of ``epoch``, as numbered elsewhere (a
        backplane); return it and whether its epoch changed."""
        name = NO_TOPIC if topic is None else topic
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream(epoch, offset)
            return stream, False
        changed = stream.epoch != epoch
        stream.epoch = epoch
        stream.last = offset
        return stream, changed

    def items(self) -> Iterator[tuple[str, Stream]]:
        """Every topic and its stream (``""`` for messages without a topic)."""
        return iter(self._streams.items())

    def get(self, topic: str | None) -> Stream | None:
        """The stream of ``topic``, or ``None`` before its first message."""
        return self._streams.get(NO_TOPIC if topic is None else topic)

    def __len__(self) -> int:
        return len(self._streams)
