"""A connection subscribed to a hub: its outbox, its relay task and its topics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from ._decision import Close
from ._frames import OP_TEXT
from ._message import Message, make_message
from ._outbox import BLOCKED, Offer, Outbox
from ._policy import Policy
from ._relay import run_relay
from ._stats import SubscriberStats
from .exceptions import SubscriberClosedError

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Subscriber", "check_topics"]

OPEN = State.OPEN


def check_topics(topics: Iterable[str] | None) -> frozenset[str] | None:
    """``None`` means every topic; otherwise a set of str names."""
    if topics is None:
        return None
    if isinstance(topics, str):
        raise TypeError(f"topics={topics!r} must be a collection of str, not a single str")
    result = frozenset(topics)
    for topic in result:
        if not isinstance(topic, str):
            raise TypeError(f"topics contains {topic!r}: a topic must be a str")
    return result


class Subscriber:
    """One connection's subscription: a bounded queue under a policy, relayed lazily.

    Obtain one from :meth:`Hub.subscribe` (or implicitly through :meth:`Hub.serve`).
    """

    def __init__(
        self, hub: Hub, websocket: Connection, policy: Policy, topics: frozenset[str] | None
    ) -> None:
        self._hub = hub
        self.websocket = websocket
        self._transport = websocket.transport
        self._protocol = websocket.protocol
        low, high = websocket.transport.get_write_buffer_limits()
        self._outbox = Outbox(policy, high=high, low=low)
        self._topics = topics
        self._relay: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._attached = True
        self._close_timeout = hub.close_timeout

    def __repr__(self) -> str:
        return f"<Subscriber {self.websocket.id} {self.policy!r}>"

    # -- public ---------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._outbox.policy

    @property
    def topics(self) -> frozenset[str] | None:
        """The topics this subscriber receives; ``None`` means all of them."""
        return self._topics

    @property
    def closed(self) -> bool:
        """True once the subscriber is closing or gone; it receives nothing more."""
        return self._outbox.closing is not None

    def set_topics(self, topics: Iterable[str] | None) -> None:
        """Replace the subscriber's topics (``None``: all topics) while it runs."""
        self._hub._retopic(self, check_topics(topics))

    def subscribe(self, *topics: str) -> None:
        """Add topics. A subscriber receiving all topics keeps receiving all."""
        if self._topics is not None:
            self.set_topics(self._topics | frozenset(topics))

    def unsubscribe(self, *topics: str) -> None:
        """Remove topics; unsubscribing from all topics needs :meth:`set_topics`."""
        if self._topics is not None:
            self.set_topics(self._topics - frozenset(topics))

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send to this subscriber alone, through its queue, in order with published messages.

        The message is never dropped by the policy. When the queue is full, a policy that
        drops (``DropOldest``, ``DropNewest``) evicts published messages to make room;
        otherwise, or when only undroppable messages are queued, the subscriber is closed
        instead. Raises :class:`SubscriberClosedError` if the subscriber is closed.
        """
        if self.closed:
            raise SubscriberClosedError(f"{self!r} is closed")
        hub = self._hub
        now = hub._now()
        self._offer(make_message(message, seq=hub._next_seq(), time=now, droppable=False), now)

    def stats(self) -> SubscriberStats:
        return self._outbox.stats(self._hub._now())

    # -- used by the hub and the relay ----------------------------------------------

    def _offer(self, message: Message, now: float) -> None:
        if self._protocol.state is OPEN and self.websocket.send_in_progress is None:
            buffered = self._transport.get_write_buffer_size()
        else:
            buffered = BLOCKED
        outcome = self._outbox.offer(message, now, buffered)
        if outcome is Offer.WRITE:
            self._write((message,))
        elif outcome is Offer.KICK:
            self._kick()
        elif outcome is Offer.CLOSE:
            self._closing()

    def _write(self, frames: tuple[Message, ...]) -> None:
        protocol = self._protocol
        if not protocol.extensions:
            if len(frames) == 1:
                self._transport.write(frames[0].frame)
            else:
                self._transport.write(b"".join([frame.frame for frame in frames]))
            return
        # Extensions (permessage-deflate) are stateful per connection: websockets encodes.
        for frame in frames:
            if frame.opcode == OP_TEXT:
                protocol.send_text(frame.payload)
            else:
                protocol.send_binary(frame.payload)
        chunks = protocol.data_to_send()
        self._transport.write(b"".join(chunks))

    def _kick(self) -> None:
        if self._relay is None:
            self._relay = asyncio.get_running_loop().create_task(run_relay(self))
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _closing(self) -> None:
        """The outbox decided to close: stop receiving and let the relay close."""
        self._hub._detach(self)
        self._kick()

    def _close(self, close: Close) -> None:
        if self._outbox.close(close):
            self._closing()

    def _fail(self) -> None:
        """Delivery raised: abort the connection and refuse further messages at once."""
        self._outbox.discard()
        self._transport.abort()

    def _connection_lost(self) -> None:
        self._hub._detach(self)
        self._outbox.discard()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
