"""The built-in policies, exported by ``wsfanout.policies``.

Each is an attrs frozen class whose validators name the parameter and the value, whose
``rules()`` the core enforces without calling back, and whose ``guarantees()`` say
what ``wsfanout.testing`` may hold it to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from .decision import NEUTRAL, Close, Decision
from .errors import PolicyError, invalid
from .guarantees import (
    BatchIntegrity,
    Bounded,
    DisconnectsWithin,
    FoldedPerKey,
    GapsAnnounced,
    Guarantee,
    Lossless,
    MaxSendRate,
    NewestDelivered,
)
from .notices import NOTICE_FORMATS, GapNotice, check_notice_format
from .policy import Policy
from .reducers import REDUCERS, Reduce, reducer
from .rules import Arrival, BatchRule, Overflow, Rules
from .snapshot import Snapshot
from .validate import check_close, duration, optional_duration, optional_size, positive_rate, size

__all__ = [
    "COMBINERS",
    "REDUCERS",
    "DEFAULT_POLICY",
    "Batch",
    "ConflateByKey",
    "Disconnect",
    "DropNewest",
    "DropOldest",
    "Notify",
    "SkipToLatest",
    "Throttle",
]


@attrs.frozen(repr=False)
class _Dropping(Policy):
    """A bound in messages and bytes, and what to drop past it: the subclass's choice."""

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    eager = True
    _overflow: ClassVar[Overflow]

    def rules(self) -> Rules:
        return Rules(
            max_messages=self.max_messages, max_bytes=self.max_bytes, overflow=self._overflow
        )

    def guarantees(self) -> tuple[Guarantee, ...]:
        return _bounded(self.max_messages, self.max_bytes)


@attrs.frozen(repr=False)
class DropOldest(_Dropping):
    """When the queue is full, evict the oldest queued messages until the new one fits."""

    _overflow = Overflow.DROP_OLDEST


@attrs.frozen(repr=False)
class DropNewest(_Dropping):
    """When the queue is full, refuse the incoming message; what is queued stays."""

    _overflow = Overflow.DROP_NEWEST


@attrs.frozen(repr=False)
class SkipToLatest(Policy):
    """When behind, keep only the newest message: each arrival replaces what is queued."""

    eager = True

    def rules(self) -> Rules:
        return Rules(arrival=Arrival.SKIP_TO_LATEST)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (NewestDelivered(),)


def _check_reduce(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        reducer(value)  # type: ignore[arg-type]


@attrs.frozen(repr=False)
class ConflateByKey(Policy):
    """Keep one queued message per ``key``; messages without a key queue normally.

    By default the newest update of a key replaces the queued one. With ``reduce``, it
    is merged into it instead: ``"json-merge"``, ``"sum"``, ``"max"`` (see
    :data:`REDUCERS`) or a function ``(older, newer) -> merged`` of the values as the
    client receives them (``str`` or ``bytes``), so the value sent for a key is the fold
    of every update since the key was last sent. The bound caps distinct keys and
    unkeyed messages together; what happens past it is the overflow rule of another
    stage (``DropOldest``/``DropNewest``) or, by default, closing the subscriber.
    """

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    reduce: str | Reduce | None = attrs.field(default=None, validator=_check_reduce)
    eager = True

    def rules(self) -> Rules:
        return Rules(
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            arrival=Arrival.CONFLATE_BY_KEY,
            reduce=None if self.reduce is None else reducer(self.reduce),
        )

    def guarantees(self) -> tuple[Guarantee, ...]:
        promises = (*_bounded(self.max_messages, self.max_bytes), NewestDelivered(per_key=True))
        if self.reduce is not None:
            promises += (FoldedPerKey(self.reduce),)
        return promises


def _lines(payloads: Sequence[bytes]) -> bytes:
    return b"\n".join(payloads)


def _json_array(payloads: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(payloads) + b"]"


COMBINERS: dict[str, Callable[[Sequence[bytes]], bytes]] = {
    "lines": _lines,
    "json-array": _json_array,
}
"""Named ways to join a batch's payloads into one frame's payload."""


def _check_combine(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, str):
        if value not in COMBINERS:
            raise invalid(
                "combine", value, f"is not a known combiner (expected one of {sorted(COMBINERS)})"
            )
    elif not callable(value):
        raise invalid("combine", value, "must be a combiner name or a callable")


@attrs.frozen(repr=False)
class Batch(Policy):
    """Send up to ``max_messages`` queued messages (at most ``max_bytes``) as one frame.

    ``combine`` joins the payloads: ``"lines"`` (default) puts a newline between them,
    ``"json-array"`` makes a JSON array of JSON messages, or pass a function of a list
    of payload bytes. Only messages of one kind (text or binary) share a frame. With
    ``max_delay`` the first message waits up to that long for the batch to fill, also
    for a subscriber that keeps up; a full batch leaves at once.
    """

    max_messages: int = attrs.field(default=16, validator=size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    max_delay: float = attrs.field(default=0.0, validator=duration)
    combine: str | Callable[[Sequence[bytes]], bytes] = attrs.field(
        default="lines", validator=_check_combine
    )

    @property
    def eager(self) -> bool:  # type: ignore[override]
        return self.max_delay == 0

    def rules(self) -> Rules:
        combine = COMBINERS[self.combine] if isinstance(self.combine, str) else self.combine
        return Rules(batch=BatchRule(self.max_messages, self.max_bytes, combine))

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (BatchIntegrity(self.max_messages, self.max_bytes, self.combine), Lossless())

    reads = frozenset(["now", "lag", "queued_messages", "queued_bytes"])

    def decide(self, snapshot: Snapshot) -> Decision:
        # An empty queue is the fast path asking about a message that is about to be queued:
        # it lingers too, or a subscriber that keeps up would never see a batch.
        if self.max_delay == 0:
            return NEUTRAL
        full = snapshot.queued_messages >= self.max_messages or (
            self.max_bytes is not None and snapshot.queued_bytes >= self.max_bytes
        )
        if full:
            return NEUTRAL
        return Decision(
            send_at=snapshot.now - snapshot.lag + self.max_delay,
            recheck_messages=self.max_messages,
            recheck_bytes=self.max_bytes if self.max_bytes is not None else math.inf,
        )


@attrs.frozen(repr=False)
class Throttle(Policy):
    """At most ``rate`` frames per second to this subscriber.

    With ``SkipToLatest`` or ``ConflateByKey`` this caps a client's update frequency
    while it always ends on the newest value.
    """

    rate: float = attrs.field(validator=positive_rate)

    reads = frozenset(["last_send"])

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.last_send is None:
            return NEUTRAL
        return Decision(send_at=snapshot.last_send + 1.0 / self.rate)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (MaxSendRate(self.rate), Lossless())


def _check_reason(instance: Disconnect, attribute: attrs.Attribute[str], value: str) -> None:
    check_close(instance.code, value)


@attrs.frozen(repr=False)
class Disconnect(Policy):
    """Close a subscriber that is too far behind for longer than ``grace`` seconds.

    Behind means any given threshold is crossed: more than ``max_messages`` or
    ``max_bytes`` queued, the oldest queued message ``max_lag`` seconds old, or more
    than ``max_buffer`` bytes in the transport's write buffer. A hiccup shorter than
    ``grace`` is forgiven. The close code (1013, "try again later", by default) tells
    the client to reconnect later. These thresholds only watch; the queue's own bound
    (another stage's, or the default) still applies, so set them below it.
    """

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    max_lag: float | None = attrs.field(default=None, validator=optional_duration)
    max_buffer: int | None = attrs.field(default=None, validator=optional_size)
    grace: float = attrs.field(default=0.0, validator=duration)
    code: int = attrs.field(default=1013)
    reason: str = attrs.field(default="subscriber too slow", validator=_check_reason)

    def __attrs_post_init__(self) -> None:
        if (self.max_messages, self.max_bytes, self.max_lag, self.max_buffer) == (None,) * 4:
            raise PolicyError(
                "Disconnect() needs at least one of max_messages, max_bytes, max_lag, max_buffer"
            )

    @property
    def eager(self) -> bool:  # type: ignore[override]
        # An idle subscriber has nothing queued and no lag; only the buffer can be over.
        return self.max_buffer is None

    def _breach(self, s: Snapshot) -> str | None:
        if self.max_messages is not None and s.queued_messages > self.max_messages:
            return f"{s.queued_messages} messages queued > max_messages={self.max_messages}"
        if self.max_bytes is not None and s.queued_bytes > self.max_bytes:
            return f"{s.queued_bytes} bytes queued > max_bytes={self.max_bytes}"
        # Compare deadlines computed as recheck_at is (now - lag + max_lag), not durations:
        # at a large clock value the two round differently, and a recheck that finds no
        # breach at its own deadline would ask to be woken at that same instant forever.
        if self.max_lag is not None and s.queued_messages and s.now - s.lag + self.max_lag <= s.now:
            return f"lag {s.lag:.3f}s >= max_lag={self.max_lag}"
        if self.max_buffer is not None and s.write_buffer > self.max_buffer:
            return f"{s.write_buffer} bytes in write buffer > max_buffer={self.max_buffer}"
        return None

    reads = frozenset(["now", "lag", "queued_messages", "queued_bytes", "write_buffer", "memo"])

    @property
    def steady(self) -> bool:  # type: ignore[override]
        # Every breach but max_buffer is of a bound a write only moves away from.
        return self.max_buffer is None

    def decide(self, snapshot: Snapshot) -> Decision:
        breach = self._breach(snapshot)
        if breach is None:
            recheck_at = math.inf
            if self.max_lag is not None and snapshot.queued_messages:
                recheck_at = snapshot.now - snapshot.lag + self.max_lag
            return Decision(
                recheck_at=recheck_at,
                recheck_messages=math.inf if self.max_messages is None else self.max_messages + 1,
                recheck_bytes=math.inf if self.max_bytes is None else self.max_bytes + 1,
            )
        # The memo is when the breach began: an int on a virtual clock counting whole seconds.
        since = snapshot.memo if isinstance(snapshot.memo, (int, float)) else snapshot.now
        if since + self.grace <= snapshot.now:  # as recheck_at below, for the same reason
            held = f" for {snapshot.now - since:.3f}s" if self.grace else ""
            return Decision(close=Close(self.code, self.reason, cause=breach + held))
        return Decision(recheck_at=since + self.grace, memo=since)

    def guarantees(self) -> tuple[Guarantee, ...]:
        within = DisconnectsWithin(
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            max_lag=self.max_lag,
            max_buffer=self.max_buffer,
            grace=self.grace,
        )
        return (within, Lossless())


@attrs.frozen(repr=False)
class Notify(Policy):
    """Tell the client what it missed, in a gap notice before the next message it gets.

    Every message this subscriber loses (dropped, skipped, conflated) is announced
    exactly once, one notice per topic, with the lost offsets, the counts by reason and
    the conflated keys (docs/protocol.md, "Gap notices"). ``format`` is how a notice is
    written in the ``raw`` framing: ``"json"`` (the default: the protocol's JSON object
    as a Text frame), ``"json-binary"``, or a function of a :class:`GapNotice` returning
    the ``str`` or ``bytes`` to send. A ``wsfanout.v1`` subscriber always gets the
    protocol's JSON. Compose it with the stages that lose messages:
    ``DropOldest(max_messages=256) | Notify()``.
    """

    format: str | Callable[[GapNotice], str | bytes] = attrs.field(
        default="json", validator=check_notice_format
    )
    eager = True

    def rules(self) -> Rules:
        notify = NOTICE_FORMATS[self.format] if isinstance(self.format, str) else self.format
        return Rules(notify=notify)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (GapsAnnounced(self.format),)


def _bounded(max_messages: int | None, max_bytes: int | None) -> tuple[Guarantee, ...]:
    if max_messages is None and max_bytes is None:
        return ()  # the default bound applies, and every policy is checked against it
    return (Bounded(max_messages=max_messages, max_bytes=max_bytes),)


DEFAULT_POLICY: Policy = Disconnect(max_lag=30.0)
"""The policy of a subscriber that names none: lossless within the default bound
(1024 messages, 1 MiB), closed with 1013 past it or when 30 s behind. Losing nothing
silently is the safest default; choose a dropping policy where loss is acceptable."""
