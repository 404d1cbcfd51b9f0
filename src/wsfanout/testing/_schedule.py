"""Schedules: what happens to a set of clients, step by step, as plain values.

A schedule is data, so hypothesis can draw and shrink it and a failure can print it as
code to paste into a test. Steps address clients by index (default 0, the only client
of a one-client schedule); each step runs at the clock's current time, and only
:class:`Advance` moves the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .._core.decision import Decision
from .._core.guarantees import CodeRepr, code
from .._core.policy import Policy, as_policy
from .._core.snapshot import Snapshot

__all__ = [
    "Advance",
    "Client",
    "Drain",
    "Hangup",
    "Publish",
    "Read",
    "Reconnect",
    "Schedule",
    "Send",
    "SetPolicy",
    "Stall",
    "Step",
]


def _count(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name}={value!r} must be an int >= 1")


def _nonnegative_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name}={value!r} must be an int >= 0")


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{attribute.name}={value!r} must be a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name}={value!r} must be a finite number of seconds >= 0")


def _bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name}={value!r} must be True or False")


def _rate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{attribute.name}={value!r} must be bytes per second >= 0 (or math.inf)")


def _keys(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"keys={value!r} must be a collection of str, not a single str")
    return tuple(value)


def _topics(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"topics={value!r} must be a collection of str, not a single str")
    return frozenset(value)


class Step(CodeRepr):
    """Base class of schedule steps."""

    __slots__ = ()


@attrs.frozen(repr=False)
class Publish(Step):
    """Publish ``n`` messages of ``size`` payload bytes in one go (no relay runs between
    them), keyed round-robin from ``keys`` (none if empty), under ``topic``, as Text
    frames or, with ``binary``, Binary frames; with ``lossless``, none may be lost."""

    n: int = attrs.field(default=1, validator=_count)
    size: int = attrs.field(default=8, validator=_nonnegative_int)
    keys: tuple[str, ...] = attrs.field(default=(), converter=_keys)
    topic: str | None = None
    binary: bool = False
    lossless: bool = False
    """Publish them lossless (``Hub.publish(..., lossless=True)``)."""


@attrs.frozen(repr=False)
class Send(Step):
    """``subscriber.send()`` to one client: a message its policy may never drop."""

    client: int = attrs.field(default=0, validator=_nonnegative_int)
    size: int = attrs.field(default=8, validator=_nonnegative_int)


@attrs.frozen(repr=False)
class Advance(Step):
    """Let ``seconds`` of virtual time pass: clients read at their rates, timers fire."""

    seconds: float = attrs.field(validator=_seconds)


@attrs.frozen(repr=False)
class Read(Step):
    """The client reads ``rate`` bytes per second from now on (``math.inf``: keeps up)."""

    rate: float = attrs.field(default=math.inf, validator=_rate)
    client: int = attrs.field(default=0, validator=_nonnegative_int)


@attrs.frozen(repr=False)
class Stall(Step):
    """The client stops reading (``Read(rate=0)``)."""

    client: int = attrs.field(default=0, validator=_nonnegative_int)


@attrs.frozen(repr=False)
class Drain(Step):
    """The client reads ``nbytes`` at once, whatever its rate."""

    nbytes: int = attrs.field(validator=_nonnegative_int)
    client: int = attrs.field(default=0, validator=_nonnegative_int)


@attrs.frozen(repr=False)
class Hangup(Step):
    """The client's connection is lost; what its write buffer held never arrives."""

    client: int = attrs.field(default=0, validator=_nonnegative_int)


def _policy(value: Policy | Callable[[Snapshot], Decision]) -> Policy:
    return as_policy(value)


@attrs.frozen(repr=False)
class SetPolicy(Step):
    """``subscriber.policy = policy`` for one client: its queue is reshaped at once."""

    policy: Policy = attrs.field(converter=_policy)
    client: int = attrs.field(default=0, validator=_nonnegative_int)


@attrs.frozen(repr=False)
class Reconnect(Step):
    """The client's connection is lost (if it was not already) and the client connects
    again at once, resuming from the last offset it received of each topic."""

    client: int = attrs.field(default=0, validator=_nonnegative_int)


@attrs.frozen(repr=False)
class Client(CodeRepr):
    """A client's transport: write-buffer watermarks ``high``/``low`` (bytes), the rate it
    reads at to begin with, the topics it subscribes to (``None``: all), and the bytes its
    kernel takes below the write buffer before the rest waits there (``notsent_lowat``,
    as ``TCP_NOTSENT_LOWAT`` bounds them; 0: no kernel buffer). With ``acks``, it is a
    ``wsfanout.v1`` client that acknowledges what it has read when asked
    (docs/protocol.md): a frame counts as taken once read, and it acknowledges at most
    every ``ACK_INTERVAL``, sending the one it owes when that has passed."""

    high: int = attrs.field(default=1024, validator=_nonnegative_int)
    low: int = attrs.field(default=256, validator=_nonnegative_int)
    rate: float = attrs.field(default=math.inf, validator=_rate)
    topics: frozenset[str] | None = attrs.field(default=None, converter=_topics)
    notsent_lowat: int = attrs.field(default=0, validator=_nonnegative_int)
    acks: bool = attrs.field(default=False, validator=_bool)

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low={self.low!r} must be <= high={self.high!r}")


def _steps(value: Iterable[Step]) -> tuple[Step, ...]:
    steps = tuple(value)
    for index, step in enumerate(steps):
        if not isinstance(step, Step):
            raise TypeError(f"steps[{index}]={step!r} is not a schedule step")
    return steps


def _clients(value: Iterable[Client]) -> tuple[Client, ...]:
    clients = tuple(value)
    if not clients:
        raise ValueError("clients=() must name at least one client")
    return clients


@attrs.frozen(repr=False)
class Schedule(CodeRepr):
    """Steps to run against ``clients`` (one client by default), from time ``start``."""

    steps: tuple[Step, ...] = attrs.field(default=(), converter=_steps)
    clients: tuple[Client, ...] = attrs.field(default=(Client(),), converter=_clients)
    start: float = attrs.field(default=0.0, validator=_seconds)

    def __attrs_post_init__(self) -> None:
        for index, step in enumerate(self.steps):
            client = getattr(step, "client", 0)
            if client >= len(self.clients):
                raise ValueError(
                    f"steps[{index}]={step!r} names client {client}, "
                    f"but the schedule has {len(self.clients)}"
                )

    def __repr__(self) -> str:
        return self.as_code(indent="")

    def as_code(self, indent: str = "    ") -> str:
        """The schedule as Python, one step a line, numbered as failures number them."""
        if not indent:
            args = [f"steps=[{', '.join(repr(step) for step in self.steps)}]"]
        else:
            lines = [f"{indent}{indent}{step!r},  # step {i}" for i, step in enumerate(self.steps)]
            args = ["steps=[\n" + "\n".join(lines) + f"\n{indent}]"]
        if self.clients != (Client(),):
            args.append(f"clients={code(list(self.clients))}")
        if self.start:
            args.append(f"start={self.start!r}")
        if not indent:
            return f"Schedule({', '.join(args)})"
        return "Schedule(\n" + "".join(f"{indent}{arg},\n" for arg in args) + ")"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """hypothesis prints falsifying examples with this: one numbered step a line."""
        with printer.indent(4):
            printer.text("Schedule(")
            printer.break_()
            printer.text("steps=[")
            with printer.indent(4):
                for index, step in enumerate(self.steps):
                    printer.break_()
                    printer.text(f"{step!r},  # step {index}")
            printer.break_()
            printer.text("],")
            if self.clients != (Client(),):
                printer.break_()
                printer.text(f"clients={code(list(self.clients))},")
            if self.start:
                printer.break_()
                printer.text(f"start={self.start!r},")
        printer.break_()
        printer.text(")")
