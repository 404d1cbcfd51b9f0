"""The client's account of each stream: every offset received or reported lost, once,
by the same rules as the JavaScript client (docs/js-client.md)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wsfanout._client.tracker import uncovered
from wsfanout.client import Gap, Position, Tracker


def feed(tracker: Tracker, topic: str, epoch: str, *offsets: int) -> list[Gap]:
    gaps: list[Gap] = []
    for offset in offsets:
        tracker.message(Position(topic, epoch, offset), gaps)
    return gaps


def notice(ranges: list[list[int]], **extra: Any) -> dict[str, Any]:
    return {"type": "gap", "t": "p", "e": "e1", "ranges": ranges, **extra}


def test_messages_in_order_lose_nothing_and_set_the_position() -> None:
    tracker = Tracker()
    assert feed(tracker, "p", "e1", 5, 6, 7) == []  # the first heard of starts the count
    assert tracker.positions() == (Position("p", "e1", 7),)
    stats = tracker.stats()
    assert (stats.received, stats.gaps, stats.lost) == (3, 0, 0)


def test_a_hole_in_the_offsets_is_a_gap_of_its_exact_range() -> None:
    tracker = Tracker([Position("p", "e1", 3)])
    gaps = feed(tracker, "p", "e1", 4, 8, 9, 12)
    assert [(g.ranges, g.count, g.source) for g in gaps] == [
        (((5, 7),), 3, "offsets"),
        (((10, 11),), 2, "offsets"),
    ]
    assert tracker.stats().lost == 5


def test_a_repeat_is_a_duplicate_and_not_delivered() -> None:
    tracker = Tracker()
    gaps: list[Gap] = []
    assert tracker.message(Position("p", "e1", 2), gaps) is True
    assert tracker.message(Position("p", "e1", 2), gaps) is False
    assert tracker.message(Position("p", "e1", 1), gaps) is False
    assert tracker.stats().duplicates == 2


def test_a_notice_is_reported_once_and_its_ranges_are_no_hole_later() -> None:
    tracker = Tracker([Position("p", "e1", 39)])
    gaps: list[Gap] = []
    reasons = {"dropped_oldest": 8, "conflated": 1}
    tracker.notice(notice([[40, 47], [49, 49]], count=9, reasons=reasons, keys=["K"]), gaps)
    gaps += feed(tracker, "p", "e1", 48, 50)
    assert len(gaps) == 1
    assert (gaps[0].source, gaps[0].count, dict(gaps[0].reasons), gaps[0].keys) == (
        "notice",
        9,
        reasons,
        ("K",),
    )
    # A heartbeat at 50 reveals nothing more.
    tracker.heartbeat({"type": "heartbeat", "offsets": {"p": ["e1", 50]}}, gaps)
    assert len(gaps) == 1
    assert tracker.positions() == (Position("p", "e1", 50),)
    assert tracker.stats().lost == 9


def test_a_notice_reports_only_what_the_client_did_not_know() -> None:
    tracker = Tracker([Position("p", "e1", 10)])
    gaps: list[Gap] = []
    tracker.notice(notice([[11, 12]]), gaps)
    tracker.notice(notice([[5, 14]]), gaps)  # 5..10 received, 11..12 known already
    assert [g.ranges for g in gaps] == [((11, 12),), ((13, 14),)]
    assert tracker.stats().lost == 4


def test_a_heartbeat_past_the_last_offset_reveals_a_loss_at_the_tail() -> None:
    tracker = Tracker([Position("p", "e1", 10)])
    gaps: list[Gap] = []
    tracker.heartbeat({"type": "heartbeat", "offsets": {"p": ["e1", 13], "q": ["e2", 4]}}, gaps)
    assert [(g.topic, g.ranges, g.source) for g in gaps] == [("p", ((11, 13),), "heartbeat")]
    # q was not heard of before: the heartbeat says where the client starts following it.
    # p resumes from the last offset received, 10: what was lost after it is asked again.
    assert tracker.positions() == (Position("p", "e1", 10), Position("q", "e2", 4))


def test_what_was_reported_lost_and_is_replayed_counts_as_recovered() -> None:
    tracker = Tracker([Position("p", "e1", 10)])
    gaps: list[Gap] = []
    tracker.heartbeat({"offsets": {"p": ["e1", 13]}}, gaps)  # 11..13 lost at the tail
    tracker.notice(notice([[15, 15]]), gaps)  # 15 announced lost ahead of 14
    gaps += feed(tracker, "p", "e1", 11, 12, 13, 14, 15, 16)  # a resume replays them all
    stats = tracker.stats()
    assert (stats.received, stats.lost, stats.recovered, stats.gaps) == (6, 4, 4, 2)
    assert tracker.positions() == (Position("p", "e1", 16),)


def test_a_new_epoch_is_a_gap_of_unknown_size_and_its_offsets_start_at_one() -> None:
    tracker = Tracker([Position("p", "old", 50)])
    gaps = feed(tracker, "p", "new", 3)
    assert [(g.source, g.count, g.previous, g.epoch) for g in gaps] == [
        ("epoch", None, Position("p", "old", 50), "new"),
        ("offsets", 2, None, "new"),
    ]
    stats = tracker.stats()
    assert (stats.epoch_changes, stats.lost, stats.gaps) == (1, 2, 2)


def test_a_resume_frame_moves_to_the_new_epoch_of_the_server() -> None:
    tracker = Tracker([Position("p", "old", 50)])
    gaps: list[Gap] = []
    frame = {"type": "resume", "t": "p", "e": "new", "since": 50, "replay": [1, 2],
             "complete": False, "previous": "old"}  # fmt: skip
    tracker.resume(frame, gaps)
    gaps += feed(tracker, "p", "new", 1, 2)
    assert [(g.source, g.previous) for g in gaps] == [("epoch", Position("p", "old", 50))]
    assert tracker.positions() == (Position("p", "new", 2),)


def test_a_position_past_the_end_of_the_stream_starts_over_from_one() -> None:
    tracker = Tracker([Position("p", "e1", 99)])
    gaps: list[Gap] = []
    frame = {"type": "resume", "t": "p", "e": "e1", "since": 99, "replay": [1, 3],
             "complete": False, "previous": "e1"}  # fmt: skip
    tracker.resume(frame, gaps)
    gaps += feed(tracker, "p", "e1", 1, 2, 3)
    assert [g.source for g in gaps] == ["epoch"]
    assert tracker.stats().received == 3


def test_a_resume_in_the_same_epoch_changes_nothing() -> None:
    tracker = Tracker([Position("p", "e1", 4)])
    gaps: list[Gap] = []
    frame = {"type": "resume", "t": "p", "e": "e1", "since": 4, "replay": [5, 6],
             "complete": True}  # fmt: skip
    tracker.resume(frame, gaps)
    gaps += feed(tracker, "p", "e1", 5, 6)
    assert gaps == []


def test_uncovered_leaves_out_what_known_ranges_cover() -> None:
    assert uncovered([(2, 3), (7, 7)], 1, 10) == [(1, 1), (4, 6), (8, 10)]
    assert uncovered([(1, 3)], 1, 3) == []
    assert uncovered([(1, 2), (9, 9)], 5, 6) == [(5, 6)]


@given(
    st.lists(
        st.tuples(st.sampled_from(["frame", "notice", "beat"]), st.integers(1, 30)),
        max_size=40,
    )
)
def test_every_offset_is_received_or_lost_exactly_once(events: list[tuple[str, int]]) -> None:
    # A server sends offsets 1..30 of one epoch in order, some as frames, some announced
    # in notices just before the next frame, some never; heartbeats name the last sent.
    tracker = Tracker([Position("p", "e1", 0)])
    gaps: list[Gap] = []
    received: list[int] = []
    sent = 0
    for kind, step in sorted(events, key=lambda e: e[1]):
        if step <= sent:
            continue
        if kind == "frame":
            if tracker.message(Position("p", "e1", step), gaps):
                received.append(step)
        elif kind == "notice":
            tracker.notice({"t": "p", "e": "e1", "ranges": [[sent + 1, step]]}, gaps)
        else:
            tracker.heartbeat({"offsets": {"p": ["e1", step]}}, gaps)
        sent = step
    lost = [o for gap in gaps for a, b in gap.ranges for o in range(a, b + 1)]
    assert sorted(received + lost) == list(range(1, sent + 1))
    assert tracker.stats().lost == len(lost)
