"""Check what a policy declares it reads (:attr:`Policy.reads`): the core shares one
decision among subscribers whose snapshots agree on those fields, so a policy that
reads anything else would hand one subscriber another's answer."""

from __future__ import annotations

import attrs

from .._core.decision import Decision
from .._core.policy import Policy, shared_reads
from .._core.snapshot import Snapshot

__all__ = ["ReadsViolation", "check_reads"]


class ReadsViolation(AssertionError):
    """Two snapshots that agree on every field a policy declares it reads got different
    decisions; the exception carries both, and both decisions."""

    __module__ = "wsfanout.testing"

    def __init__(
        self,
        policy: Policy,
        reads: frozenset[str],
        snapshot: Snapshot,
        variant: Snapshot,
        decisions: tuple[Decision, Decision],
    ) -> None:
        self.policy = policy
        self.reads = reads
        self.snapshot = snapshot
        self.variant = variant
        self.decisions = decisions
        differ = sorted(
            field.name
            for field in attrs.fields(Snapshot)
            if getattr(snapshot, field.name) != getattr(variant, field.name)
        )
        super().__init__(
            f"{policy!r} declares reads={sorted(reads)} but decided differently for "
            f"snapshots that differ only in {differ}:\n  {snapshot!r}\n  -> {decisions[0]!r}\n"
            f"  {variant!r}\n  -> {decisions[1]!r}"
        )


def check_reads(policy: Policy, snapshot: Snapshot, other: Snapshot) -> bool:
    """Check ``policy``'s declared reads on a pair of snapshots: ``other`` with every
    declared field taken from ``snapshot`` must get the same decision as ``snapshot``
    (both with no memo, as the core shares decisions only then). Returns False for a
    policy that declares nothing the core would trust (nothing to check), True when
    the check passed; raises :class:`ReadsViolation` when it did not.

    Draw both snapshots at random (``hypothesis``): the fields the policy does not
    declare then differ, and a policy that reads one of them is caught.
    """
    reads = shared_reads(policy)
    if reads is None:
        return False
    snapshot = attrs.evolve(snapshot, memo=None)
    variant = attrs.evolve(
        other, memo=None, **{name: getattr(snapshot, name) for name in reads if name != "memo"}
    )
    decided = (policy.decide(snapshot), policy.decide(variant))
    if decided[0] != decided[1]:
        raise ReadsViolation(policy, reads, snapshot, variant, decided)
    return True
