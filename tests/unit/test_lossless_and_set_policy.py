"""Lossless messages (never dropped, skipped, conflated or batched; else the subscriber
closes) and policies replaced while they run (the queue reshaped at once, counters going
on, order kept), on the outbox alone."""

from __future__ import annotations

import json

import pytest

from wsfanout import Close, Decision, Snapshot, as_policy
from wsfanout.lowlevel import (
    IDLE,
    CloseAction,
    Message,
    Notice,
    Offer,
    Outbox,
    Wait,
    Write,
    make_message,
)
from wsfanout.policies import (
    DEFAULT_POLICY,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Notify,
    SkipToLatest,
    Throttle,
)

HIGH, LOW = 1000, 100
STALLED = HIGH + 1


def msg(seq: int, *, lossless: bool = False, key: str | None = None, size: int = 10) -> Message:
    return make_message(
        "x" * size, seq=seq, time=0.0, key=key, droppable=not lossless, offset=seq, epoch="e"
    )


def drain(outbox: Outbox, now: float = 0.0) -> list[list[int]]:
    """Run the relay on a drained buffer; the seqs of each frame written (notices: [])."""
    frames: list[list[int]] = []
    for _ in range(1000):
        action = outbox.next_action(now, 0)
        if isinstance(action, Write):
            for frame in action.frames:
                parts = getattr(frame, "parts", (frame,))
                frames.append([] if frame.control else [part.seq for part in parts])
        else:
            assert action is IDLE or isinstance(action, (Wait, CloseAction)), action
            return frames
    raise AssertionError("never settled")


# -- lossless messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        DropOldest(max_messages=3),
        DropNewest(max_messages=3),
        SkipToLatest() | DropOldest(max_messages=3),
        ConflateByKey(max_messages=3) | DropOldest(),
    ],
    ids=repr,
)
def test_no_dropping_policy_drops_skips_or_conflates_a_lossless_message(policy: object) -> None:
    outbox = Outbox(policy, high=HIGH, low=LOW)  # type: ignore[arg-type]
    outbox.offer(msg(1, lossless=True, key="k"), 0.0, STALLED)
    for seq in range(2, 12):
        outbox.offer(msg(seq, key="k"), 0.0, STALLED)
    written = [seq for frame in drain(outbox) for seq in frame]
    assert written[0] == 1
    assert written == sorted(written)


def test_a_lossless_message_is_never_batched_and_keeps_its_place() -> None:
    outbox = Outbox(Batch(max_messages=10), high=HIGH, low=LOW)
    for seq in range(1, 8):
        outbox.offer(msg(seq, lossless=seq == 4), 0.0, STALLED)
    assert drain(outbox) == [[1, 2, 3], [4], [5, 6, 7]]


def test_lossless_messages_that_alone_exceed_the_bound_close_the_subscriber() -> None:
    outbox = Outbox(DropOldest(max_messages=3), high=HIGH, low=LOW)
    outcomes = [outbox.offer(msg(seq, lossless=True), 0.0, STALLED) for seq in range(1, 5)]
    assert outcomes == [Offer.KICK, Offer.NONE, Offer.NONE, Offer.CLOSE]
    closing = outbox.closing
    assert closing == Close(1013, "queue full")
    assert "a 10-byte message did not fit: 3 messages" in closing.cause
    stats = outbox.stats(0.0)
    assert (stats.dropped_oldest, stats.disconnected) == (0, 4)


def test_under_the_default_policy_a_full_queue_closes_for_lossless_and_lossy_alike() -> None:
    outbox = Outbox(DEFAULT_POLICY | DropOldest(max_messages=2), high=HIGH, low=LOW)
    outbox.offer(msg(1, lossless=True), 0.0, STALLED)
    outbox.offer(msg(2), 0.0, STALLED)
    # The lossy one makes room for the lossless one.
    assert outbox.offer(msg(3, lossless=True), 0.0, STALLED) is Offer.NONE
    assert [m.seq for m in outbox.queue] == [1, 3]
    assert outbox.offer(msg(4, lossless=True), 0.0, STALLED) is Offer.CLOSE


# -- replacing the policy -------------------------------------------------------------------


def test_a_smaller_bound_evicts_at_once_and_the_counters_go_on() -> None:
    outbox = Outbox(DropOldest(max_messages=10), high=HIGH, low=LOW)
    outbox.offer(msg(0), 0.0, 0)  # written: sent=1
    for seq in range(1, 9):
        outbox.offer(msg(seq), 0.0, STALLED)
    assert outbox.set_policy(DropOldest(max_messages=3), 1.0, STALLED) is Offer.KICK
    assert [m.seq for m in outbox.queue] == [6, 7, 8]
    stats = outbox.stats(1.0)
    assert (stats.offered, stats.sent, stats.dropped_oldest, stats.peak_messages) == (9, 1, 5, 8)
    assert stats.lag == 1.0, "lag goes on from the first message not received"
    assert drain(outbox) == [[6], [7], [8]]


def test_drop_newest_keeps_the_oldest_and_a_closing_policy_closes() -> None:
    outbox = Outbox(DropOldest(max_messages=10), high=HIGH, low=LOW)
    for seq in range(1, 7):
        outbox.offer(msg(seq), 0.0, STALLED)
    outbox.set_policy(DropNewest(max_messages=2), 0.0, STALLED)
    assert [m.seq for m in outbox.queue] == [1, 2]
    assert outbox.stats(0.0).dropped_newest == 4
    assert outbox.set_policy(Disconnect(max_messages=1), 0.0, STALLED) is Offer.CLOSE
    assert outbox.closing is not None
    assert outbox.closing.reason == "subscriber too slow"
    assert outbox.set_policy(DEFAULT_POLICY, 0.0, 0) is Offer.NONE, "closing: recorded only"
    assert outbox.policy == DEFAULT_POLICY


def test_an_arrival_rule_applies_to_what_is_queued() -> None:
    outbox = Outbox(DropOldest(max_messages=10), high=HIGH, low=LOW)
    for seq, key in enumerate(["a", "b", "a", None, "b"], start=1):
        outbox.offer(msg(seq, key=key), 0.0, STALLED)
    outbox.set_policy(ConflateByKey(), 0.0, STALLED)
    assert [m.seq for m in outbox.queue] == [3, 4, 5]
    outbox.set_policy(SkipToLatest(), 0.0, STALLED)
    assert [m.seq for m in outbox.queue] == [5]
    stats = outbox.stats(0.0)
    assert (stats.conflated, stats.skipped) == (2, 2)


def test_lossless_messages_that_do_not_fit_the_new_bound_close_the_subscriber() -> None:
    outbox = Outbox(DropOldest(max_messages=10), high=HIGH, low=LOW)
    for seq in range(1, 6):
        outbox.offer(msg(seq, lossless=seq % 2 == 1), 0.0, STALLED)
    assert outbox.set_policy(DropOldest(max_messages=3), 0.0, STALLED) is Offer.KICK
    assert [m.seq for m in outbox.queue] == [1, 3, 5], "lossy ones made room"
    assert outbox.set_policy(DropOldest(max_messages=2), 0.0, STALLED) is Offer.CLOSE
    assert outbox.closing is not None
    assert "cannot hold the lossless messages queued" in outbox.closing.cause
    stats = outbox.stats(0.0)
    assert stats.offered == stats.sent + stats.dropped + stats.queued_messages
    assert stats.disconnected == 3


def test_a_new_notify_announces_what_the_reshape_evicts_and_the_old_one_what_it_lost() -> None:
    outbox = Outbox(DropOldest(max_messages=2) | Notify(format="json-binary"), high=HIGH, low=LOW)
    for seq in range(1, 5):
        outbox.offer(msg(seq), 0.0, STALLED)  # 1 and 2 evicted
    outbox.set_policy(DropOldest(max_messages=1) | Notify(), 0.0, STALLED)  # 3 evicted
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert all(isinstance(frame, Notice) for frame in action.frames)
    assert [(f.opcode, json.loads(f.payload)["ranges"]) for f in action.frames] == [
        (2, [[1, 2]]),  # in the old policy's format
        (1, [[3, 3]]),
    ]
    assert drain(outbox) == [[4]]


def test_a_waiting_relay_plans_again_under_the_new_policy() -> None:
    outbox = Outbox(Throttle(rate=0.1), high=HIGH, low=LOW)
    outbox.offer(msg(1), 0.0, 0)
    outbox.offer(msg(2), 0.0, 0)
    held = outbox.next_action(0.0, 0)
    assert isinstance(held, Wait)
    assert held.until == 10.0
    assert outbox.set_policy(DropOldest(), 0.0, 0) is Offer.KICK
    assert drain(outbox) == [[2]]


def test_the_new_policy_starts_with_an_empty_memo() -> None:
    memos: list[object] = []

    def remembers(snapshot: Snapshot) -> Decision:
        memos.append(snapshot.memo)
        return Decision(memo="mine")

    outbox = Outbox(Disconnect(max_messages=1, grace=10.0), high=HIGH, low=LOW)
    outbox.offer(msg(1), 0.0, STALLED)
    outbox.offer(msg(2), 0.0, STALLED)  # Disconnect's grace starts: memo = 0.0
    outbox.set_policy(as_policy(remembers), 0.0, STALLED)
    outbox.offer(msg(3), 0.0, STALLED)
    assert memos[0] is None
