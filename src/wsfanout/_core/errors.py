"""Errors raised to the caller of wsfanout.

Misuse (a bad parameter, conflicting policy stages, publishing on a closed hub)
raises one of these. A subscriber that a policy disconnects is an event recorded in
its statistics, never an exception.

Errors about a value carry it: ``name`` is the parameter (``max_lag``), ``value`` the
object refused, so callers (the policy-file loader, a configuration checker) point at
the right key without reading the message.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HubClosedError",
    "PolicyConflictError",
    "PolicyError",
    "PolicyFileError",
    "SubscriberClosedError",
    "WsfanoutError",
]


class WsfanoutError(Exception):
    """Base class of every error wsfanout raises."""


class ConfigError(WsfanoutError, ValueError):
    """A setting is invalid: the message says ``name=value`` and the constraint.

    ``name`` is the parameter or option, or ``None`` when the error is about no single
    one; ``value`` is the value refused (``None`` with no ``name``).
    """

    def __init__(self, message: str, *, name: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.name = name
        self.value = value


class PolicyError(ConfigError):
    """A policy parameter is invalid; the message names the parameter and the value."""


class PolicyConflictError(PolicyError):
    """Two stages of a composed policy claim one decision (say, both evict when full).

    ``stages`` are the two stages, in composition order; ``slot`` is the decision they
    both claim (``"overflow"``, ``"arrival"`` or ``"batch"``).
    """

    def __init__(self, message: str, *, stages: tuple[object, object], slot: str) -> None:
        super().__init__(message)
        self.stages = stages
        self.slot = slot


class PolicyFileError(PolicyError):
    """A policy or routing file is invalid: the message names the file, the key and the value.

    ``filename`` is the file, ``key`` the path of the offending key (``stage[2].max_lag``)
    or ``None``, and ``line``/``column`` locate a TOML syntax error (1-based) when known.
    """

    def __init__(
        self,
        message: str,
        *,
        filename: str,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
        value: object = None,
    ) -> None:
        super().__init__(message, name=key, value=value)
        self.filename = filename
        self.key = key
        self.line = line
        self.column = column


class HubClosedError(WsfanoutError, RuntimeError):
    """The hub was closed with :meth:`Hub.aclose`; it accepts no more messages or subscribers."""


class SubscriberClosedError(WsfanoutError, RuntimeError):
    """The subscriber was closed (by its policy, the hub or the client); it accepts no messages."""


def invalid(
    name: str, value: object, constraint: str, error: type[ConfigError] = PolicyError
) -> ConfigError:
    """``error("name=value constraint")`` carrying ``name`` and ``value``, to raise."""
    return error(f"{name}={value!r} {constraint}", name=name, value=value)
