"""Queue rules: what a policy declares about its queue, merged when policies compose.

A stage's rules are fixed at construction, so the core enforces them on every publish
without calling Python policy code. Merging takes the smallest bound of each kind;
the other slots (what to evict, what an arrival replaces, how a key's updates merge,
how to frame batches, how to announce losses) may be claimed by one stage only. A
ladder (``Escalate``) has rules per level, each fixed at construction too; the core
switches between them. :func:`resolve_rules` fills in the documented defaults, so
every policy the core runs has a finite bound.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from .errors import PolicyConflictError
from .validate import optional_size

if TYPE_CHECKING:
    from .notices import NoticeFormat
    from .policy import Policy
    from .reducers import Reduce

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "Arrival",
    "BatchRule",
    "Combine",
    "Overflow",
    "Rules",
    "merge_rules",
    "resolve_rules",
]

DEFAULT_MAX_MESSAGES = 1024
"""Queue bound in messages when no stage of a policy declares one."""

DEFAULT_MAX_BYTES = 1024 * 1024
"""Queue bound in payload bytes when no stage of a policy declares one (1 MiB, as Centrifuge)."""


class Overflow(enum.Enum):
    """What the queue does with a message that does not fit its bound."""

    DROP_OLDEST = "drop-oldest"
    """Evict queued messages, oldest first, until the new one fits."""
    DROP_NEWEST = "drop-newest"
    """Refuse the new message."""
    CLOSE = "close"
    """Close the subscriber (code 1013): the default, so nothing is lost silently."""


class Arrival(enum.Enum):
    """What an arriving message replaces in the queue before bounds are checked."""

    CONFLATE_BY_KEY = "conflate-by-key"
    """The queued message with the same key, if any."""
    SKIP_TO_LATEST = "skip-to-latest"
    """Every queued message (those that may be dropped)."""


Combine = Callable[[Sequence[bytes]], bytes]


@attrs.frozen
class BatchRule:
    """How queued messages are packed into one frame."""

    max_messages: int
    max_bytes: int | None
    combine: Combine


@attrs.frozen(kw_only=True)
class Rules:
    """A policy's queue rules. ``None`` means "not declared by this stage"; a declared
    bound is an int >= 1 (0 would read as "not declared" and silently become the default)."""

    max_messages: int | None = attrs.field(default=None, validator=optional_size)
    max_bytes: int | None = attrs.field(default=None, validator=optional_size)
    overflow: Overflow | None = None
    arrival: Arrival | None = None
    batch: BatchRule | None = None
    reduce: Reduce | None = None
    """How a key's arriving update merges into the queued one (with
    ``Arrival.CONFLATE_BY_KEY``); None: the newer replaces the older."""
    notify: NoticeFormat | None = None
    """Announce losses in gap notices written in this format (``Notify``)."""


_SLOTS = {
    "overflow": "decide what to evict when the queue is full",
    "arrival": "decide what an arriving message replaces",
    "batch": "decide how messages are framed",
    "reduce": "decide how a key's updates merge",
    "notify": "decide how losses are announced",
}


def merge_rules(stages: Sequence[Policy]) -> Rules:
    """Merge the stages' declared rules; two stages claiming one slot differently is an error."""
    max_messages: int | None = None
    max_bytes: int | None = None
    claimed: dict[str, tuple[Policy, object]] = {}
    for stage in stages:
        rules = stage.rules()
        if rules.max_messages is not None:
            max_messages = min(max_messages or rules.max_messages, rules.max_messages)
        if rules.max_bytes is not None:
            max_bytes = min(max_bytes or rules.max_bytes, rules.max_bytes)
        for slot, what in _SLOTS.items():
            value = getattr(rules, slot)
            if value is None:
                continue
            if slot in claimed and (slot == "batch" or claimed[slot][1] != value):
                first = claimed[slot][0]
                raise PolicyConflictError(
                    f"{first!r} and {stage!r} both {what}; keep one of them",
                    stages=(first, stage),
                    slot=slot,
                )
            claimed[slot] = (stage, value)
    return Rules(
        max_messages=max_messages,
        max_bytes=max_bytes,
        overflow=claimed["overflow"][1] if "overflow" in claimed else None,  # type: ignore[arg-type]
        arrival=claimed["arrival"][1] if "arrival" in claimed else None,  # type: ignore[arg-type]
        batch=claimed["batch"][1] if "batch" in claimed else None,  # type: ignore[arg-type]
        reduce=claimed["reduce"][1] if "reduce" in claimed else None,  # type: ignore[arg-type]
        notify=claimed["notify"][1] if "notify" in claimed else None,  # type: ignore[arg-type]
    )


def resolve_rules(policy: Policy) -> Rules:
    """The rules the core enforces: declared rules with the documented defaults filled in.

    Every policy has a finite bound: where no stage bounds the queue in messages or in
    bytes, :data:`DEFAULT_MAX_MESSAGES` and :data:`DEFAULT_MAX_BYTES` apply, and where no
    stage chooses an overflow rule the subscriber is closed rather than losing messages
    silently.
    """
    try:
        return _resolve_cached(policy)
    except TypeError:  # an unhashable user policy: resolve it every time
        return _resolve(policy)


@functools.lru_cache(maxsize=256)
def _resolve_cached(policy: Policy) -> Rules:
    return _resolve(policy)


def _resolve(policy: Policy) -> Rules:
    rules = policy.rules()
    return attrs.evolve(
        rules,
        max_messages=rules.max_messages or DEFAULT_MAX_MESSAGES,
        max_bytes=rules.max_bytes or DEFAULT_MAX_BYTES,
        overflow=rules.overflow or Overflow.CLOSE,
    )
