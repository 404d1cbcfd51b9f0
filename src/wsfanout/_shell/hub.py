"""The hub: where messages are published and fanned out to subscribers.

Theory of operation
-------------------
``publish()`` encodes a message once and offers it to every matching subscriber's
outbox. Matching costs nothing for subscribers that do not match: subscribers of all
topics sit in one ordered set, the others in one ordered set per topic, and a message
with a topic visits only the first set and that topic's set. For a subscriber that
keeps up, the outbox answers ``WRITE`` and the frame goes straight to its transport
in the same call, as websockets' ``broadcast()`` does, with no task woken. Everything
else (queueing, eviction, throttling, closing) is the outbox's decision, carried out
by that subscriber's relay task, which exists only while it is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Data

from .._backplane.protocol import Backplane
from .._core.builtins import DEFAULT_POLICY
from .._core.decision import Close
from .._core.errors import ConfigError, HubClosedError
from .._core.message import Message, make_message
from .._core.outbox import BLOCKED, Offer
from .._core.policy import Policy, as_policy
from .._core.stats import HubStats, SubscriberStats, add_stats
from .._core.validate import check_close, positive_seconds
from .subscriber import Subscriber, check_topics

__all__ = ["Hub"]

logger = logging.getLogger("wsfanout")

OPEN = State.OPEN
WRITE = Offer.WRITE
KICK = Offer.KICK
CLOSE = Offer.CLOSE

OnMessage = Callable[[Subscriber, Data], Awaitable[None]]


class Hub:
    """Fans messages out to WebSocket subscribers, each under its own policy.

    ``policy`` is the policy of subscribers that do not name one (by default
    :data:`~wsfanout.policies.DEFAULT_POLICY`). ``close_timeout`` bounds every close
    the hub performs, after which the transport is aborted. With a ``backplane``
    (see :mod:`wsfanout.backplane`), messages published on any hub sharing it reach
    the subscribers of every one of them.
    """

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        close_timeout: float = 5.0,
        backplane: Backplane | None = None,
    ) -> None:
        self.close_timeout = positive_seconds("close_timeout", close_timeout)
        self.policy = DEFAULT_POLICY if policy is None else as_policy(policy)
        self._members: dict[Subscriber, None] = {}
        """Every attached subscriber, in joining order (messages without a topic)."""
        self._wildcard: dict[Subscriber, None] = {}
        """Subscribers of all topics."""
        self._by_topic: dict[str, dict[Subscriber, None]] = {}
        self._seq = itertools.count()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retired: dict[str, float] = {}
        self._closed_by_policy = 0
        self._live: set[Subscriber] = set()
        self._backplane = backplane
        if backplane is not None:
            backplane.bind(self)
        self._tick = 0
        """Counts loop iterations in which the fast path wrote (see corking below)."""
        self._tick_scheduled = False
        self._corked: list[Subscriber] = []
        self._cork = True
        """False turns corking off; the benchmark compares both."""

    # -- publishing -----------------------------------------------------------------

    def publish(
        self,
        message: str | bytes | bytearray | memoryview,
        *,
        topic: str | None = None,
        key: str | None = None,
    ) -> int:
        """Offer ``message`` to every subscriber of ``topic`` (all subscribers if None).

        A ``str`` is sent as a Text frame, bytes-like as Binary. ``key`` identifies what
        the message updates, for ``ConflateByKey``. Never blocks, and never raises for
        one subscriber's failure. Returns how many subscribers it was offered to.
        """
        if self._closed:
            raise HubClosedError("publish() on a closed hub")
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic={topic!r} must be a str or None")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key={key!r} must be a str or None")
        backplane = self._backplane
        if not self._members and backplane is None:
            make_message(message, seq=0, time=0.0)  # still reject a wrong type
            return 0
        now = self._now()
        msg = make_message(message, seq=next(self._seq), time=now, topic=topic, key=key)
        if backplane is not None:
            backplane.forward(msg)
        return self._deliver(msg, now)

    def _deliver(self, msg: Message, now: float) -> int:
        """Offer ``msg`` to local subscribers of its topic: publish's and the backplane's way in."""
        topic = msg.topic
        if topic is None:
            return self._fan_out(msg, now, self._members)
        count = self._fan_out(msg, now, self._wildcard)
        listeners = self._by_topic.get(topic)
        if listeners:
            count += self._fan_out(msg, now, listeners)
        return count

    def _fan_out(self, msg: Message, now: float, targets: dict[Subscriber, None]) -> int:
        # The loop body runs once per subscriber per message: attribute lookups that do
        # not depend on the subscriber are hoisted, the frame is encoded on first need,
        # and nothing is allocated per delivery. Subscriber._offer/_emit/_encode are the
        # readable versions of the same steps.
        closing: list[Subscriber] | None = None
        frame: bytes | None = None
        if not self._cork:
            self._tick += 1  # every publish its own tick: nothing is ever held back
        tick = self._tick
        wrote = False
        for sub in targets:
            try:
                transport = sub._transport
                if sub._protocol.state is OPEN and sub.websocket.send_in_progress is None:
                    buffered = transport.get_write_buffer_size() + sub._pending_bytes
                else:
                    buffered = BLOCKED
                outcome = sub._outbox.offer(msg, now, buffered)
                if outcome is WRITE:
                    if sub._plain:
                        if frame is None:
                            frame = msg.frame
                        data = frame
                    else:
                        data = sub._encode(msg)
                    if sub._tick != tick:
                        sub._tick = tick
                        transport.write(data)
                        wrote = True
                    else:
                        sub._cork(data)
                elif outcome is KICK:
                    sub._kick()
                elif outcome is CLOSE:
                    if closing is None:
                        closing = []
                    closing.append(sub)
            except Exception:
                logger.exception("delivery to %s failed; aborting its connection", sub)
                sub._fail()
        if wrote:
            self._schedule_tick_end()
        if closing is not None:
            for sub in closing:
                sub._closing()
        return len(targets)

    # -- corking --------------------------------------------------------------------
    #
    # A connection's first fast-path frame in a loop iteration is written at once; any
    # further frames for it in the same iteration (bursts) are held and leave together
    # in one transport.write() when the iteration's callbacks have run, as uWebSockets
    # corks a socket. Single messages pay nothing; a burst of n frames costs two system
    # calls instead of n. The held bytes count as buffered for the outbox, and past the
    # low-water mark they are written at once, so the fast path's bounds do not change.

    def _schedule_tick_end(self) -> None:
        if not self._tick_scheduled:
            self._tick_scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._end_tick)

    def _end_tick(self) -> None:
        self._tick_scheduled = False
        self._tick += 1
        corked = self._corked
        if corked:
            self._corked = []
            for sub in corked:
                try:
                    sub._flush()
                except Exception:
                    logger.exception("delivery to %s failed; aborting its connection", sub)
                    sub._fail()

    # -- subscribing ----------------------------------------------------------------

    async def serve(
        self,
        websocket: Connection,
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
        on_message: OnMessage | None = None,
    ) -> SubscriberStats:
        """Subscribe ``websocket`` and relay to it until the connection closes.

        Keeps reading what the client sends, so close frames and pings are processed;
        each message goes to ``on_message(subscriber, message)`` if given. Returns the
        subscriber's final statistics.
        """
        # Not through subscribe(): its context manager would cost every idle
        # subscriber about 500 bytes more (see docs/performance.md).
        subscriber = self._open(websocket, policy, topics)
        try:
            async for data in websocket:
                if on_message is not None:
                    await on_message(subscriber, data)
        except ConnectionClosed:
            pass
        finally:
            await self._release(subscriber)
        return subscriber.stats()

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        websocket: Connection,
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
    ) -> AsyncIterator[Subscriber]:
        """Subscribe ``websocket`` for the duration of the ``async with`` block.

        The block must keep reading from the connection (or the connection stops
        processing close frames and pings); :meth:`serve` does that for you.
        """
        subscriber = self._open(websocket, policy, topics)
        try:
            yield subscriber
        finally:
            await self._release(subscriber)

    def _open(
        self, websocket: Connection, policy: Policy | None, topics: Iterable[str] | None
    ) -> Subscriber:
        if self._closed:
            raise HubClosedError("subscribe() on a closed hub")
        chosen = self.policy if policy is None else as_policy(policy)
        subscriber = Subscriber(self, websocket, chosen, check_topics(topics))
        self._attach(subscriber)
        return subscriber

    def _attach(self, sub: Subscriber) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._live.add(sub)
        self._members[sub] = None
        self._index(sub, sub._topics)
        sub.websocket.connection_lost_waiter.add_done_callback(sub._connection_lost)
        if sub.websocket.protocol.state is not OPEN:
            sub._connection_lost()

    def _index(self, sub: Subscriber, topics: frozenset[str] | None) -> None:
        if topics is None:
            self._wildcard[sub] = None
        else:
            for topic in topics:
                self._by_topic.setdefault(topic, {})[sub] = None

    def _unindex(self, sub: Subscriber, topics: frozenset[str] | None) -> None:
        if topics is None:
            self._wildcard.pop(sub, None)
            return
        for topic in topics:
            listeners = self._by_topic.get(topic)
            if listeners is not None:
                listeners.pop(sub, None)
                if not listeners:
                    del self._by_topic[topic]

    def _retopic(self, sub: Subscriber, topics: frozenset[str] | None) -> None:
        if sub._attached:
            self._unindex(sub, sub._topics)
            self._index(sub, topics)
        sub._topics = topics

    def _detach(self, sub: Subscriber) -> None:
        """Stop offering messages to ``sub``; idempotent."""
        if sub._attached:
            sub._attached = False
            self._members.pop(sub, None)
            self._unindex(sub, sub._topics)

    async def _release(self, sub: Subscriber) -> None:
        self._detach(sub)
        relay = sub._relay
        if relay is not None:
            if sub._outbox.closing is not None:
                # The relay is closing the connection: bounded by close_timeout, let it end.
                await asyncio.shield(relay)
            else:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
        sub._outbox.discard()
        if sub in self._live:
            self._live.discard(sub)
            add_stats(self._retired, sub.stats())
            self._closed_by_policy += sub._outbox.closed_by_policy

    # -- lifecycle and statistics ---------------------------------------------------

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Subscribers currently receiving messages."""
        return tuple(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def stats(self) -> HubStats:
        """Counters summed over every subscriber, present and past."""
        total = dict(self._retired)
        max_lag = 0.0
        for sub in self._live:
            stats = sub.stats()
            add_stats(total, stats)
            max_lag = max(max_lag, stats.lag)
        return HubStats(
            subscribers=len(self._members),
            closed_by_policy=self._closed_by_policy
            + sum(sub._outbox.closed_by_policy for sub in self._live),
            max_lag=max_lag,
            **{name: int(value) for name, value in total.items()},
        )

    async def aclose(
        self, code: int = 1001, reason: str = "", timeout: float | None = None
    ) -> None:
        """Close every subscriber with ``code`` and stop accepting new ones.

        Each connection gets a close frame and at most ``timeout`` seconds (default:
        ``close_timeout``) to finish the closing handshake; then its transport is
        aborted, so a stalled client cannot hold this up. Messages still queued are
        counted as ``disconnected``. A backplane is closed first, so nothing more arrives.
        """
        check_close(code, reason, ConfigError)
        self._closed = True
        if self._backplane is not None:
            await self._backplane.aclose()
        deadline = self.close_timeout if timeout is None else timeout
        subscribers = list(self._live)
        for sub in subscribers:
            sub._close_timeout = deadline
            sub._close(Close(code, reason, cause="hub closed"))
        relays = [sub._relay for sub in subscribers if sub._relay is not None]
        if relays:
            _, pending = await asyncio.wait(relays, timeout=deadline + 1.0)
            for task in pending:  # pragma: no cover - close_connection is itself bounded
                task.cancel()

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _next_seq(self) -> int:
        return next(self._seq)
