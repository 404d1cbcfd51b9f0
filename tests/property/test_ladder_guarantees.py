"""Ladders and reducers keep their promises on any schedule: at most one step per hold, the
bound of the level in force, ordering and no duplicates across steps, and the fold of
every update of a key."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, target

from wsfanout import Close, Decision, Policy, Snapshot
from wsfanout.policies import (
    Above,
    Adaptive,
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
from wsfanout.testing import Guarantee, MaxDrops, Publish, Schedule, check_guarantees, schedules


def concat(older: str | bytes, newer: str | bytes) -> str | bytes:
    """Keeps every update, so a fold that lost one shows in the payload."""
    return older + newer  # type: ignore[operator]


LADDERS: list[Policy] = [
    Escalate(
        levels=[
            Level(),
            Level(ConflateByKey(), up=Above("lag", 0.1), down=Below("lag", 0.05)),
            Level(
                ConflateByKey() | DropOldest(max_messages=4),
                up=Above("queued_messages", 6),
                down=Below("queued_messages", 2),
            ),
        ],
        hold=0.25,
        announce=True,
    )
    | Disconnect(max_lag=30.0),
    Escalate(
        levels=[
            Level(DropNewest(max_messages=16)),
            Level(
                SkipToLatest(),
                up=Above("write_buffer", 200) | Above("queued_bytes", 100),
                down=Below("queued_messages", 1),
            ),
        ],
        hold=0.5,
    ),
    Escalate(
        levels=[
            Level(),
            Level(
                Throttle(rate=5.0) | DropOldest(max_messages=8),
                up=Below("drain_rate", 500),
                down=Above("drain_rate", 2000),
            ),
        ],
        hold=1.0,
    ),
    ConflateByKey(max_messages=16)
    | Adaptive(interval=0.25, max_bytes=256, min_bytes=32, hold=0.5, probe=2.0),
    SkipToLatest()
    | Adaptive(interval=0.1, max_bytes=1024, min_bytes=64, hold=0.5, probe=None, announce=True),
]

REDUCING: list[Policy] = [
    ConflateByKey(reduce=concat, max_messages=8) | Batch(max_messages=4),
    ConflateByKey(reduce="sum") | Throttle(rate=5.0) | Disconnect(max_lag=5.0),
    ConflateByKey(reduce=concat) | Adaptive(interval=0.25, max_bytes=128, min_bytes=16),
]


@pytest.mark.parametrize("policy", LADDERS, ids=repr)
@given(schedule=schedules(clients=2, topics=("news",)))
def test_a_ladder_keeps_its_promises_across_steps(policy: Policy, schedule: Schedule) -> None:
    trace = check_guarantees(policy, schedule)
    # Steer the search towards schedules that make the ladder step, and step often.
    target(float(sum(len(client.stepped) for client in trace.clients)))


@pytest.mark.parametrize("policy", REDUCING, ids=repr)
@given(schedule=schedules(clients=2, keys=("a", "b")))
def test_a_reducer_delivers_the_fold_of_every_update(policy: Policy, schedule: Schedule) -> None:
    trace = check_guarantees(policy, schedule)
    target(float(sum(client.samples[-1].stats.conflated for client in trace.clients)))


@attrs.frozen
class DropBudget(Policy):
    """Closes a subscriber that has lost ``drops`` messages: it must see every loss."""

    drops: int = 3
    eager = True

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.dropped >= self.drops:
            return Decision(close=Close(1013, "too many messages lost"))
        return Decision(recheck_messages=1)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (MaxDrops(count=self.drops - 1, window=10.0),)


def test_a_step_that_evicts_several_at_once_is_seen_by_the_stages_that_count_losses() -> None:
    # Found by CI's 1,000 examples: the step to a 1-byte level evicted 4 messages in one
    # ask, and the drop budget composed after it was not asked again before the next one.
    ladder = Escalate(
        levels=[
            Level(),
            Level(
                DropOldest(max_bytes=1),
                up=Above("queued_messages", 4),
                down=Below("queued_messages", 1),
            ),
        ],
        hold=0.01,
    )
    policy = ladder | DropOldest() | Throttle(rate=1.0) | DropBudget()
    trace = check_guarantees(policy, Schedule(steps=[Publish(n=6, size=1)]))
    (client,) = trace.clients
    assert client.closing is not None
