"""Exact loss counting at a receiver, from each publishing hub's sequence numbers.

Theory of operation
-------------------
Redis pub/sub delivers at most once and says nothing about what it dropped. Each hub
numbers the messages it publishes 1, 2, 3, ... within an *epoch* (one run of its
backplane), so a receiver that last saw ``n`` from a hub and now sees ``n + k`` has
lost ``k - 1``. A loss at the tail of a stream has no later message to reveal it; the
hub's periodic heartbeat carries the highest number it has settled, which reveals it.

Counting starts at the first message or heartbeat a receiver hears from a hub's
epoch: what that hub published before is not this receiver's loss. A later epoch of
a hub already known is a restart, and its sequence numbers the receiver missed from 1
on are counted. Anything at or below what was already seen (an older epoch, a repeat)
is stale and is not delivered.
"""

from __future__ import annotations

__all__ = ["STALE", "GapCounter"]

STALE = -1
"""Returned by :meth:`GapCounter.data` for a message that must not be delivered."""


class GapCounter:
    """Per publishing hub: the epoch and the highest sequence number seen or settled."""

    __slots__ = ("_streams", "lost")

    def __init__(self) -> None:
        self._streams: dict[str, tuple[int, int]] = {}
        self.lost = 0
        """Messages found missing so far, over every hub."""

    @property
    def peers(self) -> int:
        """Hubs heard from."""
        return len(self._streams)

    def last(self, hub_id: str) -> tuple[int, int] | None:
        """``(epoch, seq)`` last seen or settled from ``hub_id``, if heard from."""
        return self._streams.get(hub_id)

    def data(self, hub_id: str, epoch: int, seq: int) -> int:
        """Account for data message ``seq``; return how many before it were lost, or STALE."""
        stream = self._streams.get(hub_id)
        if stream is None:
            self._streams[hub_id] = (epoch, seq)
            return 0
        known_epoch, last = stream
        if epoch == known_epoch:
            if seq <= last:
                return STALE
            lost = seq - last - 1
        elif epoch > known_epoch:
            lost = seq - 1
        else:
            return STALE
        self._streams[hub_id] = (epoch, seq)
        self.lost += lost
        return lost

    def heartbeat(self, hub_id: str, epoch: int, settled: int) -> int:
        """Account for a heartbeat; return how many messages it reveals as lost."""
        stream = self._streams.get(hub_id)
        if stream is None:
            self._streams[hub_id] = (epoch, settled)
            return 0
        known_epoch, last = stream
        if epoch == known_epoch:
            if settled <= last:
                return 0
            lost = settled - last
        elif epoch > known_epoch:
            lost = settled
        else:
            return 0
        self._streams[hub_id] = (epoch, settled)
        self.lost += lost
        return lost
