"""Reducers: how ``ConflateByKey(reduce=...)`` merges a key's new update into the queued one.

A reducer takes the queued value and the arriving one, as the client would receive
them (``str`` for a Text message, ``bytes`` for Binary), and returns the value that
replaces both: ``reduce(older, newer)``. Applied as updates arrive, the queued value is
the fold, in publish order, of every update of its key since the key was last sent.

The named reducers read JSON and fall back to keeping the newer value when a payload
is not JSON of the shape they expect (so a reducer never makes a message fail):

- ``"json-merge"``: two JSON objects merge field by field, the newer's fields winning
  (a shallow merge); anything else keeps the newer value.
- ``"sum"``: two JSON numbers add up; two JSON objects add up field by field where
  both are numbers, and take the newer value elsewhere (deltas, counters).
- ``"max"``: as ``"sum"``, keeping the larger number (high-water marks).

They write compact JSON (no spaces).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import invalid

__all__ = ["REDUCERS", "Reduce", "reducer"]

Reduce = Callable[[Any, Any], Any]
"""``(older, newer) -> merged``, each a ``str`` (Text) or ``bytes`` (Binary), the result
of the same type as ``newer``."""

_MISSING = object()


def _load(value: str | bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return _MISSING


def _dump(value: object, like: str | bytes) -> str | bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if isinstance(like, str) else text.encode()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric(combine: Callable[[Any, Any], Any]) -> Reduce:
    def reduce(older: str | bytes, newer: str | bytes) -> str | bytes:
        old, new = _load(older), _load(newer)
        if _is_number(old) and _is_number(new):
            return _dump(combine(old, new), newer)
        if isinstance(old, dict) and isinstance(new, dict):
            merged = dict(old)
            for key, value in new.items():
                previous = merged.get(key, _MISSING)
                both = _is_number(previous) and _is_number(value)
                merged[key] = combine(previous, value) if both else value
            return _dump(merged, newer)
        return newer

    return reduce


def _json_merge(older: str | bytes, newer: str | bytes) -> str | bytes:
    old, new = _load(older), _load(newer)
    if isinstance(old, dict) and isinstance(new, dict):
        return _dump({**old, **new}, newer)
    return newer


def _add(a: Any, b: Any) -> Any:
    return a + b


_sum = _numeric(_add)
_max = _numeric(max)
_sum.__qualname__ = _sum.__name__ = "sum"
_max.__qualname__ = _max.__name__ = "max"
_json_merge.__qualname__ = _json_merge.__name__ = "json_merge"

REDUCERS: dict[str, Reduce] = {
    "json-merge": _json_merge,
    "sum": _sum,
    "max": _max,
}
"""The named reducers, for ``ConflateByKey(reduce=NAME)`` and policy files."""


def reducer(value: str | Reduce) -> Reduce:
    """The function a reducer name or callable stands for."""
    if isinstance(value, str):
        try:
            return REDUCERS[value]
        except KeyError:
            raise invalid(
                "reduce", value, f"is not a known reducer (expected one of {sorted(REDUCERS)})"
            ) from None
    if not callable(value):
        raise invalid("reduce", value, "must be a reducer name or a callable")
    return value
