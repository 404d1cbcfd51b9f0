"""Escalate: levels with hysteresis, decided on snapshots and carried out by the outbox."""

from __future__ import annotations

import json
import math

import pytest

from wsfanout import (
    Close,
    Decision,
    LevelStep,
    PolicyConflictError,
    PolicyError,
    Snapshot,
    as_policy,
)
from wsfanout._core.ladder import carried
from wsfanout.lowlevel import (
    IDLE,
    CloseAction,
    Message,
    Offer,
    Outbox,
    Wait,
    Write,
    make_message,
)
from wsfanout.policies import (
    Above,
    Batch,
    Below,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Escalate,
    Level,
    SkipToLatest,
    Throttle,
)
from wsfanout.testing import (
    Advance,
    Client,
    LevelBound,
    MaxDrops,
    Publish,
    Schedule,
    StepsApart,
    check_guarantees,
)

LADDER = Escalate(
    levels=[
        Level(name="normal"),
        Level(ConflateByKey(), up=Above("lag", 1.0), down=Below("lag", 0.25), name="conflate"),
        Level(
            ConflateByKey() | DropOldest(max_messages=4),
            up=Above("queued_messages", 8),
            down=Below("queued_messages", 2),
            name="drop-oldest",
        ),
    ],
    hold=2.0,
)


def step_of(decision: object) -> tuple[int, int] | None:
    step = getattr(decision, "step", None)
    return None if step is None else (step.previous, step.level)


# -- the policy on snapshots ------------------------------------------------------------


def test_it_steps_up_one_level_when_the_next_level_s_condition_holds() -> None:
    first = LADDER.decide(Snapshot(now=10.0, queued_messages=3, lag=0.5))
    assert first.step is None
    assert first.recheck_at == 10.5  # when lag reaches 1 s
    second = LADDER.decide(Snapshot(now=10.5, queued_messages=3, lag=1.0, memo=first.memo))
    assert second.step == LevelStep(level=1, previous=0, name="conflate", at=10.5)
    assert second.step.cause == "lag 1 > 1"
    assert second.recheck_at == 12.5  # the hold
    # Even far behind, nothing more happens until the hold is over: one step at a time.
    held = LADDER.decide(Snapshot(now=11.0, queued_messages=50, lag=9.0, memo=second.memo))
    assert held.step is None
    later = LADDER.decide(Snapshot(now=12.5, queued_messages=50, lag=9.0, memo=held.memo))
    assert step_of(later) == (1, 2)


def test_it_steps_down_only_below_the_lower_threshold_and_after_the_hold() -> None:
    up = LADDER.decide(Snapshot(now=0.0, queued_messages=3, lag=1.5))
    assert step_of(up) == (0, 1)
    memo = up.memo
    # Between the thresholds (0.25 s < lag < 1 s) it stays; below, it waits out the hold.
    between = LADDER.decide(Snapshot(now=5.0, queued_messages=3, lag=0.5, memo=memo))
    assert between.step is None
    early = LADDER.decide(Snapshot(now=1.0, queued_messages=1, lag=0.1, memo=memo))
    assert early.step is None
    down = LADDER.decide(Snapshot(now=2.0, queued_messages=1, lag=0.1, memo=memo))
    assert step_of(down) == (1, 0)
    assert down.step is not None
    assert down.step.name == "normal"


def test_above_its_first_level_it_looks_again_every_hold_to_step_down() -> None:
    up = LADDER.decide(Snapshot(now=0.0, queued_messages=3, lag=1.5))
    idle = LADDER.decide(Snapshot(now=2.0, queued_messages=0, memo=up.memo))
    assert step_of(idle) == (1, 0)
    # Above level 0 with a down condition that does not hold yet: a poll every hold while
    # messages wait; none once the queue is empty (the next message asks again).
    stuck = LADDER.decide(Snapshot(now=3.0, queued_messages=3, lag=0.5, memo=up.memo))
    assert stuck.recheck_at == 5.0
    rests = Escalate(
        levels=[Level(), Level(up=Above("lag", 1.0), down=Below("drain_rate", 100))], hold=2.0
    )
    memo = rests.decide(Snapshot(now=0.0, queued_messages=3, lag=1.5)).memo
    assert rests.decide(Snapshot(now=1.0, memo=memo)).recheck_at == 2.0  # the hold's end
    assert rests.decide(Snapshot(now=2.0, memo=memo)).recheck_at == math.inf
    at_base = LADDER.decide(Snapshot(now=3.0, queued_messages=0))
    assert at_base.recheck_at == math.inf


def test_the_level_in_force_decides_with_its_own_memo() -> None:
    ladder = Escalate(
        levels=[Level(), Level(Throttle(rate=2.0), up=Above("queued_messages", 1))], hold=1.0
    )
    up = ladder.decide(Snapshot(now=0.0, queued_messages=2, last_send=0.0))
    assert step_of(up) == (0, 1)
    assert up.send_at == 0.5  # Throttle's decision, joined
    assert ladder.decide(Snapshot(now=0.0, queued_messages=2, last_send=None)).send_at == -math.inf


def test_levels_compose_with_the_other_stages_and_conflicts_are_found_per_level() -> None:
    policy = LADDER | Disconnect(max_lag=30.0)
    assert policy.level_policies() == (
        Disconnect(max_lag=30.0),
        ConflateByKey() | Disconnect(max_lag=30.0),
        ConflateByKey() | DropOldest(max_messages=4) | Disconnect(max_lag=30.0),
    )
    assert policy.guarantees()[:2] == (StepsApart(hold=2.0), LevelBound())
    with pytest.raises(PolicyConflictError, match=r"^at level 2 of Escalate\(") as info:
        LADDER | DropNewest()
    assert info.value.slot == "overflow"
    with pytest.raises(PolicyConflictError, match="both step between levels") as info:
        LADDER | Escalate(levels=[Level(), Level(up=Above("lag", 1.0))])
    assert info.value.slot == "levels"


def test_a_ladder_is_a_value_whose_repr_builds_it() -> None:
    namespace: dict[str, object] = {}
    exec("from wsfanout.policies import *", namespace)
    assert eval(repr(LADDER), namespace) == LADDER
    assert repr(Escalate(levels=[Level(), Level(up=Above("lag", 1.0))], announce=True)) == (
        "Escalate(levels=[Level(), Level(up=Above('lag', 1.0))], announce=True)"
    )
    assert LADDER.level_names() == ("normal", "conflate", "drop-oldest")
    assert Escalate(levels=[Level(), Level(up=Above("lag", 1.0))]).level_names() == (
        "normal",
        "level-1",
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Escalate(levels=[Level()]), r"^levels=\(Level\(\),\) must hold at least two"),
        (
            lambda: Escalate(levels=[Level(up=Above("lag", 1.0)), Level(up=Above("lag", 2.0))]),
            r"^levels\[0\]=Level\(up=Above\('lag', 1.0\)\) is where every subscriber starts",
        ),
        (
            lambda: Escalate(levels=[Level(), Level(SkipToLatest())]),
            r"^levels\[1\]=Level\(SkipToLatest\(\)\) needs an up condition",
        ),
        (
            lambda: Escalate(levels=[Level(), Level(up=Above("lag", 1.0), name="normal")]),
            r"^levels\[1\] is named 'normal', as another level is$",
        ),
        (
            lambda: Escalate(levels=[Level(), Level(up=Above("lag", 1.0))], hold=0),
            r"^hold=0 must be a finite number of seconds > 0$",
        ),
        (lambda: Level(up="lag > 1s"), r"^up='lag > 1s' must be a Condition"),  # type: ignore[arg-type]
        (
            lambda: Level(LADDER),
            r"^policy=Escalate\(.*\) steps between levels itself; ladders do not nest$",
        ),
        (lambda: Escalate(levels="normal"), r"^levels='normal' must be a sequence of Level$"),  # type: ignore[arg-type]
    ],
)
def test_a_wrong_ladder_is_refused_naming_what_is_wrong(make: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        make()  # type: ignore[operator]


# -- the outbox carries the steps out ---------------------------------------------------

HIGH, LOW = 1000, 100


def message(seq: int, key: str | None = None, size: int = 10) -> Message:
    return make_message("x" * size, seq=seq, time=float(seq) / 1000, key=key)


def fill(outbox: Outbox, count: int, now: float, *, keys: int = 0, first: int = 0) -> None:
    for seq in range(first, first + count):
        key = f"k{seq % keys}" if keys else None
        outbox.offer(message(seq, key), now, HIGH + 1)  # over high: everything queues


def test_a_step_switches_the_queue_to_the_level_s_rules_at_once() -> None:
    outbox = Outbox(LADDER, high=HIGH, low=LOW)
    steps: list[LevelStep] = []
    outbox.on_step = steps.append
    fill(outbox, 20, now=0.0, keys=3)
    assert (outbox.level, len(outbox.queue)) == (0, 20)  # level 0: every message queued
    outbox.next_action(1.0, HIGH + 1)  # lag reaches 1 s: conflate, what is queued too
    assert outbox.level == 1
    assert [m.key for m in outbox.queue] == ["k2", "k0", "k1"]  # the newest of each key
    assert outbox.queue.conflated == 17
    fill(outbox, 20, now=1.5, first=20)  # unkeyed: 23 queued
    outbox.next_action(3.0, HIGH + 1)  # past the hold, over 8 queued: the smaller bound
    assert (outbox.level, len(outbox.queue), outbox.queue.dropped_oldest) == (2, 4, 19)
    stats = outbox.stats(3.0)
    assert (stats.level, stats.steps_up, stats.steps_down) == (2, 2, 0)
    assert stats.offered == stats.sent + stats.dropped + stats.queued_messages
    assert [(s.previous, s.level) for s in steps] == [(0, 1), (1, 2)]


def test_stepping_to_a_bound_that_cannot_hold_the_queue_closes_with_its_cause() -> None:
    ladder = Escalate(
        levels=[
            Level(DropOldest(max_messages=50)),
            # No overflow rule: past its bound of 3, this level closes the subscriber.
            Level(ConflateByKey(max_messages=3), up=Above("queued_messages", 8)),
        ]
    )
    box = Outbox(ladder, high=HIGH, low=LOW)
    outcomes = [box.offer(message(seq), 0.0, HIGH + 1) for seq in range(9)]
    assert outcomes[-1] is Offer.CLOSE
    assert box.level == 1
    assert box.closing is not None
    assert (box.closing.code, box.closing.reason) == (1013, "queue full")
    assert box.closing.cause == (
        "level 1 (level-1) holds at most 3 messages and 1048576 bytes; "
        "9 messages, 90 bytes queued could not fit"
    )
    assert box.stats(0.0).disconnected == 9


def test_a_step_in_the_middle_of_a_write_to_a_bound_that_cannot_hold_closes_then() -> None:
    ladder = Escalate(
        levels=[Level(), Level(ConflateByKey(max_bytes=15), up=Above("write_buffer", 25))]
    )
    box = Outbox(ladder, high=HIGH, low=0)
    for seq in range(10):  # queued (over low), and not yet over 25 bytes buffered
        box.offer(message(seq), 0.0, 20)
    action = box.next_action(0.0, 0)
    # The third frame takes the buffer past 25 bytes: the step comes between frames,
    # and no later decision would say again that the queue does not fit.
    assert isinstance(action, Write)
    assert len(action.frames) == 3
    assert box.level == 1
    assert box.closing is not None
    assert box.closing.code == 1013
    assert isinstance(box.next_action(0.0, 30), CloseAction)
    stats = box.stats(0.0)
    assert (stats.sent, stats.disconnected) == (3, 7)


def test_a_step_in_the_middle_of_a_write_that_empties_the_queue_ends_the_write() -> None:
    ladder = Escalate(
        levels=[
            Level(DropOldest()),
            Level(DropOldest(max_bytes=5), up=Above("write_buffer", 25)),
        ]
    )
    box = Outbox(ladder, high=HIGH, low=0)
    for seq in range(10):  # queued (over low), and not yet over 25 bytes buffered
        box.offer(message(seq), 0.0, 20)
    action = box.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert len(action.frames) == 3
    # Each 10-byte message arrives again under a 5-byte bound: each is refused, as a
    # message too big for the bound is at publish (the step reshapes as set_policy does).
    queue = box.queue
    assert (box.level, len(queue), queue.dropped_oldest, queue.dropped_newest) == (1, 0, 0, 7)
    assert box.closing is None


def test_an_announced_step_reaches_the_client_before_any_later_message() -> None:
    ladder = Escalate(
        levels=[Level(), Level(SkipToLatest(), up=Above("queued_messages", 2), name="latest")],
        announce=True,
    )
    box = Outbox(ladder, high=HIGH, low=LOW)
    fill(box, 3, now=0.0)
    assert box.level == 1
    assert len(box.queue) == 1
    action = box.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert action.frames[0].control
    assert json.loads(action.frames[0].payload) == {
        "type": "level",
        "level": 1,
        "name": "latest",
        "from": 0,
    }
    following = box.next_action(0.0, 0)
    assert isinstance(following, Write)
    assert following.frames[0].seq == 2
    assert box.control_frames == 1
    assert box.stats(0.0).sent == 1


def test_a_subscriber_that_caught_up_steps_down_while_the_relay_waits() -> None:
    box = Outbox(LADDER, high=HIGH, low=LOW)
    fill(box, 5, now=0.0)
    box.next_action(1.0, HIGH + 1)  # lag 1 s: level 1
    assert box.level == 1
    written = box.next_action(1.0, 0)
    assert isinstance(written, Write)
    # The queue is empty but the ladder is above its first level: the relay waits for
    # the hold to end, then asks again, and the subscriber steps down.
    waiting = box.next_action(1.0, 0)
    assert waiting == Wait(3.0, drain=False)
    assert box.next_action(3.0, 0) is IDLE
    assert (box.level, box.steps_up, box.steps_down) == (0, 1, 1)


def test_a_subscriber_that_cannot_step_down_yet_rests_once_its_hold_is_over() -> None:
    ladder = Escalate(
        levels=[Level(), Level(up=Above("queued_messages", 2), down=Below("drain_rate", 1))],
        hold=1.0,
    )
    box = Outbox(ladder, high=HIGH, low=LOW)
    fill(box, 3, now=0.0)
    assert isinstance(box.next_action(0.0, 0), Write)
    assert box.next_action(0.0, 0) == Wait(1.0, drain=False)
    # No drain rate measured, so none below 1 B/s: it stays, and the relay stops.
    assert box.next_action(1.0, 0) is IDLE
    assert box.level == 1


def test_a_policy_that_steps_without_levels_is_a_bug_reported_as_such() -> None:
    from wsfanout import Decision, Policy

    class Liar(Policy):
        def decide(self, snapshot: Snapshot) -> Decision:
            return Decision(step=LevelStep(level=1, previous=0, name="x", at=snapshot.now))

    box = Outbox(Liar(), high=HIGH, low=LOW)
    with pytest.raises(ValueError, match=r"stepped from level 0 to 1, but it has 1 level$"):
        box.offer(message(0), 0.0, HIGH + 1)


def test_a_close_decided_mid_write_after_a_step_lost_messages_closes_at_once() -> None:
    # Found by CI's 1,000 examples: a write that took frames until the buffer passed
    # 256 B stepped to a level whose bound evicted the 3 messages left; the policy,
    # asked again, closed for those losses, but the close waited for the relay's next
    # turn, and the frames already taken were written to a subscriber still open.
    def close_at_three_drops(snapshot: Snapshot) -> Decision:
        if snapshot.dropped >= 3:
            return Decision(close=Close(1013, "too many messages lost"))
        return Decision(recheck_messages=1)

    ladder = Escalate(
        levels=[
            Level(),
            Level(
                DropOldest(max_bytes=1),
                up=Above("write_buffer", 256),
                down=Below("write_buffer", 32),
            ),
        ],
        hold=0.01,
    )
    schedule = Schedule(steps=[Publish(n=16, size=18)], clients=[Client(low=0, rate=10.0)])
    trace = check_guarantees(
        ladder | as_policy(close_at_three_drops), schedule, also=[MaxDrops(count=2, window=10.0)]
    )
    (client,) = trace.clients
    assert client.closing is not None


def test_a_stage_both_levels_have_keeps_its_grace_across_a_step() -> None:
    # Found by CI's 1,000 examples: the step to a level with the same Disconnect
    # restarted its grace at the step, so the subscriber stayed open past the grace
    # both levels promise (DisconnectsWithin, counted from when the breach began).
    grace = Disconnect(max_messages=1, max_bytes=1, grace=0.5)
    ladder = Escalate(
        levels=[
            Level(grace),
            Level(grace, up=Above("lag", 0.1), down=Below("lag", 0.01)),
        ],
        hold=0.01,
    )
    schedule = Schedule(
        steps=[Publish(size=0), Publish(n=4, size=0), Advance(seconds=1.0)],
        clients=[Client(high=0, low=0, rate=10.0)],
    )
    trace = check_guarantees(ladder, schedule)
    (client,) = trace.clients
    assert client.closing is not None
    assert client.stepped  # it did step while in its grace


def test_carried_memos_follow_equal_stages_only() -> None:
    grace = Disconnect(max_messages=1, grace=1.0)
    other = Disconnect(max_lag=2.0)
    assert carried(grace, grace, 3.0) == 3.0
    assert carried(grace, other, 3.0) is None
    # A composition keeps one memo per deciding stage, in order: the shared one follows.
    before = grace | Batch(max_delay=0.1)
    after = Batch(max_delay=0.5) | grace
    assert carried(before, after, (3.0, None)) == (None, 3.0)
    assert carried(before, grace, (3.0, None)) == 3.0
    assert carried(before, other, (3.0, None)) is None
