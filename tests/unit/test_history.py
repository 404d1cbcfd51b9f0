"""History in memory, positions, resume plans and the control frames, on plain values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout import History, Position
from wsfanout._core.history import Plans
from wsfanout.exceptions import ConfigError, PolicyError
from wsfanout.lowlevel import (
    Held,
    MemoryHistory,
    Message,
    ResumePlan,
    Streams,
    gap_notice,
    heartbeat_frame,
    make_message,
    missing_ranges,
    parse_since,
    plan_resume,
    resume_after,
    resume_frame,
)


def message(offset: int, *, topic: str | None = "p", size: int = 10, time: float = 0.0) -> Message:
    return make_message("x" * size, seq=offset, time=time, topic=topic, offset=offset, epoch="e1")


def offsets(messages: tuple[Message, ...]) -> list[int]:
    return [m.offset for m in messages]


def test_history_is_a_value_whose_repr_is_construction_code() -> None:
    assert repr(History()) == "History()"
    bound = History(max_messages=10, max_bytes=4096, max_age=30.0)
    assert repr(bound) == "History(max_messages=10, max_bytes=4096, max_age=30.0)"
    assert eval(repr(bound)) == bound


@pytest.mark.parametrize(
    ("options", "message_"),
    [
        ({"max_messages": 0}, r"^max_messages=0 must be >= 1$"),
        ({"max_messages": True}, r"^max_messages=True must be an int >= 1$"),
        ({"max_bytes": -1}, r"^max_bytes=-1 must be >= 1$"),
        ({"max_age": 0}, r"^max_age=0 must be > 0 \(or None: no age bound\)$"),
        ({"max_age": math.inf}, r"^max_age=inf must be a finite number of seconds >= 0$"),
    ],
)
def test_a_bad_bound_is_refused_naming_it(options: dict[str, object], message_: str) -> None:
    with pytest.raises(ConfigError, match=message_) as refused:
        History(**options)  # type: ignore[arg-type]
    assert refused.value.name == next(iter(options))
    assert not isinstance(refused.value, PolicyError)  # a setting, not a policy


def test_history_keeps_the_newest_messages_under_each_bound() -> None:
    history = MemoryHistory(History(max_messages=3))
    for offset in range(1, 8):
        history.append(message(offset), now=0.0)
    held = history.read("p", 0, 7, now=0.0)
    assert offsets(held.messages) == [5, 6, 7]
    assert held.missing == ((1, 4),)

    by_bytes = MemoryHistory(History(max_messages=100, max_bytes=25))
    for offset in range(1, 6):
        by_bytes.append(message(offset), now=0.0)
    assert offsets(by_bytes.read("p", 0, 5, 0.0).messages) == [4, 5]
    assert by_bytes.held("p") == (2, 20)

    by_age = MemoryHistory(History(max_age=10.0))
    for offset in range(1, 6):
        by_age.append(message(offset, time=float(offset)), now=float(offset))
    assert offsets(by_age.read("p", 0, 5, now=13.5).messages) == [4, 5]
    assert by_age.first("p", now=100.0) is None


def test_a_message_larger_than_the_byte_bound_is_not_kept() -> None:
    history = MemoryHistory(History(max_bytes=5))
    history.append(message(1, size=6), now=0.0)
    assert history.read("p", 0, 1, 0.0) == Held((), ((1, 1),))


def test_topics_are_kept_apart_and_a_reset_forgets_one() -> None:
    history = MemoryHistory(History())
    history.append(message(1, topic="a"), now=0.0)
    history.append(message(1, topic=None), now=0.0)
    assert sorted(history.topics()) == ["", "a"]
    assert offsets(history.read(None, 0, 1, 0.0).messages) == [1]
    history.reset("a")
    assert history.read("a", 0, 1, 0.0).missing == ((1, 1),)


def test_a_repeat_or_an_older_offset_is_not_kept_twice() -> None:
    history = MemoryHistory(History())
    for offset in (1, 2, 2, 1, 3):
        history.append(message(offset), now=0.0)
    assert offsets(history.read("p", 0, 3, 0.0).messages) == [1, 2, 3]


@given(
    held=st.lists(st.integers(min_value=1, max_value=60), unique=True),
    after=st.integers(min_value=0, max_value=60),
    bound=st.integers(min_value=1, max_value=20),
)
def test_a_read_returns_exactly_what_is_held_and_names_the_rest_missing(
    held: list[int], after: int, bound: int
) -> None:
    history = MemoryHistory(History(max_messages=bound))
    for offset in sorted(held):
        history.append(message(offset), now=0.0)
    kept = sorted(held)[-bound:]
    last = max(held, default=0)
    read = history.read("p", after, last, now=0.0)
    assert offsets(read.messages) == [o for o in kept if o > after]
    missing = {o for a, b in read.missing for o in range(a, b + 1)}
    assert missing == set(range(after + 1, last + 1)) - set(kept)
    assert all(b + 1 < a2 for (_, b), (a2, _) in zip(read.missing, read.missing[1:], strict=False))


def test_missing_ranges_are_exact_and_ascending() -> None:
    assert missing_ranges(0, 10, [3, 4, 8]) == ((1, 2), (5, 7), (9, 10))
    assert missing_ranges(5, 5, []) == ()
    assert missing_ranges(2, 4, [3, 4]) == ()


# -- positions -------------------------------------------------------------------------


def test_a_position_reads_and_writes_as_topic_epoch_offset() -> None:
    assert parse_since("prices:h3k9q2mv:41") == Position("prices", "h3k9q2mv", 41)
    assert parse_since("a:b:c:e1:0") == Position("a:b:c", "e1", 0)  # the topic may hold ':'
    assert parse_since(":e1:7") == Position("", "e1", 7)
    assert parse_since(":e1:7").stream_topic is None
    assert str(Position("a:b", "e1", 3)) == "a:b:e1:3"


@pytest.mark.parametrize(
    ("text", "message_"),
    [
        ("prices", r"^since='prices' is not TOPIC:EPOCH:OFFSET$"),
        ("p:e1", r"^since='p:e1' is not TOPIC:EPOCH:OFFSET$"),
        ("p::4", r"^since='p::4' has an epoch that is not letters and digits$"),
        ("p:e-1:4", r"has an epoch that is not letters and digits$"),
        ("p:e1:-4", r"^since='p:e1:-4' has an offset that is not a number >= 0$"),
        ("p:e1:4x", r"has an offset that is not a number >= 0$"),
        ("p:e1:" + "9" * 19, r"has an offset that is not a number >= 0$"),
        ("x" * 2000, r"is longer than 1024$"),
    ],
)
def test_a_bad_position_is_refused_naming_since(text: str, message_: str) -> None:
    with pytest.raises(ConfigError, match=message_) as refused:
        parse_since(text)
    assert refused.value.name == "since"


# -- resume plans ----------------------------------------------------------------------


def plan(position: Position, history: MemoryHistory, epoch: str, last: int) -> ResumePlan:
    after = resume_after(position, epoch, last)
    return plan_resume(position, epoch, last, history.read("p", after, last, 0.0))


def filled(count: int, bound: int = 100) -> MemoryHistory:
    history = MemoryHistory(History(max_messages=bound))
    for offset in range(1, count + 1):
        history.append(message(offset), now=0.0)
    return history


def test_a_complete_resume_replays_everything_after_the_position() -> None:
    resume = plan(Position("p", "e1", 4), filled(7), "e1", 7)
    assert json.loads(resume.frame) == {
        "type": "resume",
        "t": "p",
        "e": "e1",
        "since": 4,
        "replay": [5, 7],
        "complete": True,
    }
    assert resume.notice is None
    assert offsets(resume.messages) == [5, 6, 7]
    assert resume.complete
    assert resume.after == 7


def test_a_partial_resume_reports_the_exact_missing_range() -> None:
    resume = plan(Position("p", "e1", 2), filled(10, bound=5), "e1", 10)
    assert json.loads(resume.frame)["complete"] is False
    assert json.loads(resume.notice or "null") == {
        "type": "gap",
        "t": "p",
        "e": "e1",
        "ranges": [[3, 5]],
        "count": 3,
        "reasons": {"history": 3},
    }
    assert offsets(resume.messages) == [6, 7, 8, 9, 10]


def test_nothing_to_replay_says_so() -> None:
    resume = plan(Position("p", "e1", 7), filled(7), "e1", 7)
    assert json.loads(resume.frame)["replay"] is None
    assert json.loads(resume.frame)["complete"] is True


@pytest.mark.parametrize("position", [Position("p", "old", 3), Position("p", "e1", 99)])
def test_a_position_in_no_stream_of_ours_restarts_from_offset_one_with_previous(
    position: Position,
) -> None:
    resume = plan(position, filled(4, bound=3), "e1", 4)
    frame = json.loads(resume.frame)
    assert frame["previous"] == position.epoch
    assert (frame["since"], frame["replay"], frame["complete"]) == (position.offset, [2, 4], False)
    assert json.loads(resume.notice or "null")["ranges"] == [[1, 1]]
    assert resume.after == 4


def test_control_frames_are_compact_json_without_t_for_the_stream_without_a_topic() -> None:
    assert resume_frame("", "e1", since=0, replay=None, complete=True) == (
        '{"type":"resume","e":"e1","since":0,"replay":null,"complete":true}'
    )
    assert gap_notice("", "e1", [(1, 2)], {"history": 2, "skipped": 0}) == (
        '{"type":"gap","e":"e1","ranges":[[1,2]],"count":2,"reasons":{"history":2}}'
    )
    assert heartbeat_frame({"prices": ("e1", 57), "": ("e2", 3)}) == (
        '{"type":"heartbeat","offsets":{"prices":["e1",57],"":["e2",3]}}'
    )


class CountingHistory(MemoryHistory):
    """A history that counts the reads made of it."""

    __slots__ = ("reads",)

    def __init__(self, limits: History) -> None:
        super().__init__(limits)
        self.reads = 0

    def read(self, topic: str | None, after: int, last: int, now: float) -> Held:
        self.reads += 1
        return super().read(topic, after, last, now)


def published(streams: Streams, history: MemoryHistory, count: int, now: float = 0.0) -> None:
    for _ in range(count):
        stream = streams.advance("p")
        history.append(
            make_message("x", seq=stream.last, time=now, topic="p", offset=stream.last, epoch="e1"),
            now,
        )


def test_a_reconnect_storm_reads_history_once_per_starting_point() -> None:
    streams, history, plans = Streams(lambda: "e1"), CountingHistory(History()), Plans()
    published(streams, history, 20)
    crowd = [Position("p", "e1", 5)] * 1000 + [Position("p", "e1", 10)] * 500
    got = [plans.plan(streams, history, p, every_topic=False, now=0.0) for p in crowd]
    assert (history.reads, plans.reads) == (2, 2)
    assert {tuple(offsets(plan.messages)) for plan in got if plan} == {
        tuple(range(6, 21)),
        tuple(range(11, 21)),
    }
    # A message later, the plans made before it would miss it: the next client reads again.
    published(streams, history, 1)
    again = plans.plan(streams, history, Position("p", "e1", 5), every_topic=False, now=0.0)
    assert again is not None
    assert offsets(again.messages) == list(range(6, 22))
    assert history.reads == 3


def test_a_shared_plan_is_not_served_once_its_oldest_messages_have_aged_out() -> None:
    streams, history, plans = Streams(lambda: "e1"), CountingHistory(History(max_age=10.0)), Plans()
    published(streams, history, 3, now=0.0)
    published(streams, history, 3, now=5.0)
    position = Position("p", "e1", 0)
    before = plans.plan(streams, history, position, every_topic=False, now=9.0)
    after = plans.plan(streams, history, position, every_topic=False, now=11.0)
    assert before is not None
    assert after is not None
    assert (offsets(before.messages), before.missing) == ([1, 2, 3, 4, 5, 6], ())
    assert (offsets(after.messages), after.missing) == ([4, 5, 6], ((1, 3),))
    assert history.reads == 2


def test_a_new_epoch_is_not_answered_with_the_old_epochs_plan() -> None:
    streams, history, plans = Streams(lambda: "e1"), CountingHistory(History()), Plans()
    published(streams, history, 4)
    position = Position("p", "e1", 2)
    old = plans.plan(streams, history, position, every_topic=False, now=0.0)
    history.reset("p")
    streams.place("p", "e2", 0)
    new = plans.plan(streams, history, position, every_topic=False, now=0.0)
    assert old is not None
    assert new is not None
    assert (old.previous, offsets(old.messages)) == (None, [3, 4])
    assert (new.previous, new.epoch, new.messages) == ("e1", "e2", ())


def test_a_replayed_twin_has_the_replay_time_and_shares_every_encoded_frame() -> None:
    original = make_message("x" * 10, seq=3, time=1.0, topic="p", key="k", offset=3, epoch="e1")
    twin = original.retimed(9.0)
    assert (twin.time, original.time) == (9.0, 1.0)
    fields = ("opcode", "payload", "seq", "topic", "key", "droppable", "offset", "epoch")
    assert [getattr(twin, f) for f in fields] == [getattr(original, f) for f in fields]
    assert twin.frame is original.frame
    assert twin.v1_payload == original.v1_payload
    # Encoded later, through either, the v1 frame is encoded once and shared.
    assert twin.v1_frame(None) is original.v1_frame(None)


def test_plans_kept_are_bounded_and_a_crowd_past_the_bound_is_still_served_exactly() -> None:
    streams, history, plans = Streams(lambda: "e1"), CountingHistory(History()), Plans()
    published(streams, history, 5)
    crowd = [Position("p", f"x{i}", 0) for i in range(Plans.MAX_PLANS + 10)]
    got = [plans.plan(streams, history, p, every_topic=False, now=0.0) for p in crowd]
    assert {tuple(offsets(plan.messages)) for plan in got if plan} == {(1, 2, 3, 4, 5)}
    assert history.reads == len(crowd)
    assert plans._kept <= Plans.MAX_PLANS
    # The last ones are still shared.
    plans.plan(streams, history, crowd[-1], every_topic=False, now=0.0)
    assert history.reads == len(crowd)
