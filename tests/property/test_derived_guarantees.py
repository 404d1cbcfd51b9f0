"""How ``a | b`` derives its guarantees, and why the rule keeps no more than it may."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout import Composite, Policy
from wsfanout.policies import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)
from wsfanout.testing import (
    BatchIntegrity,
    Bounded,
    DisconnectsWithin,
    GuaranteeViolation,
    Lossless,
    MaxSendRate,
    NewestDelivered,
    Publish,
    Read,
    Schedule,
    check_guarantees,
    policies,
)
from wsfanout.testing import Client as SimClient

STALLED = SimClient(high=0, low=0, rate=0.0)


def test_bounding_promises_survive_any_composition() -> None:
    policy = (
        DropOldest(max_messages=5)
        | ConflateByKey(max_messages=10)
        | Throttle(rate=2.0)
        | Batch(max_messages=3)
        | Disconnect(max_lag=4.0)
    )
    assert policy.guarantees() == (
        Bounded(max_messages=5),
        Bounded(max_messages=10),
        MaxSendRate(rate=2.0),
        BatchIntegrity(max_messages=3),
        DisconnectsWithin(max_lag=4.0),
    )


def test_newest_delivered_survives_stages_that_only_delay_or_close() -> None:
    policy = SkipToLatest() | Throttle(rate=5.0) | Disconnect(max_lag=5.0)
    assert NewestDelivered() in policy.guarantees()


@pytest.mark.parametrize(
    ("policy", "lost", "steps"),
    [
        # DropNewest refuses the newest message once the queue is full.
        (
            ConflateByKey() | DropNewest(max_messages=1),
            NewestDelivered(per_key=True),
            [Publish(n=3, keys=("a", "b", "c")), Read()],
        ),
        # A message larger than a byte bound is refused even under DropOldest (once the
        # first one took the fast path, the next one has to queue).
        (
            SkipToLatest() | DropOldest(max_bytes=10),
            NewestDelivered(),
            [Publish(), Publish(size=11), Read()],
        ),
        # DropOldest evicts the newest message of an older key.
        (
            ConflateByKey() | DropOldest(max_messages=2),
            NewestDelivered(per_key=True),
            [Publish(n=4, keys=("a", "b", "c")), Read()],
        ),
        # Skipping is losing: a throttled stream that skips is not lossless.
        (Throttle(rate=1.0) | SkipToLatest(), Lossless(), [Publish(n=3), Read()]),
        (Batch() | DropOldest(max_messages=1), Lossless(), [Publish(n=3), Read()]),
    ],
    ids=lambda value: repr(value) if isinstance(value, Policy) else "",
)
def test_a_delivery_promise_is_dropped_exactly_where_it_would_break(
    policy: Policy, lost: object, steps: list[Publish | Read]
) -> None:
    assert lost not in policy.guarantees()
    schedule = Schedule(steps, [STALLED])
    check_guarantees(policy, schedule)  # what it still promises holds
    with pytest.raises(GuaranteeViolation) as info:
        check_guarantees(policy, schedule, also=[lost])  # type: ignore[list-item]
    assert [violation.guarantee for violation in info.value.violations] == [lost]


@given(policy=policies(), data=st.data())
def test_the_derived_guarantees_do_not_depend_on_the_order_of_stages(
    policy: Policy, data: st.DataObject
) -> None:
    stages = list(policy.stages)
    shuffled = data.draw(st.permutations(stages))
    other = Composite(tuple(shuffled)) if len(shuffled) > 1 else shuffled[0]
    assert set(other.guarantees()) == set(policy.guarantees())


@given(policy=policies())
def test_a_composition_promises_only_what_its_stages_promise(policy: Policy) -> None:
    promised = {guarantee for stage in policy.stages for guarantee in stage.guarantees()}
    assert set(policy.guarantees()) <= promised
    # and every bounding promise of a stage is kept
    for guarantee in promised:
        if isinstance(guarantee, (Bounded, MaxSendRate, BatchIntegrity, DisconnectsWithin)):
            assert guarantee in policy.guarantees()
