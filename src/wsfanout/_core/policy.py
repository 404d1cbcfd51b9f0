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

A *ladder* (``Escalate``, ``Adaptive``) is a stage with levels (:meth:`Policy.level_policies`):
the policy in force changes while it runs, one step at a time. In a composition, each
level is the other stages composed with that level's policy, all built (and checked
for conflicts) at construction; a composition holds at most one ladder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .decision import NEUTRAL, Decision, join
from .errors import PolicyConflictError, PolicyError, invalid
from .rules import Rules, merge_rules
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .guarantees import Guarantee

__all__ = [
    "SHAREABLE",
    "Composite",
    "FunctionPolicy",
    "Policy",
    "as_policy",
    "decides",
    "reads_acks",
    "is_steady",
    "shared_reads",
]


ACK_FIELDS = frozenset(["unacked", "ack_rate"])
"""The snapshot fields only a client's acknowledgements fill."""


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

    reads: ClassVar[frozenset[str] | None] = None
    """The snapshot fields :meth:`decide` depends on, for a policy whose decision is a
    function of those fields alone: the core then shares one decision among the
    subscribers whose snapshots agree on them (a timer pass over a thousand batches
    asks once). ``"memo"`` among them means "while the memo is None". None, the
    default, declares nothing: the policy is asked every time. Trusted only from the
    class that also defines :meth:`decide` (see :func:`shared_reads`). ``"unacked"`` or
    ``"ack_rate"`` among them asks a ``wsfanout.v1`` client for acknowledgements
    (:meth:`acknowledged`): declare them to see past the client's kernel."""

    steady: ClassVar[bool] = False
    """True if a decision to write at one instant (no close, no step, no memo, a
    ``send_at`` not after ``now``) still writes for what that write leaves: the same
    instant, fewer messages queued (taken from the head: fewer bytes, a lag no larger),
    a larger write buffer, ``last_send`` at ``now``, more sent, more unacknowledged.
    The relay then asks once per write rather than before each of its frames. Leave
    False (the safe default) unless that holds; trusted only from the class that also
    defines :meth:`decide` (see :func:`is_steady`), and checked by
    ``wsfanout.testing.check_steady``."""

    def acknowledged(self) -> bool:
        """True if this stage reads what the client's acknowledgements say (``unacked``,
        ``ack_rate``): by default, if its :attr:`reads` names them."""
        reads = self.reads
        return reads is not None and not reads.isdisjoint(ACK_FIELDS)

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

    def level_policies(self) -> tuple[Policy, ...]:
        """The policy in force at each level of a ladder, level 0 first: whose queue
        rules the core enforces, and whose ``eager`` the fast path follows, while the
        subscriber is at that level. A policy without levels has one: itself."""
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


@attrs.frozen(repr=False)
class _Pass(Policy):
    """The policy of a ladder's level that adds nothing: eager, no rules, no decision."""

    eager = True

    def __repr__(self) -> str:
        return "nothing"


PASS: Policy = _Pass()
"""What a level without a policy of its own runs; dropped from a composition's levels."""


def _is_dynamic(policy: Policy) -> bool:
    return type(policy).decide is not Policy.decide


def decides(policy: Policy) -> bool:
    """True if asking ``policy`` can answer anything but "send now": some stage of it
    overrides :meth:`Policy.decide`. The core never asks one that does not."""
    if isinstance(policy, Composite):
        return bool(policy.deciding)
    return _is_dynamic(policy)


SHAREABLE = frozenset(
    ["now", "queued_messages", "queued_bytes", "lag", "write_buffer", "last_send", "memo"]
)
"""The snapshot fields a shared decision may depend on: those two subscribers at one
instant can have in common (never ``sent``, ``dropped`` or the kernel's figures)."""


def shared_reads(policy: Policy) -> frozenset[str] | None:
    """The fields ``policy``'s decision depends on, if it declares them (:attr:`Policy.reads`)
    and they are all :data:`SHAREABLE`; None otherwise. A composition's are its stages'
    union; a ladder's are None (its memo is its level). A subclass that overrides
    ``decide`` without declaring ``reads`` again does not inherit its parent's."""
    if len(policy.level_policies()) > 1:
        return None
    reads: frozenset[str] = frozenset()
    for stage in policy.stages:
        if not _is_dynamic(stage):
            continue
        if not _declared_with_decide(stage, "reads") or stage.reads is None:
            return None
        reads |= stage.reads
    return reads if reads <= SHAREABLE else None


def _declared_with_decide(stage: Policy, name: str) -> bool:
    """True if the class that declares ``name`` for ``stage`` also defines its ``decide``:
    a declaration about a decision is trusted only beside that decision."""
    mro = type(stage).__mro__
    declared = next(c for c in mro if name in c.__dict__)
    decided = next(c for c in mro if "decide" in c.__dict__)
    return declared is decided


def is_steady(policy: Policy) -> bool:
    """True if every stage of ``policy`` that decides declares it :attr:`Policy.steady`
    from the class that defines its ``decide``; False for a ladder (a step may follow
    any write)."""
    if len(policy.level_policies()) > 1:
        return False
    for stage in policy.stages:
        if not _is_dynamic(stage):
            continue
        if not _declared_with_decide(stage, "steady") or not stage.steady:
            return False
    return True


def reads_acks(policy: Policy) -> bool:
    """True if a stage of ``policy`` reads what the client's acknowledgements say
    (:meth:`Policy.acknowledged`): the hub then asks a ``wsfanout.v1`` client for them."""
    return any(stage.acknowledged() for stage in policy.stages)


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
        raise invalid(
            "stages", value, "must not be empty: a composed policy needs at least one stage"
        )
    for stage in value:
        if not isinstance(stage, Policy) or isinstance(stage, Composite):
            raise PolicyError(
                f"stages contains {stage!r}, which is not a single Policy stage",
                name="stages",
                value=value,
            )


@attrs.frozen(repr=False)
class Composite(Policy):
    """Stages joined with ``|``: one decision per stage, joined by :func:`join`."""

    _stages: tuple[Policy, ...] = attrs.field(validator=_check_stages)
    _dynamic: tuple[Policy, ...] = attrs.field(init=False, eq=False)
    _levels: tuple[Policy, ...] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        merge_rules(self._stages)  # raises on conflicting stages
        object.__setattr__(self, "_dynamic", tuple(s for s in self._stages if _is_dynamic(s)))
        object.__setattr__(self, "_levels", _compose_levels(self._stages))

    @property
    def stages(self) -> tuple[Policy, ...]:
        return self._stages

    @property
    def deciding(self) -> tuple[Policy, ...]:
        """The stages that override :meth:`Policy.decide`: those a decision asks."""
        return self._dynamic

    @property
    def eager(self) -> bool:  # type: ignore[override]
        return all(stage.eager for stage in self._stages)

    @property
    def steady(self) -> bool:  # type: ignore[override]
        return is_steady(self)

    def rules(self) -> Rules:
        return merge_rules(self._stages)

    def level_policies(self) -> tuple[Policy, ...]:
        return self._levels or (self,)

    def guarantees(self) -> tuple[Guarantee, ...]:
        """The stages' promises that survive the merged rules (:meth:`Guarantee.survives`)
        of every level."""
        merged = [level.rules() for level in self.level_policies()]
        kept: list[Guarantee] = []
        for stage in self._stages:
            for guarantee in stage.guarantees():
                if guarantee not in kept and all(guarantee.survives(r) for r in merged):
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


def _compose_levels(stages: tuple[Policy, ...]) -> tuple[Policy, ...]:
    """Each level of the one ladder among ``stages``, composed with the other stages;
    () if there is no ladder. Two ladders, or a level that conflicts with another stage,
    is a :class:`PolicyConflictError`."""
    ladders = [
        (index, stage) for index, stage in enumerate(stages) if len(stage.level_policies()) > 1
    ]
    if not ladders:
        return ()
    if len(ladders) > 1:
        first, second = ladders[0][1], ladders[1][1]
        raise PolicyConflictError(
            f"{first!r} and {second!r} both step between levels; keep one of them",
            stages=(first, second),
            slot="levels",
        )
    index, ladder = ladders[0]
    composed: list[Policy] = []
    for number, level in enumerate(ladder.level_policies()):
        parts = [s for s in (*stages[:index], *level.stages, *stages[index + 1 :]) if s is not PASS]
        try:
            composed.append(Composite(tuple(parts)) if len(parts) > 1 else (parts or [PASS])[0])
        except PolicyConflictError as exc:
            raise PolicyConflictError(
                f"at level {number} of {ladder!r}: {exc}", stages=exc.stages, slot=exc.slot
            ) from exc
    return tuple(composed)
