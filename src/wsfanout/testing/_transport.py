"""A fake transport: a write buffer with watermarks above a kernel send buffer with a
low-water mark, emptied by a scripted reader."""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

__all__ = ["FakeTransport"]

T = TypeVar("T")

# Bytes are whole; a reader at a fractional rate accumulates credit, and the epsilon keeps
# a float product such as 0.1 * 30 from landing one byte short.
_EPSILON = 1e-6


class _Pending(Generic[T]):
    __slots__ = ("item", "remaining")

    def __init__(self, item: T, remaining: int) -> None:
        self.item = item
        self.remaining = remaining


class FakeTransport(Generic[T]):
    """A write buffer that pauses over ``high`` bytes and resumes at or under ``low``, as
    asyncio transports do, read by a client at ``rate`` bytes per second (``math.inf``:
    as fast as written; ``0``: stalled).

    Below it, the kernel takes up to ``notsent_lowat`` bytes the client has not read yet
    (``TCP_NOTSENT_LOWAT``), at once and byte by byte: only what it cannot take waits in
    the write buffer. ``0`` (the default) models no kernel buffer at all.

    Items written are opaque (the simulator writes its frame records); each has a size
    in bytes and comes out of :meth:`drain` or :meth:`read_for` once fully read.
    """

    def __init__(
        self, *, high: int, low: int, rate: float = math.inf, notsent_lowat: int = 0
    ) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"write limits (high={high}, low={low}) need 0 <= low <= high")
        if isinstance(notsent_lowat, bool) or not isinstance(notsent_lowat, int):
            raise ValueError(f"notsent_lowat={notsent_lowat!r} must be an int >= 0")
        if notsent_lowat < 0:
            raise ValueError(f"notsent_lowat={notsent_lowat!r} must be an int >= 0")
        self.high = high
        self.low = low
        self.notsent_lowat = notsent_lowat
        self.rate = _check_rate(rate)
        self.unread = 0
        """Bytes written and not yet read by the client: the kernel's and the buffer's."""
        self.kernel_unsent = 0
        """The part of ``unread`` the kernel holds: ``min(unread, notsent_lowat)``."""
        self.buffered = 0
        """The rest, waiting in the write buffer: ``transport.get_write_buffer_size()``."""
        self.paused = False
        """True from a write that took the buffer over ``high`` until it is back at ``low``."""
        self.closed = False
        self._pending: deque[_Pending[T]] = deque()
        self._credit = 0.0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.low, self.high

    def set_rate(self, rate: float) -> list[T]:
        """Read at ``rate`` bytes per second from now on; at ``math.inf``, read everything now."""
        self.rate = _check_rate(rate)
        self._credit = 0.0
        return self.drain(self.unread) if self.rate == math.inf else []

    def write(self, item: T, nbytes: int) -> list[T]:
        """Buffer ``item``; return what a client reading as fast as written has received."""
        if self.closed:
            raise RuntimeError("write() on a closed transport")
        self._pending.append(_Pending(item, nbytes))
        self._settle(self.unread + nbytes)
        if self.rate == math.inf:
            return self.drain(self.unread)
        if self.buffered > self.high:
            self.paused = True
        return []

    def drain(self, nbytes: int) -> list[T]:
        """The client reads ``nbytes`` now; return the items it finished reading."""
        return [item for item, _ in self._consume(min(nbytes, self.unread))]

    def read_for(self, start: float, seconds: float) -> list[tuple[T, float]]:
        """The client reads at its rate for ``seconds`` from ``start``; return each item it
        finished reading with the time it finished."""
        if seconds <= 0 or self.rate == 0:
            return []
        if self.rate == math.inf:
            return [(item, start) for item, _ in self._consume(self.unread)]
        credit = self._credit
        amount = credit + self.rate * seconds
        whole = min(self.unread, math.floor(amount + _EPSILON))
        self._credit = 0.0 if whole == self.unread else max(0.0, amount - whole)
        return [
            (item, start + min(seconds, max(0.0, (offset - credit) / self.rate)))
            for item, offset in self._consume(whole)
        ]

    def _consume(self, nbytes: int) -> list[tuple[T, float]]:
        """Take ``nbytes`` off the head; return finished items with the byte offset (from
        the start of this read) at which each finished."""
        finished: list[tuple[T, float]] = []
        self._settle(self.unread - nbytes)
        read = 0
        pending = self._pending
        while pending and (read < nbytes or pending[0].remaining == 0):
            head = pending[0]
            taken = min(nbytes - read, head.remaining)
            head.remaining -= taken
            read += taken
            if head.remaining:
                break
            finished.append((head.item, float(read)))
            pending.popleft()
        if self.paused and self.buffered <= self.low:
            self.paused = False
        return finished

    def _settle(self, unread: int) -> None:
        """The kernel takes what it can of what is unread; the buffer holds the rest."""
        self.unread = unread
        self.kernel_unsent = min(unread, self.notsent_lowat)
        self.buffered = unread - self.kernel_unsent

    def seconds_until(self, level: int) -> float:
        """How long until the buffer is down to ``level`` bytes at the current rate (the
        kernel stays full while anything is buffered)."""
        if self.buffered <= level:
            return 0.0
        return self._seconds_for(self.buffered - level)

    def seconds_until_next(self) -> float:
        """How long until the item at the head is fully read at the current rate (inf
        if nothing is buffered)."""
        if not self._pending:
            return math.inf
        return self._seconds_for(self._pending[0].remaining)

    def drain_next(self) -> list[T]:
        """The client reads the item at the head now (if any); return it."""
        if not self._pending:
            return []
        return self.drain(self._pending[0].remaining)

    def seconds_until_read(self, item: T) -> float:
        """How long until ``item`` is fully read at the current rate (inf if not buffered)."""
        total = 0
        for entry in self._pending:
            total += entry.remaining
            if entry.item is item:
                return self._seconds_for(total)
        return math.inf

    def _seconds_for(self, nbytes: int) -> float:
        if nbytes <= 0:
            return 0.0
        if self.rate == 0:
            return math.inf
        return max(0.0, (nbytes - self._credit) / self.rate)

    def abort(self) -> list[T]:
        """Drop the connection: whatever is still buffered never arrives."""
        lost = [entry.item for entry in self._pending]
        self._pending.clear()
        self._settle(0)
        self.paused = False
        self.closed = True
        return lost


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0:
        raise ValueError(f"rate={rate!r} must be a number of bytes per second >= 0")
    return float(rate)
