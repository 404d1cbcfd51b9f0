"""The publish buffer: a hub's messages waiting for Redis, bounded, in order.

Theory of operation
-------------------
The sender takes a batch (:meth:`~PublishBuffer.take`), writes it, then settles it
when Redis answered (:meth:`~PublishBuffer.settle`). When the call failed (a broken
connection, or a timeout while Redis stalled) the batch may or may not have reached
Redis: it stays *in doubt* (:meth:`~PublishBuffer.fail`) until the sender, connected
again, asks Redis the last sequence number it applied for this hub and
:meth:`~PublishBuffer.resolve` settles what Redis ran and puts the rest back at the
head. Retrying is safe because Redis' publish script remembers that number, so a batch
is never applied twice, and it saves the messages written into a connection that had
died unnoticed; resolving first means a message that reached Redis is never counted
dropped.

The bound applies to the messages waiting; the batch in flight or in doubt (at most
one) is not counted against it until it comes back. When a message does not fit, the
overflow rule decides: ``DROP_OLDEST`` evicts from the head, ``DROP_NEWEST`` refuses
the newest. Either way the count goes to :attr:`~PublishBuffer.dropped`.
"""

from __future__ import annotations

from collections import deque

from .._core.rules import Overflow

__all__ = ["PublishBuffer"]

Item = tuple[int, str | None, bytes, bytes]
"""(sequence number, topic, head, payload)."""


class PublishBuffer:
    """Messages waiting for Redis, oldest first, with one batch possibly in flight."""

    __slots__ = (
        "_flight",
        "_items",
        "bytes",
        "drop_oldest",
        "dropped",
        "in_doubt",
        "max_bytes",
        "max_messages",
    )

    def __init__(self, max_messages: int, max_bytes: int, overflow: Overflow) -> None:
        if overflow is Overflow.CLOSE:
            raise ValueError("a publish buffer cannot close: it drops the oldest or the newest")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.drop_oldest = overflow is Overflow.DROP_OLDEST
        self._items: deque[Item] = deque()
        self._flight: list[Item] = []
        self.in_doubt = False
        """The batch in flight failed without a word of whether Redis ran it."""
        self.bytes = 0
        """Payload bytes waiting (not counting the batch in flight)."""
        self.dropped = 0
        """Messages evicted or refused because the buffer was full."""

    def __len__(self) -> int:
        """Messages not yet acknowledged by Redis: waiting or in flight."""
        return len(self._items) + len(self._flight)

    @property
    def waiting(self) -> int:
        return len(self._items)

    def push(self, seq: int, topic: str | None, head: bytes, payload: bytes) -> bool:
        """Append a message; False if it was refused (the buffer is full, DROP_NEWEST)."""
        size = len(payload)
        if len(self._items) >= self.max_messages or self.bytes + size > self.max_bytes:
            if not self.drop_oldest or size > self.max_bytes:
                self.dropped += 1
                return False
            self._make_room(1, size)
        self._items.append((seq, topic, head, payload))
        self.bytes += size
        return True

    def take(self, limit: int) -> list[Item]:
        """Remove up to ``limit`` messages from the head; they are in flight until
        :meth:`settle` or :meth:`requeue` is called."""
        assert not self._flight, "the previous batch was neither settled nor put back"
        items = self._items
        batch = [items.popleft() for _ in range(min(limit, len(items)))]
        self.bytes -= sum(len(item[3]) for item in batch)
        self._flight = batch
        return batch

    def settle(self) -> int:
        """Redis acknowledged the batch in flight; return its size."""
        count = len(self._flight)
        self._flight = []
        return count

    def requeue(self) -> None:
        """The batch in flight never reached Redis: put it back at the head, then apply
        the bound."""
        batch, self._flight = self._flight, []
        self.in_doubt = False
        self._items.extendleft(reversed(batch))
        self.bytes += sum(len(item[3]) for item in batch)
        self._make_room(0, 0)

    def fail(self) -> None:
        """The call carrying the batch in flight failed: it stays, in doubt, until
        :meth:`resolve` (no-op without a batch in flight)."""
        self.in_doubt = bool(self._flight)

    def resolve(self, applied: int) -> int:
        """Redis applied this hub's messages up to sequence number ``applied``: settle
        those of the batch in doubt, put the rest back at the head (then apply the
        bound); return how many were settled."""
        batch = self._flight
        done = sum(1 for item in batch if item[0] <= applied)
        self._flight = batch[done:]
        self.requeue()
        return done

    def clear(self) -> int:
        """Forget everything, in flight included; return how many messages that was."""
        count = len(self)
        self._items.clear()
        self._flight = []
        self.in_doubt = False
        self.bytes = 0
        return count

    def _make_room(self, messages: int, size: int) -> None:
        """Drop until ``messages`` more messages of ``size`` bytes in all fit."""
        items = self._items
        while items and (
            len(items) + messages > self.max_messages or self.bytes + size > self.max_bytes
        ):
            payload = (items.popleft() if self.drop_oldest else items.pop())[3]
            self.bytes -= len(payload)
            self.dropped += 1
