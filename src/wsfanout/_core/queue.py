"""A subscriber's bounded queue: arrival rules, bounds in messages and bytes, eviction.

The queue is ordered by publish order. Conflation removes the older message of a key
and appends the newer one at the tail (folded into it by the rules' reducer, if any;
a reducer never merges a text and a binary message, which then both stay), so
delivery stays a subsequence of publish order. Messages marked not droppable
(lossless) are never evicted. Under a policy that announces losses (``Rules.notify``)
the queue records each message it loses in its
:class:`~wsfanout._core.notices.GapLedger`, at the only places it loses one.
:meth:`MessageQueue.reshape` switches to other rules (a live policy change, or a
ladder's next level) and makes what is queued fit them at once.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator

from .message import Message, merge_messages
from .notices import CONFLATED, DROPPED_NEWEST, DROPPED_OLDEST, SKIPPED, GapLedger
from .rules import Arrival, Overflow, Rules

__all__ = ["MessageQueue", "Push", "Run"]


class Push(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    OVERFLOW = "overflow"
    """The message cannot fit without evicting what may not be evicted: close the subscriber."""


_ACCEPTED = Push.ACCEPTED  # read once: the lookup costs on every offer to a queue


class MessageQueue:
    """Messages waiting for one subscriber, with eviction counted by reason."""

    __slots__ = (
        "_entries",
        "_keys",
        "arrival",
        "bytes",
        "conflated",
        "dropped_newest",
        "dropped_oldest",
        "ledger",
        "max_bytes",
        "max_messages",
        "overflow",
        "peak_bytes",
        "peak_messages",
        "pinned_bytes",
        "pinned_messages",
        "reduce",
        "skipped",
    )

    def __init__(self, rules: Rules) -> None:
        self._apply(rules)
        # Keyed by Message.seq: O(1) removal from the middle (conflation) and from the head.
        self._entries: OrderedDict[int, Message] = OrderedDict()
        self._keys: dict[str, int] = {}
        self.bytes = 0
        # Messages that may not be evicted, and their bytes: what no eviction can free.
        self.pinned_messages = 0
        self.pinned_bytes = 0
        self.peak_messages = 0
        self.peak_bytes = 0
        self.dropped_oldest = 0
        self.dropped_newest = 0
        self.skipped = 0
        self.conflated = 0

    def _apply(self, rules: Rules) -> None:
        assert rules.max_messages is not None
        assert rules.max_bytes is not None
        assert rules.overflow is not None
        self.max_messages: int = rules.max_messages
        self.max_bytes: int = rules.max_bytes
        self.overflow: Overflow = rules.overflow
        self.arrival: Arrival | None = rules.arrival
        self.reduce = rules.reduce
        self.ledger: GapLedger | None = GapLedger() if rules.notify is not None else None
        """Where lost messages are recorded for gap notices; None unless announced."""

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._entries.values())

    @property
    def oldest_time(self) -> float | None:
        for message in self._entries.values():
            return message.time
        return None

    def peek(self) -> Message:
        return next(iter(self._entries.values()))

    def pop(self) -> Message:
        """Remove and return the oldest message (it is being written)."""
        _, message = self._entries.popitem(last=False)
        self._forget(message)
        return message

    def pop_batch(self, max_messages: int, max_bytes: float) -> list[Message]:
        """Remove and return the oldest message and the ones after it that may share its
        frame: of its kind (text or binary), droppable like it, at most ``max_messages``
        and ``max_bytes`` of payload in all. A lossless message travels alone."""
        entries = self._entries
        _, first = entries.popitem(last=False)
        self._forget(first)
        parts = [first]
        if not first.droppable:
            return parts
        opcode = first.opcode
        size = len(first.payload)
        for message in entries.values():
            if len(parts) >= max_messages or message.opcode != opcode or not message.droppable:
                break
            length = len(message.payload)
            if size + length > max_bytes:
                break
            size += length
            parts.append(message)
        if len(parts) > 1:
            # _forget() for the rest, all droppable (none pinned): their bytes at once,
            # and the whole queue in one clear when the batch takes it all.
            self.bytes -= size - len(first.payload)
            if len(parts) - 1 == len(entries):
                entries.clear()
                self._keys.clear()
            else:
                keys = self._keys
                for message in parts[1:]:
                    seq = message.seq
                    del entries[seq]
                    key = message.key
                    if key is not None and keys.get(key) == seq:
                        del keys[key]
        return parts

    def clear(self) -> int:
        """Empty the queue; return how many messages it held."""
        count = len(self._entries)
        self._entries.clear()
        self._keys.clear()
        self.bytes = 0
        self.pinned_messages = 0
        self.pinned_bytes = 0
        return count

    def push(self, message: Message) -> Push:
        """Queue ``message`` under the arrival rule, then make it fit the bounds."""
        entries = self._entries
        arrival = self.arrival
        if arrival is not None and entries:
            if arrival is Arrival.SKIP_TO_LATEST:
                self.skipped += self._evict_all_droppable()
            elif message.key is not None:
                seq = self._keys.get(message.key)
                if seq is not None and entries[seq].droppable:
                    older = entries[seq]
                    if self.reduce is None:
                        self._lose(seq, CONFLATED)
                        self.conflated += 1
                    elif older.opcode == message.opcode:  # a text and a binary never merge
                        self._lose(seq, CONFLATED)
                        self.conflated += 1
                        message = merge_messages(older, message, self.reduce)
        size = len(message.payload)
        if len(entries) >= self.max_messages or self.bytes + size > self.max_bytes:
            result = self._make_room(message, size)
            if result is not _ACCEPTED:
                return result
        entries[message.seq] = message
        key = message.key
        if key is not None:
            self._keys[key] = message.seq
        if not message.droppable:
            self.pinned_messages += 1
            self.pinned_bytes += size
        total = self.bytes = self.bytes + size
        if len(entries) > self.peak_messages:
            self.peak_messages = len(entries)
        if total > self.peak_bytes:
            self.peak_bytes = total
        return _ACCEPTED

    def push_run(self, run: Run) -> None:
        """Queue ``run``'s messages at once: what a :meth:`push` of each, in order, does
        when none of them needs room and no arrival rule applies (the caller knows)."""
        entries = self._entries
        entries.update(run.entries)
        if run.keys:
            self._keys.update(run.keys)
        self.pinned_messages += run.pinned_messages
        self.pinned_bytes += run.pinned_bytes
        total = self.bytes = self.bytes + run.bytes
        if len(entries) > self.peak_messages:
            self.peak_messages = len(entries)
        if total > self.peak_bytes:
            self.peak_bytes = total

    def _make_room(self, message: Message, size: int) -> Push:
        overflow = self.overflow
        if overflow is Overflow.CLOSE:
            return Push.OVERFLOW
        if message.droppable and (overflow is Overflow.DROP_NEWEST or size > self.max_bytes):
            return self._refuse(message)
        # DROP_OLDEST, or a message that may not be dropped: evict droppable ones, oldest
        # first, unless even evicting all of them would not make room.
        if self.pinned_messages >= self.max_messages or self.pinned_bytes + size > self.max_bytes:
            if message.droppable:
                return self._refuse(message)
            return Push.OVERFLOW
        entries = self._entries
        while len(entries) >= self.max_messages or self.bytes + size > self.max_bytes:
            # Nothing pinned: the oldest is the victim, no scan (every offer to a
            # subscriber that is behind comes here).
            victim = (
                next(seq for seq, m in entries.items() if m.droppable)
                if self.pinned_messages
                else next(iter(entries))
            )
            self._lose(victim, DROPPED_OLDEST)
            self.dropped_oldest += 1
        return _ACCEPTED

    def reshape(self, rules: Rules) -> list[Message] | None:
        """Enforce new ``rules`` on what is queued, as if each message arrived again in
        order: a smaller bound evicts or refuses under the new overflow rule, a new
        arrival rule skips or conflates (folding with its reducer, if any), and the
        counters go on. Both a live policy change (``Outbox.set_policy``) and a ladder's
        step use it. Returns None, or, when a message cannot fit (the overflow rule
        closes, or a message that may not be evicted has no room), the messages that no
        longer fit, already out of the queue (the caller closes the subscriber; they are
        lost with it)."""
        queued = list(self._entries.values())
        self._apply(rules)
        self._entries.clear()
        self._keys.clear()
        self.bytes = self.pinned_messages = self.pinned_bytes = 0
        for index, message in enumerate(queued):
            if self.push(message) is Push.OVERFLOW:
                return queued[index:]
        return None

    def _refuse(self, message: Message) -> Push:
        self.dropped_newest += 1
        if self.ledger is not None:
            self.ledger.record(message, DROPPED_NEWEST)
        return Push.REFUSED

    def _evict_all_droppable(self) -> int:
        victims = [seq for seq, m in self._entries.items() if m.droppable]
        for seq in victims:
            self._lose(seq, SKIPPED)
        return len(victims)

    def _lose(self, seq: int, reason: str) -> None:
        message = self._entries.pop(seq)
        self._forget(message)
        if self.ledger is not None:
            self.ledger.record(message, reason)

    def _forget(self, message: Message) -> None:
        self.bytes -= len(message.payload)
        if not message.droppable:
            self.pinned_messages -= 1
            self.pinned_bytes -= len(message.payload)
        key = message.key
        if key is not None and self._keys.get(key) == message.seq:
            del self._keys[key]


class Run:
    """Messages pushed one after another, kept as :meth:`MessageQueue.push` leaves them,
    so that other queues in the same state take them in one step (``push_run``)."""

    __slots__ = ("bytes", "entries", "keys", "pinned_bytes", "pinned_messages")

    def __init__(self) -> None:
        self.entries: dict[int, Message] = {}
        self.keys: dict[str, int] = {}
        self.bytes = 0
        self.pinned_messages = 0
        self.pinned_bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, message: Message) -> None:
        """``message`` was pushed, needing no room, under no arrival rule."""
        size = len(message.payload)
        self.entries[message.seq] = message
        if message.key is not None:
            self.keys[message.key] = message.seq
        if not message.droppable:
            self.pinned_messages += 1
            self.pinned_bytes += size
        self.bytes += size
