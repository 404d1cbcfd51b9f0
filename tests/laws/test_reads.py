"""The reads law: a policy that declares what its decision reads (``Policy.reads``)
decides alike for snapshots that agree on those fields. The core shares one decision
among such subscribers, so this is what keeps sharing invisible."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout import Decision, Policy, Snapshot
from wsfanout.lowlevel import Outbox, make_message
from wsfanout.policies import Batch, Disconnect, DropOldest, Throttle
from wsfanout.testing import ReadsViolation, check_reads

from .strategies import policies, snapshots


@given(st.lists(policies, min_size=1, max_size=3), snapshots(), snapshots())
def test_every_built_in_decides_alike_on_what_it_declares_it_reads(
    stages: list[Policy], snapshot: Snapshot, other: Snapshot
) -> None:
    try:
        policy = stages[0] if len(stages) == 1 else _compose(stages)
    except Exception:  # two stages claiming one slot: not a policy
        return
    check_reads(policy, snapshot, other)


def _compose(stages: list[Policy]) -> Policy:
    policy = stages[0]
    for stage in stages[1:]:
        policy = policy | stage
    return policy


@attrs.frozen
class CountsSent(Policy):
    """Broken on purpose: declares it reads the clock alone, but holds by ``sent``."""

    reads = frozenset(["now"])

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(send_at=snapshot.now + snapshot.sent)


def test_the_checker_catches_a_policy_that_reads_what_it_did_not_declare() -> None:
    one = Snapshot(now=5.0, sent=1)
    other = Snapshot(now=9.0, sent=2)
    with pytest.raises(ReadsViolation) as caught:
        check_reads(CountsSent(), one, other)
    assert caught.value.policy == CountsSent()
    assert "differ only in ['sent']" in str(caught.value)
    assert caught.value.decisions == (Decision(send_at=6.0), Decision(send_at=7.0))


def test_a_subclass_that_decides_anew_does_not_inherit_the_reads() -> None:
    class Slower(Throttle):
        def decide(self, snapshot: Snapshot) -> Decision:
            return Decision(send_at=snapshot.now + snapshot.dropped)

    assert check_reads(Slower(rate=1.0), Snapshot(now=1.0), Snapshot(now=1.0)) is False
    assert check_reads(Throttle(rate=1.0), Snapshot(now=1.0), Snapshot(now=1.0)) is True


@attrs.frozen
class Counting(Policy):
    """A batch-like hold that counts how often it is asked (a side channel for the test)."""

    asked: list[int] = attrs.field(eq=False, hash=False, factory=list)
    reads = frozenset(["now", "lag", "queued_messages"])

    def decide(self, snapshot: Snapshot) -> Decision:
        self.asked.append(snapshot.queued_messages)
        return Decision(send_at=snapshot.now - snapshot.lag + 1.0, recheck_messages=4)


def test_subscribers_that_agree_share_one_decision_and_others_are_asked() -> None:
    policy = Counting()
    outboxes = [Outbox(policy, high=65536, low=16384) for _ in range(100)]
    message = make_message("x", seq=1, time=0.0)
    for outbox in outboxes:
        outbox.offer(message, 0.0, 0)
    # The fast path asks once about an empty queue; every other subscriber shares it.
    assert policy.asked == [0]
    for outbox in outboxes:
        outbox.next_action(0.0, 0)  # the relay plans the wait: the queue holds one now
    assert policy.asked == [0, 1]
    # One subscriber that differs (a second message) is asked for itself.
    outboxes[0].offer(make_message("y", seq=2, time=0.5), 0.5, 0)
    outboxes[0].next_action(0.5, 0)
    assert policy.asked == [0, 1, 2]


def test_a_policy_that_declares_nothing_is_asked_for_every_subscriber() -> None:
    policy = Counting()
    undeclared = attrs.evolve(policy)
    type_without = type("Undeclared", (Counting,), {"decide": Counting.decide, "reads": None})
    plain = type_without()
    outboxes = [Outbox(plain, high=65536, low=16384) for _ in range(10)]
    for outbox in outboxes:
        outbox.offer(make_message("x", seq=1, time=0.0), 0.0, 0)
    assert len(plain.asked) == 10
    assert undeclared == policy


def test_shared_decisions_are_per_policy_value() -> None:
    # Equal policies are one value and share; a different bound is another table.
    batch = Batch(max_messages=4, max_delay=0.01)
    a = Outbox(batch | DropOldest(max_messages=8), high=65536, low=16384)
    b = Outbox(Batch(max_messages=4, max_delay=0.02), high=65536, low=16384)
    message = make_message("x", seq=1, time=0.0)
    a.offer(message, 0.0, 0)
    b.offer(message, 0.0, 0)
    wait_a = a.next_action(0.0, 0)
    wait_b = b.next_action(0.0, 0)
    assert (wait_a.until, wait_b.until) == (0.01, 0.02)  # type: ignore[union-attr]


def test_disconnect_in_its_grace_is_asked_for_itself() -> None:
    # Once the grace began the memo holds when: no sharing while it is set.
    policy = Disconnect(max_messages=1, grace=2.0)
    outbox = Outbox(policy, high=65536, low=16384)
    for seq in range(3):
        outbox.offer(make_message("x", seq=seq, time=0.0), 0.0, 10**6)
    assert outbox.snapshot(0.0, 10**6).memo == 0.0
    # A second subscriber in the same state at 2.0 but with no grace begun would not
    # close; this one, at the end of its grace (the relay's recheck), does.
    action = outbox.next_action(2.0, 10**6)
    assert type(action).__name__ == "CloseAction"
    fresh = Outbox(policy, high=65536, low=16384)
    for seq in range(3):
        fresh.offer(make_message("x", seq=seq, time=2.0), 2.0, 10**6)
    assert fresh.closing is None
