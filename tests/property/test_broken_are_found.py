"""The toolkit finds every deliberately broken policy and core from random schedules,
used exactly as a user would, and shrinks what it finds to a readable counterexample."""

from collections.abc import Callable

import pytest
from hypothesis import Phase, given, settings

from sim import broken
from wsfanout import Policy
from wsfanout.lowlevel import Outbox
from wsfanout.policies import ConflateByKey, DropOldest, Notify, SkipToLatest
from wsfanout.testing import GuaranteeViolation, Schedule, check_guarantees, schedules
from wsfanout.testing._check import CHECKERS

from .test_resume_guarantees import BROKEN_HISTORIES

# Searching, not shrinking: the first failure is enough to show the checker can fail.
SEARCH = settings(
    max_examples=500, derandomize=True, database=None, deadline=None, phases=[Phase.generate]
)

BROKEN_POLICIES: list[tuple[Policy, str]] = [
    (broken.LeakyBound(), "Bounded(max_messages=10)"),
    (broken.LosesNewest(), "NewestDelivered()"),
    (broken.ConflatesTooMuch(), "NewestDelivered(per_key=True)"),
    (broken.EagerThrottle(rate=1.0), "MaxSendRate(rate=1.0)"),
    (broken.HalfThrottle(rate=10.0), "MaxSendRate(rate=10.0)"),
    (broken.DropsButClaimsLossless(), "Lossless()"),
    (broken.NeverSends(), "Drains()"),
    (broken.HoldsAnHour(), "Drains()"),
    (broken.OverfullBatch(max_messages=4), "BatchIntegrity(max_messages=2)"),
    (broken.ForgetfulDisconnect(max_lag=1.0), "DisconnectsWithin(max_lag=1.0)"),
    (
        broken.HastyEscalate(levels=broken.STEPPING.levels, hold=0.01),
        "StepsApart(hold=5.0)",
    ),
    (broken.ForgetfulFold(reduce=broken.concat), "FoldedPerKey(reduce=concat)"),
    (broken.KeepsDropping(), "MaxDrops(count=2, window=10.0)"),
    (broken.ClaimsNotices(max_messages=4), "GapsAnnounced()"),
]

BROKEN_CORES: list[tuple[Callable[..., Outbox], str]] = [
    (broken.ReorderingOutbox, "OrderedSubsequence()"),
    (broken.DuplicatingOutbox, "NoDuplicates()"),
    (broken.HighBlindOutbox, "WithinWriteLimit()"),
    (broken.GreedyOutbox, "HeldWithin(max_messages=32, max_bytes=1048576)"),
    (broken.MiscountingOutbox, "CountsAddUp()"),
]

NOTIFYING = DropOldest(max_messages=4) | Notify()

BROKEN_CORES_UNDER: list[tuple[Callable[..., Outbox], Policy, str]] = [
    (broken.SilentOutbox, NOTIFYING, "GapsAnnounced()"),
    (broken.LateNoticeOutbox, NOTIFYING, "GapsAnnounced()"),
    (broken.DoubleNoticeOutbox, NOTIFYING, "GapsAnnounced()"),
    (broken.OffByOneNoticeOutbox, NOTIFYING, "GapsAnnounced()"),
    (broken.GarbledNoticeOutbox, NOTIFYING, "GapsAnnounced()"),
    (broken.CarelessOutbox, DropOldest(max_messages=4), "LosslessDelivered()"),
    (broken.BatchesLosslessOutbox, DropOldest(max_messages=16), "LosslessDelivered()"),
]
"""Cores broken in what only some policies exercise, each with such a policy."""


def _found(run: Callable[[], None]) -> GuaranteeViolation:
    with pytest.raises(GuaranteeViolation) as info:
        run()
    return info.value


@pytest.mark.parametrize(("policy", "guarantee"), BROKEN_POLICIES, ids=repr)
def test_a_broken_policy_is_found(policy: Policy, guarantee: str) -> None:
    @SEARCH
    @given(schedules())
    def test_the_policy_keeps_its_promises(schedule: Schedule) -> None:
        check_guarantees(policy, schedule)

    error = _found(test_the_policy_keeps_its_promises)
    assert guarantee in [repr(violation.guarantee) for violation in error.violations]


@pytest.mark.parametrize(
    ("core", "guarantee"), BROKEN_CORES, ids=lambda c: getattr(c, "__name__", c)
)
def test_a_broken_core_is_found(core: Callable[..., Outbox], guarantee: str) -> None:
    @SEARCH
    @given(schedules())
    def test_the_core_keeps_its_promises(schedule: Schedule) -> None:
        check_guarantees(DropOldest(max_messages=32), schedule, outbox_factory=core)

    error = _found(test_the_core_keeps_its_promises)
    assert guarantee in [repr(violation.guarantee) for violation in error.violations]


BROKEN_STEPS: list[tuple[Callable[..., Outbox], str]] = [
    (broken.UnshapedOutbox, "LevelBound()"),
    (broken.ReversingStepOutbox, "OrderedSubsequence()"),
    (broken.EchoingStepOutbox, "NoDuplicates()"),
]


@pytest.mark.parametrize(
    ("core", "guarantee"), BROKEN_STEPS, ids=lambda c: getattr(c, "__name__", c)
)
def test_a_core_that_breaks_a_promise_across_steps_is_found(
    core: Callable[..., Outbox], guarantee: str
) -> None:
    @SEARCH
    @given(schedules())
    def test_the_ladder_keeps_its_promises(schedule: Schedule) -> None:
        # A broken core breaks several promises at once, not each in every schedule
        # (a duplicate is queued before it is written): search for the one under test.
        try:
            check_guarantees(broken.STEPPING, schedule, outbox_factory=core)
        except GuaranteeViolation as error:
            if guarantee in [repr(violation.guarantee) for violation in error.violations]:
                raise

    error = _found(test_the_ladder_keeps_its_promises)
    assert guarantee in [repr(violation.guarantee) for violation in error.violations]


@pytest.mark.parametrize(
    ("core", "policy", "guarantee"),
    BROKEN_CORES_UNDER,
    ids=lambda c: getattr(c, "__name__", repr(c)),
)
def test_a_core_broken_under_some_policy_is_found(
    core: Callable[..., Outbox], policy: Policy, guarantee: str
) -> None:
    @SEARCH
    @given(schedules())
    def test_the_core_keeps_its_promises(schedule: Schedule) -> None:
        check_guarantees(policy, schedule, outbox_factory=core)

    error = _found(test_the_core_keeps_its_promises)
    assert guarantee in [repr(violation.guarantee) for violation in error.violations]


def test_a_failure_shrinks_to_a_short_schedule_printed_as_code() -> None:
    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(schedules())
    def test_the_policy_keeps_its_promises(schedule: Schedule) -> None:
        check_guarantees(broken.EagerThrottle(rate=1.0), schedule)

    error = _found(test_the_policy_keeps_its_promises)
    # Two messages published back to back are all it takes: the fast path never asked.
    assert len(error.schedule.steps) <= 2, error.schedule
    message = str(error)
    assert "MaxSendRate(rate=1.0) broke at step" in message
    assert "check_guarantees(EagerThrottle(rate=1.0), schedule)" in message


@pytest.mark.parametrize(
    "policy",
    [SkipToLatest(), broken.STEPPING, ConflateByKey(reduce=broken.concat)],
    ids=repr,
)
def test_a_sound_policy_is_not_flagged_by_the_same_search(policy: Policy) -> None:
    @SEARCH
    @given(schedules())
    def test_the_policy_keeps_its_promises(schedule: Schedule) -> None:
        check_guarantees(policy, schedule)

    test_the_policy_keeps_its_promises()


def test_every_checker_has_a_broken_policy_or_core_it_must_catch() -> None:
    caught = {
        guarantee.partition("(")[0]
        for _, guarantee in (*BROKEN_POLICIES, *BROKEN_CORES, *BROKEN_STEPS)
    } | {guarantee.partition("(")[0] for _, _, guarantee in BROKEN_CORES_UNDER}
    if BROKEN_HISTORIES:  # test_resume_guarantees.py: each breaks Resumes()
        caught.add("Resumes")
    assert {kind.__name__ for kind in CHECKERS} - caught == set()
