"""Errors raised to the caller of wsfanout.

Misuse (a bad parameter, conflicting policy stages, publishing on a closed hub)
raises one of these. A subscriber that a policy disconnects is an event recorded in
its statistics, never an exception.
"""

from __future__ import annotations

__all__ = [
    "HubClosedError",
    "PolicyConflictError",
    "PolicyError",
    "PolicyFileError",
    "SubscriberClosedError",
    "WsfanoutError",
]


class WsfanoutError(Exception):
    """Base class of every error wsfanout raises."""


class PolicyError(WsfanoutError, ValueError):
    """A policy parameter is invalid; the message names the parameter and the value."""


class PolicyConflictError(PolicyError):
    """Two stages of a composed policy claim one decision (say, both evict when full)."""


class HubClosedError(WsfanoutError, RuntimeError):
    """The hub was closed with :meth:`Hub.aclose`; it accepts no more messages or subscribers."""


class SubscriberClosedError(WsfanoutError, RuntimeError):
    """The subscriber was closed (by its policy, the hub or the client); it accepts no messages."""


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
    ) -> None:
        super().__init__(message)
        self.filename = filename
        self.key = key
        self.line = line
        self.column = column
