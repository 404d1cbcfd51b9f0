"""The backplane's pure parts: wire format, loss counting, publish buffer. No Redis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout._backplane.envelope import (
    MAGIC,
    Data,
    Foreign,
    Heartbeat,
    Malformed,
    decode,
    encode_data,
    encode_heartbeat,
    prefixes,
)
from wsfanout._backplane.gaps import STALE, GapCounter
from wsfanout._backplane.publish_buffer import PublishBuffer
from wsfanout.lowlevel import OP_BINARY, OP_TEXT, Overflow

# -- wire format ------------------------------------------------------------------------

hub_ids = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
u64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(
    hub_id=hub_ids,
    epoch=u64,
    seq=u64,
    opcode=st.sampled_from([OP_TEXT, OP_BINARY]),
    key=st.none() | st.text(max_size=20),
    payload=st.binary(max_size=300),
)
def test_a_data_message_decodes_to_what_was_encoded(
    hub_id: str, epoch: int, seq: int, opcode: int, key: str | None, payload: bytes
) -> None:
    raw = encode_data(prefixes(hub_id, epoch).data, seq, opcode, key, payload)
    assert decode(raw) == Data(hub_id, epoch, seq, opcode, key, payload)


@given(
    opcode=st.sampled_from([OP_TEXT, OP_BINARY]),
    key=st.none() | st.text(max_size=20),
    lossless=st.booleans(),
)
def test_a_message_is_lossless_on_the_wire_as_it_was_published(
    opcode: int, key: str | None, lossless: bool
) -> None:
    raw = encode_data(prefixes("A", 1).data, 7, opcode, key, b"payload", lossless)
    assert decode(raw) == Data("A", 1, 7, opcode, key, b"payload", lossless)


@given(hub_id=hub_ids, epoch=u64, settled=u64)
def test_a_heartbeat_decodes_to_what_was_encoded(hub_id: str, epoch: int, settled: int) -> None:
    raw = encode_heartbeat(prefixes(hub_id, epoch).heartbeat, settled)
    assert decode(raw) == Heartbeat(hub_id, epoch, settled)


def test_a_payload_from_another_redis_client_is_delivered_as_it_is() -> None:
    assert decode(b"hello") == Foreign(OP_TEXT, b"hello")
    assert decode("héllo".encode()) == Foreign(OP_TEXT, "héllo".encode())
    assert decode(b"\xff\x00") == Foreign(OP_BINARY, b"\xff\x00")
    assert decode(b"") == Foreign(OP_TEXT, b"")


@given(tail=st.binary(max_size=64))
def test_decoding_never_raises_on_a_damaged_payload(tail: bytes) -> None:
    assert isinstance(decode(MAGIC + tail), (Data, Heartbeat, Malformed))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (MAGIC + b"D", "5 bytes is shorter than a header"),
        (MAGIC + b"D\x05abc", "9 bytes is shorter than its header"),
        (MAGIC + b"X\x01a" + bytes(16), "unknown kind 0x58"),
        (MAGIC + b"H\x01a" + bytes(17), "heartbeat of 24 bytes has trailing bytes"),
        (MAGIC + b"D\x01a" + bytes(16) + b"\x09", "24 bytes is shorter than a data header"),
        (MAGIC + b"D\x01a" + bytes(16) + b"\x09" + bytes(4), "unknown opcode 0x09"),
        (MAGIC + b"D\x01a" + bytes(16) + b"\x01\x00\x00\x00\x09ab", "key of 9 bytes overruns"),
        (MAGIC + b"D\x01\xff" + bytes(16) + b"\x01\xff\xff\xff\xff", "hub id is not UTF-8"),
    ],
)
def test_a_damaged_payload_is_malformed_with_a_reason(raw: bytes, reason: str) -> None:
    decoded = decode(raw)
    assert isinstance(decoded, Malformed)
    assert decoded.reason.startswith(reason)


def test_a_hub_id_must_fit_in_its_length_byte() -> None:
    with pytest.raises(ValueError, match=r"^hub_id='x{256}' must be 1 to 255 bytes in UTF-8$"):
        prefixes("x" * 256, 1)


# -- loss counting ----------------------------------------------------------------------


def test_messages_in_order_lose_nothing() -> None:
    gaps = GapCounter()
    assert [gaps.data("A", 7, seq) for seq in (1, 2, 3)] == [0, 0, 0]
    assert gaps.heartbeat("A", 7, 3) == 0
    assert (gaps.lost, gaps.peers) == (0, 1)


def test_a_gap_in_the_sequence_is_counted_as_lost() -> None:
    gaps = GapCounter()
    gaps.data("A", 7, 1)
    assert gaps.data("A", 7, 5) == 3
    assert gaps.data("A", 7, 6) == 0
    assert gaps.lost == 3


def test_a_heartbeat_reveals_a_loss_at_the_end_of_a_stream() -> None:
    gaps = GapCounter()
    gaps.data("A", 7, 1)
    assert gaps.heartbeat("A", 7, 4) == 3
    assert gaps.heartbeat("A", 7, 4) == 0  # the same heartbeat again reveals nothing new
    assert gaps.data("A", 7, 5) == 0
    assert gaps.lost == 3


def test_a_repeat_or_an_older_message_is_stale_and_not_counted() -> None:
    gaps = GapCounter()
    gaps.data("A", 7, 3)
    assert gaps.data("A", 7, 3) == STALE
    assert gaps.data("A", 7, 2) == STALE
    assert gaps.data("A", 6, 10) == STALE  # an earlier epoch of the same hub
    assert gaps.heartbeat("A", 7, 2) == 0
    assert gaps.lost == 0


def test_counting_starts_at_the_first_message_heard_from_a_hub() -> None:
    gaps = GapCounter()
    assert gaps.data("A", 7, 1000) == 0
    assert gaps.heartbeat("B", 7, 50) == 0
    assert gaps.data("B", 7, 52) == 1
    assert (gaps.lost, gaps.peers) == (1, 2)


def test_a_restarted_hub_counts_what_was_missed_of_its_new_epoch() -> None:
    gaps = GapCounter()
    gaps.data("A", 7, 40)
    assert gaps.data("A", 8, 3) == 2
    assert gaps.last("A") == (8, 3)
    assert gaps.heartbeat("A", 9, 4) == 4
    assert gaps.lost == 6


@given(
    total=st.integers(min_value=1, max_value=200),
    seen=st.sets(st.integers(min_value=1, max_value=200), min_size=1),
)
def test_loss_is_exactly_what_a_receiver_missed_after_first_contact(
    total: int, seen: set[int]
) -> None:
    arrived = sorted(n for n in seen if n <= total) or [total]
    gaps = GapCounter()
    for seq in arrived:
        assert gaps.data("A", 1, seq) >= 0
    gaps.heartbeat("A", 1, total)
    assert gaps.lost == total - arrived[0] + 1 - len(arrived)


# -- publish buffer ---------------------------------------------------------------------


def fill(buffer: PublishBuffer, seqs: range, size: int = 1) -> list[bool]:
    return [buffer.push(seq, b"ch", b"x" * size) for seq in seqs]


def seqs(batch: list[tuple[int, bytes, bytes]]) -> list[int]:
    return [seq for seq, _, _ in batch]


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
    assert buffer.push(9, b"ch", b"x" * 11) is False  # larger than the whole bound
    assert buffer.dropped == 3


def test_a_failed_batch_goes_back_to_the_head_in_order() -> None:
    buffer = PublishBuffer(10, 1000, Overflow.DROP_OLDEST)
    fill(buffer, range(1, 6))
    assert seqs(buffer.take(3)) == [1, 2, 3]
    assert (len(buffer), buffer.waiting) == (5, 2)  # in flight still counts as buffered
    assert buffer.settled(5) == 3  # a heartbeat after the batch may claim up to 3
    buffer.requeue()
    assert seqs(buffer.take(10)) == [1, 2, 3, 4, 5]
    assert buffer.settle() == 5
    assert (len(buffer), buffer.settled(5)) == (0, 5)


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


def test_a_buffer_cannot_close() -> None:
    with pytest.raises(ValueError, match=r"^a publish buffer cannot close"):
        PublishBuffer(1, 1, Overflow.CLOSE)
