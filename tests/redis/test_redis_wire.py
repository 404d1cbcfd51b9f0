"""The backplane's pure parts: wire format, the receiver's cursors, publish buffer. No Redis."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout._backplane.cursors import Cursors, Deliver, Lose, Reject, Repair
from wsfanout._backplane.envelope import (
    MAGIC,
    STREAM,
    Foreign,
    Malformed,
    Numbered,
    decode,
    decode_head,
    encode_head,
)
from wsfanout._backplane.publish_buffer import PublishBuffer
from wsfanout.lowlevel import OP_BINARY, OP_TEXT, Overflow

# -- wire format ------------------------------------------------------------------------

epochs = st.text("abcdef0123456789", min_size=1, max_size=8)


def published(epoch: str, offset: int, opcode: int, key: str | None, payload: bytes) -> bytes:
    """What the publish script puts on pub/sub (scripts.py), built the same way."""
    return STREAM + f"{epoch} {offset} ".encode() + encode_head(opcode, key) + payload


@given(
    epoch=epochs,
    offset=st.integers(min_value=1, max_value=10**15),
    opcode=st.sampled_from([OP_TEXT, OP_BINARY]),
    key=st.none() | st.text(max_size=20),
    payload=st.binary(max_size=300),
)
def test_a_numbered_message_decodes_to_what_was_published(
    epoch: str, offset: int, opcode: int, key: str | None, payload: bytes
) -> None:
    raw = published(epoch, offset, opcode, key, payload)
    assert decode(raw) == Numbered(epoch, offset, opcode, key, payload)
    head = encode_head(opcode, key)
    assert decode_head(head + payload) == (opcode, key, False, len(head))


@given(
    opcode=st.sampled_from([OP_TEXT, OP_BINARY]),
    key=st.none() | st.text(max_size=20),
    lossless=st.booleans(),
)
def test_a_message_is_lossless_on_the_wire_as_it_was_published(
    opcode: int, key: str | None, lossless: bool
) -> None:
    head = encode_head(opcode, key, lossless)
    raw = STREAM + b"e1 7 " + head + b"payload"
    assert decode(raw) == Numbered("e1", 7, opcode, key, b"payload", lossless)
    assert decode_head(head) == (opcode, key, lossless, len(head))


def test_a_payload_from_another_redis_client_is_delivered_as_it_is() -> None:
    assert decode(b"hello") == Foreign(OP_TEXT, b"hello")
    assert decode("h\u00e9llo".encode()) == Foreign(OP_TEXT, "h\u00e9llo".encode())
    assert decode(b"\xff\x00") == Foreign(OP_BINARY, b"\xff\x00")
    assert decode(b"") == Foreign(OP_TEXT, b"")


@given(tail=st.binary(max_size=64))
def test_decoding_never_raises_on_a_damaged_payload(tail: bytes) -> None:
    assert isinstance(decode(MAGIC + tail), (Numbered, Malformed))
    assert isinstance(decode(STREAM + tail), (Numbered, Malformed))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (MAGIC + b"D\x01a", "unknown kind b'D'"),
        (STREAM + b"e1", "no epoch and offset"),
        (STREAM + b"e1 12", "no epoch and offset"),
        (STREAM + b"e-1 12 ", "bad epoch"),
        (STREAM + b"e1 1x ", "bad epoch b'e1' or offset b'1x'"),
        (STREAM + b"e1 1 \x01", "1 bytes is shorter than a head"),
        (STREAM + b"e1 1 \x09\xff\xff\xff\xff", "unknown opcode 0x09"),
        (STREAM + b"e1 1 \x01\x00\x00\x00\x09ab", "key of 9 bytes overruns"),
        (STREAM + b"e1 1 \x01\x00\x00\x00\x01\xff", "key is not UTF-8"),
    ],
)
def test_a_damaged_payload_is_malformed_with_a_reason(raw: bytes, reason: str) -> None:
    decoded = decode(raw)
    assert isinstance(decoded, Malformed)
    assert decoded.reason.startswith(reason)


# -- the receiver's cursors -------------------------------------------------------------


def delivered(actions: Sequence[object] | None, offset: int) -> list[object]:
    """The actions, with None (deliver now) written out as the Deliver it means."""
    return [Deliver("t", "e1", offset, offset)] if actions is None else list(actions)


def test_messages_in_order_are_delivered_at_once() -> None:
    cursors: Cursors[int] = Cursors(history=True)
    cursors.baseline({"t": ("e1", 10)})
    assert [cursors.live("t", "e1", o, o) for o in (11, 12, 13)] == [None, None, None]
    assert cursors.position("t") == ("e1", 13)
    assert cursors.live("t", "e1", 12, 12) == []  # a repeat is dropped
    assert (cursors.lost, cursors.repaired_count) == (0, 0)


def test_a_gap_is_repaired_while_later_messages_wait_then_all_go_in_order() -> None:
    cursors: Cursors[int] = Cursors(history=True)
    cursors.baseline({"t": ("e1", 10)})
    actions = cursors.live("t", "e1", 14, 14)
    assert actions == [Repair("t", "e1", 10, 13, 1, checked=1)]
    assert cursors.live("t", "e1", 15, 15) == []  # waits behind the repair
    handed = cursors.repaired(
        Repair("t", "e1", 10, 13, 1, checked=1), [(11, 11), (12, 12), (13, 13)], ("e1", 15)
    )
    assert handed == [Deliver("t", "e1", o, o) for o in (11, 12, 13, 14, 15)]
    assert (cursors.position("t"), cursors.repaired_count, cursors.lost) == (("e1", 15), 3, 0)
    assert cursors.live("t", "e1", 16, 16) is None


def test_what_history_no_longer_holds_is_lost_where_it_would_have_been() -> None:
    cursors: Cursors[int] = Cursors(history=True)
    cursors.baseline({"t": ("e1", 0)})
    repair = cursors.live("t", "e1", 9, 9)
    assert repair == [Repair("t", "e1", 0, 8, 1, checked=1)]
    handed = cursors.repaired(
        Repair("t", "e1", 0, 8, 1, checked=1), [(4, 4), (6, 6), (7, 7), (8, 8)], ("e1", 9)
    )
    assert handed == [
        Lose("t", "e1", ((1, 3),)),
        Deliver("t", "e1", 4, 4),
        Lose("t", "e1", ((5, 5),)),
        *(Deliver("t", "e1", o, o) for o in (6, 7, 8, 9)),
    ]
    assert (cursors.lost, cursors.repaired_count) == (4, 4)


def test_without_history_a_gap_is_checked_with_redis_then_lost() -> None:
    cursors: Cursors[int] = Cursors(history=False)
    cursors.baseline({"t": ("e1", 0)})
    (check,) = cursors.live("t", "e1", 4, 4) or []
    assert check == Repair("t", "e1", 0, 3, 1, checked=1)
    assert cursors.live("t", "e1", 5, 5) == []  # waits behind the check
    assert cursors.repaired(check, [], ("e1", 4)) == [
        Lose("t", "e1", ((1, 3),)),
        Deliver("t", "e1", 4, 4),
        Deliver("t", "e1", 5, 5),
    ]
    assert cursors.resync({"t": ("e1", 7)}) == [Lose("t", "e1", ((6, 7),))]
    assert cursors.live("t", "e1", 8, 8) is None
    assert cursors.lost == 5


@pytest.mark.parametrize("history", [True, False])
def test_a_message_numbered_past_what_redis_numbered_is_rejected_not_a_loss(
    history: bool,
) -> None:
    cursors: Cursors[int] = Cursors(history=history)
    cursors.baseline({"t": ("e1", 5)})
    (check,) = cursors.live("t", "e1", 10**9, -1) or []
    assert check == Repair("t", "e1", 5, 10**9 - 1, 1, checked=1)
    # A genuine message arrives while the check runs, published after Redis answered it.
    assert cursors.live("t", "e1", 6, 6) == []
    handed = cursors.repaired(check, [], ("e1", 5))
    assert handed == [Reject("t", "e1", (10**9,), 5), Deliver("t", "e1", 6, 6)]
    assert (cursors.forged, cursors.lost, cursors.position("t")) == (1, 0, ("e1", 6))
    assert cursors.live("t", "e1", 7, 7) is None  # the stream goes on


def test_a_forged_jump_over_a_real_gap_loses_only_what_redis_numbered() -> None:
    cursors: Cursors[int] = Cursors(history=True)
    cursors.baseline({"t": ("e1", 5)})
    assert cursors.live("t", "e1", 10**6, -1) == [Repair("t", "e1", 5, 10**6 - 1, 1, checked=1)]
    handed = cursors.repaired(
        Repair("t", "e1", 5, 10**6 - 1, 1, checked=1), [(7, 7), (8, 8)], ("e1", 8)
    )
    assert handed == [
        Reject("t", "e1", (10**6,), 8),
        Lose("t", "e1", ((6, 6),)),
        Deliver("t", "e1", 7, 7),
        Deliver("t", "e1", 8, 8),
    ]
    assert (cursors.forged, cursors.lost, cursors.position("t")) == (1, 1, ("e1", 8))
    assert cursors.live("t", "e1", 9, 9) is None  # no second repair toward the forgery


def test_a_resync_repairs_the_tail_a_broken_subscription_lost() -> None:
    cursors: Cursors[int] = Cursors(history=True)
    cursors.baseline({"t": ("e1", 5), "u": ("e9", 2)})
    actions = cursors.resync({"t": ("e1", 8), "u": ("e9", 2), "new": ("e3", 2)})
    assert actions == [Repair("t", "e1", 5, 8, 1), Repair("new", "e3", 0, 2, 1)]  # checked=0
    # Messages that pub/sub brings too while the repair runs are not handed twice.
    assert cursors.live("t", "e1", 7, 7) == []
    assert cursors.live("t", "e1", 9, 9) == []
    handed = cursors.repaired(Repair("t", "e1", 5, 8, 1), [(6, 6), (7, 7), (8, 8)], ("e1", 9))
    assert [a.offset for a in handed if isinstance(a, Deliver)] == [6, 7, 8, 9]


def test_a_new_epoch_hands_over_what_waited_and_starts_from_offset_one() -> None:
    cursors: Cursors[int] = Cursors(history=True)
    cursors.baseline({"t": ("e1", 5)})
    assert cursors.live("t", "e1", 8, 8) == [Repair("t", "e1", 5, 7, 1, checked=1)]
    # Redis was flushed: the old epoch's repair is moot, its waiting message goes now.
    actions = cursors.resync({"t": ("e2", 3)})
    assert actions == [
        Lose("t", "e1", ((6, 7),)),
        Deliver("t", "e1", 8, 8),
        Repair("t", "e2", 0, 3, 1),
    ]
    assert cursors.repaired(Repair("t", "e1", 5, 7, 1), [(6, 6)]) == []  # stale
    assert cursors.epoch_changes == 1
    assert cursors.live("t", "e2", 1, 1) == []  # waits for the new epoch's repair


def test_a_repair_that_waits_too_long_is_given_up_and_counted() -> None:
    cursors: Cursors[int] = Cursors(history=True, pending_limit=2)
    cursors.baseline({"t": ("e1", 0)})
    assert cursors.live("t", "e1", 5, 5) == [Repair("t", "e1", 0, 4, 1, checked=1)]
    assert cursors.live("t", "e1", 6, 6) == []
    given_up = cursors.live("t", "e1", 7, 7)
    assert given_up == [Lose("t", "e1", ((1, 4),)), *(Deliver("t", "e1", o, o) for o in (5, 6, 7))]
    assert cursors.repaired(Repair("t", "e1", 0, 4, 1), [(1, 1)]) == []  # too late


@given(
    arrivals=st.lists(
        st.integers(min_value=1, max_value=40) | st.integers(min_value=50, max_value=10**12),
        max_size=60,
    ),
    kept=st.integers(min_value=0, max_value=40),
    resync=st.booleans(),
    history=st.booleans(),
)
def test_every_offset_is_handed_over_or_lost_exactly_once_in_order(
    arrivals: list[int], kept: int, resync: bool, history: bool
) -> None:
    # A model of Redis: a stream of offsets 1..40 whose history keeps the last `kept`;
    # pub/sub brings `arrivals` (any subset, repeats, out of order), and forgeries
    # numbered past 40. Repairs are answered at once from the model. Whatever arrives,
    # the hub gets each real offset once, ascending, or a loss for it, only the offsets
    # history lost are lost, and every forgery is rejected.
    cursors: Cursors[int] = Cursors(history=history)
    cursors.baseline({"t": ("e1", 0)})
    real = sorted({o for o in arrivals if o <= 40})
    last = max(real, default=0)
    held = set(range(max(1, 41 - kept), 41)) if history else set()
    handed: list[int] = []
    lost: list[int] = []
    rejected: list[int] = []

    def run(actions: Sequence[object] | None, offset: int) -> None:
        queue = delivered(actions, offset)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Deliver):
                handed.append(action.offset)
            elif isinstance(action, Lose):
                lost.extend(o for a, b in action.ranges for o in range(a, b + 1))
            elif isinstance(action, Reject):
                rejected.extend(action.offsets)
            else:
                assert isinstance(action, Repair)
                found = [(o, o) for o in sorted(held) if action.after < o <= action.upto]
                queue += cursors.repaired(action, found, ("e1", 40))

    for offset in sorted(set(arrivals), key=arrivals.index):
        run(cursors.live("t", "e1", offset, offset), offset)
    if resync:
        run(cursors.resync({"t": ("e1", 40)}), 0)
        last = 40
    accounted = handed + lost
    assert handed == sorted(handed)
    assert len(set(handed)) == len(handed)
    assert sorted(accounted) == list(range(1, len(accounted) + 1))
    assert set(lost) <= set(range(1, 41)) - held
    assert len(accounted) >= last
    assert sorted(rejected) == sorted({o for o in arrivals if o > 40})
    assert (cursors.lost, cursors.forged) == (len(lost), len(rejected))


# -- publish buffer ---------------------------------------------------------------------


def fill(buffer: PublishBuffer, seqs: range, size: int = 1) -> list[bool]:
    return [buffer.push(seq, "t", b"h", b"x" * size) for seq in seqs]


def seqs(batch: list[tuple[int, str | None, bytes, bytes]]) -> list[int]:
    return [seq for seq, _, _, _ in batch]


def test_drop_oldest_keeps_the_newest_messages() -> None:
    buffer = PublishBuffer(3, 1000, Overflow.DROP_OLDEST)
    assert fill(buffer, range(1, 6)) == [True] * 5
    assert (len(buffer), buffer.dropped) == (3, 2)
    assert seqs(buffer.take(10)) == [3, 4, 5]


def test_drop_newest_refuses_what_does_not_fit() -> None:
    buffer = PublishBuffer(3, 1000, Overflow.DROP_NEWEST)
    assert fill(buffer, range(1, 6)) == [True, True, True, False, False]
    assert buffer.dropped == 2
    assert seqs(buffer.take(10)) == [1, 2, 3]


def test_the_buffer_is_bounded_in_payload_bytes() -> None:
    buffer = PublishBuffer(100, 10, Overflow.DROP_OLDEST)
    fill(buffer, range(1, 5), size=4)
    assert (buffer.waiting, buffer.bytes, buffer.dropped) == (2, 8, 2)
    assert buffer.push(9, None, b"h", b"x" * 11) is False  # larger than the whole bound
    assert buffer.dropped == 3


def test_a_failed_batch_goes_back_to_the_head_in_order() -> None:
    buffer = PublishBuffer(10, 1000, Overflow.DROP_OLDEST)
    fill(buffer, range(1, 6))
    assert seqs(buffer.take(3)) == [1, 2, 3]
    assert (len(buffer), buffer.waiting) == (5, 2)  # in flight still counts as buffered
    buffer.requeue()
    assert seqs(buffer.take(10)) == [1, 2, 3, 4, 5]
    assert buffer.settle() == 5
    assert len(buffer) == 0


def test_a_requeued_batch_obeys_the_bound_and_the_overflow_rule() -> None:
    oldest = PublishBuffer(4, 1000, Overflow.DROP_OLDEST)
    fill(oldest, range(1, 4))
    oldest.take(3)
    fill(oldest, range(4, 7))
    oldest.requeue()  # 6 messages for 4 places: the two oldest go
    assert (seqs(oldest.take(10)), oldest.dropped) == ([3, 4, 5, 6], 2)

    newest = PublishBuffer(4, 1000, Overflow.DROP_NEWEST)
    fill(newest, range(1, 4))
    newest.take(3)
    fill(newest, range(4, 7))
    newest.requeue()  # the two newest go
    assert (seqs(newest.take(10)), newest.dropped) == ([1, 2, 3, 4], 2)


def test_a_batch_in_doubt_settles_what_redis_ran_and_requeues_the_rest() -> None:
    buffer = PublishBuffer(4, 1000, Overflow.DROP_OLDEST)
    fill(buffer, range(1, 4))
    assert seqs(buffer.take(3)) == [1, 2, 3]
    buffer.fail()
    # In doubt, the batch is not counted against the bound: four more still fit.
    assert fill(buffer, range(4, 8)) == [True] * 4
    assert (buffer.in_doubt, len(buffer), buffer.dropped) == (True, 7, 0)
    assert buffer.resolve(2) == 2  # Redis ran 1 and 2: published, not dropped
    assert (buffer.in_doubt, buffer.dropped) == (False, 1)  # 3 did not fit back in
    assert seqs(buffer.take(10)) == [4, 5, 6, 7]


def test_a_buffer_cannot_close() -> None:
    with pytest.raises(ValueError, match=r"^a publish buffer cannot close"):
        PublishBuffer(1, 1, Overflow.CLOSE)
