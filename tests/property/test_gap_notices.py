"""Gap notices keep their promise on any schedule, in every composition with ``Notify()``:
every loss announced exactly once, before any message published after it, counts that
add up to the subscriber's losses, and no notice when nothing was lost."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout import Policy
from wsfanout.policies import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    GapNotice,
    Notify,
    SkipToLatest,
    Throttle,
)
from wsfanout.testing import GapsAnnounced, Schedule, check_guarantees, policies, schedules


def upper(notice: GapNotice) -> str:
    """A custom format: what an application might fit into its own protocol."""
    return f"LOST {notice.topic or '-'} {notice.count}"


NOTIFYING: list[Policy] = [
    DropOldest(max_messages=4) | Notify(),
    DropOldest(max_bytes=300) | Notify(format="json-binary"),
    DropNewest(max_messages=4) | Notify(),
    SkipToLatest() | Notify(),
    ConflateByKey(max_messages=6) | DropOldest() | Notify(),
    SkipToLatest() | Throttle(rate=5.0) | Notify(format=upper),
    ConflateByKey() | Throttle(rate=2.0) | Disconnect(max_lag=3.0) | Notify(),
    Batch(max_messages=4) | DropOldest(max_messages=10) | Notify(),
    Notify() | DropNewest(max_bytes=200) | Disconnect(max_messages=3, grace=1.0),
    Notify(),  # loses nothing: never a notice
]


@pytest.mark.parametrize("policy", NOTIFYING, ids=repr)
@given(schedule=schedules(clients=2, topics=("news", "prices")))
def test_every_loss_is_announced_once_before_any_later_message(
    policy: Policy, schedule: Schedule
) -> None:
    check_guarantees(policy, schedule)


@given(
    policy=policies(max_messages=16, max_bytes=1024),
    schedule=schedules(clients=2, topics=("news", "prices")),
)
def test_any_composition_with_notify_announces_its_losses(
    policy: Policy, schedule: Schedule
) -> None:
    check_guarantees(policy | Notify() if not _notifies(policy) else policy, schedule)


def _notifies(policy: Policy) -> bool:
    return any(isinstance(stage, Notify) for stage in policy.stages)


LOSSLESS: list[Policy] = [
    Notify(),
    Throttle(rate=5.0) | Notify(),
    Batch(max_messages=4, max_delay=0.1) | Notify(format=upper),
    Notify() | Disconnect(max_messages=5, grace=1.0),
]


@pytest.mark.parametrize("policy", LOSSLESS, ids=repr)
@given(schedule=schedules(clients=2, topics=("news",)))
def test_a_policy_that_loses_nothing_sends_no_notice(policy: Policy, schedule: Schedule) -> None:
    trace = check_guarantees(policy, schedule)
    notices = [f.notice for c in trace.clients for w in c.writes for f in w.frames if f.notice]
    assert notices == []


@given(
    schedule=schedules(max_steps=20, max_burst=100, lossless=False),
    format=st.sampled_from(["json", upper]),
)
def test_what_drop_oldest_loses_between_two_writes_is_one_range(
    schedule: Schedule, format: str
) -> None:
    trace = check_guarantees(
        DropOldest(max_messages=3) | Notify(format=format),
        schedule,
        also=[GapsAnnounced(format=format)],
    )
    for client in trace.clients:
        for write in client.writes:
            for frame in write.frames:
                if frame.notice is not None:
                    # One topic, oldest first: what is lost between two writes is one run
                    # (lossless messages, which would stay queued between, are left out).
                    assert len(frame.notice.ranges) == 1, frame.notice
