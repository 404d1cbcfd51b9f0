"""Check a policy's :attr:`Policy.steady` declaration: the relay asks such a policy once
per write rather than before each frame, so a decision to write must still write for
what the write leaves."""

from __future__ import annotations

import attrs

from .._core.decision import Decision
from .._core.policy import Policy, is_steady
from .._core.snapshot import Snapshot

__all__ = ["SteadyViolation", "check_steady"]


class SteadyViolation(AssertionError):
    """A policy declared steady decided to write for ``before`` but not for ``after``,
    a state that write can leave; the exception carries both, and both decisions."""

    __module__ = "wsfanout.testing"

    def __init__(
        self,
        policy: Policy,
        before: Snapshot,
        after: Snapshot,
        decisions: tuple[Decision, Decision],
    ) -> None:
        self.policy = policy
        self.before = before
        self.after = after
        self.decisions = decisions
        super().__init__(
            f"{policy!r} declares steady=True but a decision to write did not stand for "
            f"what the write leaves:\n  {before!r}\n  -> {decisions[0]!r}\n"
            f"  {after!r}\n  -> {decisions[1]!r}"
        )


def writes(decision: Decision, now: float) -> bool:
    """The decision says to write now, and the relay would not ask again for its memo."""
    return (
        decision.close is None
        and decision.step is None
        and decision.memo is None
        and decision.send_at <= now
    )


def check_steady(policy: Policy, before: Snapshot, after: Snapshot) -> bool:
    """Check ``policy``'s steady declaration on ``before`` and ``after``, a state a write
    at ``before`` can leave (``ValueError`` if it is not one: the same instant and
    rates, fewer messages but at least one, no more bytes, no larger lag, no smaller
    write buffer, ``last_send`` at ``now``, no fewer sent or unacknowledged). Returns
    False when there is nothing to check (the policy does not declare it, or does not
    decide to write at ``before``), True when the check passed; raises
    :class:`SteadyViolation` when it did not. Draw both at random (``hypothesis``)."""
    if not is_steady(policy):
        return False
    _check_successor(before, after)
    first = policy.decide(attrs.evolve(before, memo=None))
    if not writes(first, before.now):
        return False
    second = policy.decide(attrs.evolve(after, memo=None))
    if not writes(second, after.now):
        raise SteadyViolation(policy, before, after, (first, second))
    return True


def _check_successor(before: Snapshot, after: Snapshot) -> None:
    problems = []
    if after.now != before.now:
        problems.append(f"now={after.now!r} is not before's now={before.now!r}")
    if not 1 <= after.queued_messages < before.queued_messages:
        problems.append(
            f"queued_messages={after.queued_messages} is not in [1, {before.queued_messages})"
        )
    if after.queued_bytes > before.queued_bytes:
        problems.append(f"queued_bytes={after.queued_bytes} > {before.queued_bytes}")
    if after.lag > before.lag:
        problems.append(f"lag={after.lag!r} > {before.lag!r}")
    if after.write_buffer < before.write_buffer:
        problems.append(f"write_buffer={after.write_buffer} < {before.write_buffer}")
    if after.last_send != after.now:
        problems.append(f"last_send={after.last_send!r} is not now={after.now!r}")
    if after.sent < before.sent:
        problems.append(f"sent={after.sent} < {before.sent}")
    if (after.unacked is None) != (before.unacked is None) or (
        after.unacked is not None and after.unacked < (before.unacked or 0)
    ):
        problems.append(f"unacked={after.unacked!r} after {before.unacked!r}")
    for name in ("dropped", "drain_rate", "delivery_rate", "kernel_unsent", "ack_rate"):
        if getattr(after, name) != getattr(before, name):
            problems.append(f"{name}={getattr(after, name)!r} is not {getattr(before, name)!r}")
    if problems:
        raise ValueError("after is not a state a write can leave: " + "; ".join(problems))
