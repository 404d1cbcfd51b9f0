"""The hub: where messages are published and subscribers come and go.

``Hub`` is the public face; its engine is a :class:`~wsfanout._shell.fanout.Fanout`
(who gets a message, and the fast path), and each subscriber is a
:class:`~wsfanout._shell.link.Link` (its outbox, connection and relay task) behind the
:class:`Subscriber` the application holds. The hub owns their lifecycle: attach on
subscribe, release when the handler returns, statistics of subscribers present and
past, and a shutdown that no stalled client can hold up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Data

from .._backplane.protocol import Backplane
from .._core.builtins import DEFAULT_POLICY
from .._core.decision import Close
from .._core.errors import ConfigError, HubClosedError, invalid
from .._core.frames import FRAMINGS, SUBPROTOCOL
from .._core.message import Message, encode_payload
from .._core.policy import Policy, as_policy
from .._core.stats import HubStats, SubscriberStats, add_stats
from .._core.validate import check_close, positive_seconds
from .fanout import Fanout
from .link import Link
from .monitor import HubMonitor, Ledger
from .reading import gate_reading, is_gated, ungate_reading
from .subscriber import Subscriber, check_topics

__all__ = ["Hub", "OnMessage"]

OPEN = State.OPEN

POLICY_NAME_MAX = 256
"""Longest policy name (a policy file's path may be one): a label, not a place for data."""


def check_policy_name(name: object) -> str:
    """A policy name: a non-empty str of at most :data:`POLICY_NAME_MAX` printable characters."""
    if not isinstance(name, str) or not name or not name.isprintable():
        raise invalid("policy_name", name, "must be a non-empty printable str", ConfigError)
    if len(name) > POLICY_NAME_MAX:
        raise invalid(
            "policy_name", name, f"must be at most {POLICY_NAME_MAX} characters", ConfigError
        )
    return name


OnMessage = Callable[[Subscriber, Data], Awaitable[None]]
"""``Hub.serve``'s ``on_message``: called with each message the client sends."""


class Hub:
    """Fans messages out to WebSocket subscribers, each under its own policy.

    ``policy`` is the policy of subscribers that do not name one (by default
    :data:`~wsfanout.policies.DEFAULT_POLICY`). ``close_timeout`` bounds every close
    the hub performs, after which the transport is aborted. With a ``backplane``
    (see :mod:`wsfanout.backplane`), messages published on any hub sharing it reach
    the subscribers of every one of them. ``cork`` (on by default) sends a burst of
    frames for one connection in one loop iteration as one write.

    ``policy_name`` names ``policy`` in :attr:`monitor` and metrics (subscribers that
    name their own policy take ``policy_name`` from :meth:`serve`); ``closed_history``
    is how many released subscribers :attr:`HubMonitor.closed` remembers;
    ``timings`` records the latency histograms (:meth:`HubMonitor.timings`): from the
    start (True), never (False), or once metrics or an admin listener ask (None).
    """

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        close_timeout: float = 5.0,
        backplane: Backplane | None = None,
        cork: bool = True,
        policy_name: str = "default",
        closed_history: int = 100,
        timings: bool | None = None,
    ) -> None:
        self.close_timeout = positive_seconds("close_timeout", close_timeout)
        if not isinstance(cork, bool):
            raise ConfigError(f"cork={cork!r} must be True or False", name="cork", value=cork)
        if timings is not None and not isinstance(timings, bool):
            raise invalid("timings", timings, "must be True, False or None", ConfigError)
        if isinstance(closed_history, bool) or not isinstance(closed_history, int):
            raise invalid("closed_history", closed_history, "must be an int >= 0", ConfigError)
        if closed_history < 0:
            raise invalid("closed_history", closed_history, "must be >= 0", ConfigError)
        self.policy = DEFAULT_POLICY if policy is None else as_policy(policy)
        self.policy_name = check_policy_name(policy_name)
        self._live: set[Link] = set()
        """Every link not yet released, attached or not: what stats() and aclose() see."""
        self._ledger = Ledger(self._live, closed_history=closed_history)
        """The counters of released subscribers, how they ended, and the timings."""
        self._fanout = Fanout(cork=cork)
        self._monitor = HubMonitor(self._fanout, self._ledger, timings=timings)
        if timings:
            self._monitor.start_timings()
        self._backplane = backplane
        if backplane is not None:
            backplane.bind(self._fanout)

    @property
    def backplane(self) -> Backplane | None:
        """The backplane this hub shares messages through, if any."""
        return self._backplane

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
        Raises ``TypeError`` for a message that is neither, and ``ValueError`` for a
        ``str`` with no UTF-8 form (a lone surrogate, such as ``"\\ud800"``); either
        way nothing is published and no offset is taken.
        """
        fanout = self._fanout
        if fanout.closed:
            raise HubClosedError("publish() on a closed hub")
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic={topic!r} must be a str or None")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key={key!r} must be a str or None")
        backplane = self._backplane
        # Encoded before the stream advances: a message refused here takes no offset.
        opcode, payload = encode_payload(message)
        if not fanout.index.members and backplane is None:
            fanout.streams.advance(topic)  # the stream goes on without listeners
            return 0
        now = fanout.now()
        stream = fanout.streams.advance(topic)
        msg = Message(
            opcode,
            payload,
            seq=fanout.next_seq(),
            time=now,
            topic=topic,
            key=key,
            offset=stream.last,
            epoch=stream.epoch,
        )
        if backplane is not None:
            backplane.forward(msg)
        return fanout.deliver(msg, now)

    # -- subscribing ----------------------------------------------------------------

    async def serve(
        self,
        websocket: Connection,
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
        on_message: OnMessage | None = None,
        framing: str | None = None,
        policy_name: str | None = None,
    ) -> SubscriberStats:
        """Subscribe ``websocket`` and relay to it until the connection closes.

        Keeps reading what the client sends, so close frames and pings are processed;
        each message goes to ``on_message(subscriber, message)`` if given. ``framing``
        is ``"raw"`` (payloads as published) or ``"v1"`` (each with its offset; see
        docs/protocol.md); by default ``"v1"`` if the connection negotiated the
        ``wsfanout.v1`` subprotocol, else ``"raw"``. ``policy_name`` labels the
        subscriber in :attr:`monitor` and metrics: a preset or route name, one of a few
        (never a client id); by default the hub's ``policy_name`` without ``policy``,
        else ``"custom"``. Returns the subscriber's final statistics.
        """
        # Not through subscribe(): its context manager would cost every idle
        # subscriber about 500 bytes more (see docs/performance.md).
        link = self._open(websocket, policy, topics, framing, policy_name)
        subscriber = link.subscriber
        try:
            async for data in websocket:
                if on_message is not None:
                    await on_message(subscriber, data)
        except ConnectionClosed:
            pass
        finally:
            await self._release(link)
        return subscriber.stats()

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        websocket: Connection,
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
        framing: str | None = None,
        policy_name: str | None = None,
    ) -> AsyncIterator[Subscriber]:
        """Subscribe ``websocket`` for the duration of the ``async with`` block.

        The block must keep reading from the connection (or the connection stops
        processing close frames and pings); :meth:`serve` does that for you.
        ``framing`` and ``policy_name`` are as for :meth:`serve`.
        """
        link = self._open(websocket, policy, topics, framing, policy_name)
        try:
            yield link.subscriber
        finally:
            await self._release(link)

    def _open(
        self,
        websocket: Connection,
        policy: Policy | None,
        topics: Iterable[str] | None,
        framing: str | None,
        policy_name: str | None = None,
    ) -> Link:
        fanout = self._fanout
        if fanout.closed:
            raise HubClosedError("subscribe() on a closed hub")
        if framing is None:
            framing = "v1" if websocket.subprotocol == SUBPROTOCOL else "raw"
        elif framing not in FRAMINGS:
            raise invalid(
                "framing", framing, f"is not a framing (expected one of {FRAMINGS})", ConfigError
            )
        if is_gated(websocket):
            raise ConfigError(
                f"websocket {websocket.id} is already subscribed (to this hub or another): "
                "a connection has one subscription, or each message would reach it twice",
                name="websocket",
                value=websocket,
            )
        chosen = self.policy if policy is None else as_policy(policy)
        if policy_name is None:
            name = self.policy_name if policy is None else "custom"
        else:
            name = check_policy_name(policy_name)
        link = Link(
            fanout, websocket, chosen, check_topics(topics), self.close_timeout, framing, name
        )
        self._live.add(link)
        gate_reading(websocket)
        fanout.attach(link)
        websocket.connection_lost_waiter.add_done_callback(link.connection_lost)
        if websocket.protocol.state is not OPEN:
            link.connection_lost()
        return link

    async def _release(self, link: Link) -> None:
        self._fanout.detach(link)
        relay = link.relay
        if relay is not None:
            if link.outbox.closing is not None:
                # The relay is closing the connection: bounded by close_timeout, let it end.
                await asyncio.shield(relay)
            else:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
        self._fanout.timers.discard(link)
        link.outbox.discard()
        ungate_reading(link.websocket)
        if link in self._live:
            self._live.discard(link)
            self._ledger.retire(link, self._fanout.now())

    # -- lifecycle and statistics ---------------------------------------------------

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Subscribers currently receiving messages."""
        return tuple(link.subscriber for link in self._fanout.index.members)

    @property
    def monitor(self) -> HubMonitor:
        """What the hub has seen, per policy name: for metrics and status pages."""
        return self._monitor

    def __len__(self) -> int:
        return len(self._fanout.index.members)

    def stats(self) -> HubStats:
        """Counters summed over every subscriber, present and past."""
        total = self._ledger.retired_total()
        max_lag = 0.0
        closed_by_policy = sum(self._ledger.closed_by_policy.values())
        now = self._fanout.now()
        for link in self._live:
            stats = link.outbox.stats(now)
            add_stats(total, stats)
            max_lag = max(max_lag, stats.lag)
            closed_by_policy += link.outbox.closed_by_policy
        return HubStats(
            subscribers=len(self),
            closed_by_policy=closed_by_policy,
            max_lag=max_lag,
            **{name: int(value) for name, value in total.items()},
        )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no subscriber has anything queued, or ``timeout`` seconds pass.

        Returns True if every queue emptied. Publishing meanwhile may keep a queue
        busy; a graceful shutdown drains after its last publish, then calls
        :meth:`aclose`.
        """
        if timeout is not None:
            timeout = positive_seconds("timeout", timeout)
        # A link with something queued has a relay task (awaiting a drain or a close)
        # or waits on the hub's timers (timers.py); look again whenever either moves.
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        timers = self._fanout.timers
        while True:
            relays: set[asyncio.Future[None]] = {
                link.relay for link in self._live if link.relay is not None
            }
            if not relays and not timers:
                return True
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            changed = timers.changed()
            try:
                await asyncio.wait(
                    {*relays, changed}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()

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
        deadline = self.close_timeout if timeout is None else positive_seconds("timeout", timeout)
        self._fanout.closed = True
        if self._backplane is not None:
            await self._backplane.aclose()
        links = list(self._live)
        for link in links:
            link.close_timeout = deadline
            link.close(Close(code, reason, cause="hub closed"))
        relays = [link.relay for link in links if link.relay is not None]
        if relays:
            _, pending = await asyncio.wait(relays, timeout=deadline + 1.0)
            for task in pending:  # pragma: no cover - close_connection is itself bounded
                task.cancel()
