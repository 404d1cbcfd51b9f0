"""Conditions: thresholds over a snapshot's numbers, as values.

``Above("lag", 1.0)`` holds when a subscriber is more than a second behind;
``Below("drain_rate", 20_000)`` when its write buffer drains slower than 20 kB/s. They
combine with ``|`` (either) and ``&`` (both), and their repr is the code that builds
them, so a ladder of levels (``Escalate``) can be logged, compared and declared in a
policy file (``"lag > 1s or queued_bytes > 64KiB"``).

A condition names any numeric field of :class:`~wsfanout.Snapshot` (a field that is an
``int`` or a ``float``, or may be None where the platform does not report it): a field
added to the snapshot later works as it is. A field that is None holds no threshold:
neither above nor below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

from .decision import NEUTRAL, Decision
from .errors import PolicyError, invalid
from .snapshot import Snapshot

__all__ = ["AllOf", "Above", "AnyOf", "Below", "Condition", "numeric_fields"]

_NUMERIC = frozenset({"int", "float", "int | None", "float | None"})
_NOT_THRESHOLDS = frozenset({"now", "last_send"})
"""Numeric fields that are times on the clock, not amounts: no threshold means anything."""


def numeric_fields() -> tuple[str, ...]:
    """The snapshot fields a condition may name, in the snapshot's order."""
    return tuple(
        field.name
        for field in attrs.fields(Snapshot)
        if str(field.type) in _NUMERIC and field.name not in _NOT_THRESHOLDS
    )


def _check_field(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    fields = numeric_fields()
    if not isinstance(value, str) or value not in fields:
        raise invalid(
            "field",
            value,
            f"is not a numeric Snapshot field (expected one of {', '.join(map(repr, fields))})",
        )


def _check_value(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid("value", value, "must be a number")
    if not math.isfinite(value):
        raise invalid("value", value, "must be finite")


class Condition:
    """Base class of conditions: :meth:`holds` on a snapshot, and hints for when to look
    again (:meth:`recheck`) so that a condition that becomes true is seen in time."""

    __slots__ = ()

    def holds(self, snapshot: Snapshot) -> bool:
        """Whether the condition is true of ``snapshot``."""
        raise NotImplementedError

    def recheck(self, snapshot: Snapshot) -> Decision:
        """When the core must ask again for this condition to be seen when it changes:
        a queue size or a time. The default asks for nothing (the core asks before
        every write, and whenever the queue grows from empty)."""
        return NEUTRAL

    def explain(self, snapshot: Snapshot) -> str:
        """Why the condition holds of ``snapshot``, in words, for statistics and logs."""
        raise NotImplementedError

    def fields(self) -> frozenset[str]:
        """The snapshot fields the condition compares (none declared by default)."""
        return frozenset()

    def __or__(self, other: Condition) -> AnyOf:
        return AnyOf((*_flat(self, AnyOf), *_flat(other, AnyOf)))

    def __and__(self, other: Condition) -> AllOf:
        return AllOf((*_flat(self, AllOf), *_flat(other, AllOf)))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """hypothesis prints falsifying examples with this: the construction code."""
        printer.text(repr(self))


def _flat(condition: Condition, kind: type[AnyOf] | type[AllOf]) -> tuple[Condition, ...]:
    if not isinstance(condition, Condition):
        raise TypeError(f"expected a Condition, not {type(condition).__name__}")
    return condition.conditions if isinstance(condition, kind) else (condition,)


def _number(value: float) -> str:
    return repr(value)


def _shown(value: object) -> str:
    """A snapshot's number as an explanation shows it: ``1.2``, not ``1.2000000000000002``."""
    if isinstance(value, float):
        return f"{round(value, 3):g}"
    return repr(value)


@attrs.frozen(repr=False)
class _Threshold(Condition):
    field: str = attrs.field(validator=_check_field)
    """The snapshot field compared."""
    value: float = attrs.field(validator=_check_value)
    """The threshold, in the field's unit (seconds for ``lag``, bytes, bytes per second)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.field!r}, {_number(self.value)})"

    def fields(self) -> frozenset[str]:
        return frozenset([self.field])


@attrs.frozen(repr=False)
class Above(_Threshold):
    """``field > value``; for ``lag``, once it reaches ``value``. Never true of None."""

    def holds(self, snapshot: Snapshot) -> bool:
        if self.field == "lag":
            # A deadline, as the core computes recheck times: at a large clock value,
            # lag > value and now - lag + value <= now round differently.
            return bool(snapshot.queued_messages) and (
                snapshot.now - snapshot.lag + self.value <= snapshot.now
            )
        current = getattr(snapshot, self.field)
        return current is not None and current > self.value

    def recheck(self, snapshot: Snapshot) -> Decision:
        field = self.field
        if field == "queued_messages":
            return Decision(recheck_messages=math.floor(self.value) + 1)
        if field == "queued_bytes":
            return Decision(recheck_bytes=math.floor(self.value) + 1)
        if field == "lag" and snapshot.queued_messages:
            return Decision(recheck_at=snapshot.now - snapshot.lag + self.value)
        return NEUTRAL

    def explain(self, snapshot: Snapshot) -> str:
        return f"{self.field} {_shown(getattr(snapshot, self.field))} > {_shown(self.value)}"


@attrs.frozen(repr=False)
class Below(_Threshold):
    """``field < value``. Never true of None (a rate not measured yet is not low)."""

    def holds(self, snapshot: Snapshot) -> bool:
        current = getattr(snapshot, self.field)
        return current is not None and current < self.value

    def explain(self, snapshot: Snapshot) -> str:
        return f"{self.field} {_shown(getattr(snapshot, self.field))} < {_shown(self.value)}"


def _check_conditions(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or len(value) < 2:
        raise invalid("conditions", value, "must be a tuple of at least two conditions")
    for item in value:
        if not isinstance(item, Condition):
            raise PolicyError(
                f"conditions contains {item!r}, which is not a Condition",
                name="conditions",
                value=value,
            )


def _as_tuple(value: Iterable[Condition]) -> tuple[Condition, ...]:
    return tuple(value)


@attrs.frozen(repr=False)
class AnyOf(Condition):
    """Holds when any of ``conditions`` holds: ``a | b``."""

    conditions: tuple[Condition, ...] = attrs.field(
        converter=_as_tuple, validator=_check_conditions
    )

    def holds(self, snapshot: Snapshot) -> bool:
        return any(condition.holds(snapshot) for condition in self.conditions)

    def recheck(self, snapshot: Snapshot) -> Decision:
        return _earliest(condition.recheck(snapshot) for condition in self.conditions)

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(condition.fields() for condition in self.conditions))

    def explain(self, snapshot: Snapshot) -> str:
        held = [c.explain(snapshot) for c in self.conditions if c.holds(snapshot)]
        return " or ".join(held) if held else "none of " + repr(self)

    def __repr__(self) -> str:
        return " | ".join(repr(condition) for condition in self.conditions)


@attrs.frozen(repr=False)
class AllOf(Condition):
    """Holds when every one of ``conditions`` holds: ``a & b``."""

    conditions: tuple[Condition, ...] = attrs.field(
        converter=_as_tuple, validator=_check_conditions
    )

    def holds(self, snapshot: Snapshot) -> bool:
        return all(condition.holds(snapshot) for condition in self.conditions)

    def recheck(self, snapshot: Snapshot) -> Decision:
        return _earliest(condition.recheck(snapshot) for condition in self.conditions)

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(condition.fields() for condition in self.conditions))

    def explain(self, snapshot: Snapshot) -> str:
        return " and ".join(condition.explain(snapshot) for condition in self.conditions)

    def __repr__(self) -> str:
        return " & ".join(
            f"({condition!r})" if isinstance(condition, AnyOf) else repr(condition)
            for condition in self.conditions
        )


def _earliest(decisions: Iterable[Decision]) -> Decision:
    result = NEUTRAL
    for decision in decisions:
        if decision is NEUTRAL:
            continue
        result = Decision(
            recheck_at=min(result.recheck_at, decision.recheck_at),
            recheck_messages=min(result.recheck_messages, decision.recheck_messages),
            recheck_bytes=min(result.recheck_bytes, decision.recheck_bytes),
        )
    return result
