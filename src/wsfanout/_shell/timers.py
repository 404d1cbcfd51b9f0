"""The hub's deadline scheduler: one timer per deadline, shared by every link due then.

Theory of operation
-------------------
A subscriber whose outbox waits only for a time (a batch's ``max_delay``, a throttle's
next slot) needs no task of its own: the wait is a deadline, and nothing has to be
awaited. :class:`Timers` rounds each such deadline up to :data:`RESOLUTION`, keeps the
links due at each rounded deadline, and holds one ``loop.call_at`` per distinct
deadline; when it fires, every link due then is pumped in one pass
(:meth:`~wsfanout._shell.link.Link.pump`: the relay's turns, performed without
awaiting). Subscribers that got the same messages at the same time share a deadline,
so a batch costs one timer for all of them and no task wake per subscriber. The offer
that queues a batch's first message takes its deadline here within ``publish()``: the
outbox has taken the relay's first turn (``Offer.WAIT``, ``Link.takes_turn``), so the
deadline's pass is each link's only turn of the batch.

A kick (the outbox has work) is handled the same way, in one ``call_soon`` shared by
every link kicked in the same loop iteration: the relay task used to start then.

A link is in at most one place: due at one deadline, due soon, or owned by its relay
task (which exists only for what must be awaited: a full write buffer draining, a
fragmented send finishing, a close). :meth:`Timers.discard` takes it out wherever it
is, so a link that closes leaves no timer behind.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .link import Link

__all__ = ["RESOLUTION", "Timers"]

RESOLUTION = 0.001
"""Seconds: deadlines are rounded up to a multiple of this, so links share timers.
A batch or a throttle slot therefore ends at most this much later than decided."""


class Timers:
    """Links waiting for a time, by rounded deadline, each deadline with one timer."""

    __slots__ = ("_changed", "_due", "_handles", "_soon", "_soon_handle", "loop")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._due: dict[int, dict[Link, None]] = {}
        """Links by deadline, in units of :data:`RESOLUTION`."""
        self._handles: dict[int, asyncio.TimerHandle] = {}
        self._soon: dict[Link, None] = {}
        self._soon_handle: asyncio.Handle | None = None
        self._changed: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        """How many links wait for a deadline or to be pumped soon."""
        return len(self._soon) + sum(len(links) for links in self._due.values())

    @property
    def timers(self) -> int:
        """How many distinct deadlines hold a timer (a test's measure of sharing)."""
        return len(self._handles)

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        return loop

    def at(self, link: Link, until: float) -> None:
        """Pump ``link`` at ``until`` (rounded up to :data:`RESOLUTION`)."""
        key = math.ceil(until / RESOLUTION)
        if key * RESOLUTION < until:  # float rounding: never fire before the deadline
            key += 1
        if link.due == key:
            return
        self.discard(link)
        links = self._due.get(key)
        if links is None:
            links = self._due[key] = {}
            self._handles[key] = self._loop().call_at(key * RESOLUTION, self._fire, key)
        links[link] = None
        link.due = key

    def soon(self, link: Link) -> None:
        """Pump ``link`` once the current loop iteration's callbacks have run."""
        if link in self._soon:
            return
        self.discard(link)
        self._soon[link] = None
        if self._soon_handle is None:
            self._soon_handle = self._loop().call_soon(self._run_soon)

    def discard(self, link: Link) -> None:
        """Take ``link`` out of the schedule, cancelling a timer left with no link."""
        key = link.due
        if key is not None:
            link.due = None
            links = self._due.get(key)
            if links is not None:
                links.pop(link, None)
                if not links:
                    del self._due[key]
                    self._handles.pop(key).cancel()
        elif self._soon:
            self._soon.pop(link, None)

    def changed(self) -> asyncio.Future[None]:
        """A future resolved after the next pass over due links (for ``Hub.drain``)."""
        future = self._loop().create_future()
        self._changed.append(future)
        return future

    def _fire(self, key: int) -> None:
        del self._handles[key]
        links = self._due.pop(key)
        loop = self._loop()
        # asyncio runs a timer up to its clock's resolution early: the deadline is due.
        now = max(loop.time(), key * RESOLUTION)
        for link in links:
            link.due = None
        for link in links:
            if link.due is None:  # not rescheduled by another link's pump meanwhile
                link.pump(now)
        self._notify()

    def _run_soon(self) -> None:
        self._soon_handle = None
        links = self._soon
        self._soon = {}
        now = self._loop().time()
        for link in links:
            link.pump(now)
        self._notify()

    def _notify(self) -> None:
        waiters = self._changed
        if waiters:
            self._changed = []
            for future in waiters:
                if not future.done():
                    future.set_result(None)
