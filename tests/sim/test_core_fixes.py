"""Core bugs the simulator found, pinned where they live."""

from wsfanout import Close, Snapshot
from wsfanout.policies import Disconnect

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
