"""Conditions as files write them: ``"lag > 1s"``, ``"queued_bytes > 64KiB or lag > 2s"``.

A condition is comparisons ``FIELD > VALUE`` or ``FIELD < VALUE`` joined by ``and``
(which binds tighter) and ``or``, with parentheses where needed. The field is any
numeric field of the snapshot; its value is written in the field's unit, by the table
:data:`FIELD_KINDS` (a duration for ``lag``, a size for byte counts, a byte rate for
rates). A numeric field the table does not know (one added to the snapshot later)
takes a number, a size or a byte rate.
"""

from __future__ import annotations

import re

from .._core.conditions import Above, AllOf, AnyOf, Below, Condition, numeric_fields
from .._core.errors import PolicyError
from .units import BYTE_RATE, COUNT, DURATION, SIZE, ValueKind, parse_byte_rate, parse_size

__all__ = ["FIELD_KINDS", "ConditionSyntaxError", "format_condition", "parse_condition"]

FIELD_KINDS: dict[str, ValueKind] = {
    "queued_messages": COUNT,
    "queued_bytes": SIZE,
    "lag": DURATION,
    "write_buffer": SIZE,
    "sent": COUNT,
    "dropped": COUNT,
    "drain_rate": BYTE_RATE,
    "delivery_rate": BYTE_RATE,
    "kernel_unsent": SIZE,
    "unacked": SIZE,
    "ack_rate": BYTE_RATE,
}
"""The unit each snapshot field's threshold is written in."""


def _read_amount(value: object) -> float:
    if isinstance(value, str):
        try:
            return float(parse_size(value))
        except ValueError:
            return parse_byte_rate(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{value!r} is not an amount")


_AMOUNT = ValueKind(
    "a number", 'e.g. 65536, "64KiB" or "20kB/s"', _read_amount, lambda value: value
)

EXAMPLES = '"lag > 1s", "queued_bytes > 64KiB or lag > 2s"'


class ConditionSyntaxError(ValueError):
    """A condition's text is not a condition; the message says what was expected."""


def _kind(field: str) -> ValueKind:
    return FIELD_KINDS.get(field, _AMOUNT)


_TOKEN = re.compile(r"\(|\)|[<>=!]+|[^()<>=!\s]+")
_OPERATORS = frozenset("<>=!")


def parse_condition(text: str) -> Condition:
    """The condition a file's string declares; :class:`ConditionSyntaxError` if it is none."""
    if not isinstance(text, str):
        raise ConditionSyntaxError(f"expected a string such as {EXAMPLES}")
    tokens = _TOKEN.findall(text)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise ConditionSyntaxError(f"it ends too soon (expected e.g. {EXAMPLES})")
        position += 1
        token: str = tokens[position - 1]
        return token

    def either() -> Condition:
        result = both()
        while peek() == "or":
            take()
            result = result | both()
        return result

    def both() -> Condition:
        result = atom()
        while peek() == "and":
            take()
            result = result & atom()
        return result

    def atom() -> Condition:
        if peek() == "(":
            take()
            inner = either()
            if peek() != ")":
                raise ConditionSyntaxError("a parenthesis is not closed")
            take()
            return inner
        field = take()
        fields = numeric_fields()
        if field not in fields:
            raise ConditionSyntaxError(
                f"{field!r} is not a snapshot field (expected one of {', '.join(fields)})"
            )
        operator = take()
        if operator not in ("<", ">"):
            raise ConditionSyntaxError(f"expected > or < after {field}, not {operator!r}")
        words = []
        while (word := peek()) is not None and word not in ("and", "or", ")", "("):
            if word[0] in _OPERATORS:
                break
            words.append(take())
        if not words:
            raise ConditionSyntaxError(f"expected a value after {field} {operator}")
        raw = " ".join(words)
        kind = _kind(field)
        try:
            value = kind.read(_number_or_text(raw))
        except ValueError:
            raise ConditionSyntaxError(
                f"{raw!r} is not {kind.what} for {field} (expected {kind.expected})"
            ) from None
        try:
            return (Above if operator == ">" else Below)(field, value)  # type: ignore[arg-type]
        except PolicyError as exc:
            raise ConditionSyntaxError(str(exc)) from None

    result = either()
    if peek() is not None:
        raise ConditionSyntaxError(f"unexpected {peek()!r} (expected and, or, or the end)")
    return result


def _number_or_text(text: str) -> object:
    """A bare number as TOML would read it (an int if it has no point), else the text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def format_condition(condition: Condition) -> str:
    """The text :func:`parse_condition` reads back as ``condition``."""
    if isinstance(condition, AnyOf):
        return " or ".join(format_condition(c) for c in condition.conditions)
    if isinstance(condition, AllOf):
        return " and ".join(
            f"({format_condition(c)})" if isinstance(c, AnyOf) else format_condition(c)
            for c in condition.conditions
        )
    if isinstance(condition, (Above, Below)):
        value = condition.value
        written = _kind(condition.field).write(
            int(value) if float(value).is_integer() and condition.field != "lag" else value
        )
        operator = ">" if isinstance(condition, Above) else "<"
        text = f"{condition.field} {operator} {written}"
        if parse_condition(text) != condition:
            raise PolicyError(f"{condition!r} cannot be written exactly in a policy file")
        return text
    raise PolicyError(
        f"{condition!r} is not a built-in condition, so a policy file cannot declare it "
        "(expected Above, Below, AnyOf, AllOf)"
    )
