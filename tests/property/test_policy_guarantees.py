"""Every built-in policy and the common compositions keep their promises on any schedule."""

import pytest
from hypothesis import given

from wsfanout import Policy
from wsfanout.files import load_policy, preset_names
from wsfanout.policies import (
    DEFAULT_POLICY,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)
from wsfanout.testing import Schedule, check_guarantees, policies, schedules

BUILT_INS: list[Policy] = [
    DropOldest(max_messages=8),
    DropOldest(max_bytes=400),
    DropNewest(max_messages=8),
    DropNewest(max_messages=50, max_bytes=400),
    SkipToLatest(),
    ConflateByKey(max_messages=8),
    Batch(max_messages=4),
    Batch(max_messages=8, max_bytes=300, max_delay=0.1, combine="json-array"),
    Throttle(rate=10.0),
    Disconnect(max_messages=20, grace=1.0),
    Disconnect(max_lag=2.0),
    Disconnect(max_bytes=600, max_buffer=500, grace=0.5, code=4000, reason="slow"),
    DEFAULT_POLICY,
]

COMPOSITIONS: list[Policy] = [
    DropOldest(max_messages=8) | Disconnect(max_lag=2.0),
    ConflateByKey(max_messages=8) | Throttle(rate=5.0) | Disconnect(max_lag=5.0),
    SkipToLatest() | Throttle(rate=5.0),
    Batch(max_messages=4) | DropOldest(max_messages=16),
    Disconnect(max_messages=10, grace=2.0) | DropNewest(max_messages=30) | Batch(max_delay=0.05),
    Throttle(rate=2.0) | Batch(max_messages=10) | DropOldest(max_bytes=500),
]


@pytest.mark.parametrize("policy", BUILT_INS + COMPOSITIONS, ids=repr)
@given(schedule=schedules(clients=2, topics=("news",)))
def test_the_policy_keeps_its_promises(policy: Policy, schedule: Schedule) -> None:
    check_guarantees(policy, schedule)


@pytest.mark.parametrize("name", preset_names())
@given(schedule=schedules(clients=2, topics=("news",)))
def test_every_preset_keeps_its_promises(name: str, schedule: Schedule) -> None:
    check_guarantees(load_policy(name), schedule)


@given(policy=policies(), schedule=schedules(clients=3, topics=("news", "prices")))
def test_any_composition_of_built_ins_keeps_its_derived_promises(
    policy: Policy, schedule: Schedule
) -> None:
    check_guarantees(policy, schedule)


@given(schedule=schedules(max_steps=20, max_burst=200, max_size=2048))
def test_the_default_policy_keeps_its_promises_under_heavy_bursts(schedule: Schedule) -> None:
    check_guarantees(DEFAULT_POLICY, schedule)
