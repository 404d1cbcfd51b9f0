"""How fast a subscriber's write buffer drains, measured from what the shell reports.

Theory of operation
-------------------
The outbox is told the write buffer's size at every turn of the relay. When it answers
:class:`~wsfanout.lowlevel.Wait` with messages queued, nothing else writes to the
connection until the relay's next turn (the fast path is off while the queue holds
anything), so what the buffer lost in between left it: drained towards the kernel, at
the pace the client (or the network) takes it. :meth:`DrainMeter.arm` records the size
at the wait, :meth:`DrainMeter.observe` the size at the next turn, and the difference
over the time between is one sample.

A sample is *backlogged* when the buffer still held data at the end (or the wait was
for the buffer to drain): the reader set the pace, so the sample is its rate. The
estimate is a moving average of backlogged samples, weighted by their length
(:data:`TIME_CONSTANT`). Otherwise the buffer emptied at some point: the reader is at
least that fast, so such a sample only ever raises the estimate. A subscriber that
keeps up never waits with messages queued and is never measured: its fast path pays
nothing for this.

Bytes already in the kernel's socket buffers have left the write buffer; until those
buffers fill, the meter sees the kernel's appetite, not the client's (the engine
issue's ``TCP_NOTSENT_LOWAT`` keeps them small).
"""

from __future__ import annotations

import math

__all__ = ["TIME_CONSTANT", "DrainMeter"]

TIME_CONSTANT = 1.0
"""Seconds: a backlogged sample this long moves the estimate 63% of the way to it."""


class DrainMeter:
    """The drain rate of one subscriber's write buffer: see the module docstring.

    Call :meth:`arm` when the relay starts waiting with messages queued, and
    :meth:`observe` with the buffer's size when it next looks; :attr:`rate` is the
    estimate in bytes per second, None until the first sample.
    """

    __slots__ = ("_at", "_drain", "_level", "rate", "samples")

    def __init__(self) -> None:
        self.rate: float | None = None
        """Bytes per second, or None before the first sample."""
        self.samples = 0
        """Backlogged samples taken so far."""
        self._at: float | None = None
        self._level = 0
        self._drain = False

    def __repr__(self) -> str:
        return f"<DrainMeter rate={self.rate!r} samples={self.samples}>"

    def arm(self, now: float, buffered: int, *, drain: bool) -> None:
        """The relay waits from ``now`` with ``buffered`` bytes in the write buffer;
        ``drain`` if it waits for the buffer to drain (so it ends backlogged)."""
        self._at = now
        self._level = buffered
        self._drain = drain

    def disarm(self) -> None:
        """Something other than draining may change the buffer: take no sample."""
        self._at = None

    def observe(self, now: float, buffered: int) -> float | None:
        """The buffer holds ``buffered`` bytes at ``now``; take the sample begun by
        :meth:`arm`, if any, and return the estimate."""
        at = self._at
        if at is None:
            return self.rate
        self._at = None
        elapsed = now - at
        drained = self._level - buffered
        if not elapsed > 0 or drained < 0:
            # No time passed, or the buffer grew: someone else wrote (a pong, a close).
            return self.rate
        sample = drained / elapsed
        rate = self.rate
        if buffered > 0 or self._drain:
            self.samples += 1
            if rate is None:
                self.rate = sample
            else:
                weight = 1.0 - math.exp(-elapsed / TIME_CONSTANT)
                self.rate = rate + weight * (sample - rate)
        elif rate is not None and sample > rate:
            self.rate = sample  # the buffer emptied: the reader is at least this fast
        return self.rate
