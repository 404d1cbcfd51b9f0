"""The shell contract: what a shell tells an outbox about a connection, and how it waits.

Theory of operation
-------------------
An :class:`~wsfanout.lowlevel.Outbox` decides from one fact about the connection: how
many bytes wait to leave it, or :data:`BLOCKED` when nothing may be written now. A
shell (the hub and its relay on asyncio, or the simulator of ``wsfanout.testing``)
works that fact out with :func:`write_buffer`, passes it to ``offer()`` or
``next_action()``, and performs the answer at once. The rules, each written here once:

* **Writable.** A frame may be written while the connection is open, its transport is
  not closing, and no fragmented message of the application is half-sent (frames
  must not interleave with its fragments). Otherwise the outbox is told ``BLOCKED``:
  it queues and writes nothing.
* **Buffered.** What waits to leave is the transport's write buffer plus the bytes the
  shell holds back itself (corked frames, below): they leave before anything the
  outbox writes next, so they count against the same watermarks.
* **Corking.** In one loop iteration, the first fast-path frame for a connection is
  written at once and later ones are held, to leave together in one write when the
  iteration ends (:func:`cork_is_full` says when they must leave earlier, so corking
  never holds more than the fast path would have written uncorked).
* **Waiting.** A :class:`~wsfanout.lowlevel.Wait` with ``drain`` on a paused
  transport waits for it to resume writing; over the high-water mark but not paused
  (a transport that counts its buffer differently), no resume will come, so the shell
  looks again every :data:`DRAIN_POLL` seconds (:func:`plan_wait`).
"""

from __future__ import annotations

import sys

import attrs

__all__ = ["BLOCKED", "DRAIN_POLL", "WaitPlan", "cork_is_full", "plan_wait", "write_buffer"]

BLOCKED = sys.maxsize
"""A write-buffer size meaning "cannot write now" (the connection is closing or busy)."""

DRAIN_POLL = 0.05
"""Seconds between looks at a transport over its high-water mark that is not paused."""


def write_buffer(writable: bool, buffered: int, held: int) -> int:
    """What the outbox is told: ``buffered + held`` bytes, or :data:`BLOCKED`.

    ``writable`` is the connection's state (open, transport not closing, no fragmented
    message half-sent); ``buffered`` the transport's write buffer; ``held`` the bytes
    the shell holds corked for this connection.
    """
    return buffered + held if writable else BLOCKED


def cork_is_full(held: int, low: int) -> bool:
    """Whether ``held`` corked bytes must be written now rather than at the iteration's end.

    Past the low-water mark the fast path would stop writing; writing what is held then
    keeps corking from holding more than an uncorked fast path would have written.
    """
    return held > low


@attrs.frozen
class WaitPlan:
    """How a shell waits for a :class:`~wsfanout.lowlevel.Wait`: until a time, and
    whether the transport resuming writing also ends the wait."""

    until: float
    """Wake at this time at the latest (``math.inf``: no timer)."""
    on_drain: bool
    """Also wake when the transport resumes writing (its buffer back at the low-water mark)."""


def plan_wait(until: float, drain: bool, now: float, *, writable: bool, paused: bool) -> WaitPlan:
    """The wait a shell performs for ``Wait(until, drain)`` at ``now``.

    A drain is awaited only on a writable connection; on one that is not paused, no
    resume will come, so the shell wakes again within :data:`DRAIN_POLL` instead.
    """
    if not (drain and writable):
        return WaitPlan(until, False)
    if paused:
        return WaitPlan(until, True)
    return WaitPlan(min(until, now + DRAIN_POLL), False)
