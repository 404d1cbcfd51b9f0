"""Delivery guarantees as values: what a policy promises about what one subscriber receives.

A policy lists its promises in :meth:`Policy.guarantees`; ``wsfanout.testing`` checks
them by running the policy through schedules of publishes, stalls and time jumps.
These values live in the core (no hypothesis needed) so a policy module can declare
them without depending on the test toolkit.

How ``a | b`` derives its guarantees
------------------------------------
A stage's promise carries over to a composition unless the composition's merged queue
rules let another stage remove what the promise says is delivered
(:meth:`Guarantee.survives`). Promises that *bound* something hold in any composition:
merging takes the tighter queue bound, the decision join takes the latest ``send_at``
and the first close, and only one stage may batch. Promises that something is
*delivered* (:class:`Lossless`, :class:`NewestDelivered`) hold only while no stage adds
an overflow rule that drops messages or an arrival rule that replaces them. The rule is
conservative: a composition may keep more than it derives, and a test can check more
with ``check_guarantees(..., also=[...])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .errors import PolicyError, invalid
from .notices import check_notice_format
from .validate import duration, optional_duration, optional_size, positive_rate, size

if TYPE_CHECKING:
    from .rules import Rules

__all__ = [
    "BatchIntegrity",
    "CountsAddUp",
    "DisconnectsWithin",
    "Drains",
    "GapsAnnounced",
    "Guarantee",
    "HeldWithin",
    "Lossless",
    "LosslessDelivered",
    "MaxDrops",
    "MaxSendRate",
    "NewestDelivered",
    "NoDuplicates",
    "OrderedSubsequence",
    "Resumes",
    "Bounded",
    "FoldedPerKey",
    "LevelBound",
    "StepsApart",
    "WithinWriteLimit",
    "code",
]


def code(value: object) -> str:
    """``repr`` that stays valid Python for infinities (``math.inf``)."""
    if isinstance(value, float) and math.isinf(value):
        return "math.inf" if value > 0 else "-math.inf"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(code(item) for item in value)
        if isinstance(value, tuple):
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        return f"[{inner}]"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(code(item) for item in value)) + "}" if value else "set()"
    if callable(value) and hasattr(value, "__qualname__"):
        return str(value.__qualname__)
    return repr(value)


class CodeRepr:
    """A repr that is construction code naming only the fields that differ from defaults."""

    __slots__ = ()

    def __repr__(self) -> str:
        args = []
        for field in attrs.fields(type(self)):  # type: ignore[arg-type]
            if not field.init or not field.repr:
                continue
            value = getattr(self, field.name)
            if field.default is attrs.NOTHING or value != field.default:
                args.append(f"{field.alias or field.name}={code(value)}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """hypothesis prints falsifying examples with this: the construction code."""
        printer.text(repr(self))


@attrs.frozen(repr=False)
class Guarantee(CodeRepr):
    """Base class of every guarantee: a frozen value naming one promise."""

    def survives(self, rules: Rules) -> bool:
        """Whether this promise, made by one stage, holds in a composition whose merged
        queue rules are ``rules``. Bounding promises always do (see the module docstring)."""
        return True


# -- what every policy gets, declared or not ---------------------------------------


@attrs.frozen(repr=False)
class OrderedSubsequence(Guarantee):
    """A subscriber receives a subsequence of what was published to it, in publish order."""


@attrs.frozen(repr=False)
class NoDuplicates(Guarantee):
    """No message reaches a subscriber twice."""


@attrs.frozen(repr=False)
class WithinWriteLimit(Guarantee):
    """Nothing is written while the write buffer is over the high-water mark, and the
    fast path writes only with the buffer at or under the low-water mark."""


@attrs.frozen(repr=False)
class Drains(Guarantee):
    """Liveness: once publishing stops and the client reads, everything still queued is
    delivered (or the subscriber is closed)."""


@attrs.frozen(repr=False)
class Resumes(Guarantee):
    """A client that reconnects with its positions is offered, before anything live,
    exactly the messages of each topic after its position that the history's bound
    keeps, in order, none it had already; the rest, up to the last published, is
    reported in a gap notice with its exact ranges, after a ``resume`` frame."""


@attrs.frozen(repr=False)
class CountsAddUp(Guarantee):
    """Statistics account for every message: ``offered == sent + dropped + queued``, and
    ``sent`` and ``frames`` match what was written."""


@attrs.frozen(repr=False)
class LosslessDelivered(Guarantee):
    """Every lossless message (``publish(..., lossless=True)``, ``Subscriber.send()``)
    reaches the subscriber, in publish order with the others and in a frame of its own,
    or the subscriber is closed: none is dropped, skipped, conflated or batched."""


@attrs.frozen(repr=False)
class Bounded(Guarantee):
    """The queue never holds more than ``max_messages`` messages or ``max_bytes`` payload
    bytes. Every policy has this with its resolved bound; a stage declares its own."""

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)

    def __attrs_post_init__(self) -> None:
        if self.max_messages is None and self.max_bytes is None:
            raise PolicyError("Bounded() needs max_messages or max_bytes")


@attrs.frozen(repr=False)
class HeldWithin(Guarantee):
    """What the server holds for a subscriber stays bounded, the kernel included: the
    queue's payload bytes, the write buffer and the bytes the kernel has not sent never
    exceed the queue's bound in bytes (``max_bytes``, or ``max_messages`` of the largest
    message offered, whichever is less), plus the high-water mark and the one frame
    that crossed it, plus the kernel's low-water mark (``TCP_NOTSENT_LOWAT``). Every
    policy has this with its resolved bound."""

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)

    def __attrs_post_init__(self) -> None:
        if self.max_messages is None and self.max_bytes is None:
            raise PolicyError("HeldWithin() needs max_messages or max_bytes")


# -- what a stage declares -----------------------------------------------------------


def _drops_nothing(rules: Rules) -> bool:
    from .rules import Overflow

    return rules.overflow in (None, Overflow.CLOSE)


@attrs.frozen(repr=False)
class Lossless(Guarantee):
    """Nothing is lost while the subscriber is open: it receives every message published
    to it, in order, up to the moment it is closed (closing is an event, not a loss)."""

    def survives(self, rules: Rules) -> bool:
        return _drops_nothing(rules) and rules.arrival is None


@attrs.frozen(repr=False)
class NewestDelivered(Guarantee):
    """An open subscriber that reads ends with the newest message published to it; with
    ``per_key``, the newest of each key (a message without a key is its own key)."""

    per_key: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def survives(self, rules: Rules) -> bool:
        from .rules import Arrival

        if not _drops_nothing(rules):
            return False
        return not self.per_key or rules.arrival in (None, Arrival.CONFLATE_BY_KEY)


def _check_combine(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not (isinstance(value, str) or callable(value)):
        raise invalid("combine", value, "must be a combiner name or a callable")


@attrs.frozen(repr=False)
class BatchIntegrity(Guarantee):
    """A frame carries at most ``max_messages`` consecutive queued messages of one kind
    (text or binary), at most ``max_bytes`` of payload when it carries more than one,
    and its payload is ``combine`` of theirs."""

    max_messages: int = attrs.field(validator=size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    combine: str | Callable[[Sequence[bytes]], bytes] = attrs.field(
        default="lines", validator=_check_combine
    )


@attrs.frozen(repr=False)
class MaxSendRate(Guarantee):
    """At most ``rate`` frames of messages per second: consecutive ones at least ``1 / rate``
    apart (control frames, which no policy holds back, are not counted)."""

    rate: float = attrs.field(validator=positive_rate)


@attrs.frozen(repr=False)
class DisconnectsWithin(Guarantee):
    """A subscriber past a threshold for longer than ``grace`` seconds is closed.

    Past a threshold means: more than ``max_messages`` or ``max_bytes`` queued, the
    oldest queued message ``max_lag`` seconds old, or, with messages queued, more than
    ``max_buffer`` bytes in the write buffer. An open subscriber is therefore never
    ``max_lag + grace`` seconds behind.
    """

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    max_lag: float | None = attrs.field(default=None, validator=optional_duration)
    max_buffer: int | None = attrs.field(default=None, validator=optional_size)
    grace: float = attrs.field(default=0.0, validator=duration)


@attrs.frozen(repr=False)
class GapsAnnounced(Guarantee):
    """Every message lost while the subscriber is open (dropped, skipped or conflated)
    is announced exactly once, in a gap notice written in ``format`` before any message
    published after it; announced counts add up to the subscriber's dropped count less
    ``disconnected``; there is no notice when nothing was lost."""

    format: str | Callable[..., str | bytes] = attrs.field(
        default="json", validator=check_notice_format
    )


def _check_count(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(attribute.name, value, "must be an int >= 0")


def _check_window(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise invalid(attribute.name, value, "must be a number of seconds > 0")


@attrs.frozen(repr=False)
class MaxDrops(Guarantee):
    """An open subscriber never has lost more than ``count`` messages (evicted, refused,
    skipped or conflated) within ``window`` seconds: one more and it is closed."""

    count: int = attrs.field(validator=_check_count)
    window: float = attrs.field(validator=_check_window)


# -- ladders and reducers --------------------------------------------------------------


@attrs.frozen(repr=False)
class StepsApart(Guarantee):
    """A ladder steps between levels at most once every ``hold`` seconds."""

    hold: float = attrs.field(validator=_check_window)


@attrs.frozen(repr=False)
class LevelBound(Guarantee):
    """The queue never holds more than the bound of the level in force (its rules
    resolved with the other stages'), however the level changes."""


def _check_reduce(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not (isinstance(value, str) or callable(value)):
        raise invalid("reduce", value, "must be a reducer name or a callable")


@attrs.frozen(repr=False)
class FoldedPerKey(Guarantee):
    """Each message written for a key is the fold by ``reduce``, in publish order, of
    every message published to the subscriber for that key since the key's last write:
    none lost, none twice, none out of order."""

    reduce: str | Callable[[Any, Any], Any] = attrs.field(validator=_check_reduce)

    def survives(self, rules: Rules) -> bool:
        from .reducers import reducer
        from .rules import Arrival

        return (
            _drops_nothing(rules)
            and rules.arrival is Arrival.CONFLATE_BY_KEY
            and rules.reduce is reducer(self.reduce)
        )
