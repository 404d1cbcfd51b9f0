"""The I/O shell of a subscriber that fell behind: performs the outbox's actions.

Theory of operation
-------------------
A relay task exists only while its subscriber has something queued (or is closing);
``Hub.publish`` starts it lazily on ``Offer.KICK`` and it ends on ``IDLE``. Each turn
reads the clock and the transport's buffer size, asks :meth:`Outbox.next_action`, and
performs the answer without awaiting in between, so the outbox's view stays true.

Waiting uses one future per wait, woken by whichever comes first: a timer, a kick
from ``publish``, the transport resuming writing (the future joins websockets'
``drain_waiters``), or the connection being lost.

Closing never hangs: websockets' ``close()`` waits for the write buffer to drain before
its own timeout starts, which never happens on a stalled client. We send the close
frame ourselves, wait at most ``close_timeout`` for the connection to end, then abort
the transport; a stalled client therefore sees 1006, not the close code.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from .._core.outbox import BLOCKED, CloseAction, Wait, Write

if TYPE_CHECKING:
    from .subscriber import Subscriber

__all__ = ["close_connection", "run_relay"]

logger = logging.getLogger("wsfanout")

OPEN = State.OPEN
_DRAIN_POLL = 0.05


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def run_relay(subscriber: Subscriber) -> None:
    """Relay queued messages to one subscriber until its queue is empty or it closes."""
    loop = asyncio.get_running_loop()
    outbox = subscriber._outbox
    ws = subscriber.websocket
    transport = ws.transport
    try:
        while True:
            if ws.send_in_progress is not None and outbox.closing is None:
                # The application is sending a fragmented message; frames must not interleave.
                await asyncio.shield(ws.send_in_progress)
                continue
            writable = ws.protocol.state is OPEN and not transport.is_closing()
            buffered = transport.get_write_buffer_size() if writable else BLOCKED
            action = outbox.next_action(loop.time(), buffered)
            if type(action) is Write:
                subscriber._write(action.frames)
            elif type(action) is Wait:
                await _wait(subscriber, loop, action.until, action.drain and writable)
            elif type(action) is CloseAction:
                subscriber._hub._detach(subscriber)
                close = action.close
                await close_connection(ws, close.code, close.reason, subscriber._close_timeout)
                return
            else:
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        # A bug or an unexpected transport error must not escape into the event loop,
        # nor affect other subscribers: end this connection and keep the hub running.
        logger.exception("relay failed for %s; aborting the connection", subscriber)
        outbox.discard()
        transport.abort()
    finally:
        if subscriber._relay is asyncio.current_task():
            subscriber._relay = None


async def _wait(
    subscriber: Subscriber, loop: asyncio.AbstractEventLoop, until: float, drain: bool
) -> None:
    wake: asyncio.Future[None] = loop.create_future()
    subscriber._wake = wake
    ws = subscriber.websocket
    # websockets resolves its drain_waiters when the transport resumes writing or the
    # connection is lost; joining them wakes us without a task per wait.
    waiters = ws.drain_waiters if drain and ws.paused else None
    if waiters is not None:
        waiters.append(wake)
    elif drain:
        # Over the high-water mark but not paused: no resume_writing will come (a
        # transport that counts its buffer differently). Look again shortly instead.
        until = min(until, loop.time() + _DRAIN_POLL)
    timer = loop.call_at(until, _wake, wake) if until < math.inf else None
    try:
        await wake
    except Exception:  # the connection was lost while paused; the next turn sees it
        pass
    finally:
        subscriber._wake = None
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
        ws.transport.abort()
        await ws.wait_closed()
