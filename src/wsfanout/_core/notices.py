"""Gap notices: what a subscriber lost, announced in-band before the next message it gets.

Theory of operation
-------------------
A policy with a ``Notify`` stage declares a notice format in its queue rules
(``Rules.notify``), and its subscriber's queue then keeps a :class:`GapLedger`. The
queue records there every message it evicts, refuses, skips or conflates, which are
the only ways a message is lost while a subscriber is open; nothing else touches the
ledger, so a subscriber that loses nothing pays nothing. While the ledger holds a
loss the outbox keeps the fast path off, as it does for the control lane, and the
next time it may write it turns the ledger into one :class:`GapNotice` per topic (in
the order of the topics' first losses), written as control frames ahead of any
message: each loss is announced once, before any later message (docs/protocol.md,
"Gap notices").

The ledger keeps each topic's lost offsets as ranges, not one by one: a stalled
subscriber under ``DropOldest`` loses consecutive offsets, which stay one range
however long it stalls. Ranges split only around messages still queued, so what the
ledger holds is bounded by the queue; its :attr:`GapLedger.weight` estimates the
notices' size in bytes, which the outbox holds to the queue's byte bound as it holds
the control lane.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .errors import invalid
from .frames import OP_BINARY, OP_TEXT, encode_frame
from .message import CONTROL_SEQ, Message

if TYPE_CHECKING:
    from .deflate import DeflateParams

__all__ = [
    "CONFLATED",
    "DROPPED_NEWEST",
    "DROPPED_OLDEST",
    "HISTORY",
    "NOTICE_FORMATS",
    "REASONS",
    "SKIPPED",
    "GapLedger",
    "GapNotice",
    "Notice",
    "NoticeFormat",
    "check_notice_format",
    "notice_json",
]

DROPPED_OLDEST = "dropped_oldest"
DROPPED_NEWEST = "dropped_newest"
SKIPPED = "skipped"
CONFLATED = "conflated"
HISTORY = "history"
REASONS = (DROPPED_OLDEST, DROPPED_NEWEST, SKIPPED, CONFLATED, HISTORY)
"""Why a message was lost, as a notice's ``reasons`` name it (the first four are the
counters of ``SubscriberStats``; ``history``: not in history when resuming)."""


def _ranges(value: object) -> tuple[tuple[int, int], ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"ranges={value!r} must be a sequence of (first, last) pairs")
    result = tuple((int(first), int(last)) for first, last in value)
    previous = None
    for first, last in result:
        if first > last or (previous is not None and first <= previous + 1):
            raise ValueError(
                f"ranges={list(result)!r} must be ascending, disjoint, non-adjacent "
                "(first, last) pairs with first <= last"
            )
        previous = last
    return result


def _reasons(value: Mapping[str, int]) -> dict[str, int]:
    result = dict(value)
    for name, count in result.items():
        if name not in REASONS:
            raise ValueError(f"reasons has {name!r}, which is not one of {list(REASONS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"reasons[{name!r}]={count!r} must be an int >= 1")
    return result


def _keys(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"keys={value!r} must be a collection of str, not a single str")
    return tuple(value)


@attrs.frozen
class GapNotice:
    """The messages of one topic a subscriber lost: their offsets, how and which keys.

    ``topic`` is ``""`` for messages published without one; ``ranges`` are the lost
    offsets as ascending inclusive ``(first, last)`` pairs; ``reasons`` counts them by
    reason (:data:`REASONS`); ``keys`` are the keys whose older updates were conflated.
    A custom notice format receives this value.
    """

    topic: str
    epoch: str
    ranges: tuple[tuple[int, int], ...] = attrs.field(converter=_ranges)
    reasons: dict[str, int] = attrs.field(converter=_reasons)
    keys: tuple[str, ...] = attrs.field(default=(), converter=_keys)

    @property
    def count(self) -> int:
        """How many messages were lost: the sum of the ranges' lengths."""
        return sum(last - first + 1 for first, last in self.ranges)

    def as_dict(self) -> dict[str, Any]:
        """The notice as docs/protocol.md writes it: ``type``, ``t`` (unless ``""``),
        ``e``, ``ranges``, ``count``, ``reasons`` and ``keys`` (when some were conflated)."""
        value: dict[str, Any] = {"type": "gap"}
        if self.topic:
            value["t"] = self.topic
        value["e"] = self.epoch
        value["ranges"] = [list(pair) for pair in self.ranges]
        value["count"] = self.count
        value["reasons"] = dict(self.reasons)
        if self.keys:
            value["keys"] = list(self.keys)
        return value


def notice_json(notice: GapNotice) -> str:
    """The default format: the notice as one compact JSON object (a Text frame)."""
    return json.dumps(notice.as_dict(), ensure_ascii=False, separators=(",", ":"))


def _notice_json_binary(notice: GapNotice) -> bytes:
    return notice_json(notice).encode()


NoticeFormat = Callable[[GapNotice], "str | bytes"]
"""How a notice is written: a function from a :class:`GapNotice` to the ``str`` (a Text
frame) or ``bytes`` (a Binary frame) sent in the ``raw`` framing."""

NOTICE_FORMATS: dict[str, NoticeFormat] = {
    "json": notice_json,
    "json-binary": _notice_json_binary,
}
"""Named notice formats: ``"json"`` (docs/protocol.md's object, as a Text frame) and
``"json-binary"`` (the same bytes as a Binary frame)."""


def check_notice_format(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: a name of :data:`NOTICE_FORMATS`, or a callable."""
    if isinstance(value, str):
        if value not in NOTICE_FORMATS:
            raise invalid(
                "format",
                value,
                f"is not a notice format (expected one of {sorted(NOTICE_FORMATS)})",
            )
    elif not callable(value):
        raise invalid("format", value, "must be a notice format name or a callable")


class Notice(Message):
    """A control frame that carries a gap notice: its payload is the notice in the
    stage's format; a ``wsfanout.v1`` subscriber gets the protocol's JSON as Text."""

    __slots__ = ("notice",)

    notice: GapNotice

    def __init__(self, notice: GapNotice, data: str | bytes, *, time: float) -> None:
        if isinstance(data, str):
            opcode, payload = OP_TEXT, data.encode()
        elif isinstance(data, bytes):
            opcode, payload = OP_BINARY, data
        else:
            raise TypeError(f"a notice format must return str or bytes, not {type(data).__name__}")
        super().__init__(opcode, payload, seq=CONTROL_SEQ, time=time, control=True)
        self.notice = notice

    @property
    def v1_opcode(self) -> int:
        return OP_TEXT

    @property
    def v1_payload(self) -> bytes:
        return notice_json(self.notice).encode()

    def v1_frame(self, params: DeflateParams | None = None) -> bytes:
        payload = self.v1_payload
        return encode_frame(OP_TEXT, payload) if params is None else params.frame(OP_TEXT, payload)

    def __repr__(self) -> str:
        return f"<Notice {notice_json(self.notice)}>"


# Estimated JSON bytes of a notice's parts, for the ledger's weight: what a notice costs
# before its topic, epoch and keys, and what each further range adds.
_NOTICE_BYTES = 72
_RANGE_BYTES = 24


class _Lost:
    """One topic's losses since the last notice: ranges as parallel sorted lists."""

    __slots__ = ("ends", "keys", "reasons", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.reasons: dict[str, int] = {}
        self.keys: dict[str, None] = {}

    def add(self, offset: int) -> int:
        """Add one lost offset; return how many ranges that added (-1, 0 or 1)."""
        starts, ends = self.starts, self.ends
        if ends and offset == ends[-1] + 1:  # the common case: the next one lost
            ends[-1] = offset
            return 0
        if not ends or offset > ends[-1] + 1:
            starts.append(offset)
            ends.append(offset)
            return 1
        i = bisect_right(starts, offset)
        if i and ends[i - 1] >= offset:
            return 0  # already recorded: a message is lost once
        joins_left = i > 0 and ends[i - 1] + 1 == offset
        joins_right = i < len(starts) and starts[i] - 1 == offset
        if joins_left and joins_right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
            return -1
        if joins_left:
            ends[i - 1] = offset
        elif joins_right:
            starts[i] = offset
        else:
            starts.insert(i, offset)
            ends.insert(i, offset)
            return 1
        return 0


class GapLedger:
    """Losses not yet announced, per topic and epoch, in the order of first loss.

    :meth:`record` is called by the queue for each message it loses; :meth:`take`
    empties the ledger into notices. ``weight`` is 0 exactly when nothing is pending.
    """

    __slots__ = ("_lost", "weight")

    def __init__(self) -> None:
        self._lost: dict[tuple[str, str], _Lost] = {}
        self.weight = 0
        """About how many bytes the pending notices take in JSON; 0 when none."""

    def __bool__(self) -> bool:
        return self.weight > 0

    def record(self, message: Message, reason: str) -> None:
        """``message`` was lost for ``reason`` (one of :data:`REASONS`)."""
        topic = message.topic or ""
        place = (topic, message.epoch)
        lost = self._lost.get(place)
        if lost is None:
            lost = self._lost[place] = _Lost()
            self.weight += _NOTICE_BYTES + len(topic) + len(message.epoch)
        offset = message.offset
        ends = lost.ends
        if ends and offset == ends[-1] + 1:  # the next one lost: the range grows
            ends[-1] = offset
        else:
            self.weight += _RANGE_BYTES * lost.add(offset)
        reasons = lost.reasons
        reasons[reason] = reasons.get(reason, 0) + 1
        key = message.key
        if reason == CONFLATED and key is not None and key not in lost.keys:
            lost.keys[key] = None
            self.weight += len(key) + 3

    def take(self) -> list[GapNotice]:
        """The pending notices, one per topic in order of first loss; the ledger empties."""
        notices = [
            GapNotice(
                topic,
                epoch,
                tuple(zip(lost.starts, lost.ends, strict=True)),
                {reason: lost.reasons[reason] for reason in REASONS if reason in lost.reasons},
                tuple(lost.keys),
            )
            for (topic, epoch), lost in self._lost.items()
        ]
        self.clear()
        return notices

    def clear(self) -> None:
        """Forget what is pending (the subscriber is closing: no notice can reach it)."""
        self._lost = {}
        self.weight = 0
