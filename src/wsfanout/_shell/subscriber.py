"""What an application holds for one subscribed connection: its topics, sends and stats.

A :class:`Subscriber` is a handle on the shell's :class:`~wsfanout._shell.link.Link`;
everything it does goes through the link and the hub's fan-out, never around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from websockets.asyncio.connection import Connection

from .._core.decision import Decision
from .._core.errors import SubscriberClosedError
from .._core.message import make_message
from .._core.policy import Policy, as_policy
from .._core.snapshot import Snapshot
from .._core.stats import SubscriberStats

if TYPE_CHECKING:
    from .link import Link

__all__ = ["Subscriber", "check_topics"]


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

    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    def __repr__(self) -> str:
        return repr(self._link)

    @property
    def websocket(self) -> Connection:
        """The connection this subscriber relays to."""
        return self._link.websocket

    @property
    def policy(self) -> Policy:
        """The subscriber's policy. Assign another (a ``Policy`` or a plain function) to
        change it while the subscriber runs: the queue is reshaped under the new policy
        at once (a smaller bound evicts, refuses or closes as it says), statistics go on,
        and order holds. Raises :class:`SubscriberClosedError` once closed."""
        return self._link.outbox.policy

    @policy.setter
    def policy(self, policy: Policy | Callable[[Snapshot], Decision]) -> None:
        chosen = as_policy(policy)
        if self.closed:
            raise SubscriberClosedError(f"{self!r} is closed")
        self._link.set_policy(chosen)

    @property
    def policy_name(self) -> str:
        """The name of its policy in the hub's monitor and metrics (see ``Hub.serve``)."""
        return self._link.policy_name

    @property
    def write_buffer(self) -> int:
        """Bytes waiting to leave: the transport's write buffer and any corked frames."""
        link = self._link
        return link.transport.get_write_buffer_size() + link.held_bytes

    @property
    def topics(self) -> frozenset[str] | None:
        """The topics this subscriber receives; ``None`` means all of them."""
        return self._link.topics

    @property
    def closed(self) -> bool:
        """True once the subscriber is closing or gone; it receives nothing more."""
        return self._link.outbox.closing is not None

    def set_topics(self, topics: Iterable[str] | None) -> None:
        """Replace the subscriber's topics (``None``: all topics) while it runs."""
        link = self._link
        link.fanout.retopic(link, check_topics(topics))

    def subscribe(self, *topics: str) -> None:
        """Add topics. A subscriber receiving all topics keeps receiving all."""
        current = self._link.topics
        if current is not None:
            self.set_topics(current | frozenset(topics))

    def unsubscribe(self, *topics: str) -> None:
        """Remove topics; unsubscribing from all topics needs :meth:`set_topics`."""
        current = self._link.topics
        if current is not None:
            self.set_topics(current - frozenset(topics))

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send to this subscriber alone, through its queue, in order with published messages.

        The message is lossless, as ``Hub.publish(..., lossless=True)`` makes one: never
        dropped, skipped, conflated or batched. When the queue is full, a policy that
        drops (``DropOldest``, ``DropNewest``) evicts published messages to make room;
        otherwise, or when only lossless messages are queued, the subscriber is closed
        instead. Raises :class:`SubscriberClosedError` if the subscriber is closed.
        """
        if self.closed:
            raise SubscriberClosedError(f"{self!r} is closed")
        link = self._link
        fanout = link.fanout
        now = fanout.now()
        link.offer(make_message(message, seq=fanout.next_seq(), time=now, droppable=False), now)

    def hear(self, message: str | bytes) -> bool:
        """Hand the hub a message the client sent: True if it was the client protocol's
        own (an acknowledgement, docs/protocol.md), which the application then ignores;
        a malformed one closes the subscriber with 1008. For ``Hub.subscribe(...,
        acks=True)``, whose block reads the connection; ``Hub.serve`` does this itself."""
        return self._link.hear(message)

    def stats(self) -> SubscriberStats:
        link = self._link
        return link.outbox.stats(link.fanout.now())
