"""Per-subscriber and hub-wide counters, as frozen values."""

from __future__ import annotations

import attrs

from .decision import Close

__all__ = ["Counts", "HubStats", "SubscriberStats"]


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


_SUMMED = tuple(field.name for field in attrs.fields(Counts))


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


@attrs.frozen(kw_only=True)
class HubStats(Counts):
    """Counters summed over every subscriber the hub has had, present and past."""

    subscribers: int = 0
    """Subscribers connected now."""
    closed_by_policy: int = 0
    """Subscribers a policy (or an overflowing queue) has closed."""
    max_lag: float = 0.0
    """The largest lag among connected subscribers."""
    notsent_lowat: int | None = None
    """The ``TCP_NOTSENT_LOWAT`` set on subscribed TCP connections, in bytes; None when
    the hub's setting is off or the platform has no such option, and then a stalled
    client's kernel send buffer (up to 4 MiB on Linux) is outside every bound."""
    notsent_lowat_supported: bool = False
    """Whether this platform has ``TCP_NOTSENT_LOWAT`` (Linux and macOS do)."""


def add_stats(total: dict[str, float], stats: Counts) -> None:
    """Accumulate one subscriber's counters into ``total``."""
    for name in _SUMMED:
        total[name] = total.get(name, 0) + getattr(stats, name)
