"""Cohorts (``_shell/cohort.py``): subscribers in one state are offered a batch's later
messages once, through their leader, and each is written and counts what it would alone.

The same scenario runs twice on a virtual clock, with cohorts and with them turned off
(``Fanout.join`` a no-op, so no cohort ever forms): subscribers whose policies batch or
throttle, on topics, while messages are published in bursts, time passes, a write
buffer fills, control frames are sent, statistics are read, topics change and
subscribers leave. Every subscriber's writes, statistics and queue must be the same.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from wsfanout import Policy, SubscriberStats
from wsfanout._core import outbox as outbox_module
from wsfanout._shell.cohort import Cohort
from wsfanout._shell.fanout import Fanout
from wsfanout._shell.link import Link
from wsfanout.lowlevel import Outbox, make_message
from wsfanout.policies import DEFAULT_POLICY, Batch, DropOldest, Notify, SkipToLatest, Throttle

from .test_fast_path import HIGH, LOW, ScriptedTransport
from .test_timers import VirtualLoop, advance, make_link, virtual_loop, writes

POLICIES: list[Policy] = [
    Batch(max_messages=4, max_delay=0.01),
    Batch(max_messages=16, max_delay=0.01),
    Batch(max_messages=4, max_delay=0.01) | Notify(),
    DropOldest(max_messages=3) | Batch(max_messages=16, max_delay=0.01),
    SkipToLatest() | Throttle(rate=100.0),
    DEFAULT_POLICY,
]
TOPICS: list[frozenset[str] | None] = [None, frozenset({"a"}), frozenset({"a", "b"})]

Step = tuple[Any, ...]
Outcome = tuple[tuple[bytes, ...], SubscriberStats, tuple[tuple[int, bytes], ...], bool]
"""A subscriber at the end: its writes, statistics, queue (seq, payload) and attachment."""

# A burst of messages at one instant: how many, their size, topic, lossless.
publishes = st.tuples(
    st.just("publish"),
    st.integers(1, 4),
    st.sampled_from([0, 10, 1000, 3000]),
    st.sampled_from([None, "a", "b"]),
    st.booleans(),
)
steps = st.lists(
    st.one_of(
        publishes,
        publishes,  # as likely as all the rest: what a cohort shares
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.0005, 0.004, 0.011, 0.05])),
        st.tuples(st.just("buffer"), st.integers(0, 5), st.sampled_from([0, LOW + 1, HIGH + 1])),
        st.tuples(st.just("control"), st.integers(0, 5)),
        st.tuples(st.just("stats"), st.integers(0, 5)),
        st.tuples(st.just("retopic"), st.integers(0, 5), st.sampled_from(TOPICS)),
        st.tuples(st.just("detach"), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=25,
)
# Most subscribers of a run share one policy, so that cohorts form.
subscribers = st.sampled_from(POLICIES).flatmap(
    lambda common: st.lists(
        st.tuples(st.sampled_from([common, common, common, *POLICIES]), st.sampled_from(TOPICS)),
        min_size=2,
        max_size=6,
    )
)


async def scenario(
    loop: VirtualLoop, specs: list[tuple[Policy, frozenset[str] | None]], script: list[Step]
) -> tuple[list[Outcome], int]:
    """Run ``script``; each subscriber's writes, statistics, queue and membership at the
    end, and how many times a subscriber was found in a cohort after a publish."""
    # The outbox's repeated turns are module state: start each run from none.
    outbox_module._last_linger = None
    outbox_module._last_flush = None
    fanout = Fanout(cork=True)
    links = [make_link(fanout, policy, topics) for policy, topics in specs]
    seq = 0
    members = 0
    for step in script:
        kind = step[0]
        if kind == "publish":
            _, count, size, topic, lossless = step
            for _ in range(count):
                message = make_message(
                    b"x" * size, seq=seq, time=loop.now, topic=topic, droppable=not lossless
                )
                seq += 1
                fanout.deliver(message, loop.now)
            members += sum(1 for link in links if link.cohort is not None)
            continue
        if kind == "advance":
            await advance(loop, step[1])
            continue
        link = links[step[1] % len(links)]
        if kind == "buffer":
            transport = link.transport
            assert isinstance(transport, ScriptedTransport)
            transport.buffered = step[2]
        elif kind == "control" and link.attached:
            link.send_control("notice")
        elif kind == "stats":
            link.outbox.stats(loop.now)
        elif kind == "retopic":
            fanout.retopic(link, step[2])
        elif kind == "detach":
            fanout.detach(link)
    for link in links:  # every write buffer empties: what is queued can leave
        transport = link.transport
        assert isinstance(transport, ScriptedTransport)
        transport.buffered = 0
    await advance(loop, 1.0)  # every deadline passes
    outcome = [
        (
            tuple(writes(link)),
            link.outbox.stats(loop.now),
            tuple((message.seq, message.payload) for message in link.outbox.queue),
            link.attached,
        )
        for link in links
    ]
    for link in links:
        if link.relay is not None:
            link.relay.cancel()
    await advance(loop, 0)
    return outcome, members


def without_cohorts() -> AbstractContextManager[object]:
    return mock.patch.object(Fanout, "join", return_value=None)


def run(
    specs: list[tuple[Policy, frozenset[str] | None]], script: list[Step], cohorts: bool
) -> tuple[list[Outcome], int]:
    with virtual_loop() as loop, nullcontext() if cohorts else without_cohorts():
        return loop.run_until_complete(scenario(loop, specs, script))


BATCH = Batch(max_messages=16, max_delay=0.01)
THREE: list[tuple[Policy, frozenset[str] | None]] = [(BATCH, None)] * 3


def burst(topic: str | None = None, count: int = 1) -> Step:
    return ("publish", count, 10, topic, False)


DEADLINE: Step = ("advance", 0.011)
EXAMPLES: dict[str, tuple[list[tuple[Policy, frozenset[str] | None]], list[Step]]] = {
    "a member on fewer topics than its leader": (
        [(BATCH, frozenset({"a", "b"})), (BATCH, frozenset({"a"}))],
        [burst("a"), burst("b"), DEADLINE],
    ),
    "a member leaves mid-batch": (THREE, [burst(), ("detach", 1), burst(), DEADLINE]),
    "a member changes topics mid-batch": (
        THREE,
        [burst(), ("retopic", 1, frozenset({"a"})), burst("b"), DEADLINE],
    ),
    "a member's buffer fills mid-batch": (
        THREE,
        [burst(), ("buffer", 1, HIGH + 1), burst(), DEADLINE],
    ),
    "a member is sent a control frame mid-batch": (
        THREE,
        [burst(), ("control", 1), burst(), DEADLINE],
    ),
    "the leader's statistics are read mid-batch": (
        THREE,
        [burst(), ("stats", 0), burst(), burst(), DEADLINE],
    ),
    "the leader leaves mid-batch": (THREE, [burst(), ("detach", 0), burst(), DEADLINE]),
    "a batch fills before its deadline": (THREE, [burst(count=4)] * 5 + [DEADLINE]),
}


def with_examples(test: Any) -> Any:
    for specs, script in EXAMPLES.values():
        test = example(specs=specs, script=script)(test)
    return test


@settings(max_examples=500, deadline=None)
@with_examples
@given(specs=subscribers, script=steps)
def test_subscribers_in_a_cohort_are_written_and_count_as_they_would_alone(
    specs: list[tuple[Policy, frozenset[str] | None]], script: list[Step]
) -> None:
    together, members = run(specs, script, cohorts=True)
    alone, none = run(specs, script, cohorts=False)
    event("cohorts formed" if members else "no cohort formed")
    assert none == 0
    assert together == alone


SAME_BATCH: list[tuple[Policy, frozenset[str] | None]] = [
    (Batch(max_messages=16, max_delay=0.01), None)
] * 5
A_BATCH_OF_THREE: list[Step] = [("publish", 3, 10, None, False), ("advance", 0.011)]


def test_a_batch_forms_one_cohort_of_its_subscribers() -> None:
    together, members = run(SAME_BATCH, A_BATCH_OF_THREE, cohorts=True)
    assert members == 5  # after the burst: the leader and its four members
    assert together == run(SAME_BATCH, A_BATCH_OF_THREE, cohorts=False)[0]
    for written, stats, queued, _ in together:
        assert len(written) == 1  # the batch of three, in one frame
        assert (stats.offered, stats.sent, stats.frames, queued) == (3, 3, 1, ())


def test_the_comparison_sees_members_that_never_took_what_they_skipped() -> None:
    """A cohort whose members forget the messages their leader queued for them must
    write and count differently from subscribers alone."""
    with mock.patch.object(Outbox, "offer_run", return_value=None):
        broken, _ = run(SAME_BATCH, A_BATCH_OF_THREE, cohorts=True)
    alone, _ = run(SAME_BATCH, A_BATCH_OF_THREE, cohorts=False)
    assert broken != alone
    assert [stats.offered for _, stats, _, _ in broken] == [3, 1, 1, 1, 1]


BROKEN: dict[str, tuple[object, str, object]] = {
    "a member on fewer topics than its leader": (
        Cohort,
        "admits",
        lambda self, link: True,  # a cohort blind to topics
    ),
    "a member leaves mid-batch": (Link, "settle", lambda self: None),  # members never leave
    "a member changes topics mid-batch": (Link, "settle", lambda self: None),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_comparison_sees_a_cohort_that_breaks_a_rule(name: str) -> None:
    """Each example above catches the cohort that breaks the rule it is about."""
    specs, script = EXAMPLES[name]
    owner, attribute, broken = BROKEN[name]
    alone, _ = run(specs, script, cohorts=False)
    with mock.patch.object(owner, attribute, broken):
        together, _ = run(specs, script, cohorts=True)
    assert together != alone
