"""History and resume on generated schedules: clients that reconnect get exactly what
history holds of what they missed, the rest reported with its exact ranges; and, with a
lossless policy and a history that keeps everything, every message exactly once, in
order, across any number of reconnects. Deliberately broken histories are found."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from sim import broken
from wsfanout import History, Policy
from wsfanout.lowlevel import MemoryHistory
from wsfanout.policies import DEFAULT_POLICY, Batch, ConflateByKey, Disconnect, Throttle
from wsfanout.testing import (
    Advance,
    Client,
    GuaranteeViolation,
    Publish,
    Read,
    Reconnect,
    Resumes,
    Schedule,
    Stall,
    Trace,
    check_guarantees,
    policies,
    schedules,
)

TOPICS = ("a", "b")

histories = st.one_of(
    st.none(),
    st.builds(
        History,
        max_messages=st.integers(min_value=1, max_value=40),
        max_bytes=st.none() | st.integers(min_value=1, max_value=2048),
        max_age=st.none() | st.sampled_from((0.5, 5.0, 60.0)),
    ),
)

SEARCH = settings(
    max_examples=500, derandomize=True, database=None, deadline=None, phases=[Phase.generate]
)


@given(
    policies(),
    schedules(reconnects=True, topics=TOPICS, clients=2, max_steps=30),
    histories,
)
# The replay overflows the queue's byte bound and the client is closed after the first
# message replayed: it was offered a prefix of what history held, and resumes again.
@example(
    ConflateByKey(max_bytes=1),
    Schedule(
        steps=[Publish(size=0), Publish(n=2, size=2), Reconnect()], clients=[Client(), Client()]
    ),
    History(max_messages=2),
)
def test_every_policy_resumes_exactly_what_history_holds(
    policy: Policy, schedule: Schedule, history: History | None
) -> None:
    check_guarantees(policy, schedule, history=history)


lossless = st.one_of(
    st.builds(Throttle, rate=st.sampled_from((10.0, 1000.0))),
    st.builds(Batch, max_messages=st.integers(min_value=1, max_value=8)),
    st.just(Disconnect(max_lag=5.0)),
)


@given(lossless, schedules(reconnects=True, topics=TOPICS, hangups=False, max_steps=30))
# Found by CI's 1,000 examples: Disconnect closes the second connection after it read
# offsets 5 to 8, and the third resumes after 8.
@example(
    Disconnect(max_lag=5.0),
    Schedule(
        steps=[
            Publish(size=0),
            Read(),
            Publish(size=0),
            Publish(size=0),
            Publish(size=0),
            Reconnect(),
            Publish(size=0),
            Read(rate=100.0),
            Publish(n=8, size=133),
            Advance(seconds=5.0),
            Reconnect(),
        ],
        clients=[Client(rate=10.0)],
    ),
)
def test_with_a_lossless_policy_and_whole_history_every_message_arrives_once_in_order(
    policy: Policy, schedule: Schedule
) -> None:
    trace = check_guarantees(policy, schedule, history=History(max_messages=100_000))
    for topic, offsets in received_by_client_and_topic(trace).items():
        # Across every connection of one client: ascending, each once, no hole.
        assert offsets == sorted(set(offsets)), (topic, offsets)
        assert offsets == list(range(offsets[0], offsets[-1] + 1)), (topic, offsets)


def received_by_client_and_topic(trace: Trace) -> dict[tuple[int, str], list[int]]:
    found: dict[tuple[int, str], list[int]] = defaultdict(list)
    for client in trace.clients:
        # Every connection counts, one its policy closed too: what it received before
        # the close is where the next connection resumes from.
        for seq in client.received:
            message = trace.messages[seq]
            if message.offset:
                found[(client.logical, message.topic or "")].append(message.offset)
    return found


def test_a_client_away_longer_than_history_is_told_the_exact_range() -> None:
    schedule = Schedule(steps=[Publish(n=3), Stall(), Publish(n=10), Reconnect(), Publish(n=2)])
    trace = check_guarantees(DEFAULT_POLICY, schedule, history=History(max_messages=4))
    resumed = trace.clients[1]
    assert resumed.since[0].offset == 3
    assert [trace.messages[s].offset for s in resumed.received] == [10, 11, 12, 13, 14, 15]
    notices = [w.frames[0].payload for w in resumed.writes if w.frames[0].control]
    assert b'"ranges":[[4,9]],"count":6,"reasons":{"history":6}' in notices[1]


BROKEN_HISTORIES: list[Callable[[History], MemoryHistory]] = [
    broken.OffByOneHistory,
    broken.ForgetfulHistory,
    broken.OverTrimmingHistory,
    broken.SilentHistory,
]


@pytest.mark.parametrize("factory", BROKEN_HISTORIES, ids=lambda f: f.__name__)
def test_a_broken_history_is_found(factory: Callable[[History], MemoryHistory]) -> None:
    @SEARCH
    @given(schedules(reconnects=True, topics=TOPICS, max_steps=20))
    def test_the_history_keeps_its_promises(schedule: Schedule) -> None:
        check_guarantees(
            Throttle(rate=1000.0),
            schedule,
            history=History(max_messages=5),
            history_factory=factory,
        )

    with pytest.raises(GuaranteeViolation) as found:
        test_the_history_keeps_its_promises()
    assert Resumes() in [violation.guarantee for violation in found.value.violations]
    assert "history=History(max_messages=5)" in str(found.value)  # reproducible as printed


def test_a_client_away_longer_than_its_max_lag_is_not_cut_for_what_it_is_replayed() -> None:
    # Replayed messages count their lag from the replay: otherwise a client away for
    # longer than Disconnect(max_lag=...) would be cut as it resumes, again and again.
    schedule = Schedule(
        steps=[Publish(n=2), Stall(), Publish(n=5), Advance(seconds=60.0), Reconnect()]
    )
    trace = check_guarantees(Disconnect(max_lag=5.0), schedule, history=History(max_messages=100))
    resumed = trace.clients[1]
    assert resumed.closing is None
    assert [trace.messages[s].offset for s in resumed.received] == [3, 4, 5, 6, 7]
