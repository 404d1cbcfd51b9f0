"""The checkers catch every deliberately broken policy and core, and say so plainly."""

import math
import re

import pytest

import wsfanout.testing
from wsfanout import Decision, Policy, Snapshot, as_policy
from wsfanout.policies import (
    DEFAULT_POLICY,
    Adaptive,
    Batch,
    DropOldest,
    SkipToLatest,
    Throttle,
)
from wsfanout.testing import (
    Advance,
    Bounded,
    Client,
    CountsAddUp,
    Drains,
    GuaranteeViolation,
    HeldWithin,
    Lossless,
    LosslessDelivered,
    MaxDrops,
    NewestDelivered,
    NoDuplicates,
    OrderedSubsequence,
    Publish,
    Read,
    Schedule,
    Simulator,
    Step,
    WithinWriteLimit,
    baseline,
    check_guarantees,
    check_trace,
    guarantees_of,
    reproduction,
)
from wsfanout.testing._simulator import OutboxFactory

from . import broken

STALLED = Client(high=16, low=0, rate=0.0)
"""A client that reads nothing, behind a write buffer that fills with one message."""


def violations(
    policy: Policy,
    steps: list[Step],
    *,
    outbox_factory: OutboxFactory | None = None,
    also: tuple[object, ...] = (),
) -> str:
    """The violation lines check_guarantees reports (empty if none)."""
    schedule = Schedule(steps, [STALLED])
    try:
        if outbox_factory is None:
            check_guarantees(policy, schedule, also=also)  # type: ignore[arg-type]
        else:
            check_guarantees(policy, schedule, outbox_factory=outbox_factory, also=also)  # type: ignore[arg-type]
    except GuaranteeViolation as error:
        return str(error).split("\n\nTo reproduce")[0]
    return ""


def test_a_policy_exceeding_its_declared_bound_is_caught() -> None:
    report = violations(broken.LeakyBound(), [Publish(n=15)])
    assert report == (
        "LeakyBound() broke 1 guarantee:\n"
        "- Bounded(max_messages=10) broke at step 0 (Publish(n=15)), t=0.0, client 0: "
        "the queue held 11 messages, more than max_messages=10"
    )


def test_a_policy_losing_the_newest_value_is_caught() -> None:
    report = violations(broken.LosesNewest(), [Publish(n=3)])
    assert "NewestDelivered() broke at step 0 (Publish(n=3))" in report
    assert "the newest message, #2, was published and never arrived" in report


def test_a_policy_losing_the_newest_value_of_a_key_is_caught() -> None:
    report = violations(broken.ConflatesTooMuch(), [Publish(n=4, keys=("a", "b", "c"))])
    assert "NewestDelivered(per_key=True) broke" in report
    assert "the newest message of key 'b', #1, was published and never arrived" in report


@pytest.mark.parametrize("policy", [broken.EagerThrottle(rate=1.0), broken.HalfThrottle(rate=1.0)])
def test_a_policy_breaking_its_declared_rate_is_caught(policy: Policy) -> None:
    schedule = [Read(), Publish(), Advance(0.5), Publish(), Advance(2.0)]
    report = violations(policy, schedule)
    assert re.search(r"MaxSendRate\(rate=1\.0\) broke at step \d .*are 0\.5s apart", report), report


def test_a_policy_claiming_lossless_while_dropping_is_caught() -> None:
    report = violations(broken.DropsButClaimsLossless(), [Publish(n=5)])
    assert "Lossless() broke at step 0 (Publish(n=5))" in report
    assert "messages were dropped while the subscriber was open (dropped_oldest=1)" in report


def test_a_policy_that_declares_nothing_is_still_checked_for_liveness() -> None:
    assert broken.NeverSends().guarantees() == ()
    report = violations(broken.NeverSends(), [Publish(n=3)])
    assert "Drains() broke after the last step, while the clients read everything, t=0.0" in report
    assert "2 messages still queued after the client read everything" in report


def test_a_batch_larger_than_declared_is_caught() -> None:
    report = violations(broken.OverfullBatch(max_messages=4), [Publish(n=5), Read()])
    assert "BatchIntegrity(max_messages=2) broke" in report
    assert "a frame carried 4 messages, more than max_messages=2" in report


def test_a_disconnect_that_never_wakes_up_is_caught() -> None:
    report = violations(broken.ForgetfulDisconnect(max_lag=1.0), [Publish(n=3), Advance(5.0)])
    assert "DisconnectsWithin(max_lag=1.0) broke at step 1 (Advance(seconds=5.0)), t=5.0" in report
    assert "still open 5.0s behind, past max_lag=1.0 + grace=0.0" in report


def test_a_queue_that_reorders_is_caught() -> None:
    report = violations(
        DropOldest(), [Publish(n=4), Read()], outbox_factory=broken.ReorderingOutbox
    )
    assert "OrderedSubsequence() broke at step 1 (Read())" in report
    assert "received message #2 after #3, which was published later" in report


def test_a_relay_step_writing_a_message_twice_is_caught() -> None:
    report = violations(
        DropOldest(), [Publish(n=3), Read()], outbox_factory=broken.DuplicatingOutbox
    )
    assert "NoDuplicates() broke at step 1 (Read())" in report
    assert "received message #1 twice" in report
    assert "CountsAddUp() broke" in report


def test_a_relay_writing_over_the_high_water_mark_is_caught() -> None:
    steps: list[Step] = [Publish(n=3), Publish()]
    report = violations(DropOldest(), steps, outbox_factory=broken.HighBlindOutbox)
    assert "WithinWriteLimit() broke at step 1 (Publish())" in report
    assert "wrote with 30 bytes buffered, over high=16" in report


def test_a_relay_that_moves_the_whole_queue_into_the_write_buffer_is_caught() -> None:
    # It starts writing only at or under high=16, so WithinWriteLimit() holds; but then
    # the buffer holds the queue while the queue fills again behind it.
    steps: list[Step] = [Publish(n=5), Publish(n=5)]
    report = violations(DropOldest(max_messages=4), steps, outbox_factory=broken.GreedyOutbox)
    assert report == (
        "DropOldest(max_messages=4) broke 1 guarantee:\n"
        "- HeldWithin(max_messages=4, max_bytes=1048576) broke at step 1 (Publish(n=5)), "
        "t=0.0, client 0: the server held 66 bytes (queue 16, write buffer 50, kernel 0), "
        "more than 58: the queue's 32 + high=16 + a 10-byte frame + notsent_lowat=0"
    )


def test_what_the_kernel_holds_counts_against_the_bound() -> None:
    kernel = Client(high=16, low=0, rate=0.0, notsent_lowat=100)
    schedule = Schedule([Publish(n=30)], [kernel])
    trace = check_guarantees(DropOldest(max_messages=4), schedule)
    last = [sample for sample in trace.clients[0].samples if sample.step == 0][-1]
    # 100 bytes in the kernel, the write buffer over high by one frame after the relay's
    # write, and what is left of the 4 the queue kept.
    assert (last.kernel_unsent, last.write_buffer, last.queued_messages) == (100, 20, 3)
    twice = Schedule([Publish(n=30), Publish(n=30)], [kernel])
    with pytest.raises(GuaranteeViolation) as info:
        check_guarantees(DropOldest(max_messages=4), twice, outbox_factory=broken.GreedyOutbox)
    assert "more than 158: the queue's 32 + high=16 + a 10-byte frame + notsent_lowat=100" in (
        str(info.value)
    )


def test_statistics_that_do_not_add_up_are_caught() -> None:
    report = violations(DropOldest(), [Publish(n=3)], outbox_factory=broken.MiscountingOutbox)
    assert "CountsAddUp() broke at step 0 (Publish(n=3))" in report
    assert "offered=3 but sent + dropped + queued = 3 + 0 + 1 = 4" in report


def test_a_relay_that_spins_is_reported_as_a_liveness_violation() -> None:
    report = violations(broken.AsksAgainNow(), [Publish(n=3)])
    assert "Drains() broke at step 0 (Publish(n=3)), t=0.0, client 0: the relay spun" in report


def test_a_custom_drop_budget_is_checked_against_what_it_declares() -> None:
    report = violations(DropOldest(max_messages=1), [Publish(n=5)], also=(MaxDrops(2, 10.0),))
    assert "MaxDrops(count=2, window=10.0) broke at step 0 (Publish(n=5))" in report
    assert "still open after losing 3 messages within 10.0s (count=2)" in report


def test_good_policies_pass_the_schedules_that_catch_the_broken_ones() -> None:
    for policy in (
        DropOldest(max_messages=10),
        SkipToLatest(),
        Batch(max_messages=2),
        DEFAULT_POLICY,
    ):
        for steps in ([Publish(n=15)], [Publish(n=5), Read()], [Publish(n=3), Advance(5.0)]):
            assert violations(policy, steps) == ""  # type: ignore[arg-type]


def test_the_failure_message_ends_with_code_that_reproduces_it() -> None:
    schedule = Schedule([Publish(n=15)], [STALLED])
    with pytest.raises(GuaranteeViolation) as info:
        check_guarantees(broken.LeakyBound(), schedule)
    message = str(info.value)
    code = message.split("To reproduce:\n\n", 1)[1]
    assert code.startswith(
        "from wsfanout.testing import Client, Publish, Schedule, check_guarantees\n"
        f"from {broken.__name__} import LeakyBound\n\n"
        "schedule = Schedule(\n"
    )
    assert code.endswith("check_guarantees(LeakyBound(), schedule)\n")
    namespace = {"math": math, **vars(wsfanout.testing), "LeakyBound": broken.LeakyBound}
    body = code.split("\n\n", 1)[1]
    with pytest.raises(GuaranteeViolation) as again:
        exec(body, namespace)
    assert again.value.violations == info.value.violations
    assert info.value.schedule == schedule
    assert info.value.policy == broken.LeakyBound()


def never_send(snapshot: Snapshot) -> Decision:
    return Decision(send_at=math.inf)


def test_a_function_policy_is_imported_in_the_reproduction() -> None:
    policy = DropOldest(max_messages=4) | never_send
    code = reproduction(policy, Schedule([Publish()]))
    assert "from wsfanout import as_policy\n" in code
    assert f"from {__name__} import never_send\n" in code
    assert code.endswith(
        "check_guarantees(DropOldest(max_messages=4) | as_policy(never_send), schedule)\n"
    )


def test_every_policy_gets_the_baseline_whatever_it_declares() -> None:
    function_policy = as_policy(lambda snapshot: Decision())
    assert baseline(function_policy) == (
        OrderedSubsequence(),
        NoDuplicates(),
        Bounded(max_messages=1024, max_bytes=1048576),
        WithinWriteLimit(),
        HeldWithin(max_messages=1024, max_bytes=1048576),
        Drains(),
        CountsAddUp(),
        wsfanout.testing.Resumes(),
        LosslessDelivered(),
    )
    assert guarantees_of(Throttle(rate=2.0))[-2:] == (
        wsfanout.testing.MaxSendRate(2.0),
        Lossless(),
    )
    assert guarantees_of(SkipToLatest(), also=[NewestDelivered()]).count(NewestDelivered()) == 1


def test_a_guarantee_without_a_checker_is_an_error_naming_it() -> None:
    class Unknown(wsfanout.testing.Guarantee):
        pass

    with pytest.raises(TypeError, match=r"^no checker for Unknown\(\): add one to"):
        check_guarantees(DropOldest(), Schedule([Publish()]), also=[Unknown()])


def test_something_that_is_not_a_guarantee_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^'fast' is not a Guarantee$"):
        check_guarantees(DropOldest(), Schedule([Publish()]), also=["fast"])  # type: ignore[list-item]


def test_the_level_bound_follows_a_replaced_policy() -> None:
    # Found by the hub state machine: a ladder replaced by one with more levels steps
    # past the first one's last level, which the check took for a broken bound.
    sim = Simulator(start=1e6)
    client = sim.join(
        Adaptive(interval=0.01, max_bytes=16, min_bytes=1, hold=0.1), Client(low=0, rate=0.0)
    )
    sim.set_policy(client, Adaptive(interval=0.01, max_bytes=20, min_bytes=1, hold=0.1))
    sim.publish_many(("x" * 126, None, None) for _ in range(9))
    sim.advance(0.5)
    sim.read(client, math.inf)
    assert len(Adaptive(max_bytes=16, min_bytes=1).level_policies()) < sim.outbox(client).level + 1
    assert check_trace(sim.trace) == []
