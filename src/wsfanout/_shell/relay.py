"""The I/O shell of a subscriber that fell behind: performs the outbox's actions.

Theory of operation
-------------------
A relay task exists only while its subscriber must await something (a full write
buffer draining, a fragmented send finishing, a close); otherwise ``Link.pump``
performs the same turns without a task, on ``Offer.KICK`` or a shared timer. Each turn
reads the clock and the connection's state (``Link.write_buffer``, the contract's
rule), asks :meth:`Outbox.next_action`, and performs the answer without awaiting in
between, so the outbox's view stays true.

Waiting follows the contract's :func:`plan_wait`. A wait for a time alone (a batch's
``max_delay``, a throttle's slot) ends the task: the hub's shared timers pump the link
when it is due (``timers.py``), so a batch costs no task wake per subscriber. Other
waits take one future, woken by whichever comes first: a timer, a kick from
``publish``, the transport resuming writing (the future joins websockets'
``drain_waiters``), or the connection being lost.

Closing never hangs: websockets' ``close()`` waits for the write buffer to drain before
its own timeout starts, which never happens on a stalled client. We send the close
frame ourselves, wait at most ``close_timeout`` for the connection to end, then abort
the transport with a reset (``sockets.py``: the kernel frees its send buffer at once);
a stalled client therefore sees 1006, not the close code.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from .._core.contract import BLOCKED, plan_wait
from .._core.outbox import Action, CloseAction, Wait, Write
from .sockets import abort_with_reset

if TYPE_CHECKING:
    from .link import Link

__all__ = ["close_connection", "run_relay"]

logger = logging.getLogger("wsfanout")

OPEN = State.OPEN


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def run_relay(link: Link, first: Action | None = None) -> None:
    """Relay queued messages to one subscriber until its queue is empty, it closes, or
    it waits only for a time (then the hub's timers take it: ``timers.py``).

    ``first`` is an action :meth:`Link.pump` already took from the outbox.
    """
    loop = asyncio.get_running_loop()
    outbox = link.outbox
    ws = link.websocket
    try:
        while True:
            sending = ws.send_in_progress
            if sending is not None and outbox.closing is None:
                # The application is sending a fragmented message; frames must not interleave.
                await asyncio.shield(sending)
                continue
            buffered = link.write_buffer()
            now = loop.time()
            if first is not None:
                action, first = first, None
            else:
                action = outbox.next_action(now, buffered)
            if type(action) is Write:
                link.write(action.frames)
                timing = link.fanout.timing
                if timing is not None:
                    timing.left_queue(link.policy_name, action.frames, now)
                if action.idle:
                    return  # the next turn would answer IDLE: not asked
            elif type(action) is Wait:
                plan = plan_wait(
                    action.until,
                    action.drain,
                    now,
                    writable=buffered != BLOCKED,
                    paused=ws.paused,
                )
                if not plan.on_drain and plan.until < math.inf:
                    # Only a time to wait for: a shared timer, not this task (timers.py).
                    link.fanout.timers.at(link, plan.until)
                    return
                await _wait(link, loop, plan.until, plan.on_drain)
            elif type(action) is CloseAction:
                link.fanout.detach(link)
                close = action.close
                await close_connection(ws, close.code, close.reason, link.close_timeout)
                return
            else:
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        # A bug or an unexpected transport error must not escape into the event loop,
        # nor affect other subscribers: end this connection and keep the hub running.
        link.fail("relay failed for %s; aborting the connection")
    finally:
        if link.relay is asyncio.current_task():
            link.relay = None


async def _wait(link: Link, loop: asyncio.AbstractEventLoop, until: float, on_drain: bool) -> None:
    wake: asyncio.Future[None] = loop.create_future()
    link.wake = wake
    # websockets resolves its drain_waiters when the transport resumes writing or the
    # connection is lost; joining them wakes us without a task per wait.
    waiters = link.websocket.drain_waiters if on_drain else None
    if waiters is not None:
        waiters.append(wake)
    timer = loop.call_at(until, _wake, wake) if until < math.inf else None
    try:
        await wake
    except Exception:  # the connection was lost while paused; the next turn sees it
        pass
    finally:
        link.wake = None
        if timer is not None:
            timer.cancel()
        if waiters is not None and wake in waiters:
            waiters.remove(wake)


async def close_connection(ws: Connection, code: int, reason: str, timeout: float) -> None:
    """Send a close frame and wait at most ``timeout`` seconds, then abort the transport."""
    if ws.protocol.state is OPEN:
        try:
            ws.protocol.send_close(code, reason)
            ws.send_data()
        except Exception:  # the transport failed under us; aborting below settles it
            logger.debug("could not send close frame", exc_info=True)
    try:
        async with asyncio.timeout(timeout):
            await ws.wait_closed()
    except TimeoutError:
        abort_with_reset(ws.transport)
        await ws.wait_closed()
