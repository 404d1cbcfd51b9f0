"""What a policy answers: a standing decision, joined field by field when policies compose."""

from __future__ import annotations

import json
import math

import attrs

from .validate import check_close

__all__ = ["NEUTRAL", "Close", "Decision", "LevelStep", "join"]


@attrs.frozen
class Close:
    """Close the subscriber with this WebSocket close code and reason."""

    code: int = attrs.field(default=1013)
    reason: str = attrs.field(default="")
    cause: str = attrs.field(default="", eq=False)
    """A human explanation kept in the statistics (never sent to the client)."""

    def __attrs_post_init__(self) -> None:
        check_close(self.code, self.reason)


@attrs.frozen(kw_only=True)
class LevelStep:
    """A step between the levels of a ladder (``Escalate``, ``Adaptive``): an event the
    core counts in the subscriber's statistics, hands to the application's ``on_step``
    and, with ``announce``, sends the client as a control frame (:meth:`notice`)."""

    level: int
    """The level stepped to (0 is the ladder's first level)."""
    previous: int
    """The level stepped from."""
    name: str
    """The new level's name."""
    at: float
    """When, on the snapshot's clock."""
    cause: str = attrs.field(default="", eq=False)
    """Why, in words (the condition that held): for logs, never sent to the client."""
    announce: bool = attrs.field(default=False, eq=False)
    """Send the client :meth:`notice` (docs/protocol.md, "Policy levels")."""

    @property
    def up(self) -> bool:
        """True for a step to a higher level (stricter, or slower paced)."""
        return self.level > self.previous

    def notice(self) -> str:
        """The control frame announcing this step: ``{"type":"level",...}``."""
        return json.dumps(
            {"type": "level", "level": self.level, "name": self.name, "from": self.previous},
            ensure_ascii=False,
            separators=(",", ":"),
        )


@attrs.frozen(kw_only=True)
class Decision:
    """A policy's standing order for one subscriber, valid until a recheck condition fires.

    The core asks again before every write, when ``recheck_at`` passes, and when the
    queue reaches ``recheck_messages`` or ``recheck_bytes``; in between it acts on this.
    """

    close: Close | None = None
    """Close the subscriber now."""

    send_at: float = -math.inf
    """Write nothing before this time (throttling, lingering to fill a batch)."""

    recheck_at: float = math.inf
    """Ask the policy again at this time even if nothing else happens."""

    recheck_messages: float = math.inf
    """Ask again as soon as the queue holds this many messages."""

    recheck_bytes: float = math.inf
    """Ask again as soon as the queue holds this many bytes."""

    memo: object = None
    """State to hand back in the next :class:`Snapshot`; policies stay pure values."""

    step: LevelStep | None = None
    """A step between levels that this decision takes (a ladder's): the core applies
    the new level's queue rules at once and reports the step."""


NEUTRAL = Decision()
"""The identity of :func:`join`: no close, no hold, no recheck."""


def join(left: Decision, right: Decision) -> Decision:
    """Combine two decisions: first close, latest ``send_at``, earliest recheck and
    first ``step`` win.

    The join is associative and :data:`NEUTRAL` is its identity, so a composed policy's
    decision does not depend on how its stages were grouped. ``memo`` is not joined:
    a composed policy keeps one memo per stage. (A composition has at most one ladder,
    so at most one stage steps.)
    """
    if right is NEUTRAL:
        return left
    if left is NEUTRAL:
        return right
    return Decision(
        close=left.close if left.close is not None else right.close,
        send_at=max(left.send_at, right.send_at),
        recheck_at=min(left.recheck_at, right.recheck_at),
        recheck_messages=min(left.recheck_messages, right.recheck_messages),
        recheck_bytes=min(left.recheck_bytes, right.recheck_bytes),
        step=left.step if left.step is not None else right.step,
    )
