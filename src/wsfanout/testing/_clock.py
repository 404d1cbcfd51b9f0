"""A virtual clock: time moves only when told, and never backwards."""

from __future__ import annotations

import math

__all__ = ["VirtualClock"]


class VirtualClock:
    """The simulator's clock, in seconds. Reading it is free; only :meth:`advance` and
    :meth:`jump_to` move it, so minutes of virtual time cost nothing."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start={start!r} must be a finite number of seconds")
        self._now = float(start)

    @property
    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0) and return the new time."""
        if not seconds >= 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds={seconds!r} must be a finite number >= 0")
        self._now += seconds
        return self._now

    def jump_to(self, when: float) -> float:
        """Move forward to ``when``; time can't go backwards."""
        if not math.isfinite(when):
            raise ValueError(f"when={when!r} must be a finite time")
        if when < self._now:
            raise ValueError(f"time can't go backwards: when={when!r} < now={self._now!r}")
        self._now = float(when)
        return self._now

    def __repr__(self) -> str:
        return f"VirtualClock(start={self._now!r})"
