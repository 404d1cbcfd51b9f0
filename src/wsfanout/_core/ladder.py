"""Ladders: policies that step between levels while they run, with hysteresis.

Theory of operation
-------------------
A ladder is a stage whose policy in force depends on a *level*, one per subscriber,
kept in the subscriber's memo with the time it was entered. Each level is a complete
policy (its queue rules, its decisions); :meth:`Policy.level_policies` lists them so the core
can resolve every level's rules at construction and switch between them when the
ladder steps (``outbox.py``). A step is a :class:`LevelStep` in the decision.

The base class owns what every ladder shares: it never steps twice within ``hold``
seconds, it asks the level in force for its decision, and it adds the rechecks that
let the next step be seen in time. Subclasses say where to go:

* :class:`Escalate` steps one level up when the next level's ``up`` condition holds,
  one level down when the current level's ``down`` condition holds. Separate
  thresholds up and down, and the hold, keep a client on the edge from flapping.
* ``Adaptive`` (``adaptive.py``) picks its level, a pace, from the drain rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .conditions import Condition
from .decision import NEUTRAL, Decision, LevelStep, join
from .errors import PolicyError, invalid
from .guarantees import Guarantee, LevelBound, StepsApart, code
from .policy import ACK_FIELDS, PASS, Composite, Policy, as_policy, decides, reads_acks
from .rules import Rules
from .snapshot import Snapshot

__all__ = ["Escalate", "Ladder", "Level"]


def check_hold(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Seconds a ladder stays at a level at least: finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(attribute.name, value, "must be a number of seconds")
    if not math.isfinite(value) or not value > 0:
        raise invalid(attribute.name, value, "must be a finite number of seconds > 0")


def _check_bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise invalid(attribute.name, value, "must be True or False")


@attrs.frozen
class _Memo:
    """A ladder's state for one subscriber: its level, when it entered it, the level
    policy's own memo, and the subclass's state."""

    level: int
    since: float
    inner: object
    state: object


class Ladder(Policy):
    """Base class of policies with levels; see the module docstring.

    Subclasses are attrs classes with ``hold`` and ``announce`` fields and implement
    :meth:`level_policies`, :meth:`level_names` and :meth:`choose`.
    """

    __slots__ = ()

    hold: float
    announce: bool

    # -- what a subclass provides ------------------------------------------------------

    def level_policies(self) -> tuple[Policy, ...]:
        """The policy of each level, level 0 first."""
        raise NotImplementedError

    def level_names(self) -> tuple[str, ...]:
        """The name of each level, for statistics and the client's notices."""
        raise NotImplementedError

    def initial_state(self) -> object:
        """The subclass's state for a new subscriber."""
        return None

    def observe(self, snapshot: Snapshot, level: int, state: object) -> object:
        """Update the subclass's state from ``snapshot``, at every decision."""
        return state

    def choose(self, snapshot: Snapshot, level: int, state: object) -> tuple[int, str, object]:
        """The level to be at now (``level`` to stay), why, and the new state; asked
        only once ``hold`` has passed since the last step."""
        raise NotImplementedError

    def hints(self, snapshot: Snapshot, level: int, state: object) -> Decision:
        """Rechecks that let the next step be seen in time (beyond the hold's end)."""
        return NEUTRAL

    # -- the policy ----------------------------------------------------------------------

    def rules(self) -> Rules:
        return self.level_policies()[0].rules()

    @property
    def eager(self) -> bool:  # type: ignore[override]
        return all(level.eager for level in self.level_policies())

    def decide(self, snapshot: Snapshot) -> Decision:
        memo = snapshot.memo
        if isinstance(memo, _Memo):
            level, since, inner, state = memo.level, memo.since, memo.inner, memo.state
        else:
            level, since, inner, state = 0, -math.inf, None, self.initial_state()
        now = snapshot.now
        state = self.observe(snapshot, level, state)
        step = None
        # A deadline, compared as the recheck below computes it (since + hold), so a
        # wake-up at that time always finds the hold over.
        if since + self.hold <= now:
            target, cause, state = self.choose(snapshot, level, state)
            if target != level:
                step = LevelStep(
                    level=target,
                    previous=level,
                    name=self.level_names()[target],
                    at=now,
                    cause=cause,
                    announce=self.announce,
                )
                policies = self.level_policies()
                inner = carried(policies[level], policies[target], inner)
                level, since = target, now
        policy = self.level_policies()[level]
        decision = NEUTRAL
        if type(policy).decide is not Policy.decide:
            view = snapshot if inner is memo else attrs.evolve(snapshot, memo=inner)
            decision = policy.decide(view)
        if since + self.hold > now:
            hints = Decision(recheck_at=since + self.hold)
        else:
            hints = self.hints(snapshot, level, state)
        result = join(decision, hints)
        return attrs.evolve(result, memo=_Memo(level, since, decision.memo, state), step=step)


def carried(old: Policy, new: Policy, memo: object) -> object:
    """The memo ``new`` (the next level's policy) starts with after a step from ``old``,
    whose memo was ``memo``: a stage both levels have keeps its own (a ``Disconnect``'s
    grace goes on across the step, as the promise it shares with the other level says);
    every other stage starts afresh."""
    if memo is None or old == new:
        return memo
    before = _deciding(old)
    memos = memo if isinstance(old, Composite) and isinstance(memo, tuple) else (memo,)
    if len(memos) != len(before):
        return None
    left = list(zip(before, memos, strict=True))
    kept: list[object] = []
    for stage in _deciding(new):
        found = next((i for i, (other, _) in enumerate(left) if other == stage), None)
        kept.append(None if found is None else left.pop(found)[1])
    if not any(m is not None for m in kept):
        return None
    return tuple(kept) if isinstance(new, Composite) else kept[0]


def _deciding(policy: Policy) -> tuple[Policy, ...]:
    """The stages of ``policy`` that hold a memo of their own, in memo order."""
    if isinstance(policy, Composite):
        return policy.deciding
    return (policy,) if decides(policy) else ()


# -- Escalate -------------------------------------------------------------------------


def _check_policy(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Policy):
        raise invalid("policy", value, "must be a Policy or None")
    if len(value.level_policies()) > 1:
        raise invalid("policy", value, "steps between levels itself; ladders do not nest")


def _check_condition(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Condition):
        raise invalid(attribute.name, value, "must be a Condition (Above, Below, ...) or None")


def _check_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise invalid("name", value, "must be a str")


def _as_policy(value: Policy | Callable[[Snapshot], Decision] | None) -> Policy | None:
    return None if value is None else as_policy(value)


@attrs.frozen(repr=False)
class Level:
    """One level of an :class:`Escalate` ladder: the policy in force there, when to step
    up to it (``up``) and when to step back down from it (``down``).

    ``policy`` is complete: it replaces the previous level's (compose what levels share
    outside the ``Escalate``); None adds nothing. Level 0 has no conditions. A level
    without ``down`` is never left downwards.
    """

    policy: Policy | None = attrs.field(default=None, converter=_as_policy, validator=_check_policy)
    up: Condition | None = attrs.field(default=None, kw_only=True, validator=_check_condition)
    down: Condition | None = attrs.field(default=None, kw_only=True, validator=_check_condition)
    name: str = attrs.field(default="", kw_only=True, validator=_check_name)

    def __repr__(self) -> str:
        args = [] if self.policy is None else [repr(self.policy)]
        for name in ("up", "down", "name"):
            value = getattr(self, name)
            if value not in (None, ""):
                args.append(f"{name}={value!r}")
        return f"Level({', '.join(args)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _as_levels(value: Iterable[Level]) -> tuple[Level, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise invalid("levels", value, "must be a sequence of Level")
    return tuple(value)


def _check_levels(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[Level, ...]
) -> None:
    if len(value) < 2:
        raise invalid("levels", value, "must hold at least two levels")
    names: set[str] = set()
    for index, level in enumerate(value):
        if not isinstance(level, Level):
            raise PolicyError(
                f"levels[{index}]={level!r} is not a Level", name="levels", value=value
            )
        if index == 0 and (level.up is not None or level.down is not None):
            raise PolicyError(
                f"levels[0]={level!r} is where every subscriber starts: it takes no up or "
                "down condition",
                name="levels",
                value=value,
            )
        if index > 0 and level.up is None:
            raise PolicyError(
                f"levels[{index}]={level!r} needs an up condition (when to step up to it)",
                name="levels",
                value=value,
            )
        name = _level_name(level, index)
        if name in names:
            raise PolicyError(
                f"levels[{index}] is named {name!r}, as another level is",
                name="levels",
                value=value,
            )
        names.add(name)


def _level_name(level: Level, index: int) -> str:
    return level.name or ("normal" if index == 0 else f"level-{index}")


@attrs.frozen(repr=False)
class Escalate(Ladder):
    """Levels of policy a subscriber steps through as it falls behind and recovers.

    Stricter the further it falls behind, gentler again once it recovers, without
    flapping. Every subscriber starts at ``levels[0]``. It steps up to the next level when that
    level's ``up`` condition holds, and back down when its current level's ``down``
    condition holds, at most one step every ``hold`` seconds; each level's policy is in
    force while the subscriber is there, its queue rules included (a smaller bound
    evicts at once, as its overflow rule says). Give ``down`` a lower threshold than
    ``up`` (hysteresis), so a client on the edge does not step back and forth. With
    ``announce``, each step is sent to the client as a control frame
    (docs/protocol.md, "Policy levels").
    """

    levels: tuple[Level, ...] = attrs.field(converter=_as_levels, validator=_check_levels)
    hold: float = attrs.field(default=1.0, validator=check_hold)
    announce: bool = attrs.field(default=False, validator=_check_bool)
    _policies: tuple[Policy, ...] = attrs.field(init=False, eq=False, repr=False)
    _names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_policies", tuple(level.policy or PASS for level in self.levels))
        object.__setattr__(
            self, "_names", tuple(_level_name(level, i) for i, level in enumerate(self.levels))
        )

    def acknowledged(self) -> bool:
        """True if a level's policy or condition reads the client's acknowledgements."""
        for level in self.levels:
            if level.policy is not None and reads_acks(level.policy):
                return True
            for condition in (level.up, level.down):
                if condition is not None and not condition.fields().isdisjoint(ACK_FIELDS):
                    return True
        return False

    def level_policies(self) -> tuple[Policy, ...]:
        return self._policies

    def level_names(self) -> tuple[str, ...]:
        return self._names

    def choose(self, snapshot: Snapshot, level: int, state: object) -> tuple[int, str, object]:
        levels = self.levels
        if level + 1 < len(levels):
            up = levels[level + 1].up
            assert up is not None
            if up.holds(snapshot):
                return level + 1, up.explain(snapshot), state
        down = levels[level].down
        if level and down is not None and down.holds(snapshot):
            return level - 1, down.explain(snapshot), state
        return level, "", state

    def hints(self, snapshot: Snapshot, level: int, state: object) -> Decision:
        levels = self.levels
        hints = NEUTRAL
        if level + 1 < len(levels):
            up = levels[level + 1].up
            assert up is not None
            hints = up.recheck(snapshot)
        down = levels[level].down
        if level and down is not None:
            hints = join(hints, down.recheck(snapshot))
            if snapshot.queued_messages:
                # Falling thresholds give no queue size or time to wait for: while
                # messages wait, look again every hold. Once the queue is empty the core
                # asks again at the hold's end, then rests until the next message: a
                # subscriber that has caught up steps down then, or stays.
                hints = join(hints, Decision(recheck_at=snapshot.now + self.hold))
        return hints

    def guarantees(self) -> tuple[Guarantee, ...]:
        """At most one step per ``hold``, the bound of the level in force, and what every
        level's policy promises."""
        common: list[Guarantee] = []
        first, *others = (policy.guarantees() for policy in self._policies)
        for guarantee in first:
            if all(guarantee in promised for promised in others) and guarantee not in common:
                common.append(guarantee)
        return (StepsApart(self.hold), LevelBound(), *common)

    def __repr__(self) -> str:
        args = [f"levels={code(list(self.levels))}"]
        if self.hold != 1.0:
            args.append(f"hold={self.hold!r}")
        if self.announce:
            args.append("announce=True")
        return f"Escalate({', '.join(args)})"
