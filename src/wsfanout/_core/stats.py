"""Per-subscriber and hub-wide counters, as frozen values."""

from __future__ import annotations

import attrs

from .decision import Close

__all__ = [
    "DROP_REASONS",
    "SUMMED",
    "ClosedSubscriber",
    "Counts",
    "HubStats",
    "PolicyStats",
    "SubscriberStats",
    "dropped_by_reason",
]


@attrs.frozen(kw_only=True)
class Counts:
    """Message counters shared by one subscriber's and the hub's statistics.

    Every message offered is accounted for exactly once:
    ``offered == sent + dropped + queued_messages``.
    """

    offered: int = 0
    """Messages published to the subscriber (matching its topics) or sent to it."""
    sent: int = 0
    """Messages written to the transport."""
    frames: int = 0
    """Frames written; fewer than ``sent`` when batching."""
    batched: int = 0
    """Messages that left inside a frame holding more than one message (a subset of ``sent``)."""
    dropped_oldest: int = 0
    """Queued messages evicted to make room."""
    dropped_newest: int = 0
    """Arriving messages refused because the queue was full."""
    skipped: int = 0
    """Queued messages replaced by a newer one (``SkipToLatest``)."""
    conflated: int = 0
    """Queued messages replaced by a newer one with the same key (``ConflateByKey``)."""
    disconnected: int = 0
    """Messages lost because the subscriber was closed or went away with them queued."""
    queued_messages: int = 0
    """Messages waiting in the queue now."""
    queued_bytes: int = 0
    """Payload bytes waiting in the queue now."""

    @property
    def dropped(self) -> int:
        """Messages lost for any reason."""
        return (
            self.dropped_oldest
            + self.dropped_newest
            + self.skipped
            + self.conflated
            + self.disconnected
        )


SUMMED = tuple(field.name for field in attrs.fields(Counts))
"""The counters that add up over subscribers, in :class:`Counts`' order."""

DROP_REASONS: dict[str, str] = {
    "oldest": "dropped_oldest",
    "newest": "dropped_newest",
    "skipped": "skipped",
    "conflated": "conflated",
    "disconnected": "disconnected",
}
"""Why messages are lost, as metrics and logs name the reason -> the :class:`Counts`
field that counts it; their sum is :attr:`Counts.dropped`."""


def dropped_by_reason(stats: Counts) -> dict[str, int]:
    """``{reason: messages}`` for every reason of :data:`DROP_REASONS`, in its order."""
    return {reason: getattr(stats, field) for reason, field in DROP_REASONS.items()}


@attrs.frozen(kw_only=True)
class SubscriberStats(Counts):
    """What happened to one subscriber's messages, counted in messages (frames apart)."""

    peak_messages: int = 0
    """High-water mark of the queue in messages."""
    peak_bytes: int = 0
    """High-water mark of the queue in payload bytes."""
    lag: float = 0.0
    """Seconds the subscriber has been missing messages now (see :attr:`Snapshot.lag`)."""
    close: Close | None = None
    """Why wsfanout closed this subscriber (its policy, an overflow or the hub), if it did."""
    level: int = 0
    """The level its ladder policy (``Escalate``, ``Adaptive``) is at now; 0 without one."""
    steps_up: int = 0
    """Steps its ladder took to a higher level."""
    steps_down: int = 0
    """Steps its ladder took back down."""
    drain_rate: float | None = None
    """Bytes per second leaving its write buffer, as last measured (see
    :attr:`Snapshot.drain_rate`); None if it never fell behind."""
    unacked: int | None = None
    """Payload bytes its client's application has not taken yet (see
    :attr:`Snapshot.unacked`); None unless the client acknowledges."""
    ack_rate: float | None = None
    """Bytes per second its client's application takes (see :attr:`Snapshot.ack_rate`)."""


@attrs.frozen(kw_only=True)
class HubStats(Counts):
    """Counters summed over every subscriber the hub has had, present and past."""

    subscribers: int = 0
    """Subscribers connected now."""
    closed_by_policy: int = 0
    """Subscribers a policy (or an overflowing queue) has closed."""
    max_lag: float = 0.0
    """The largest lag among connected subscribers."""
    resumed: int = 0
    """Subscribers that resumed (gave ``since`` positions) and were sent what they missed."""
    replayed: int = 0
    """Messages replayed from history to resuming subscribers (also counted as offered)."""
    history_missed: int = 0
    """Messages resuming subscribers missed that history no longer held, each reported to
    its subscriber in a gap notice (reason ``history``)."""
    history_reads: int = 0
    """Reads of this hub's own history by resuming subscribers: one per distinct starting
    point while the topic is unchanged, however many subscribers resume from it."""
    notsent_lowat: int | None = None
    """The ``TCP_NOTSENT_LOWAT`` set on subscribed TCP connections, in bytes; None when
    the hub's setting is off or the platform has no such option, and then a stalled
    client's kernel send buffer (up to 4 MiB on Linux) is outside every bound."""
    notsent_lowat_supported: bool = False
    """Whether this platform has ``TCP_NOTSENT_LOWAT`` (Linux and macOS do)."""


def add_stats(total: dict[str, float], stats: Counts) -> None:
    """Accumulate one subscriber's counters into ``total``."""
    for name in SUMMED:
        total[name] = total.get(name, 0) + getattr(stats, name)


@attrs.frozen(kw_only=True)
class PolicyStats(HubStats):
    """:class:`HubStats` of the subscribers of one declared policy name, present and past."""

    opened: int = 0
    """Subscribers that have had this policy name, connected now or gone."""
    behind: int = 0
    """Connected subscribers with messages queued: off the fast path now."""
    write_buffer: int = 0
    """Bytes waiting in the write buffers of connected subscribers (corked frames included)."""
    steps_up: int = 0
    """Steps a ladder policy (``Escalate``, ``Adaptive``) took to a higher level, summed
    over its subscribers present and past."""
    steps_down: int = 0
    """Steps a ladder policy took back down, summed likewise."""
    stepped_up: int = 0
    """Connected subscribers whose ladder is above its first level now."""
    unacked: int = 0
    """Payload bytes written to connected subscribers whose clients acknowledge that
    their applications have not taken yet (see :attr:`Snapshot.unacked`)."""
    closes: tuple[tuple[str, int], ...] = ()
    """``(ended, count)`` pairs for the subscribers gone, sorted; how they ended: the
    close code wsfanout sent (``"1013"``), ``"client"`` (the client closed first),
    ``"app"`` (the application ended the subscription or closed the connection) or
    ``"lost"`` (no closing handshake)."""


@attrs.frozen(kw_only=True)
class ClosedSubscriber:
    """A subscriber gone: who it was, how it ended and its final counters."""

    id: str
    """The connection's id (``websocket.id``), to match log lines."""
    remote: str
    """The client's address, ``host:port``."""
    path: str
    """The request path, without the query string (which may hold a token)."""
    policy_name: str
    """The policy name it was served under."""
    closed_at: float
    """When it was released, in seconds since the epoch (``time.time()``)."""
    ended: str
    """How it ended, as in :attr:`PolicyStats.closes`: a close code wsfanout sent
    (``"1013"``), ``"client"``, ``"app"`` or ``"lost"``."""
    code: int | None
    """The close code: the one wsfanout, the client or the application sent; None when
    the connection ended without one (1006)."""
    cause: str
    """Why, for people: the policy's cause (``lag 5.0s >= max_lag=5.0``), the client's
    close reason, or what happened to the connection."""
    stats: SubscriberStats
    """Its counters when it was released."""
