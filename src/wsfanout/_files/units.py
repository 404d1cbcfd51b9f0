"""Values as people write them in files and on the command line: durations, sizes, rates.

``"250ms"``, ``"5s"``, ``"64KiB"`` and ``"600/min"`` read as the numbers the policies
take, with decimal arithmetic and one rounding, so ``"100ms"`` is exactly ``0.1``; the
formatters write back a value that reads as the same number. Each :class:`ValueKind`
bundles a reader, a writer and the words error messages use for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs

__all__ = [
    "BYTE_RATE",
    "CLOSE_CODE",
    "COUNT",
    "DURATION",
    "FLAG",
    "FRACTION",
    "OPTIONAL_DURATION",
    "OPTIONAL_FRACTION",
    "RATE",
    "SIZE",
    "TEXT",
    "ValueKind",
    "brief",
    "format_byte_rate",
    "format_duration",
    "format_size",
    "parse_byte_rate",
    "parse_duration",
    "parse_int",
    "parse_rate",
    "parse_size",
    "parse_text",
    "show_toml",
]


def show_toml(value: object) -> str:
    """``value`` as it would be written in TOML, for error messages and the dumper."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string (same escapes, \uXXXX included), except
        # that TOML also forbids a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(show_toml(v) for v in value) + "]"
    return str(value)


def brief(value: object, limit: int = 60) -> str:
    """``value`` as TOML for an error message: nesting past two levels and text past
    ``limit`` characters are elided, so a hostile value still makes a one-line error."""
    if isinstance(value, str) and len(value) > limit:
        return f'{show_toml(value[: limit - 10])[:-1]}..." ({len(value)} characters)'
    text = _brief(value, 2)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _brief(value: object, depth: int) -> str:
    if isinstance(value, dict):
        if depth == 0:
            return "{...}"
        items = list(value.items())
        shown = ", ".join(f"{_brief_key(k)} = {_brief(v, depth - 1)}" for k, v in items[:4])
        return "{" + shown + (", ..." if len(items) > 4 else "") + "}"
    if isinstance(value, list):
        if depth == 0:
            return "[...]"
        shown = ", ".join(_brief(v, depth - 1) for v in value[:4])
        return "[" + shown + (", ..." if len(value) > 4 else "") + "]"
    if isinstance(value, str) and len(value) > 60:
        return show_toml(value[:50])[:-1] + '..."'
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"an integer of {len(str(abs(value)))} digits"
    return show_toml(value)


def _brief_key(key: object) -> str:
    return key if isinstance(key, str) and _BARE.match(key) else _brief(key, 0)


_BARE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")

MAX_INT = 2**63 - 1
"""The largest count or size a file may give: TOML's own integer range."""

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*([a-z]+)\s*$")
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "min": Decimal(60),
    "h": Decimal(3600),
}
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([a-z]*)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_RATE = re.compile(rf"^\s*{_NUMBER}\s*/\s*([a-z]+)\s*$")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"250ms"``, ``"5s"``, ``"1m"``, ``"2h"``.

    Raises ``ValueError`` for anything else. Range checks are the policies' own.
    """
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and match[2] in _DURATION_UNITS:
            # Decimal arithmetic, then one rounding: "100ms" is exactly the float 0.1.
            # A number of a million digits overflows the decimal context: not a duration.
            try:
                return float(Decimal(match[1]) * _DURATION_UNITS[match[2]])
            except ArithmeticError:
                pass
    raise ValueError(f"{_short_repr(value)} is not a duration")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as ``"512"``, ``"64KiB"``, ``"1MiB"``, ``"2MB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _in_range(value)
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match[2].lower() in _SIZE_UNITS:
            try:
                amount = Decimal(match[1]) * _SIZE_UNITS[match[2].lower()]
                if amount == amount.to_integral_value() and amount <= MAX_INT:
                    return int(amount)
            except ArithmeticError:  # a million digits overflow the decimal context
                pass
    raise ValueError(f"{_short_repr(value)} is not a size")


def _short_repr(value: object) -> str:
    if isinstance(value, int) and abs(value) > MAX_INT:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value) if not isinstance(value, str) or len(value) <= 60 else repr(value[:60])
    return text if len(text) <= 80 else f"{text[:77]}..."


def _in_range(value: int) -> int:
    if abs(value) > MAX_INT:
        raise ValueError(f"{_short_repr(value)} is out of range (at most {MAX_INT})")
    return value


def parse_int(value: object) -> int:
    """An integer as written in TOML (a count, a close code); ``true`` is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _in_range(value)
    raise ValueError(f"{_short_repr(value)} is not an integer")


def parse_rate(value: object) -> float:
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        match = _RATE.match(value)
        if match and match[2] in _DURATION_UNITS:
            try:
                return float(Decimal(match[1]) / _DURATION_UNITS[match[2]])
            except ArithmeticError:  # a million digits overflow the decimal context
                pass
    raise ValueError(f"{_short_repr(value)} is not a rate")


_BYTE_RATE = re.compile(r"^\s*(.+?)\s*/\s*s\s*$")


def parse_byte_rate(value: object) -> float:
    """Bytes per second from a number or a string such as ``"20kB/s"``, ``"1MiB/s"``."""
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        match = _BYTE_RATE.match(value)
        if match:
            return float(parse_size(match[1]))
    raise ValueError(f"{_short_repr(value)} is not a byte rate")


def format_byte_rate(rate: float) -> str | float:
    """``"20kB/s"``-like text that reads back as exactly ``rate``, else the number."""
    if float(rate).is_integer():
        for unit, factor in (("MB", 1000**2), ("kB", 1000)):
            if rate >= factor and rate % factor == 0:
                return f"{int(rate // factor)}{unit}/s"
        written = format_size(int(rate))
        return f"{written}/s" if isinstance(written, str) else f"{int(rate)}B/s"
    return float(rate)


def parse_flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{_short_repr(value)} is not true or false")


def parse_fraction(value: object) -> float:
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    raise ValueError(f"{_short_repr(value)} is not a number")


def parse_optional_fraction(value: object) -> float | None:
    """A fraction, or ``false`` for none."""
    if value is False:
        return None
    return parse_fraction(value)


def _write_optional_fraction(value: float | None) -> object:
    return False if value is None else value


def parse_optional_duration(value: object) -> float | None:
    """A duration, or ``false`` for none."""
    if value is False:
        return None
    return parse_duration(value)


def _write_optional_duration(value: float | None) -> object:
    return False if value is None else format_duration(value)


def parse_text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{_short_repr(value)} is not a string")


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text


def format_duration(seconds: float) -> str | float:
    """The TOML value that reads back as exactly ``seconds``: ``"250ms"``, ``"5s"``, ``"1m"``.

    Falls back to the bare number where no unit reads back exactly.
    """
    value = float(seconds)
    if not math.isfinite(value):
        return value
    exact = Decimal(repr(value))
    if exact == 0:
        text = "0s"
    elif exact < 1 and (exact * 1000) == (exact * 1000).to_integral_value():
        text = f"{_plain(exact * 1000)}ms"
    elif exact >= 60 and exact % 3600 == 0:
        text = f"{_plain(exact / 3600)}h"
    elif exact >= 60 and exact % 60 == 0:
        text = f"{_plain(exact / 60)}m"
    else:
        text = f"{_plain(exact)}s"
    return text if parse_duration(text) == value else value


def format_size(size: int) -> str | int:
    """``"64KiB"``, ``"1MiB"`` where the size is a whole number of those, else the integer."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return size


@attrs.frozen
class ValueKind:
    """How one kind of parameter is written in a file: read, described and written back."""

    what: str
    """The noun for error messages: ``"a duration"``."""
    expected: str
    """What would be accepted, for error messages: ``'e.g. "250ms", "5s"'``."""
    read: Callable[[object], object]
    """File value to Python value; raises ``ValueError`` when the value is not of this kind."""
    write: Callable[[Any], object]
    """Python value to the value the dumper writes (which ``read`` turns back into it)."""


def _same(value: object) -> object:
    return value


COUNT = ValueKind("a count", "an integer >= 1, e.g. 256", parse_int, _same)
SIZE = ValueKind("a size", 'bytes, e.g. 65536, "64KiB", "1MiB"', parse_size, format_size)
DURATION = ValueKind("a duration", 'e.g. "250ms", "5s"', parse_duration, format_duration)
RATE = ValueKind("a rate", 'per second, e.g. 10, 0.5 or "600/min"', parse_rate, _same)
CLOSE_CODE = ValueKind("a close code", "an integer, e.g. 1013", parse_int, _same)
TEXT = ValueKind("a string", 'e.g. "subscriber too slow"', parse_text, _same)
BYTE_RATE = ValueKind(
    "a byte rate",
    'bytes per second, e.g. 20000, "20kB/s", "1MiB/s"',
    parse_byte_rate,
    format_byte_rate,
)
FLAG = ValueKind("a flag", "true or false", parse_flag, _same)
FRACTION = ValueKind("a fraction", "a number, e.g. 0.9", parse_fraction, _same)
OPTIONAL_DURATION = ValueKind(
    "a duration or false",
    'e.g. "10s", or false for none',
    parse_optional_duration,
    _write_optional_duration,
)
OPTIONAL_FRACTION = ValueKind(
    "a fraction or false",
    "a number, e.g. 0.5, or false for none",
    parse_optional_fraction,
    _write_optional_fraction,
)
