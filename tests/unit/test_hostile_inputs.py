"""Misuse and hostile values the core refuses, and counts that hold when a policy fails.

The outbox is driven by hand, without sockets, as in ``test_outbox.py``; the
integration counterparts (real sockets) are in ``integration/test_hostile_clients.py``.
"""

from __future__ import annotations

import pytest

from wsfanout import Decision, Hub, PolicyError, Snapshot, as_policy
from wsfanout.lowlevel import Offer, Outbox, Rules, Write, make_message
from wsfanout.policies import Batch, DropOldest

LOW, HIGH = 4096, 16384


def counts_add_up(outbox: Outbox) -> bool:
    stats = outbox.stats(0.0)
    return stats.offered == stats.sent + stats.dropped + stats.queued_messages


def test_a_declared_bound_of_zero_is_refused_not_read_as_the_default() -> None:
    with pytest.raises(PolicyError, match=r"^max_messages=0 must be >= 1$"):
        Rules(max_messages=0)
    with pytest.raises(PolicyError, match=r"^max_bytes=0 must be >= 1$"):
        Rules(max_bytes=0)


def test_a_message_over_the_byte_bound_is_refused_on_the_fast_path() -> None:
    outbox = Outbox(DropOldest(max_bytes=1000), high=HIGH, low=LOW)
    assert outbox.offer(make_message(b"x" * 1001, seq=0, time=0.0), 0.0, 0) is Offer.NONE
    assert outbox.offer(make_message(b"x" * 1000, seq=1, time=0.0), 0.0, 0) is Offer.WRITE
    stats = outbox.stats(0.0)
    assert (stats.sent, stats.dropped_newest) == (1, 1)
    assert counts_add_up(outbox)


def test_a_message_over_the_byte_bound_closes_under_the_default_overflow_rule() -> None:
    outbox = Outbox(as_policy(lambda s: Decision()), high=HIGH, low=LOW)
    too_big = make_message(b"x" * (1024 * 1024 + 1), seq=0, time=0.0)
    assert outbox.offer(too_big, 0.0, 0) is Offer.CLOSE
    assert outbox.closing is not None
    assert outbox.closing.code == 1013
    assert counts_add_up(outbox)


def raises(snapshot: Snapshot) -> Decision:
    raise RuntimeError("a policy bug")


def test_a_policy_raising_on_the_fast_path_counts_the_message_as_lost() -> None:
    outbox = Outbox(as_policy(raises), high=HIGH, low=LOW)
    with pytest.raises(RuntimeError):
        outbox.offer(make_message(b"m", seq=0, time=0.0), 0.0, 0)
    outbox.discard()  # what the shell does when delivery raises
    assert outbox.stats(0.0).disconnected == 1
    assert counts_add_up(outbox)


def test_a_policy_raising_mid_write_counts_the_taken_frames_as_lost_not_sent() -> None:
    asked = []

    def raises_on_the_third_ask(snapshot: Snapshot) -> Decision:
        asked.append(snapshot)
        if len(asked) == 3:
            raise RuntimeError("a policy bug")
        return Decision()

    policy = as_policy(raises_on_the_third_ask) | Batch(max_messages=2)
    outbox = Outbox(policy, high=HIGH, low=LOW)
    for seq in range(5):
        outbox.offer(make_message(b"m", seq=seq, time=0.0), 0.0, HIGH + 1)  # queued
    assert len(asked) == 1
    with pytest.raises(RuntimeError):
        outbox.next_action(0.0, 0)  # asks (2), takes a batch of 2, asks (3): raises
    stats = outbox.stats(0.0)
    assert (stats.sent, stats.frames, stats.batched) == (0, 0, 0)
    outbox.discard()
    assert outbox.stats(0.0).disconnected == 5
    assert counts_add_up(outbox)


def test_the_outbox_still_writes_when_the_policy_is_well_behaved() -> None:
    # The control for the test above: the same policy shape, never raising, writes.
    policy = as_policy(lambda s: Decision()) | Batch(max_messages=2)
    outbox = Outbox(policy, high=HIGH, low=LOW)
    for seq in range(5):
        outbox.offer(make_message(b"m", seq=seq, time=0.0), 0.0, HIGH + 1)
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert len(action.frames) == 3
    assert counts_add_up(outbox)


async def test_publishing_a_lone_surrogate_is_a_value_error_that_takes_no_offset() -> None:
    hub = Hub()
    with pytest.raises(ValueError, match=r"^message has a lone surrogate '\\ud800' at index 2"):
        hub.publish("ok\ud800", topic="t")
    with pytest.raises(TypeError, match="must be str or bytes-like"):
        hub.publish(12, topic="t")  # type: ignore[arg-type]
    hub.publish("fine", topic="t")
    assert hub._fanout.streams.advance("t").last == 2  # "fine" took 1: nothing was skipped
