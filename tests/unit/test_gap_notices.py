"""Gap notices in the core: the ledger, the notice's format, and the outbox writing each
notice before any message published after the loss, with the fast path off meanwhile."""

from __future__ import annotations

import json

import pytest

from wsfanout import PolicyConflictError, PolicyError
from wsfanout.lowlevel import (
    IDLE,
    CloseAction,
    GapLedger,
    Message,
    Notice,
    Offer,
    Outbox,
    Wait,
    Write,
    make_control,
    make_message,
)
from wsfanout.policies import (
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    GapNotice,
    Notify,
    SkipToLatest,
    Throttle,
    notice_json,
)

HIGH, LOW = 1000, 100
STALLED = HIGH + 1


def msg(
    offset: int, *, topic: str | None = "prices", key: str | None = None, size: int = 10
) -> Message:
    return make_message(
        "x" * size, seq=offset, time=0.0, topic=topic, key=key, offset=offset, epoch="e1"
    )


def notices(action: object) -> list[dict[str, object]]:
    assert isinstance(action, Write), action
    assert all(isinstance(frame, Notice) for frame in action.frames), action
    return [json.loads(frame.payload) for frame in action.frames]


def seqs(action: object) -> list[int]:
    assert isinstance(action, Write), action
    return [frame.seq for frame in action.frames]


# -- the ledger ---------------------------------------------------------------------------


def test_the_ledger_merges_consecutive_and_scattered_offsets_into_ranges() -> None:
    ledger = GapLedger()
    assert not ledger
    for offset in (5, 6, 7, 10, 9, 2, 8):
        ledger.record(msg(offset), "dropped_oldest")
    assert ledger
    (notice,) = ledger.take()
    assert notice.ranges == ((2, 2), (5, 10))
    assert notice.count == 7
    assert not ledger
    assert ledger.weight == 0


def test_the_ledger_keeps_one_notice_per_topic_in_the_order_of_first_loss() -> None:
    ledger = GapLedger()
    ledger.record(msg(3, topic="news"), "skipped")
    ledger.record(msg(1, topic=None), "dropped_newest")
    ledger.record(msg(4, topic="news", key="k"), "conflated")
    ledger.record(msg(5, topic="news", key="k"), "conflated")
    first, second = ledger.take()
    assert (first.topic, first.ranges, first.reasons, first.keys) == (
        "news",
        ((3, 5),),
        {"skipped": 1, "conflated": 2},
        ("k",),
    )
    assert (second.topic, second.ranges, second.reasons) == ("", ((1, 1),), {"dropped_newest": 1})


def test_a_long_stall_under_drop_oldest_costs_the_ledger_one_range() -> None:
    ledger = GapLedger()
    ledger.record(msg(1), "dropped_oldest")
    weight = ledger.weight
    for offset in range(2, 100_000):
        ledger.record(msg(offset), "dropped_oldest")
    assert ledger.weight == weight
    (notice,) = ledger.take()
    assert notice.ranges == ((1, 99_999),)


# -- the notice ---------------------------------------------------------------------------


def test_the_json_format_is_the_protocols_example() -> None:
    notice = GapNotice(
        "prices",
        "h3k9q2mv",
        [(40, 47), (49, 49)],
        {"dropped_oldest": 8, "conflated": 1},
        ["EURUSD"],
    )
    assert notice_json(notice) == (
        '{"type":"gap","t":"prices","e":"h3k9q2mv","ranges":[[40,47],[49,49]],"count":9,'
        '"reasons":{"dropped_oldest":8,"conflated":1},"keys":["EURUSD"]}'
    )
    # No topic: no "t"; no conflation: no "keys".
    bare = GapNotice("", "a81k2m0q", [(3, 3)], {"skipped": 1})
    assert notice_json(bare) == (
        '{"type":"gap","e":"a81k2m0q","ranges":[[3,3]],"count":1,"reasons":{"skipped":1}}'
    )


@pytest.mark.parametrize(
    ("ranges", "reasons", "error"),
    [
        ([(5, 4)], {"skipped": 2}, r"must be ascending"),
        ([(1, 2), (3, 4)], {"skipped": 4}, r"non-adjacent"),
        ([(1, 1)], {"evicted": 1}, r"'evicted', which is not one of"),
        ([(1, 1)], {"skipped": 0}, r"reasons\['skipped'\]=0 must be an int >= 1"),
    ],
)
def test_a_malformed_notice_is_refused(
    ranges: list[tuple[int, int]], reasons: dict[str, int], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        GapNotice("t", "e", ranges, reasons)


def test_notify_validates_its_format_and_claims_the_notify_slot() -> None:
    with pytest.raises(PolicyError, match=r"^format='xml' is not a notice format"):
        Notify(format="xml")
    with pytest.raises(PolicyError, match=r"^format=3 must be a notice format name or a callable"):
        Notify(format=3)  # type: ignore[arg-type]
    assert (Notify() | Notify()).rules().notify is notice_json
    with pytest.raises(PolicyConflictError, match="both decide how losses are announced"):
        Notify() | Notify(format="json-binary")
    assert repr(DropOldest(max_messages=3) | Notify()) == "DropOldest(max_messages=3) | Notify()"


def test_a_notice_frame_is_text_in_the_v1_framing_whatever_its_raw_format() -> None:
    notice = GapNotice("t", "e", [(1, 2)], {"skipped": 2})
    frame = Notice(notice, b"\x00binary", time=0.0)
    assert (frame.opcode, frame.payload, frame.control) == (2, b"\x00binary", True)
    assert frame.v1_opcode == 1
    assert frame.v1_payload == notice_json(notice).encode()
    assert frame.v1_frame()[0] == 0x81  # FIN + Text
    with pytest.raises(TypeError, match="a notice format must return str or bytes, not int"):
        Notice(notice, 7, time=0.0)  # type: ignore[arg-type]


# -- the outbox -----------------------------------------------------------------------------


def test_nothing_lost_means_no_notice_and_the_fast_path_as_usual() -> None:
    outbox = Outbox(DropOldest(max_messages=2) | Notify(), high=HIGH, low=LOW)
    for offset in range(1, 20):
        assert outbox.offer(msg(offset), 0.0, 0) is Offer.WRITE
    assert outbox.queue.ledger is not None
    assert not outbox.queue.ledger
    assert outbox.control_frames == 0


def test_evictions_are_announced_before_the_messages_that_follow_them() -> None:
    outbox = Outbox(DropOldest(max_messages=2) | Notify(), high=HIGH, low=LOW)
    for offset in range(1, 6):
        outbox.offer(msg(offset), 0.0, STALLED)
    assert outbox.fast_limit == -1, "a notice is due: the fast path is off"
    assert outbox.next_action(0.0, STALLED) == Wait(float("inf"), drain=True)
    assert notices(outbox.next_action(0.0, 0)) == [
        {
            "type": "gap",
            "t": "prices",
            "e": "e1",
            "ranges": [[1, 3]],
            "count": 3,
            "reasons": {"dropped_oldest": 3},
        }
    ]
    assert seqs(outbox.next_action(0.0, 0)) == [4, 5]
    assert outbox.next_action(0.0, 0) is IDLE
    assert outbox.control_frames == 1
    stats = outbox.stats(0.0)
    assert (stats.sent, stats.dropped_oldest, stats.offered) == (2, 3, 5)


def test_a_message_published_while_a_notice_is_due_cannot_take_the_fast_path() -> None:
    outbox = Outbox(DropNewest(max_messages=1) | Notify(), high=HIGH, low=LOW)
    outbox.offer(msg(1), 0.0, STALLED)
    outbox.offer(msg(2), 0.0, STALLED)  # refused: a notice is due
    assert notices(outbox.next_action(0.0, 0))[0]["ranges"] == [[2, 2]]
    assert seqs(outbox.next_action(0.0, 0)) == [1]
    assert outbox.next_action(0.0, 0) is IDLE
    # Written: the fast path is back.
    assert outbox.offer(msg(3), 0.0, 0) is Offer.WRITE


def test_a_refusal_that_leaves_nothing_queued_still_gets_its_notice() -> None:
    # A message larger than the byte bound is refused at an empty queue: the relay must
    # run, or the notice would wait for the next loss.
    outbox = Outbox(DropOldest(max_bytes=300) | Notify(), high=HIGH, low=LOW)
    assert outbox.offer(msg(1, size=500), 0.0, STALLED) is Offer.KICK
    assert notices(outbox.next_action(0.0, 0))[0]["reasons"] == {"dropped_newest": 1}
    assert outbox.next_action(0.0, 0) is IDLE


def test_skips_and_conflations_name_their_reasons_and_keys() -> None:
    outbox = Outbox(ConflateByKey() | Notify(), high=HIGH, low=LOW)
    for offset, key in enumerate(["a", "b", "a", "a", None, "b"], start=1):
        outbox.offer(msg(offset, key=key), 0.0, STALLED)
    (notice,) = notices(outbox.next_action(0.0, 0))
    assert notice["ranges"] == [[1, 3]]
    assert notice["reasons"] == {"conflated": 3}
    assert notice["keys"] == ["a", "b"]
    assert seqs(outbox.next_action(0.0, 0)) == [4, 5, 6]

    skipping = Outbox(SkipToLatest() | Notify(format="json-binary"), high=HIGH, low=LOW)
    for offset in range(1, 5):
        skipping.offer(msg(offset), 0.0, STALLED)
    action = skipping.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert action.frames[0].opcode == 2
    assert notices(action)[0]["reasons"] == {"skipped": 3}


def test_a_custom_format_writes_what_the_application_wants() -> None:
    def envelope(notice: GapNotice) -> str:
        return json.dumps({"event": "missed", "count": notice.count})

    outbox = Outbox(DropOldest(max_messages=1) | Notify(format=envelope), high=HIGH, low=LOW)
    outbox.offer(msg(1), 0.0, STALLED)
    outbox.offer(msg(2), 0.0, STALLED)
    assert notices(outbox.next_action(0.0, 0)) == [{"event": "missed", "count": 1}]


def test_losses_before_a_control_frame_are_announced_before_it() -> None:
    outbox = Outbox(DropOldest(max_messages=1) | Notify(), high=HIGH, low=LOW)
    outbox.offer(msg(1), 0.0, STALLED)
    outbox.offer(msg(2), 0.0, STALLED)
    heartbeat = make_control('{"type":"heartbeat"}', time=0.0)
    assert outbox.send_control(heartbeat, 0.0, STALLED) is Offer.KICK
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert [type(frame) for frame in action.frames] == [Notice, Message]
    assert action.frames[1] is heartbeat


def test_a_throttle_holding_messages_back_does_not_hold_the_notice_back() -> None:
    outbox = Outbox(SkipToLatest() | Throttle(rate=1.0) | Notify(), high=HIGH, low=LOW)
    assert outbox.offer(msg(1), 0.0, 0) is Offer.WRITE
    outbox.offer(msg(2), 0.1, 0)
    outbox.offer(msg(3), 0.2, 0)  # skips #2
    assert notices(outbox.next_action(0.2, 0))[0]["ranges"] == [[2, 2]]
    held = outbox.next_action(0.2, 0)
    assert isinstance(held, Wait)
    assert held.until == pytest.approx(1.0)
    assert seqs(outbox.next_action(1.0, 0)) == [3]


def test_notices_that_back_up_past_the_byte_bound_close_the_subscriber() -> None:
    # Every message on a topic of its own: a ledger entry each, none merging.
    outbox = Outbox(DropNewest(max_messages=1, max_bytes=400) | Notify(), high=HIGH, low=LOW)
    outbox.offer(msg(1), 0.0, STALLED)
    outcome = Offer.NONE
    for n in range(2, 10):
        outcome = outbox.offer(msg(n, topic=f"topic-{n}"), 0.0, STALLED)
        if outcome is Offer.CLOSE:
            break
    assert outcome is Offer.CLOSE
    assert outbox.closing is not None
    assert outbox.closing.code == 1013
    assert "gap notices of about" in outbox.closing.cause
    assert outbox.queue.ledger is not None
    assert not outbox.queue.ledger, "nothing left to announce"


def test_what_is_lost_by_closing_is_not_announced() -> None:
    outbox = Outbox(
        DropOldest(max_messages=2) | Disconnect(max_lag=1.0) | Notify(), high=HIGH, low=LOW
    )
    for offset in range(1, 5):
        outbox.offer(msg(offset), 0.0, STALLED)
    action = outbox.next_action(5.0, STALLED)
    assert isinstance(action, CloseAction)
    stats = outbox.stats(5.0)
    assert (stats.dropped_oldest, stats.disconnected) == (2, 2)
    assert outbox.next_action(5.0, 0) is IDLE
    assert outbox.control_frames == 0
