"""The steady law: a policy that declares it is steady (``Policy.steady``) still decides
to write for what a write leaves. The relay asks such a policy once per write instead of
before every frame, so this is what keeps skipping those asks invisible."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout import Decision, Policy, Snapshot
from wsfanout.lowlevel import Outbox, Write, make_message
from wsfanout.policies import Batch, Disconnect, DropOldest, Notify, Throttle
from wsfanout.testing import SteadyViolation, check_steady

from .strategies import policies, snapshots


@st.composite
def successors(draw: st.DrawFn, before: Snapshot) -> Snapshot:
    """A state a write at ``before`` can leave: frames taken from the head of the queue."""
    taken = draw(st.integers(min_value=1, max_value=before.queued_messages - 1))
    return attrs.evolve(
        before,
        queued_messages=before.queued_messages - taken,
        queued_bytes=draw(st.integers(min_value=0, max_value=before.queued_bytes)),
        lag=draw(st.floats(min_value=0.0, max_value=before.lag)),
        write_buffer=before.write_buffer + draw(st.integers(min_value=0, max_value=1 << 20)),
        last_send=before.now,
        sent=before.sent + taken,
    )


@given(st.lists(policies, min_size=1, max_size=3), st.data())
def test_every_steady_built_in_still_writes_for_what_a_write_leaves(
    stages: list[Policy], data: st.DataObject
) -> None:
    try:
        policy = stages[0]
        for stage in stages[1:]:
            policy = policy | stage
    except Exception:  # two stages claiming one slot: not a policy
        return
    before = data.draw(snapshots().filter(lambda s: s.queued_messages >= 2))
    check_steady(policy, before, data.draw(successors(before)))


def test_which_built_ins_are_steady() -> None:
    assert Disconnect(max_lag=30.0).steady
    assert (DropOldest() | Disconnect(max_lag=1.0, max_messages=10) | Notify()).steady
    assert not Disconnect(max_buffer=65536).steady  # a write fills the buffer it watches
    assert not Batch(max_messages=4, max_delay=0.01).steady  # the next batch waits
    assert not (Throttle(rate=10.0) | Disconnect(max_lag=1.0)).steady  # one frame a slot


@attrs.frozen
class CloseAtBuffer(Disconnect):
    """Broken on purpose: watches the write buffer, yet declares itself steady."""

    steady = True

    def decide(self, snapshot: Snapshot) -> Decision:
        return super().decide(snapshot)


def test_the_checker_catches_a_steady_policy_that_a_write_changes() -> None:
    policy = CloseAtBuffer(max_buffer=1000)
    before = Snapshot(now=5.0, queued_messages=3, queued_bytes=300, lag=1.0, write_buffer=0)
    after = attrs.evolve(before, queued_messages=2, queued_bytes=200, write_buffer=1100)
    after = attrs.evolve(after, last_send=5.0, sent=1)
    with pytest.raises(SteadyViolation) as caught:
        check_steady(policy, before, after)
    assert caught.value.policy == policy
    assert caught.value.decisions[0] == policy.decide(before)
    assert caught.value.decisions[1].close is not None
    assert "declares steady=True" in str(caught.value)


def test_the_checker_refuses_a_state_no_write_can_leave() -> None:
    before = Snapshot(now=5.0, queued_messages=3, queued_bytes=300, lag=1.0)
    grown = attrs.evolve(before, queued_messages=4, last_send=5.0)
    with pytest.raises(ValueError, match=r"queued_messages=4 is not in \[1, 3\)"):
        check_steady(Disconnect(max_lag=30.0), before, grown)


def test_a_subclass_that_decides_anew_is_not_steady() -> None:
    class Stricter(Disconnect):
        def decide(self, snapshot: Snapshot) -> Decision:
            return super().decide(snapshot)

    before = Snapshot(now=5.0, queued_messages=3, queued_bytes=300, lag=1.0)
    after = attrs.evolve(before, queued_messages=2, last_send=5.0)
    assert check_steady(Stricter(max_lag=30.0), before, after) is False
    assert check_steady(Disconnect(max_lag=30.0), before, after) is True


@attrs.frozen
class Counting(Disconnect):
    """Disconnect that counts how often it is asked (a side channel for the test)."""

    asked: list[int] = attrs.field(eq=False, hash=False, factory=list)
    steady = True
    reads = None  # type: ignore[assignment]  # asked every time, not shared: each ask counted

    def decide(self, snapshot: Snapshot) -> Decision:
        self.asked.append(snapshot.queued_messages)
        return super().decide(snapshot)


def test_a_steady_policy_is_asked_once_per_write_and_another_before_every_frame() -> None:
    for steady, expected in ((True, [10]), (False, list(range(10, 0, -1)))):
        policy = attrs.evolve(Counting(max_lag=30.0), asked=[])
        if not steady:
            policy = type("Unsteady", (Counting,), {"steady": False})(max_lag=30.0)
        outbox = Outbox(policy, high=1 << 20, low=0)
        for seq in range(10):  # a full buffer: every message queued, nobody asked
            outbox.offer(make_message("x" * 100, seq=seq, time=0.0), 0.0, 1 << 30)
        policy.asked.clear()
        action = outbox.next_action(1.0, 0)
        assert type(action) is Write
        assert len(action.frames) == 10
        assert policy.asked == expected
