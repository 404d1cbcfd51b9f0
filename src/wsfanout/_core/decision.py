"""What a policy answers: a standing decision, joined field by field when policies compose."""

from __future__ import annotations

import math

import attrs

from .validate import check_close

__all__ = ["NEUTRAL", "Close", "Decision", "join"]


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


NEUTRAL = Decision()
"""The identity of :func:`join`: no close, no hold, no recheck."""


def join(left: Decision, right: Decision) -> Decision:
    """Combine two decisions: first close, latest ``send_at`` and earliest recheck win.

    The join is associative and :data:`NEUTRAL` is its identity, so a composed policy's
    decision does not depend on how its stages were grouped. ``memo`` is not joined:
    a composed policy keeps one memo per stage.
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
    )
