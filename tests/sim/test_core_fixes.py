"""Core bugs the simulator found, pinned where they live."""

import attrs

from wsfanout import Close, Decision, Policy, Snapshot
from wsfanout.lowlevel import IDLE, Offer, Outbox, make_message
from wsfanout.policies import Disconnect, DropNewest, DropOldest

BOOT = 1_000_000.0
"""Where production clocks are: loop.time() counts from boot, and floats round
differently there than near zero."""


def test_disconnect_closes_at_the_lag_deadline_it_asked_to_be_woken_at() -> None:
    policy = Disconnect(max_lag=0.1)
    oldest = BOOT
    first = policy.decide(Snapshot(now=BOOT, queued_messages=1, lag=0.0))
    deadline = first.recheck_at
    # At its own deadline, lag = deadline - oldest rounds to just under 0.1 seconds; the
    # policy used to answer "ask me again at the deadline", which is now: a busy loop.
    again = policy.decide(Snapshot(now=deadline, queued_messages=1, lag=deadline - oldest))
    assert again.close == Close(1013, "subscriber too slow")


def test_disconnect_closes_when_the_grace_it_asked_to_be_woken_at_ends() -> None:
    policy = Disconnect(max_messages=1, grace=0.1)
    since = BOOT + 0.3
    first = policy.decide(Snapshot(now=since, queued_messages=2))
    assert first.close is None
    again = policy.decide(Snapshot(now=first.recheck_at, queued_messages=2, memo=first.memo))
    assert again.close == Close(1013, "subscriber too slow")


@attrs.frozen(repr=False)
class CloseOnFirstDrop(Policy):
    """Counts drops from the snapshot, as a user's policy may."""

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.dropped:
            return Decision(close=Close(4000, "dropped"))
        return Decision(recheck_messages=1)


def test_a_policy_hears_of_a_message_refused_at_an_empty_queue() -> None:
    outbox = Outbox(DropOldest(max_bytes=4) | CloseOnFirstDrop(), high=0, low=0)
    assert outbox.offer(make_message("ok", seq=0, time=0.0), 0.0, 0) is Offer.WRITE
    # The buffer is past low, so the next message must queue, but it does not fit the
    # byte bound: refused. No recheck condition can fire for an empty queue, so the
    # core tells the policy at once.
    too_big = make_message("too big", seq=1, time=0.0)
    assert outbox.offer(too_big, 0.0, 4) is Offer.CLOSE
    assert outbox.closing == Close(4000, "dropped")
    stats = outbox.stats(0.0)
    assert (stats.dropped_oldest, stats.dropped_newest) == (0, 1)


def test_a_refusal_at_an_empty_queue_changes_nothing_for_policies_that_do_not_decide() -> None:
    outbox = Outbox(DropNewest(max_bytes=4), high=0, low=0)
    outbox.offer(make_message("ok", seq=0, time=0.0), 0.0, 0)
    assert outbox.offer(make_message("too big", seq=1, time=0.0), 0.0, 4) is Offer.NONE
    assert outbox.closing is None
    assert outbox.next_action(0.0, 0) is IDLE
