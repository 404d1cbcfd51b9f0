"""Corking: frames for one connection in one loop iteration leave in one write.

A connection's first fast-path frame in a loop iteration is written at once; further
frames for it in the same iteration (a burst) are held by its link and leave together
in one ``transport.write()`` once the iteration's callbacks have run, as uWebSockets
corks a socket. A single message pays nothing; a burst of n frames costs two system
calls instead of n. What a link holds counts as buffered for its outbox, and past the
low-water mark it is written at once (``contract.cork_is_full``), so the fast path's
bounds do not change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .link import Link
    from .monitor import Timing

__all__ = ["Corker"]

logger = logging.getLogger("wsfanout")


class Corker:
    """A hub's loop-iteration counter and the links holding corked frames.

    ``tick`` numbers the iterations in which the fast path wrote: a link that was last
    written in the current tick corks further frames. With ``enabled`` false, every
    publish is a tick of its own, so nothing is ever held.
    """

    __slots__ = ("enabled", "held", "loop", "scheduled", "tick", "timing")

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.timing: Timing | None = None
        """The hub's latency histograms: corked frames' publish-to-write ends here."""
        self.tick = 0
        self.held: list[Link] = []
        """Links holding frames until the iteration ends."""
        self.scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def wrote(self) -> None:
        """The fast path wrote in this iteration: end the tick once the iteration ends."""
        if not self.scheduled:
            self.scheduled = True
            loop = self.loop
            if loop is None:
                loop = self.loop = asyncio.get_running_loop()
            loop.call_soon(self.end_tick)

    def end_tick(self) -> None:
        self.scheduled = False
        self.tick += 1
        held = self.held
        if held:
            self.held = []
            for link in held:
                try:
                    link.flush()
                except Exception:
                    link.fail()
        timing = self.timing
        if timing is not None and timing.corked:
            timing.flushed()
