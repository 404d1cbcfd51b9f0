"""Errors raised to the caller of wsfanout, also exported (and named) by ``wsfanout``.

Misuse raises one of these; a subscriber that a policy disconnects is an event in its
statistics, never an exception. ``ConfigError`` and its subclasses carry the
parameter (``name``) and the value refused (``value``).
"""

from ._core.errors import (
    ConfigError,
    HubClosedError,
    PolicyConflictError,
    PolicyError,
    PolicyFileError,
    SubscriberClosedError,
    WsfanoutError,
)

__all__ = [
    "WsfanoutError",
    "ConfigError",
    "PolicyError",
    "PolicyConflictError",
    "PolicyFileError",
    "HubClosedError",
    "SubscriberClosedError",
]
