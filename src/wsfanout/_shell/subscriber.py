"""A connection subscribed to a hub: its outbox, its relay task and its topics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from .._core.decision import Close
from .._core.errors import SubscriberClosedError
from .._core.frames import OP_TEXT
from .._core.message import Message, make_message
from .._core.outbox import BLOCKED, Offer, Outbox
from .._core.policy import Policy
from .._core.stats import SubscriberStats
from .extensions import shared_deflate
from .relay import run_relay

if TYPE_CHECKING:
    from .hub import Hub

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

    # Slots keep the attributes the fast path reads in the object itself: one memory
    # block per subscriber instead of two, which shows at thousands of subscribers.
    __slots__ = (
        "_attached",
        "_close_timeout",
        "_deflate",
        "_flush_waiting",
        "_hub",
        "_outbox",
        "_pending",
        "_pending_bytes",
        "_plain",
        "_protocol",
        "_relay",
        "_tick",
        "_topics",
        "_transport",
        "_wake",
        "websocket",
    )

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
        # How frames are encoded for this connection, fixed by the handshake: the
        # shared frame (no extension), a shared compressed frame (permessage-deflate
        # without context takeover), or websockets' own per-connection encoder.
        extensions = websocket.protocol.extensions
        self._plain = not extensions
        self._deflate = shared_deflate(extensions)
        # Corking (see Hub._fan_out): the hub iteration this connection was last written
        # in, and the frames held back since, to leave in one write when it ends.
        self._tick = -1
        self._pending: list[bytes] | None = None  # a list only while frames are held
        self._pending_bytes = 0
        self._flush_waiting = False

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
            buffered = self._transport.get_write_buffer_size() + self._pending_bytes
        else:
            buffered = BLOCKED
        outcome = self._outbox.offer(message, now, buffered)
        if outcome is Offer.WRITE:
            self._emit(self._encode(message))
        elif outcome is Offer.KICK:
            self._kick()
        elif outcome is Offer.CLOSE:
            self._closing()

    def _encode(self, message: Message) -> bytes:
        """The bytes of ``message`` on this connection; shared unless the connection
        compresses with context takeover. Call only to write the result, in order."""
        if self._plain:
            return message.frame
        params = self._deflate
        if params is not None:
            return message.deflated(params)
        # Context takeover: the encoder is stateful per connection, websockets encodes.
        protocol = self._protocol
        if message.opcode == OP_TEXT:
            protocol.send_text(message.payload)
        else:
            protocol.send_binary(message.payload)
        return b"".join(protocol.data_to_send())

    def _emit(self, data: bytes) -> None:
        """Write a fast-path frame now, or cork it behind one written this iteration.

        ``Hub._fan_out`` inlines the same steps for speed.
        """
        hub = self._hub
        if self._tick != hub._tick or not hub._cork:
            self._tick = hub._tick
            self._transport.write(data)
            hub._schedule_tick_end()
        else:
            self._cork(data)

    def _cork(self, data: bytes) -> None:
        pending = self._pending
        if not pending:
            self._hub._corked.append(self)
            pending = self._pending = []
        pending.append(data)
        self._pending_bytes += len(data)
        # Past the low-water mark the fast path would stop; write what is held instead,
        # so the fast path holds no more than an uncorked one would.
        if self._pending_bytes > self._outbox.low:
            self._flush()

    def _flush(self) -> None:
        """Write the corked frames in one call, unless they must wait or be dropped."""
        pending = self._pending
        if not pending:
            return
        ws = self.websocket
        if self._protocol.state is OPEN and not self._transport.is_closing():
            sending = ws.send_in_progress
            if sending is not None:
                # The application began a fragmented send() after these frames were
                # corked: they follow it, never interleave with its fragments.
                if not self._flush_waiting:
                    self._flush_waiting = True
                    sending.add_done_callback(self._flush_after_send)
                return
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        # Otherwise a close frame may already be out: nothing may follow it.
        self._pending = None
        self._pending_bytes = 0

    def _flush_after_send(self, _: object) -> None:
        self._flush_waiting = False
        self._flush()

    def _write(self, frames: tuple[Message, ...]) -> None:
        """Write frames the relay took from the queue, after any corked ones."""
        if self._pending:
            self._flush()
        if len(frames) == 1:
            data = self._encode(frames[0])
        else:
            data = b"".join([self._encode(frame) for frame in frames])
        pending = self._pending
        if pending:  # still held behind a fragmented send(): keep the order
            pending.append(data)
            self._pending_bytes += len(data)
        else:
            self._transport.write(data)

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

    def _connection_lost(self, _: object = None) -> None:
        self._pending = None
        self._pending_bytes = 0
        self._hub._detach(self)
        self._outbox.discard()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
