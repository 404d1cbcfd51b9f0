"""What a client's application has taken, from its acknowledgements (docs/protocol.md).

Theory of operation
-------------------
Everything the hub can measure of a client (the write buffer's drain, the kernel's
delivery rate, the bytes the peer's kernel acknowledged) stops at the client's kernel,
which on a short link takes whatever it is given; its receive buffer and its WebSocket
library then hold, out of sight, what its application has not read. A ``wsfanout.v1``
client asked for acknowledgements says how many frames its application has taken
(``{"type":"ack","n":N}``, cumulative since the connection opened). The outbox tells an
:class:`AckWindow` the payload size of every frame it writes from the request on, so
``N`` says how many bytes the application has not taken (:attr:`AckWindow.unacked`).

Between two acknowledgements the application took the bytes acknowledged in between.
The sample is its rate when it was *backlogged*: frames written before the earlier
acknowledgement were still not taken at the later one, so it had something to take
all along and took no faster. Otherwise it took everything it had been given: the
sample is what it was given, and raises the estimate only if it holds at least a full
window (:func:`window`): the hub's window then limited it, and a client that keeps up
grows its window by a factor of about four an acknowledgement interval. The estimate
(:attr:`AckWindow.rate`) is a moving average of backlogged samples weighted by their
length, as the drain meter's is.
"""

from __future__ import annotations

import math
from collections import deque

from .drain import TIME_CONSTANT

__all__ = ["ACK_INTERVAL", "MAX_UNACKED_FRAMES", "MIN_WINDOW", "WINDOW", "AckWindow", "window"]

ACK_INTERVAL = 0.05
"""Seconds: the ``interval`` of the hub's ``ack-request``, the most an acknowledgement waits."""

MIN_WINDOW = 8192
"""Bytes a client that acknowledges may have untaken before its rate is known."""

WINDOW = 0.2
"""Seconds of its measured rate a client that acknowledges may have untaken."""

MAX_UNACKED_FRAMES = 65536
"""Frames written without an acknowledgement past which a client is taken not to
acknowledge: the window forgets it (a client that ignores the request)."""


def window(rate: float | None) -> float:
    """The bytes a client taking ``rate`` bytes per second (None: not measured yet) may
    have untaken: :data:`WINDOW` seconds of it, at least :data:`MIN_WINDOW`."""
    if rate is None:
        return MIN_WINDOW
    return max(MIN_WINDOW, rate * WINDOW)


class AckWindow:
    """The frames written to one subscriber since it was asked for acknowledgements, and
    what its acknowledgements say of them: see the module docstring."""

    __slots__ = (
        "_at",
        "_before",
        "_ends",
        "acked",
        "acked_bytes",
        "base",
        "forgotten",
        "heard",
        "rate",
        "written",
        "written_bytes",
    )

    def __init__(self, base: int, now: float) -> None:
        self.base = base
        """Frames written before the request: acknowledgements count them too."""
        self.written = 0
        """Frames written since the request (the request included)."""
        self.written_bytes = 0
        self.acked = 0
        """Frames since the request that the client's application has taken."""
        self.acked_bytes = 0
        self.heard = False
        """The client has acknowledged at least once: it implements acknowledgements."""
        self.rate: float | None = None
        """Bytes per second the application takes, or None before it is measured."""
        self.forgotten = False
        """The client left :data:`MAX_UNACKED_FRAMES` unacknowledged: no longer tracked."""
        self._ends: deque[int] = deque()  # written_bytes after each frame not yet taken
        self._at = now  # the previous acknowledgement (at first, the request)
        self._before = 0  # frames written by then

    def __repr__(self) -> str:
        return (
            f"<AckWindow written={self.written} acked={self.acked} "
            f"unacked={self.unacked!r} rate={self.rate!r}>"
        )

    @property
    def unacked(self) -> int | None:
        """Payload bytes written that the application has not taken; None until the
        client first acknowledges (it may not), and once it is forgotten."""
        if not self.heard or self.forgotten:
            return None
        return self.written_bytes - self.acked_bytes

    def wrote(self, size: int) -> None:
        """A frame of ``size`` payload bytes was written."""
        if self.forgotten:
            return
        self.written += 1
        self.written_bytes += size
        ends = self._ends
        ends.append(self.written_bytes)
        if len(ends) > MAX_UNACKED_FRAMES:
            self.forgotten = True
            ends.clear()

    def ack(self, n: int, now: float) -> bool:
        """The application has taken ``n`` frames since the connection opened (more than
        were written count as all of them); True if that is news."""
        if self.forgotten:
            return False
        taken = min(n - self.base, self.written)
        news = not self.heard
        self.heard = True
        if taken <= self.acked:
            return news  # an older acknowledgement, overtaken, or one from before
        ends = self._ends
        before = self.acked_bytes
        for _ in range(taken - self.acked):
            self.acked_bytes = ends.popleft()
        self.acked = taken
        elapsed = now - self._at
        if elapsed > 0:
            took = self.acked_bytes - before
            sample = took / elapsed
            rate = self.rate
            if taken < self._before:  # backlogged: frames given before the last ack wait
                if rate is None:
                    self.rate = sample
                else:
                    weight = 1.0 - math.exp(-elapsed / TIME_CONSTANT)
                    self.rate = rate + weight * (sample - rate)
            elif (rate is None or sample > rate) and took >= window(rate):
                self.rate = sample  # it took a full window: the window held it back
        self._at = now
        self._before = self.written
        return True
