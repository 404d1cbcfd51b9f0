"""The subscribed connection's RESP reader and the in-place envelope decoder: pure, no
Redis. Frames are split at every byte boundary, damaged, and spoken in RESP3."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wsfanout import Hub
from wsfanout._backplane.envelope import (
    MAGIC,
    STREAM,
    Numbered,
    decode,
    decode_numbered,
    encode_head,
)
from wsfanout._backplane.resp import PushReader, Reply, RespError, command
from wsfanout.backplane import RedisBackplane
from wsfanout.lowlevel import OP_BINARY, OP_TEXT

PATTERN = b"wsfanout:*"

Event = tuple[bytes, bytes] | Reply
"""A message as (channel, data), copied out while it is valid, or a reply."""


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes, push: bool = False) -> bytes:
    """A RESP2 array (``*``), or a RESP3 push (``>``), of already-encoded items."""
    return b"%c%d\r\n" % (ord(">" if push else "*"), len(items)) + b"".join(items)


names = st.binary(max_size=40)
datas = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"*4\r\n$8\r\npmessage\r\n"])


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, Event]:
    """One frame a subscribed connection may be sent, and what the reader makes of it."""
    push = draw(st.booleans())  # RESP3 sends pushes where RESP2 sends arrays
    kind = draw(st.sampled_from(["pmessage", "message", "confirm", "pong", "simple", "error"]))
    if kind == "pmessage":
        pattern = draw(st.sampled_from([PATTERN, b"other:*"]) | names)
        channel, data = draw(names), draw(datas)
        raw = array(bulk(b"pmessage"), bulk(pattern), bulk(channel), bulk(data), push=push)
        return raw, (channel, data)
    if kind == "message":
        channel, data = draw(names), draw(datas)
        return array(bulk(b"message"), bulk(channel), bulk(data), push=push), (channel, data)
    if kind == "confirm":
        which = draw(st.sampled_from(["subscribe", "psubscribe", "unsubscribe", "punsubscribe"]))
        name, count = draw(names), draw(st.integers(0, 10**6))
        raw = array(bulk(which.encode()), bulk(name), b":%d\r\n" % count, push=push)
        return raw, Reply(which, name, count)
    if kind == "pong":
        if draw(st.booleans()):  # RESP3 answers PING with a simple string
            return b"+PONG\r\n", Reply("pong")
        argument = draw(names)
        return array(bulk(b"pong"), bulk(argument), push=push), Reply("pong", argument)
    text = draw(st.text("abcdefghijklmnopqrstuvwxyz ABC", max_size=30)).encode()
    if kind == "simple":
        return b"+" + text + b"\r\n", (Reply("pong") if text == b"PONG" else Reply("ok", text))
    return b"-" + text + b"\r\n", Reply("error", text)


def drain(reader: PushReader) -> list[Event]:
    events: list[Event] = []
    while (frame := reader.next()) is not None:
        if isinstance(frame, Reply):
            events.append(frame)
        else:
            channel, start, end = frame
            events.append((channel, bytes(reader.buffer[start:end])))
    return events


def read_in_pieces(stream: bytes, cuts: list[int], reader: PushReader) -> list[Event]:
    """What ``reader`` makes of ``stream`` received in pieces ending at ``cuts``."""
    events: list[Event] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        reader.feed(stream[last:cut])
        events += drain(reader)
        last = cut
    return events


def small_reader(pattern: bytes = PATTERN) -> PushReader:
    """A reader whose buffer is tiny, so that it moves and grows all the time."""
    return PushReader(pattern, size=16, min_read=8)


@given(st.lists(frames(), max_size=12), st.lists(st.integers(0, 4000), max_size=12))
def test_frames_split_anywhere_read_the_same_as_whole(
    stream: list[tuple[bytes, Event]], cuts: list[int]
) -> None:
    raw = b"".join(frame for frame, _ in stream)
    expected = [event for _, event in stream]
    cuts = [cut % (len(raw) + 1) for cut in cuts]
    assert read_in_pieces(raw, cuts, small_reader()) == expected
    assert read_in_pieces(raw, cuts, PushReader(PATTERN)) == expected
    # The short path for the pattern and the general one agree.
    assert read_in_pieces(raw, cuts, small_reader(b"no pattern")) == expected


@given(st.lists(frames(), min_size=1, max_size=4))
def test_frames_split_at_every_byte_boundary_read_the_same(
    stream: list[tuple[bytes, Event]],
) -> None:
    raw = b"".join(frame for frame, _ in stream)
    expected = [event for _, event in stream]
    for cut in range(len(raw) + 1):
        assert read_in_pieces(raw, [cut], small_reader()) == expected, cut
    assert read_in_pieces(raw, list(range(len(raw))), small_reader()) == expected


def test_a_long_frame_grows_the_buffer_which_shrinks_back_after() -> None:
    reader = PushReader(PATTERN, size=64, min_read=16)
    data = bytes(range(256)) * 40
    frame = array(bulk(b"pmessage"), bulk(PATTERN), bulk(b"c"), bulk(data))
    assert read_in_pieces(frame * 2, list(range(0, 2 * len(frame), 100)), reader) == [
        (b"c", data),
        (b"c", data),
    ]
    assert len(reader.buffer) > 2 * len(data) // 2
    reader.get_buffer()
    assert len(reader.buffer) == 64


@given(garbage=st.binary(max_size=64), cuts=st.lists(st.integers(0, 64), max_size=4))
@example(garbage=b"*3\r\n$7\r\nmessage\r\n$1_0\r\n", cuts=[])
def test_garbage_is_an_error_or_frames_never_anything_else(garbage: bytes, cuts: list[int]) -> None:
    error = None
    try:
        read_in_pieces(garbage, cuts, small_reader())
    except RespError as exc:  # anything else fails the test
        error = str(exc)
    assert error is None or " at byte " in error


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (
            b"!oops\r\n",
            r"frame at byte 37 starts with b'!', not an array \(\*\), push \(>\), "
            r"simple string \(\+\) or error \(-\)",
        ),
        (b"*3\r\n$7\r\nmessage\r\n$x\r\n", r"bulk length b'x' at byte 55 is not a number"),
        (b"*3\r\n$7\r\nmessage\r\n$1_0\r\n", r"bulk length b'1_0' at byte 55 is not a number"),
        (
            b"*3\r\n$7\r\nmessage\r\n$1\r\nab\r\n",
            r"bulk string of 1 bytes at byte 54 is not followed by CRLF",
        ),
        (b"*9\r\n", r"array of 9 elements at byte 37: not a pub/sub frame"),
        (
            b"*3\r\n$3\r\nfoo\r\n$0\r\n\r\n$0\r\n\r\n",
            r"frame at byte 37: b'foo' with elements '\$\$\$' is not a pub/sub message, "
            r"confirmation or pong",
        ),
        (
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n$1\r\n1\r\n",
            r"frame at byte 37: b'subscribe' with elements '\$\$\$' is not a pub/sub message, "
            r"confirmation or pong",
        ),
        (
            b"*2\r\n%1\r\n",
            r"element of type b'%' at byte 41 is not a bulk string, simple string "
            r"or integer",
        ),
        (b"*3\n", r"array length b'3\\n\*3' at byte 38 is not a number"),
        (b"+" + b"x" * 5000, r"simple string at byte 38 has no CRLF in 4096 bytes"),
        (
            b"*3\r\n$7\r\nmessage\r\n$%d\r\n" % (2**30),
            r"bulk length 1073741824 at byte 54 is over 536870912",
        ),
    ],
)
def test_garbage_after_good_frames_names_what_was_wrong_and_where(
    garbage: bytes, error: str
) -> None:
    good = array(bulk(b"message"), bulk(b"chan"), bulk(b"data"))
    assert len(good) == 37
    reader = PushReader(PATTERN)
    reader.feed(good + garbage + good)
    assert reader.next() == (b"chan", 31, 35)  # what came before is read
    with pytest.raises(RespError, match=f"^{error}$"):
        reader.next()


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert (
        command("PSUBSCRIBE", b"ns:*", 3) == b"*3\r\n$10\r\nPSUBSCRIBE\r\n$4\r\nns:*\r\n$1\r\n3\r\n"
    )


def test_receiving_more_than_the_room_offered_is_refused() -> None:
    reader = PushReader(PATTERN, size=16, min_read=8)
    room = len(reader.get_buffer())
    with pytest.raises(ValueError, match=rf"^nbytes={room + 1} is not within the buffer offered$"):
        reader.received(room + 1)


# -- the envelope, decoded in place ---------------------------------------------------


def published(epoch: str, offset: int, opcode: int, key: str | None, payload: bytes) -> bytes:
    """A message as the publish script writes it, with any opcode byte (unknown ones too)."""
    raw_key = b"" if key is None else key.encode()
    head = struct.pack("!BI", opcode, 0xFFFFFFFF if key is None else len(raw_key)) + raw_key
    return STREAM + f"{epoch} {offset} ".encode() + head + payload


raws = (
    st.builds(
        published,
        st.text("abcdef0123456789", min_size=1, max_size=8),
        st.integers(min_value=0, max_value=10**19),
        st.sampled_from([OP_TEXT, OP_BINARY, 0x81, 0x03]),
        st.none() | st.text(max_size=8) | st.just("k" * 4097),
        st.binary(max_size=64),
    )
    | st.builds(lambda tail: STREAM + tail, st.binary(max_size=40))
    | st.builds(lambda tail: MAGIC + tail, st.binary(max_size=20))
    | st.binary(max_size=40)
)


@given(raw=raws, before=st.binary(max_size=8), after=st.binary(max_size=8), cut=st.integers(0, 8))
def test_decoding_in_place_agrees_with_decode_within_the_bounds_given(
    raw: bytes, before: bytes, after: bytes, cut: int
) -> None:
    raw = raw[: len(raw) - cut] if cut < len(raw) else raw
    buffer = bytearray(before + raw + after)
    fields = decode_numbered(buffer, memoryview(buffer), len(before), len(before) + len(raw))
    decoded = decode(raw)
    if isinstance(decoded, Numbered):
        assert fields == (
            decoded.epoch,
            decoded.offset,
            decoded.opcode,
            decoded.key,
            decoded.payload,
            decoded.lossless,
        )
        assert type(fields[4]) is bytes
    else:
        assert fields is None


async def test_a_message_is_read_only_within_its_bounds_in_the_connections_buffer() -> None:
    backplane = RedisBackplane("redis://127.0.0.1:1/0", hub_id="bounds")
    hub = Hub(backplane=backplane)
    try:
        channel = b"wsfanout:topic:t"
        head = encode_head(OP_TEXT, None)
        on_message = backplane._on_message  # what the subscription calls
        first = STREAM + b"e1 1 " + head + b"one"
        buffer = bytearray(first + STREAM + b"e1 2" + b" " + head + b"two")
        view = memoryview(buffer)
        on_message(channel, buffer, view, 0, len(first))
        # The data ends before the space after "2": the message is malformed, although
        # the buffer holds a well-formed one from there.
        on_message(channel, buffer, view, len(first), len(first) + len(STREAM) + 4)
        health = backplane.health()
    finally:
        await hub.aclose()
    assert (health.received, health.skipped, health.malformed) == (1, 0, 1)
