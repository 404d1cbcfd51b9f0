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
issue's ``TCP_NOTSENT_LOWAT`` keeps them small). Where the shell can ask the kernel
(Linux's ``TCP_INFO``, a :class:`KernelView`), a sample counts the bytes the peer
acknowledged instead: what reached the client, not what the kernel accepted in steps
of its low-water mark. Such a sample counts only if the kernel held unsent bytes (or
the buffer data) at its start or its end, or the wait was for a drain: the peer's
window set the pace. Once the kernel has sent everything, the peer acknowledges what
it is given (on a short link, at once), whatever its reader takes: such a sample says
nothing, and raises nothing. On a short link the peer is its kernel: what its
application has not read yet, in its receive buffer and its library, is acknowledged
all the same, so only a full receive window shows the reader's pace, and the client's
receive buffer grows (autotuning) while it reads in bursts.

The view's delivery rate (the kernel's own sample of it) is kept as
:attr:`DrainMeter.delivery_rate`: the latest sample that the sender did not limit, or
a larger one that it did (the peer is at least that fast).
"""

from __future__ import annotations

import math

import attrs

__all__ = ["TIME_CONSTANT", "DrainMeter", "KernelView"]

TIME_CONSTANT = 1.0
"""Seconds: a backlogged sample this long moves the estimate 63% of the way to it."""


@attrs.frozen
class KernelView:
    """What the kernel says of a subscriber's TCP connection, below the write buffer: one
    read of Linux's ``TCP_INFO`` by the shell. Each field is None where it cannot tell."""

    unsent: int | None = None
    """Bytes it holds that it has not sent yet (``tcpi_notsent_bytes``)."""
    delivery_rate: float | None = None
    """Bytes per second the peer acknowledged in its latest sample (``tcpi_delivery_rate``)."""
    app_limited: bool = False
    """That sample was limited by the sender having too little to send: a lower bound."""
    acked: int | None = None
    """Bytes the peer acknowledged since the connection began (``tcpi_bytes_acked``)."""


class DrainMeter:
    """The drain rate of one subscriber's write buffer: see the module docstring.

    Call :meth:`arm` when the relay starts waiting with messages queued, and
    :meth:`observe` with the buffer's size when it next looks, each with what the kernel
    says if the shell can ask it; :attr:`rate` is the estimate in bytes per second, None
    until the first sample.
    """

    __slots__ = (
        "_acked",
        "_at",
        "_drain",
        "_level",
        "_waiting",
        "delivery_rate",
        "rate",
        "samples",
    )

    def __init__(self) -> None:
        self.rate: float | None = None
        """Bytes per second, or None before the first sample."""
        self.samples = 0
        """Backlogged samples taken so far."""
        self.delivery_rate: float | None = None
        """The kernel's delivery rate, as :meth:`kernel` last kept it; None before."""
        self._at: float | None = None
        self._level = 0
        self._acked: int | None = None
        self._waiting = False
        self._drain = False

    def __repr__(self) -> str:
        return (
            f"<DrainMeter rate={self.rate!r} samples={self.samples} "
            f"delivery_rate={self.delivery_rate!r}>"
        )

    @property
    def armed(self) -> bool:
        """A sample is begun: the next :meth:`observe` takes it."""
        return self._at is not None

    def kernel(self, view: KernelView | None) -> None:
        """Keep the kernel's delivery rate from ``view``: a sample the sender did not
        limit replaces the one kept; one it limited only raises it."""
        if view is None or view.delivery_rate is None:
            return
        rate, kept = view.delivery_rate, self.delivery_rate
        if not view.app_limited or kept is None or rate > kept:
            self.delivery_rate = rate

    def arm(
        self, now: float, buffered: int, *, drain: bool, kernel: KernelView | None = None
    ) -> None:
        """The relay waits from ``now`` with ``buffered`` bytes in the write buffer;
        ``drain`` if it waits for the buffer to drain (so it ends backlogged); ``kernel``
        what the kernel said just now."""
        self._at = now
        self._level = buffered
        self._acked = None if kernel is None else kernel.acked
        self._waiting = buffered > 0 or (kernel is not None and bool(kernel.unsent))
        self._drain = drain
        self.kernel(kernel)

    def disarm(self) -> None:
        """Something other than draining may change the buffer: take no sample."""
        self._at = None

    def observe(self, now: float, buffered: int, kernel: KernelView | None = None) -> float | None:
        """The buffer holds ``buffered`` bytes at ``now`` and the kernel says ``kernel``;
        take the sample begun by :meth:`arm`, if any, and return the estimate."""
        self.kernel(kernel)
        at = self._at
        if at is None:
            return self.rate
        self._at = None
        elapsed = now - at
        grew = buffered > self._level
        acked = None if kernel is None else kernel.acked
        if acked is not None and self._acked is not None:
            # What the peer acknowledged: what reached the client, past every buffer. Only
            # while data waited (in the kernel or the buffer) did the peer set that pace:
            # a sample counts if it did at either end. One that waited at neither says
            # nothing: the kernel sent all it had, and the peer acknowledges what it is
            # given (on a short link, at once), whatever its reader takes. Not only
            # those that end waiting: a closed window opens in bursts, which end the
            # wait, and the samples they end carry them.
            waiting = buffered > 0 or (kernel is not None and bool(kernel.unsent))
            if not (waiting or self._drain or self._waiting):
                return self.rate
            drained = acked - self._acked
            backlogged = True
        else:
            drained = self._level - buffered
            backlogged = buffered > 0 or self._drain
        if not elapsed > 0 or drained < 0 or grew:
            # No time passed, or the buffer grew: someone else wrote (a pong, a close).
            return self.rate
        sample = drained / elapsed
        rate = self.rate
        if backlogged:
            self.samples += 1
            if rate is None:
                self.rate = sample
            else:
                weight = 1.0 - math.exp(-elapsed / TIME_CONSTANT)
                self.rate = rate + weight * (sample - rate)
        elif rate is not None and sample > rate:
            self.rate = sample  # the buffer emptied: the reader is at least this fast
        return self.rate
