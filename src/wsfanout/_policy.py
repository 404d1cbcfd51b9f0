"""The policy protocol and its one composition rule.

Theory of operation
-------------------
A policy has two faces, both pure:

* **Queue rules** (:meth:`Policy.rules`), fixed at construction: how big the queue may
  grow, what to evict when it is full, what an arriving message replaces (conflation,
  skip-to-latest) and how queued messages are framed (batching). The core enforces
  them on every publish without calling back into Python policy code, which keeps the
  per-message cost flat.
* **Decisions** (:meth:`Policy.decide`), from a :class:`Snapshot`: close the subscriber,
  hold writes until a time, and when to ask again. Only stages that override
  :meth:`~Policy.decide` are asked, and only on the slow path (a subscriber that fell
  behind, or one whose policy is not ``eager``).

``a | b`` flattens into one :class:`Composite`. Its rules are the stages' rules merged:
bounds take the minimum, and a slot that two stages both claim with different values
(two overflow rules, two arrival rules, two batchers) is a :class:`PolicyConflictError`
at construction. Its decision is the :func:`join` of the stages' decisions: the first
close wins, the latest ``send_at`` wins, the earliest recheck wins. Both merges are
associative, so ``(a | b) | c == a | (b | c)``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from ._decision import NEUTRAL, Decision, join
from ._snapshot import Snapshot
from .exceptions import PolicyConflictError, PolicyError

if TYPE_CHECKING:
    from ._guarantees import Guarantee

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "Arrival",
    "BatchRule",
    "Composite",
    "FunctionPolicy",
    "Overflow",
    "Policy",
    "Rules",
    "as_policy",
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
    """A policy's queue rules. ``None`` means "not declared by this stage"."""

    max_messages: int | None = None
    max_bytes: int | None = None
    overflow: Overflow | None = None
    arrival: Arrival | None = None
    batch: BatchRule | None = None


class Policy:
    """Base class of every policy: a pure value the core consults about one subscriber.

    Subclass it as an ``@attrs.frozen`` class and override :meth:`decide` (and, for a
    stage that shapes the queue, :meth:`rules`). A policy never performs I/O or reads
    a clock; ``snapshot.now`` is the time.
    """

    __slots__ = ()

    eager: ClassVar[bool] = False
    """True if, for a subscriber with an empty queue and a drained write buffer, this
    policy always decides "send now": the core then writes without asking it.
    Leave False (the safe default) unless that holds."""

    def rules(self) -> Rules:
        """The queue rules this stage declares; a stage that declares none returns ``Rules()``."""
        return _NO_RULES

    def decide(self, snapshot: Snapshot) -> Decision:
        """Return the standing decision for this subscriber; the default decides nothing."""
        return NEUTRAL

    def guarantees(self) -> tuple[Guarantee, ...]:
        """What this policy promises about delivery, checked by ``wsfanout.testing``.

        Declare only what always holds; the test toolkit checks ordering, no duplicates
        and the resolved queue bound of every policy whether declared or not.
        """
        return ()

    @property
    def stages(self) -> tuple[Policy, ...]:
        """The flat sequence of stages; a single policy is its own only stage."""
        return (self,)

    def __repr__(self) -> str:
        """Construction code naming only the parameters that differ from their defaults."""
        cls = type(self)
        if not attrs.has(cls):
            return f"{cls.__name__}()"
        args = []
        for field in attrs.fields(cls):
            if not field.init or not field.repr:
                continue
            value = getattr(self, field.name)
            default = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = attrs.NOTHING
            if default is attrs.NOTHING or value != default:
                args.append(f"{field.alias or field.name}={value!r}")
        return f"{cls.__name__}({', '.join(args)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """hypothesis prints falsifying examples with this: the construction code."""
        printer.text(repr(self))

    def __or__(self, other: Policy | Callable[[Snapshot], Decision]) -> Composite:
        return Composite(self.stages + as_policy(other).stages)

    def __ror__(self, other: Callable[[Snapshot], Decision]) -> Composite:
        return Composite(as_policy(other).stages + self.stages)


_NO_RULES = Rules()


def _is_dynamic(policy: Policy) -> bool:
    return type(policy).decide is not Policy.decide


@attrs.frozen(repr=False)
class FunctionPolicy(Policy):
    """A plain function ``(Snapshot) -> Decision`` used as a policy stage."""

    function: Callable[[Snapshot], Decision]

    def decide(self, snapshot: Snapshot) -> Decision:
        return self.function(snapshot)

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return f"as_policy({name})"


def as_policy(value: Policy | Callable[[Snapshot], Decision]) -> Policy:
    """Accept a policy, or wrap a plain callable, so either can be composed."""
    if isinstance(value, Policy):
        return value
    if callable(value):
        return FunctionPolicy(value)
    raise TypeError(f"expected a Policy or a callable, not {type(value).__name__}")


def _check_stages(
    instance: Any, attribute: attrs.Attribute[Any], value: tuple[Policy, ...]
) -> None:
    if not value:
        raise PolicyError("stages=() must not be empty: a composed policy needs at least one stage")
    for stage in value:
        if not isinstance(stage, Policy) or isinstance(stage, Composite):
            raise PolicyError(f"stages contains {stage!r}, which is not a single Policy stage")


@attrs.frozen(repr=False)
class Composite(Policy):
    """Stages joined with ``|``: one decision per stage, joined by :func:`join`."""

    _stages: tuple[Policy, ...] = attrs.field(validator=_check_stages)
    _dynamic: tuple[Policy, ...] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        merge_rules(self._stages)  # raises on conflicting stages
        object.__setattr__(self, "_dynamic", tuple(s for s in self._stages if _is_dynamic(s)))

    @property
    def stages(self) -> tuple[Policy, ...]:
        return self._stages

    @property
    def eager(self) -> bool:  # type: ignore[override]
        return all(stage.eager for stage in self._stages)

    def rules(self) -> Rules:
        return merge_rules(self._stages)

    def guarantees(self) -> tuple[Guarantee, ...]:
        """The stages' promises that survive the merged rules (:meth:`Guarantee.survives`)."""
        merged = self.rules()
        kept: list[Guarantee] = []
        for stage in self._stages:
            for guarantee in stage.guarantees():
                if guarantee not in kept and guarantee.survives(merged):
                    kept.append(guarantee)
        return tuple(kept)

    def decide(self, snapshot: Snapshot) -> Decision:
        dynamic = self._dynamic
        if not dynamic:
            return NEUTRAL
        memos = snapshot.memo if isinstance(snapshot.memo, tuple) else (None,) * len(dynamic)
        result = NEUTRAL
        new_memos = []
        for stage, memo in zip(dynamic, memos, strict=True):
            view = snapshot if memo is snapshot.memo else attrs.evolve(snapshot, memo=memo)
            decision = stage.decide(view)
            new_memos.append(decision.memo)
            result = join(result, decision)
        if any(memo is not None for memo in new_memos):
            result = attrs.evolve(result, memo=tuple(new_memos))
        return result

    def __repr__(self) -> str:
        return " | ".join(repr(stage) for stage in self._stages)


_SLOTS = {
    "overflow": "decide what to evict when the queue is full",
    "arrival": "decide what an arriving message replaces",
    "batch": "decide how messages are framed",
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
                raise PolicyConflictError(
                    f"{claimed[slot][0]!r} and {stage!r} both {what}; keep one of them"
                )
            claimed[slot] = (stage, value)
    return Rules(
        max_messages=max_messages,
        max_bytes=max_bytes,
        overflow=claimed["overflow"][1] if "overflow" in claimed else None,  # type: ignore[arg-type]
        arrival=claimed["arrival"][1] if "arrival" in claimed else None,  # type: ignore[arg-type]
        batch=claimed["batch"][1] if "batch" in claimed else None,  # type: ignore[arg-type]
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
