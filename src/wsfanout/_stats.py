"""Per-subscriber and hub-wide counters, as frozen values."""

from __future__ import annotations

import attrs

from ._decision import Close

__all__ = ["HubStats", "SubscriberStats"]


@attrs.frozen(kw_only=True)
class SubscriberStats:
    """What happened to one subscriber's messages, counted in messages (frames apart).

    Every message offered to a subscriber is accounted for exactly once:
    ``offered == sent + dropped + queued_messages``.
    """

    offered: int = 0
    """Messages published to this subscriber (matching its topics) or sent to it."""
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
    queued_bytes: int = 0
    peak_messages: int = 0
    """High-water mark of the queue in messages."""
    peak_bytes: int = 0
    """High-water mark of the queue in payload bytes."""
    lag: float = 0.0
    """Age in seconds of the oldest queued message now."""
    close: Close | None = None
    """Why the policy closed this subscriber, if it did."""

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


_SUMMED = (
    "offered",
    "sent",
    "frames",
    "batched",
    "dropped_oldest",
    "dropped_newest",
    "skipped",
    "conflated",
    "disconnected",
    "queued_messages",
    "queued_bytes",
)


@attrs.frozen(kw_only=True)
class HubStats:
    """Counters summed over every subscriber the hub has had, present and past."""

    subscribers: int = 0
    """Subscribers connected now."""
    closed_by_policy: int = 0
    """Subscribers a policy (or an overflowing queue) has closed."""
    offered: int = 0
    sent: int = 0
    frames: int = 0
    batched: int = 0
    dropped_oldest: int = 0
    dropped_newest: int = 0
    skipped: int = 0
    conflated: int = 0
    disconnected: int = 0
    queued_messages: int = 0
    queued_bytes: int = 0
    max_lag: float = 0.0
    """The largest lag among connected subscribers."""

    @property
    def dropped(self) -> int:
        return (
            self.dropped_oldest
            + self.dropped_newest
            + self.skipped
            + self.conflated
            + self.disconnected
        )


def add_stats(total: dict[str, float], stats: SubscriberStats) -> None:
    """Accumulate one subscriber's counters into ``total``."""
    for name in _SUMMED:
        total[name] = total.get(name, 0) + getattr(stats, name)
