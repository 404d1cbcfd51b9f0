"""Where a hub stands in each stream of its backplane, and how it repairs what it missed.

Theory of operation
-------------------
Redis pub/sub delivers at most once: a subscription that breaks (Redis restarted, a
network failure, a client cut for its output buffer) loses what was published
meanwhile, and says nothing. Every message carries its topic's offset and epoch,
assigned by Redis, so a receiver can tell exactly what it missed, and the topic's
Redis stream (its history) has it. This module is the receiver's bookkeeping, pure:
it is told what arrives and answers with actions for the I/O side to carry out.

Per stream, a :class:`Cursor` holds the epoch and the last offset handed to the hub.
A live message at ``last + 1`` is delivered (:meth:`Cursors.live` returns ``None``,
the hot path); one further on opens a *repair*: the messages between are read from
the stream (:class:`Repair`) while this one and those after it wait in the cursor's
``pending`` list, so the hub still gets the topic in order. When the read returns
(:meth:`Cursors.repaired`) what it found and what waited are handed over in offset
order; offsets the stream no longer holds are :class:`Lose` actions, placed where
the messages would have been. Without a history the read only tells where the stream
is, and the gap is lost.

A gap is checked before it is believed. Anyone who can publish on the namespace's
channels can put a message numbered far ahead of a stream on pub/sub; taken at its
word, it would report a loss of every offset up to it and make every genuine message
after it look like a repeat, silencing the stream for the rest of its epoch. Redis
numbers a genuine message before it publishes it, so the read, issued after the
message arrived, finds the stream's last offset at or past it. A message that had
arrived before the read (the repair's ``checked`` first waiting ones) numbered past
that last offset is a forgery: it is dropped and counted (:attr:`Cursors.forged`,
a :class:`Reject` action), nothing is reported lost for it, and the stream goes on.

After every (re)subscription the I/O side compares each stream with Redis
(:meth:`Cursors.resync`, from a snapshot of every topic's epoch and last offset), so
a loss at the tail of a stream, with no later message to show it, is repaired too. A
stream whose epoch changed (Redis flushed, or restarted without persistence) starts
over from offset 1; what it lost of the old epoch is unknown, and counted as an
epoch change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, NamedTuple, TypeVar

__all__ = ["Cursor", "Cursors", "Deliver", "Lose", "Reject", "Repair"]

T = TypeVar("T")

Range = tuple[int, int]


class Deliver(NamedTuple, Generic[T]):
    """Hand this message to the hub, at ``offset`` of ``epoch``."""

    stream: str
    epoch: str
    offset: int
    item: T


class Lose(NamedTuple):
    """These offsets of ``stream`` will never be delivered: tell the hub."""

    stream: str
    epoch: str
    ranges: tuple[Range, ...]


class Repair(NamedTuple):
    """Read ``(after, upto]`` of ``stream`` from its history, then call ``repaired``
    with what Redis says the stream's epoch and last offset are."""

    stream: str
    epoch: str
    after: int
    upto: int
    generation: int
    checked: int = 0
    """How many of the messages waiting had arrived when this repair started: the read
    is issued after them, so it proves or disproves their offsets."""


class Reject(NamedTuple):
    """Messages of ``stream`` numbered past what Redis had numbered: forged, dropped."""

    stream: str
    epoch: str
    offsets: tuple[int, ...]
    last: int
    """The stream's real last offset, as Redis said."""


Action = Deliver[T] | Lose | Reject | Repair


class Cursor(Generic[T]):
    """One stream: its epoch, the last offset handed over, and what waits for a repair."""

    __slots__ = ("epoch", "generation", "last", "pending", "repairing", "target")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch = epoch
        self.last = last
        self.pending: list[tuple[int, T]] = []
        """Live messages that arrived while a repair ran, ascending."""
        self.repairing = False
        self.target = last
        """The offset a resync found the stream at: repair at least up to it."""
        self.generation = 0
        """Numbers repairs, so the answer to one given up on is ignored."""

    def __repr__(self) -> str:
        state = f", repairing, {len(self.pending)} pending" if self.repairing else ""
        return f"Cursor({self.epoch!r}, last={self.last}{state})"


class Cursors(Generic[T]):
    """Every stream's cursor; see the module docstring. ``history``: whether the
    streams keep history to repair from. ``pending_limit`` bounds what waits per stream
    for a repair: past it the repair is given up and its range counted lost."""

    __slots__ = (
        "_cursors",
        "epoch_changes",
        "forged",
        "history",
        "lost",
        "pending_limit",
        "repaired_count",
    )

    def __init__(self, *, history: bool, pending_limit: int = 100_000) -> None:
        self.history = history
        self.pending_limit = pending_limit
        self._cursors: dict[str, Cursor[T]] = {}
        self.lost = 0
        """Offsets found missing that no history held: handed to the hub as losses."""
        self.repaired_count = 0
        """Messages read from history to fill a gap and handed over."""
        self.epoch_changes = 0
        """Streams that started a new epoch under this receiver."""
        self.forged = 0
        """Messages dropped because Redis had not numbered that far: forged on pub/sub."""

    def __len__(self) -> int:
        return len(self._cursors)

    def position(self, stream: str) -> tuple[str, int] | None:
        """``(epoch, last offset handed over)`` of ``stream``, if known."""
        cursor = self._cursors.get(stream)
        return None if cursor is None else (cursor.epoch, cursor.last)

    def cursor(self, stream: str) -> Cursor[T] | None:
        return self._cursors.get(stream)

    # -- subscribing --------------------------------------------------------------

    def baseline(self, snapshot: Mapping[str, tuple[str, int]]) -> None:
        """The first subscription: what was published before is not this hub's loss."""
        for stream, (epoch, last) in snapshot.items():
            if stream not in self._cursors:
                self._cursors[stream] = Cursor(epoch, last)

    def resync(self, snapshot: Mapping[str, tuple[str, int]]) -> list[Action[T]]:
        """A (re)subscription: bring every stream up to where Redis has it."""
        actions: list[Action[T]] = []
        for stream, cursor in list(self._cursors.items()):
            found = snapshot.get(stream)
            if found is None:
                # Redis has no such stream: its epoch ended (flushed) and nothing of a
                # new one was published yet. What waited of the old epoch goes now.
                if cursor.pending or cursor.repairing:
                    actions += self._flush(stream, cursor)
                continue
            epoch, last = found
            if epoch != cursor.epoch:
                actions += self._change(stream, cursor, epoch)
                cursor = self._cursors[stream]
            self._catch_up(stream, cursor, last, actions)
        for stream, (epoch, last) in snapshot.items():
            if stream not in self._cursors:
                cursor = self._cursors[stream] = Cursor(epoch, 0)
                self._catch_up(stream, cursor, last, actions)
        return actions

    # -- receiving ----------------------------------------------------------------

    def live(self, stream: str, epoch: str, offset: int, item: T) -> list[Action[T]] | None:
        """A message from the subscription. ``None``: deliver it now (the usual case);
        otherwise the actions to take, in order (it may be among them, or wait)."""
        cursor = self._cursors.get(stream)
        if cursor is None:
            cursor = self._cursors[stream] = Cursor(epoch, 0)  # a stream new since baseline
        actions: list[Action[T]] | None = None
        if cursor.epoch != epoch:
            actions = self._change(stream, cursor, epoch)
            cursor = self._cursors[stream]
        if cursor.repairing:
            cursor.pending.append((offset, item))
            if len(cursor.pending) > self.pending_limit:
                return (actions or []) + self._give_up(stream, cursor)
            return actions or []
        last = cursor.last
        if offset == last + 1:
            cursor.last = offset
            if actions is None:
                return None
            actions.append(Deliver(stream, epoch, offset, item))
            return actions
        actions = actions or []
        if offset <= last:
            return actions  # a repeat: already handed over
        # A gap: checked against Redis (and read back from history, if any) first.
        cursor.pending.append((offset, item))
        actions.append(self._start(stream, cursor, offset - 1))
        return actions

    def repaired(
        self,
        repair: Repair,
        found: Iterable[tuple[int, T]],
        real: tuple[str, int] | None = None,
    ) -> list[Action[T]]:
        """The read of ``repair`` returned ``found`` (ascending ``(offset, item)``);
        ``real`` is the stream's epoch and last offset as Redis answered (None: unknown)."""
        cursor = self._cursors.get(repair.stream)
        if (
            cursor is None
            or cursor.epoch != repair.epoch
            or cursor.generation != repair.generation
            or not cursor.repairing
        ):
            return []  # given up on, or the stream moved to another epoch meanwhile
        cursor.repairing = False
        upto = repair.upto
        actions: list[Action[T]] = []
        if real is not None and real[0] == repair.epoch:
            last = real[1]
            upto = min(upto, last)
            cursor.target = min(cursor.target, max(last, cursor.last))
            checked = cursor.pending[: repair.checked]
            forged = tuple(o for o, _ in checked if o > last)
            if forged:
                self.forged += len(forged)
                actions.append(Reject(repair.stream, repair.epoch, forged, last))
                cursor.pending = [p for p in checked if p[0] <= last] + cursor.pending[
                    repair.checked :
                ]
            if not self.history:
                # No history to read from: only offsets before a message that did
                # arrive are known lost; later ones may still be on their way.
                arrived = [o for o, _ in cursor.pending[: repair.checked] if o <= last]
                upto = min(upto, max(arrived, default=cursor.last + 1) - 1)
                cursor.target = min(cursor.target, max(upto, cursor.last))
        found = [(o, item) for o, item in found if repair.after < o <= upto]
        self.repaired_count += sum(1 for o, _ in found if o > cursor.last)
        return actions + self._hand_over(repair.stream, cursor, found, upto)

    # -- internals ----------------------------------------------------------------

    def _catch_up(
        self, stream: str, cursor: Cursor[T], last: int, actions: list[Action[T]]
    ) -> None:
        cursor.target = max(cursor.target, last)
        if cursor.repairing or last <= cursor.last:
            return
        if self.history:
            actions.append(self._start(stream, cursor, last))
        else:
            actions.append(self._lose(stream, cursor.epoch, cursor.last + 1, last))
            cursor.last = last

    def _start(self, stream: str, cursor: Cursor[T], upto: int) -> Repair:
        cursor.repairing = True
        cursor.generation += 1
        cursor.target = max(cursor.target, upto)
        return Repair(
            stream,
            cursor.epoch,
            cursor.last,
            max(upto, cursor.target),
            cursor.generation,
            len(cursor.pending),
        )

    def _hand_over(
        self, stream: str, cursor: Cursor[T], found: list[tuple[int, T]], upto: int
    ) -> list[Action[T]]:
        """Deliver ``found`` (read up to ``upto``) and what waited, in offset order."""
        epoch = cursor.epoch
        merged = dict(found)
        for offset, item in cursor.pending:
            merged.setdefault(offset, item)
        cursor.pending = []
        actions: list[Action[T]] = []
        expected = cursor.last + 1
        ordered = sorted(merged.items())
        for index, (offset, item) in enumerate(ordered):
            if offset < expected:
                continue
            if offset > expected and expected <= upto:
                # Missing inside the range read: history no longer holds them.
                stop = min(offset - 1, upto)
                actions.append(self._lose(stream, epoch, expected, stop))
                expected = stop + 1
            if offset > expected:
                # Missing past the range read: another repair, the rest waits for it.
                cursor.last = expected - 1
                cursor.pending = ordered[index:]
                actions.append(self._start(stream, cursor, offset - 1))
                return actions
            actions.append(Deliver(stream, epoch, offset, item))
            expected = offset + 1
        cursor.last = expected - 1
        if cursor.last < upto:
            actions.append(self._lose(stream, epoch, cursor.last + 1, upto))
            cursor.last = upto
        if cursor.last < cursor.target:
            actions.append(self._start(stream, cursor, cursor.target))
        return actions

    def _give_up(self, stream: str, cursor: Cursor[T]) -> list[Action[T]]:
        """Too much waits: count the repair's range lost and hand over what waited."""
        cursor.repairing = False
        cursor.generation += 1
        cursor.target = cursor.last
        first = cursor.pending[0][0]
        return self._hand_over(stream, cursor, [], first - 1)

    def _flush(self, stream: str, cursor: Cursor[T]) -> list[Action[T]]:
        """The stream's epoch is gone: hand over what waited, holes counted lost."""
        cursor.repairing = False
        cursor.generation += 1
        if not cursor.pending:
            return []
        cursor.target = cursor.last
        return self._hand_over(stream, cursor, [], cursor.pending[0][0] - 1)

    def _change(self, stream: str, cursor: Cursor[T], epoch: str) -> list[Action[T]]:
        """``stream`` is now at ``epoch``: finish the old one, start the new at 0."""
        actions = self._flush(stream, cursor)
        self.epoch_changes += 1
        self._cursors[stream] = Cursor(epoch, 0)
        return actions

    def _lose(self, stream: str, epoch: str, first: int, last: int) -> Lose:
        self.lost += last - first + 1
        return Lose(stream, epoch, ((first, last),))
