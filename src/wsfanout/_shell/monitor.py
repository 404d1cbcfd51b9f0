"""What a hub records for operators, and the read-only view they read it through.

The hub's counters live where they are counted (each subscriber's outbox); what
outlives a subscriber is kept by the hub's :class:`Ledger`: the counters of the
subscribers gone, summed per policy name, how each one ended, a bounded ring of the
last ones, and the latency histograms. :class:`HubMonitor` (``hub.monitor``) reads
both at any moment and sums them per policy name, so a metrics scrape or a status
page costs one pass over the connected subscribers and nothing on the fast path.

Policy names are the labels of everything here: the name a route or the application
declared (``Hub.serve(..., policy_name="chat")``), ``"default"`` for the hub's own
policy, ``"custom"`` for a policy given without a name. They are as many as the
application declares, whatever the number of subscribers.

Timings cost two clock reads and a ``bisect`` per publish (about 0.3 µs; a clock read
more per loop iteration that corked frames), and a ``bisect`` per message a relay
writes; a hub records them from ``start_timings()`` on, which metrics and the admin
listener call, so a hub nobody observes pays nothing.
"""

from __future__ import annotations

import bisect
import collections
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from .._core.histogram import PUBLISH_BOUNDS, QUEUE_WAIT_BOUNDS, Buckets, Timings
from .._core.message import Batched, Message
from .._core.stats import SUMMED, ClosedSubscriber, PolicyStats, SubscriberStats, add_stats

if TYPE_CHECKING:
    from .fanout import Fanout
    from .link import Link

__all__ = ["CORKED_LIMIT", "HubMonitor", "Ledger", "Timing", "ending"]

CLOSED = State.CLOSED

_ROW = (
    *SUMMED,
    "subscribers",
    "behind",
    "write_buffer",
    "max_lag",
    "closed",
    "live",
    "steps_up",
    "steps_down",
    "stepped_up",
    "unacked",
)
"""What ``HubMonitor.policies`` adds up per policy name over the connected subscribers."""

# HubMonitor.policies reads each counter in place, by position: a counter added to
# Counts must be added there too.
assert SUMMED == (
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
), SUMMED

CORKED_LIMIT = 65536
"""Most publishes of one loop iteration whose corked frames are timed at the iteration's
end; later ones in a longer burst are timed when their publish returns (a lower bound)."""


class Timing:
    """The latency histograms' accumulators; see :class:`~wsfanout.metrics.Timings`.

    Publishes are timed on :data:`clock` (``time.perf_counter``), not on the loop's
    clock, which uvloop only advances between iterations; queue waits, on the loop's
    clock, which stamped the messages.
    """

    __slots__ = ("corked", "publish", "queue_wait", "sent_before", "to_write")

    clock = staticmethod(time.perf_counter)

    def __init__(self, sent_before: dict[str, int]) -> None:
        self.sent_before = sent_before
        """Per policy name: messages sent before timing began (not the fast path's zeros)."""
        self.publish = Buckets(PUBLISH_BOUNDS)
        self.to_write = Buckets(PUBLISH_BOUNDS)
        self.corked: list[float] = []
        """Start times of this iteration's publishes whose frames some link holds corked."""
        self.queue_wait: dict[str, Buckets] = {}
        """Per policy name: waits of the messages the relays wrote (the fast path's are
        zeros, added when read)."""

    def published(self, start: float, corked: bool) -> None:
        """A publish that began at ``start`` (on :data:`clock`) returns; ``corked``: some
        frames wait for the iteration's end (the corker then calls :meth:`flushed`)."""
        duration = time.perf_counter() - start
        # Once per publish: Buckets.observe written out, the bucket found once for both.
        publish = self.publish
        index = bisect.bisect_left(publish.bounds, duration)
        publish.counts[index] += 1
        publish.sum += duration
        if corked and len(self.corked) < CORKED_LIMIT:
            self.corked.append(start)
        else:
            to_write = self.to_write
            to_write.counts[index] += 1  # the same bounds
            to_write.sum += duration

    def flushed(self) -> None:
        """The corked frames of this iteration have left."""
        now = time.perf_counter()
        observe = self.to_write.observe
        for start in self.corked:
            observe(now - start)
        self.corked.clear()

    def left_queue(self, policy_name: str, frames: tuple[Message, ...], now: float) -> None:
        """A relay wrote ``frames`` at ``now``: how long each message in them waited."""
        buckets = self.queue_wait.get(policy_name)
        if buckets is None:
            buckets = self.queue_wait[policy_name] = Buckets(QUEUE_WAIT_BOUNDS)
        observe = buckets.observe
        for frame in frames:
            if frame.control:
                continue  # no message: control frames are counted as none
            if type(frame) is Batched:
                for part in frame.parts:
                    observe(now - part.time)
            else:
                observe(now - frame.time)


def ending(websocket: Connection, stats: SubscriberStats) -> tuple[str, int | None, str]:
    """How a released subscriber ended: ``(ended, code, cause)`` (see ClosedSubscriber),
    from its final statistics and its connection."""
    close = stats.close
    if close is not None:
        return str(close.code), close.code, close.cause or close.reason or "closed by wsfanout"
    protocol = websocket.protocol
    received, sent = protocol.close_rcvd, protocol.close_sent
    if received is not None and (sent is None or protocol.close_rcvd_then_sent):
        return "client", received.code, received.reason or "the client closed the connection"
    if sent is not None:
        return "app", sent.code, sent.reason or "the application closed the connection"
    if protocol.state is CLOSED:
        return "lost", None, "connection lost without a closing handshake"
    return "app", None, "the application ended the subscription"


def _remote(link: Link) -> str:
    address = link.websocket.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return "" if address is None else str(address)


def _path(link: Link) -> str:
    request = getattr(link.websocket, "request", None)
    return "" if request is None else urllib.parse.urlsplit(request.path).path


class Ledger:
    """What a hub keeps about subscribers beyond their own outboxes (internal)."""

    __slots__ = ("closed_by_policy", "closes", "live", "recent", "released", "retired")

    def __init__(self, live: set[Link], *, closed_history: int) -> None:
        self.live = live
        """The hub's links not yet released (the hub's own set, read here)."""
        self.retired: dict[str, dict[str, float]] = {}
        """Per policy name: the counters of the subscribers released, summed."""
        self.closed_by_policy: dict[str, int] = {}
        self.released: dict[str, int] = {}
        self.closes: dict[str, dict[str, int]] = {}
        """Per policy name: how many ended each way (see :func:`ending`)."""
        self.recent: collections.deque[ClosedSubscriber] = collections.deque(maxlen=closed_history)

    def retire(self, link: Link, now: float) -> None:
        """``link`` is released: keep its counters and how it ended."""
        outbox = link.outbox
        stats = outbox.stats(now)
        name = link.policy_name
        retired = self.retired.setdefault(name, {})
        add_stats(retired, stats)
        if stats.steps_up:  # a ladder's steps: kept beside the counters that add up
            retired["steps_up"] = retired.get("steps_up", 0) + stats.steps_up
            retired["steps_down"] = retired.get("steps_down", 0) + stats.steps_down
        self.released[name] = self.released.get(name, 0) + 1
        if outbox.closed_by_policy:
            self.closed_by_policy[name] = self.closed_by_policy.get(name, 0) + 1
        ended, code, cause = ending(link.websocket, stats)
        closes = self.closes.setdefault(name, {})
        closes[ended] = closes.get(ended, 0) + 1
        if self.recent.maxlen:
            self.recent.append(
                ClosedSubscriber(
                    id=str(link.websocket.id),
                    remote=_remote(link),
                    path=_path(link),
                    policy_name=name,
                    closed_at=time.time(),
                    ended=ended,
                    code=code,
                    cause=cause,
                    stats=stats,
                )
            )

    def retired_total(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for counts in self.retired.values():
            for field, value in counts.items():
                total[field] = total.get(field, 0) + value
        return total


class HubMonitor:
    """A hub's observations per policy name, for metrics, status pages and logs.

    Obtain it as :attr:`Hub.monitor`. Every method reads the hub at the moment it is
    called, in one pass over the connected subscribers; nothing is counted per message
    on the fast path. It may be read from another thread (prometheus_client's own HTTP
    server): it copies what it iterates, so its figures are at most a moment apart.
    """

    __slots__ = ("_allowed", "_fanout", "_ledger", "_notsent_lowat", "_notsent_lowat_supported")

    def __init__(
        self,
        fanout: Fanout,
        ledger: Ledger,
        *,
        timings: bool | None = None,
        notsent_lowat: int | None = None,
        notsent_lowat_supported: bool = False,
    ) -> None:
        self._fanout = fanout
        self._ledger = ledger
        # The hub's TCP_NOTSENT_LOWAT, the same for every policy name: PolicyStats is
        # a HubStats and reports it as Hub.stats() does.
        self._notsent_lowat = notsent_lowat
        self._notsent_lowat_supported = notsent_lowat_supported
        self._allowed = timings is not False

    def __repr__(self) -> str:
        return f"<HubMonitor {len(self._ledger.live)} subscribers>"

    def _now(self) -> float:
        loop = self._fanout.loop
        return 0.0 if loop is None else loop.time()

    def policies(self) -> dict[str, PolicyStats]:
        """Counters and gauges per policy name, subscribers present and past, sorted by name."""
        ledger = self._ledger
        now = self._now()
        rows: dict[str, list[float]] = {}
        # Each connected subscriber's counters read in place (a SubscriberStats apiece
        # costs several times more at scrape time), in _ROW's order.
        for link in list(ledger.live):
            row = rows.get(link.policy_name)
            if row is None:
                row = rows[link.policy_name] = [0] * len(_ROW)
            outbox = link.outbox
            queue = outbox.queue
            queued = len(queue)
            row[0] += outbox.offered
            row[1] += outbox.sent
            row[2] += outbox.frames
            row[3] += outbox.batched
            row[4] += queue.dropped_oldest
            row[5] += queue.dropped_newest
            row[6] += queue.skipped
            row[7] += queue.conflated
            row[8] += outbox.disconnected
            row[9] += queued
            row[10] += queue.bytes
            row[11] += link.attached
            row[12] += queued > 0
            row[13] += link.transport.get_write_buffer_size() + link.held_bytes
            row[14] = max(row[14], outbox.lag(now))
            row[15] += outbox.closed_by_policy
            row[16] += 1
            if outbox.steps_up:  # a ladder that ever stepped (a step down follows one up)
                row[17] += outbox.steps_up
                row[18] += outbox.steps_down
                row[19] += outbox.level > 0
            acks = outbox.acks
            if acks is not None:
                row[20] += acks.unacked or 0
        result = {}
        for name in sorted(set(rows) | set(ledger.retired)):
            live = dict(zip(_ROW, rows.get(name, [0] * len(_ROW)), strict=True))
            retired = ledger.retired.get(name, {})
            summed: dict[str, Any] = {
                field: int(live[field] + retired.get(field, 0)) for field in SUMMED
            }
            result[name] = PolicyStats(
                subscribers=int(live["subscribers"]),
                behind=int(live["behind"]),
                write_buffer=int(live["write_buffer"]),
                max_lag=live["max_lag"],
                closed_by_policy=ledger.closed_by_policy.get(name, 0) + int(live["closed"]),
                opened=ledger.released.get(name, 0) + int(live["live"]),
                closes=tuple(sorted(ledger.closes.get(name, {}).items())),
                steps_up=int(live["steps_up"] + retired.get("steps_up", 0)),
                steps_down=int(live["steps_down"] + retired.get("steps_down", 0)),
                stepped_up=int(live["stepped_up"]),
                unacked=int(live["unacked"]),
                notsent_lowat=self._notsent_lowat,
                notsent_lowat_supported=self._notsent_lowat_supported,
                **summed,
            )
        return result

    @property
    def closed(self) -> tuple[ClosedSubscriber, ...]:
        """The subscribers released most recently, oldest first, at most
        ``Hub(closed_history=...)`` of them."""
        return tuple(self._ledger.recent)

    def start_timings(self) -> bool:
        """Record the latency histograms from now on (idempotent); False if the hub was
        made with ``timings=False``. Metrics and the admin listener call it."""
        fanout = self._fanout
        if fanout.timing is None and self._allowed:
            sent = {name: stats.sent for name, stats in self.policies().items()}
            fanout.timing = fanout.corker.timing = Timing(sent)
        return fanout.timing is not None

    def timings(self, *, policies: dict[str, PolicyStats] | None = None) -> Timings | None:
        """The latency histograms since :meth:`start_timings`, or None before it.

        ``policies``, what :meth:`policies` returned just before, saves reading every
        subscriber again (the fast path's share of ``queue_wait`` comes from it).
        """
        timing = self._fanout.timing
        if timing is None:
            return None
        if policies is None:
            policies = self.policies()
        sent = {
            name: stats.sent - timing.sent_before.get(name, 0) for name, stats in policies.items()
        }
        waits = {}
        for name in sorted(set(sent) | set(timing.queue_wait)):
            buckets = timing.queue_wait.get(name)
            observed = (buckets or Buckets(QUEUE_WAIT_BOUNDS)).histogram()
            # Every message sent and not written by a relay was written on the fast path.
            waits[name] = observed.with_zeros(sent.get(name, 0) - observed.count)
        return Timings(
            publish=timing.publish.histogram(),
            publish_to_write=timing.to_write.histogram(),
            queue_wait=waits,
        )
