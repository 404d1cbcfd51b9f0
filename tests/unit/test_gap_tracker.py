"""The client's gap tracker (``wsfanout.client``): frames in, gaps out, each reported once.

It is checked against frames a real core writes (an outbox under ``Notify()``, framed
as a ``wsfanout.v1`` connection would receive them) and against hand-written frames of
the protocol for what the core does not send yet (heartbeats, resume frames).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout.client import Gap, GapTracker, Position
from wsfanout.lowlevel import IDLE, Message, Outbox, Wait, Write, make_message
from wsfanout.policies import DropNewest, DropOldest, Notify, SkipToLatest


def data(offset: int, topic: str = "p", epoch: str = "e1", payload: str = "x") -> str:
    return f'{{"o":{offset},"e":"{epoch}","t":"{topic}"}}\n{payload}'


def gap(ranges: list[list[int]], topic: str = "p", epoch: str = "e1", **reasons: int) -> str:
    return json.dumps(
        {
            "type": "gap",
            "t": topic,
            "e": epoch,
            "ranges": ranges,
            "reasons": reasons or {"skipped": 1},
        }
    )


def test_a_data_frame_gives_its_payload_and_place() -> None:
    tracker = GapTracker()
    received = tracker.feed('{"o":3,"e":"e1","t":"prices","k":"EURUSD"}\n{"bid": 1}')
    assert received.kind == "data"
    assert received.data == '{"bid": 1}'
    assert received.messages == (Position("prices", "e1", 3, "EURUSD"),)
    assert received.gaps == ()
    assert tracker.positions == {"prices": ("e1", 3)}


def test_binary_frames_batches_and_messages_in_no_stream() -> None:
    tracker = GapTracker()
    batch = tracker.feed(b'{"b":[[1,"e1","p"],[2,"e1","p"],[1,"e2",""]]}\n\x00\x01')
    assert batch.data == b"\x00\x01"
    assert [place.offset for place in batch.messages] == [1, 2, 1]
    alone = tracker.feed("{}\nhello")
    assert (alone.kind, alone.data, alone.messages) == ("data", "hello", ())
    assert tracker.positions == {"p": ("e1", 2), "": ("e2", 1)}


def test_an_announced_gap_is_reported_once_and_not_again_when_the_offsets_jump() -> None:
    tracker = GapTracker()
    tracker.feed(data(1))
    notice = tracker.feed(gap([[2, 4]], dropped_oldest=3))
    assert notice.kind == "gap"
    assert notice.gaps == (Gap("p", "e1", ((2, 4),), True, {"dropped_oldest": 3}),)
    assert tracker.feed(data(5)).gaps == ()
    assert tracker.lost == 3


def test_an_unannounced_jump_is_reported_with_what_was_not_announced() -> None:
    tracker = GapTracker()
    tracker.feed(data(1))
    tracker.feed(gap([[3, 4]]))
    received = tracker.feed(data(8))
    assert [(g.ranges, g.announced) for g in received.gaps] == [(((2, 2), (5, 7)), False)]
    assert tracker.lost == 2 + 4


def test_a_notice_ahead_of_older_messages_still_queued_is_kept_until_passed() -> None:
    # DropNewest: the newest is refused while older ones wait; its notice comes first.
    tracker = GapTracker()
    tracker.feed(gap([[3, 3]], dropped_newest=1))
    assert [tracker.feed(data(n)).gaps for n in (1, 2, 4)] == [(), (), ()]


def test_heartbeats_reveal_a_loss_at_the_tail_and_epochs_that_changed() -> None:
    tracker = GapTracker()
    tracker.feed(data(5))
    beat = tracker.feed('{"type":"heartbeat","offsets":{"p":["e1",7],"q":["x",3]}}')
    assert beat.kind == "control"
    assert [(g.topic, g.ranges) for g in beat.gaps] == [("p", ((6, 7),))]
    assert tracker.positions["p"] == ("e1", 5), "resume from what was received"
    assert tracker.positions["q"] == ("x", 3), "a stream first heard of starts there"
    assert tracker.feed(data(8)).gaps == ()
    restarted = tracker.feed(data(1, epoch="e2"))
    assert restarted.gaps == (Gap("p", "e2", (), False, previous="e1"),)
    assert restarted.gaps[0].count is None


def test_resuming_counts_from_since_and_a_changed_epoch_is_announced() -> None:
    tracker = GapTracker(since={"p": ("e1", 41)})
    assert tracker.since() == ["p:e1:41"]
    tracker.feed('{"type":"resume","t":"p","e":"e1","since":41,"replay":[42,43],"complete":true}')
    assert tracker.feed(data(42)).gaps == ()
    assert tracker.feed(data(45)).gaps[0].ranges == ((43, 44),)
    other = GapTracker(since={"q": ("old", 9)})
    resume = other.feed(
        '{"type":"resume","t":"q","e":"new","since":9,"replay":[1,2],"complete":false,"previous":"old"}'
    )
    assert resume.gaps == (Gap("q", "new", (), True, previous="old"),)
    assert other.feed(data(1, topic="q", epoch="new")).gaps == ()


# -- the four behaviours docs/protocol.md settles (wsfanout.js behaves the same) ----------


def test_a_stream_whose_first_frame_is_a_heartbeat_starts_at_the_heartbeats_offset() -> None:
    # "A client that has seen nothing of a topic yet takes the heartbeat's offset as
    # where it starts following it": nothing before it is lost, and it resumes from it.
    tracker = GapTracker()
    beat = tracker.feed('{"type":"heartbeat","offsets":{"a":["E",7]}}')
    assert beat.gaps == ()
    assert tracker.positions == {"a": ("E", 7)}
    assert tracker.since() == ["a:E:7"]
    assert tracker.feed(data(8, topic="a", epoch="E")).gaps == ()
    (hole,) = tracker.feed(data(10, topic="a", epoch="E")).gaps
    assert (hole.ranges, hole.announced) == (((9, 9),), False)
    assert tracker.positions == {"a": ("E", 10)}


def test_a_notice_for_a_stream_not_seen_yet_is_reported_but_gives_no_position() -> None:
    # A notice may announce offsets after frames still to arrive: what is below its
    # ranges is not known to be lost, so the client has no position until a frame comes.
    tracker = GapTracker()
    notice = tracker.feed(gap([[21, 30]], topic="a", dropped_newest=10))
    assert [(g.ranges, g.announced) for g in notice.gaps] == [(((21, 30),), True)]
    assert tracker.positions == {}
    assert tracker.since() == []
    gaps = [g for n in [*range(11, 21), 31] for g in tracker.feed(data(n, topic="a")).gaps]
    assert gaps == [], "the older messages, then the one after the announced range"
    assert tracker.positions == {"a": ("e1", 31)}
    assert tracker.lost == 10


def test_a_duplicate_is_left_out_and_counted_not_delivered_again() -> None:
    tracker = GapTracker()
    for n in (1, 2, 3):
        tracker.feed(data(n))
    again = tracker.feed(data(2))
    assert (again.kind, again.messages, again.gaps) == ("duplicate", (), ())
    assert again.duplicates == (Position("p", "e1", 2),)
    # A batch that overlaps what was received keeps only its new messages.
    batch = tracker.feed('{"b":[[3,"e1","p"],[4,"e1","p"]]}\nxy')
    assert batch.kind == "data"
    assert [m.offset for m in batch.messages] == [4]
    assert [m.offset for m in batch.duplicates] == [3]
    assert tracker.duplicates == 2
    assert tracker.positions == {"p": ("e1", 4)}
    assert tracker.lost == 0


def test_a_heartbeat_in_another_epoch_reports_the_change_and_the_new_epochs_offsets() -> None:
    # The epoch changed: the client has nothing of the new one, so the heartbeat's
    # offsets 1..N are lost (a resume from offset 0 of the new epoch asks for them).
    tracker = GapTracker(since={"a": ("old", 5)})
    beat = tracker.feed('{"type":"heartbeat","offsets":{"a":["new",3]}}')
    assert beat.gaps == (
        Gap("a", "new", (), False, previous="old"),
        Gap("a", "new", ((1, 3),), False),
    )
    assert tracker.lost == 3
    assert tracker.positions == {"a": ("new", 0)}
    assert tracker.feed(data(4, topic="a", epoch="new")).gaps == ()


def test_a_notice_repeating_what_the_client_found_itself_reports_only_the_rest() -> None:
    tracker = GapTracker()
    for n in (1, 2, 5):
        tracker.feed(data(n))
    # 3 and 4 were reported as a hole and 5 received: only 6 and 7 are news.
    notice = tracker.feed(gap([[3, 7]]))
    assert [g.ranges for g in notice.gaps] == [((6, 7),)]
    assert tracker.feed(gap([[6, 7]])).gaps == (), "told already: no gap"
    assert tracker.lost == 4


def test_offsets_reported_missing_then_replayed_count_as_recovered() -> None:
    tracker = GapTracker()
    tracker.feed(data(1))
    tracker.feed(gap([[3, 4]]))
    assert tracker.since() == ["p:e1:1"], "a reconnect asks for what was lost after 1"
    for n in (2, 3, 4, 5):  # replayed from history, then live
        tracker.feed(data(n))
    assert (tracker.lost, tracker.recovered, tracker.duplicates) == (2, 2, 0)


def test_the_raw_framing_recognises_notices_only() -> None:
    tracker = GapTracker("raw")
    assert tracker.feed("hello").kind == "data"
    assert tracker.feed('{"type":"other"}').kind == "data"
    notice = '{"type":"gap","e":"e1","ranges":[[1,2]],"count":2,"reasons":{"skipped":2}}'
    assert tracker.feed(notice).gaps[0].topic == ""
    assert tracker.feed(notice.encode()).kind == "gap"  # json-binary
    assert tracker.lost == 4
    custom = tracker.notice({"t": "p", "e": "e1", "ranges": [[7, 7]]}, "LOST 1")
    assert (custom.kind, custom.data, custom.gaps[0].ranges) == ("gap", "LOST 1", ((7, 7),))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="framing='v2' must be 'raw' or 'v1'"):
        GapTracker("v2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expecting value"):
        GapTracker().feed("not json")


# -- against the real core -------------------------------------------------------------

HIGH, LOW = 1000, 100


def v1(frame: Message) -> str:
    return frame.v1_payload.decode()


@given(
    policy=st.sampled_from(
        [
            DropOldest(max_messages=3) | Notify(),
            DropNewest(max_messages=3) | Notify(),
            SkipToLatest() | Notify(),
        ]
    ),
    script=st.lists(st.tuples(st.sampled_from(["p", "q"]), st.booleans()), max_size=60),
)
def test_what_a_notifying_core_writes_leaves_no_gap_unannounced(
    policy: object, script: list[tuple[str, bool]]
) -> None:
    outbox = Outbox(policy, high=HIGH, low=LOW)  # type: ignore[arg-type]
    tracker = GapTracker()
    offsets = {"p": 0, "q": 0}
    received = 0
    for seq, (topic, stalled) in enumerate(script):
        offsets[topic] += 1
        message = make_message(
            f"{seq}", seq=seq, time=0.0, topic=topic, offset=offsets[topic], epoch="e1"
        )
        buffered = HIGH + 1 if stalled else 0
        frames: list[Message] = []
        if outbox.offer(message, 0.0, buffered).name == "WRITE":
            frames.append(message)
        while not stalled:
            action = outbox.next_action(0.0, 0)
            if not isinstance(action, Write):
                assert action is IDLE or isinstance(action, Wait)
                break
            frames += action.frames
        for frame in frames:
            result = tracker.feed(v1(frame))
            assert all(g.announced for g in result.gaps), result
            received += len(result.messages)
    stats = outbox.stats(0.0)
    assert tracker.lost == stats.dropped - stats.disconnected - _pending(outbox)
    assert received == stats.sent


def _pending(outbox: Outbox) -> int:
    ledger = outbox.queue.ledger
    return 0 if ledger is None else sum(notice.count for notice in ledger.take())
