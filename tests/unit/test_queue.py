"""MessageQueue: arrival rules, bounds in messages and bytes, eviction counted by reason."""

from __future__ import annotations

import itertools

import pytest

from wsfanout import Policy
from wsfanout.lowlevel import (
    Arrival,
    Message,
    MessageQueue,
    Overflow,
    Push,
    Rules,
    Run,
    resolve_rules,
)
from wsfanout.policies import ConflateByKey, DropNewest, DropOldest, SkipToLatest


class Messages:
    """Builds messages with increasing ``seq``, as a hub would publish them."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)

    def __call__(
        self, size: int = 1, *, key: str | None = None, droppable: bool = True, time: float = 0.0
    ) -> Message:
        seq = next(self._seq)
        return Message(0x2, bytes(size), seq=seq, time=time, key=key, droppable=droppable)


def queue_for(policy: Policy) -> MessageQueue:
    return MessageQueue(resolve_rules(policy))


def seqs(queue: MessageQueue) -> list[int]:
    return [message.seq for message in queue]


def counters(queue: MessageQueue) -> dict[str, int]:
    return {
        "dropped_oldest": queue.dropped_oldest,
        "dropped_newest": queue.dropped_newest,
        "skipped": queue.skipped,
        "conflated": queue.conflated,
    }


NOTHING_LOST = {"dropped_oldest": 0, "dropped_newest": 0, "skipped": 0, "conflated": 0}


def test_messages_leave_in_the_order_they_arrived() -> None:
    new = Messages()
    queue = queue_for(DropOldest())
    assert not queue
    assert queue.oldest_time is None
    for time in (1.0, 2.0, 3.0):
        assert queue.push(new(10, time=time)) is Push.ACCEPTED
    assert len(queue) == 3
    assert queue.bytes == 30
    assert queue.oldest_time == 1.0
    assert queue.peek().seq == 1
    assert [queue.pop().seq for _ in range(3)] == [1, 2, 3]
    assert not queue
    assert queue.bytes == 0
    assert counters(queue) == NOTHING_LOST


def test_the_queue_takes_its_bounds_and_rules_from_resolved_rules() -> None:
    queue = queue_for(ConflateByKey(max_messages=7) | DropNewest(max_bytes=99))
    assert (queue.max_messages, queue.max_bytes) == (7, 99)
    assert queue.overflow is Overflow.DROP_NEWEST
    assert queue.arrival is Arrival.CONFLATE_BY_KEY


def test_drop_oldest_evicts_the_oldest_past_max_messages() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_messages=3))
    for _ in range(5):
        assert queue.push(new()) is Push.ACCEPTED
    assert seqs(queue) == [3, 4, 5]
    assert counters(queue) == {**NOTHING_LOST, "dropped_oldest": 2}


def test_drop_oldest_evicts_as_many_as_needed_past_max_bytes() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_bytes=10))
    for size in (3, 3, 3):
        queue.push(new(size))
    assert queue.push(new(7)) is Push.ACCEPTED
    assert seqs(queue) == [3, 4]
    assert queue.bytes == 10
    assert queue.dropped_oldest == 2


def test_a_message_exactly_at_the_byte_bound_fits() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_bytes=10))
    assert queue.push(new(10)) is Push.ACCEPTED
    assert queue.push(new(10)) is Push.ACCEPTED
    assert seqs(queue) == [2]
    assert queue.bytes == 10


def test_drop_newest_refuses_arrivals_past_max_messages() -> None:
    new = Messages()
    queue = queue_for(DropNewest(max_messages=2))
    assert [queue.push(new()) for _ in range(4)] == [
        Push.ACCEPTED,
        Push.ACCEPTED,
        Push.REFUSED,
        Push.REFUSED,
    ]
    assert seqs(queue) == [1, 2]
    assert counters(queue) == {**NOTHING_LOST, "dropped_newest": 2}


def test_drop_newest_refuses_arrivals_past_max_bytes() -> None:
    new = Messages()
    queue = queue_for(DropNewest(max_bytes=10))
    assert queue.push(new(6)) is Push.ACCEPTED
    assert queue.push(new(5)) is Push.REFUSED
    assert queue.push(new(4)) is Push.ACCEPTED
    assert seqs(queue) == [1, 3]
    assert queue.bytes == 10
    assert queue.dropped_newest == 1


def test_without_an_overflow_rule_a_full_queue_overflows_and_keeps_what_it_holds() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey(max_messages=2))
    assert queue.overflow is Overflow.CLOSE
    queue.push(new())
    queue.push(new())
    assert queue.push(new()) is Push.OVERFLOW
    assert seqs(queue) == [1, 2]
    assert counters(queue) == NOTHING_LOST


def test_an_oversize_message_is_refused_under_drop_oldest_without_evicting_others() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_messages=10, max_bytes=10))
    queue.push(new(4))
    queue.push(new(4))
    assert queue.push(new(11)) is Push.REFUSED
    assert seqs(queue) == [1, 2]
    assert queue.bytes == 8
    assert counters(queue) == {**NOTHING_LOST, "dropped_newest": 1}


def test_skip_to_latest_keeps_only_the_newest() -> None:
    new = Messages()
    queue = queue_for(SkipToLatest())
    for _ in range(4):
        assert queue.push(new(5)) is Push.ACCEPTED
    assert seqs(queue) == [4]
    assert queue.bytes == 5
    assert counters(queue) == {**NOTHING_LOST, "skipped": 3}


def test_skip_to_latest_never_skips_an_undroppable_message() -> None:
    new = Messages()
    queue = queue_for(SkipToLatest())
    queue.push(new())
    queue.push(new(droppable=False))
    queue.push(new())
    queue.push(new())
    assert seqs(queue) == [2, 4]
    assert queue.skipped == 2


def test_conflation_replaces_a_key_and_appends_at_the_tail() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey())
    queue.push(new(1, key="a"))
    queue.push(new(2, key="b"))
    queue.push(new(3, key=None))
    queue.push(new(4, key="a"))
    # The newer "a" goes to the tail: what leaves is still in publish order.
    assert seqs(queue) == [2, 3, 4]
    assert queue.bytes == 9
    assert counters(queue) == {**NOTHING_LOST, "conflated": 1}
    queue.push(new(5, key="b"))
    queue.push(new(6, key="a"))
    assert seqs(queue) == [3, 5, 6]
    assert queue.conflated == 3


def test_messages_without_a_key_are_never_conflated() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey())
    for _ in range(3):
        queue.push(new())
    assert seqs(queue) == [1, 2, 3]
    assert queue.conflated == 0


def test_conflation_does_not_count_against_the_bound() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey(max_messages=2) | DropOldest())
    queue.push(new(key="a"))
    queue.push(new(key="b"))
    assert queue.push(new(key="a")) is Push.ACCEPTED
    assert seqs(queue) == [2, 3]
    assert counters(queue) == {**NOTHING_LOST, "conflated": 1}
    queue.push(new(key="c"))
    assert seqs(queue) == [3, 4]
    assert queue.dropped_oldest == 1


def test_conflation_forgets_a_key_once_its_message_left() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey())
    queue.push(new(key="a"))
    assert queue.pop().seq == 1
    queue.push(new(key="a"))
    queue.push(new(key="b"))
    assert seqs(queue) == [2, 3]
    assert queue.conflated == 0


def test_conflation_never_replaces_an_undroppable_message() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey())
    queue.push(new(key="a", droppable=False))
    queue.push(new(key="a"))
    assert seqs(queue) == [1, 2]
    assert queue.conflated == 0
    queue.pop()  # the undroppable one leaves; the key now belongs to seq 2
    queue.push(new(key="a"))
    assert seqs(queue) == [3]
    assert queue.conflated == 1


def test_undroppable_messages_are_never_evicted() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_messages=2))
    queue.push(new(droppable=False))
    queue.push(new())
    assert queue.push(new()) is Push.ACCEPTED
    assert seqs(queue) == [1, 3]
    assert queue.push(new(droppable=False)) is Push.ACCEPTED
    assert seqs(queue) == [1, 4]
    assert queue.dropped_oldest == 2


def test_a_full_queue_of_undroppable_messages_refuses_droppable_and_overflows_on_undroppable() -> (
    None
):
    new = Messages()
    queue = queue_for(DropOldest(max_messages=2))
    queue.push(new(droppable=False))
    queue.push(new(droppable=False))
    assert queue.push(new()) is Push.REFUSED
    assert queue.push(new(droppable=False)) is Push.OVERFLOW
    assert seqs(queue) == [1, 2]
    assert counters(queue) == {**NOTHING_LOST, "dropped_newest": 1}


def test_drop_oldest_evicts_nothing_when_undroppable_messages_leave_no_room() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_messages=3))
    queue.push(new(droppable=False))
    queue.push(new())
    queue.push(new(droppable=False))
    queue.push(new(droppable=False))  # evicts the droppable 2: room for one more pinned
    assert seqs(queue) == [1, 3, 4]
    assert queue.push(new()) is Push.REFUSED
    assert seqs(queue) == [1, 3, 4]
    assert queue.pinned_messages == 3
    queue.pop()
    assert queue.pinned_messages == 2


def test_an_undroppable_arrival_evicts_droppable_ones_even_under_drop_newest() -> None:
    new = Messages()
    queue = queue_for(DropNewest(max_messages=2))
    queue.push(new())
    queue.push(new())
    assert queue.push(new(droppable=False)) is Push.ACCEPTED
    assert seqs(queue) == [2, 3]
    assert counters(queue) == {**NOTHING_LOST, "dropped_oldest": 1}
    queue.push(new(droppable=False))
    assert queue.push(new(droppable=False)) is Push.OVERFLOW
    assert seqs(queue) == [3, 4]


def test_an_undroppable_arrival_overflows_the_default_close_rule() -> None:
    new = Messages()
    queue = MessageQueue(Rules(max_messages=1, max_bytes=100, overflow=Overflow.CLOSE))
    queue.push(new())
    assert queue.push(new(droppable=False)) is Push.OVERFLOW
    assert seqs(queue) == [1]


def test_peaks_record_the_high_water_marks() -> None:
    new = Messages()
    queue = queue_for(DropOldest(max_messages=3))
    queue.push(new(10))
    queue.push(new(30))
    queue.push(new(5))
    assert (queue.peak_messages, queue.peak_bytes) == (3, 45)
    queue.push(new(1))  # evicts the 10-byte message: 36 bytes
    queue.pop()
    queue.pop()
    assert len(queue) == 1
    assert queue.bytes == 1
    assert (queue.peak_messages, queue.peak_bytes) == (3, 45)
    for _ in range(3):
        queue.push(new(100))
    assert (queue.peak_messages, queue.peak_bytes) == (3, 300)


def test_peaks_count_only_what_was_accepted() -> None:
    new = Messages()
    queue = queue_for(DropNewest(max_messages=2, max_bytes=10))
    queue.push(new(4))
    queue.push(new(9))
    assert (queue.peak_messages, queue.peak_bytes) == (1, 4)


def test_clear_empties_the_queue_and_forgets_keys() -> None:
    new = Messages()
    queue = queue_for(ConflateByKey())
    queue.push(new(3, key="a"))
    queue.push(new(4))
    assert queue.clear() == 2
    assert not queue
    assert queue.bytes == 0
    assert queue.oldest_time is None
    queue.push(new(key="a"))
    assert queue.conflated == 0
    assert queue.clear() == 1


@pytest.mark.parametrize(
    "policy",
    [DropOldest(max_messages=4, max_bytes=20), DropNewest(max_messages=4, max_bytes=20)],
    ids=repr,
)
def test_bounds_hold_and_bytes_stay_exact_under_a_long_run(policy: Policy) -> None:
    new = Messages()
    queue = queue_for(policy)
    accepted = 0
    for n in range(200):
        if queue.push(new(n % 9, key=None)) is Push.ACCEPTED:
            accepted += 1
        if n % 7 == 0 and queue:
            queue.pop()
        assert len(queue) <= 4
        assert queue.bytes <= 20
        assert queue.bytes == sum(message.size for message in queue)
    lost = queue.dropped_oldest + queue.dropped_newest
    assert accepted + queue.dropped_newest == 200
    assert lost > 0


@pytest.mark.parametrize("queued", [3, 5], ids=["the whole queue", "part of it"])
def test_a_batch_leaves_with_its_bytes_and_keys_forgotten(queued: int) -> None:
    new = Messages()
    queue = queue_for(ConflateByKey())
    messages = [new(n + 1, key=f"k{n}") for n in range(queued)]
    for message in messages:
        queue.push(message)
    parts = queue.pop_batch(3, float("inf"))
    assert [m.seq for m in parts] == [m.seq for m in messages[:3]]
    assert seqs(queue) == [m.seq for m in messages[3:]]
    assert queue.bytes == sum(m.size for m in messages[3:])
    # A key whose message left starts afresh; one still queued still conflates.
    for n in range(queued):
        queue.push(new(1, key=f"k{n}"))
    assert queue.conflated == queued - 3
    assert len(queue) == queued


def state(queue: MessageQueue) -> tuple[object, ...]:
    """What a push changes and the queue shows: what is queued, in order, with the
    counts and peaks."""
    return (
        [(message.seq, message.key) for message in queue],
        queue.bytes,
        queue.pinned_messages,
        queue.pinned_bytes,
        queue.peak_messages,
        queue.peak_bytes,
        counters(queue),
    )


@pytest.mark.parametrize("queued", [0, 1, 3])
def test_a_run_pushed_at_once_leaves_the_queue_as_pushing_each_does(queued: int) -> None:
    """``push_run`` (a cohort's member catching up) against ``push`` of each message,
    where none needs room and no arrival rule applies."""
    new = Messages()
    policy = DropOldest(max_messages=16, max_bytes=10_000)
    one_by_one, at_once = queue_for(policy), queue_for(policy)
    for _ in range(queued):
        message = new(10)
        one_by_one.push(message)
        at_once.push(message)
    run = Run()
    later = [new(20, key="a"), new(30, droppable=False), new(40, key="b"), new(50, key="a")]
    for message in later:
        assert one_by_one.push(message) is Push.ACCEPTED
        run.add(message)
    at_once.push_run(run)
    assert len(run) == 4
    assert state(at_once) == state(one_by_one)
    # And the same newest message per key: the one a later update of it replaces.
    assert at_once._keys == one_by_one._keys == {"a": later[3].seq, "b": later[2].seq}
