"""attrs validators whose messages name the parameter and the value, in call syntax."""

from __future__ import annotations

import math
from typing import Any

import attrs

from .errors import ConfigError, PolicyError, invalid

__all__ = [
    "check_close",
    "duration",
    "optional_duration",
    "optional_size",
    "positive_rate",
    "positive_seconds",
    "size",
]


def size(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    """A count or a byte size: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(attribute.name, value, "must be an int >= 1")
    if value < 1:
        raise invalid(attribute.name, value, "must be >= 1")


def optional_size(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        size(instance, attribute, value)


def duration(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    """Seconds: a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(attribute.name, value, "must be a number of seconds")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise invalid(attribute.name, value, "must be a finite number of seconds >= 0")


def optional_duration(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        duration(instance, attribute, value)


def positive_rate(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    """A rate per second: finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(attribute.name, value, "must be a number per second")
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise invalid(attribute.name, value, "must be a finite number > 0")


def positive_seconds(name: str, value: object, error: type[ConfigError] = ConfigError) -> float:
    """A timeout or an interval outside policies: a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, value, "must be a number of seconds", error)
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise invalid(name, value, "must be a finite number of seconds > 0", error)
    return float(value)


# Close codes a server may send (RFC 6455 section 7.4 and the IANA registry as websockets
# accepts them): 1004-1006 and 1015 are reserved for local use and never go on the wire.
_SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
MAX_REASON_BYTES = 123


def check_close(code: object, reason: object, error: type[ConfigError] = PolicyError) -> None:
    """Reject a close code or reason that websockets would refuse to send."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise invalid("code", code, "must be an int close code", error)
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise invalid(
            "code",
            code,
            "is not a close code a server may send (expected 1000-1003, 1007-1014 or 3000-4999)",
            error,
        )
    if not isinstance(reason, str):
        raise invalid("reason", reason, "must be a str", error)
    encoded = len(reason.encode())
    if encoded > MAX_REASON_BYTES:
        raise invalid(
            "reason",
            reason,
            f"is {encoded} bytes in UTF-8; at most {MAX_REASON_BYTES} fit a close frame",
            error,
        )
