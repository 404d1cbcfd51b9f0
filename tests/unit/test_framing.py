"""Offsets, epochs and the ``wsfanout.v1`` header: pure values, no sockets."""

from __future__ import annotations

import json

from wsfanout.lowlevel import (
    OP_BINARY,
    OP_TEXT,
    Batched,
    DeflateParams,
    Message,
    Streams,
    make_message,
    v1_header,
)


def split(payload: bytes) -> tuple[object, bytes]:
    header, _, body = payload.partition(b"\n")
    return json.loads(header), body


def test_each_topic_counts_its_own_offsets_from_one_in_one_epoch() -> None:
    epochs = iter(["aaaa", "bbbb", "cccc"])
    streams = Streams(lambda: next(epochs))
    assert streams.get("prices") is None
    assert [streams.advance("prices").last for _ in range(3)] == [1, 2, 3]
    news = streams.advance("news")
    assert (news.epoch, news.last) == ("bbbb", 1)
    assert streams.get("prices") is not None
    assert streams.get("prices").epoch == "aaaa"  # type: ignore[union-attr]
    assert streams.advance(None) is streams.advance("")  # no topic: the stream ""
    assert len(streams) == 3


def test_the_header_carries_offset_epoch_topic_and_key_and_the_payload_follows() -> None:
    message = make_message(
        '{"bid": 1.08}', seq=7, time=0.0, topic="prices", key="EUR/USD", offset=42, epoch="h3k9"
    )
    assert v1_header(message) == b'{"o":42,"e":"h3k9","t":"prices","k":"EUR/USD"}'
    header, body = split(message.v1_payload)
    assert header == {"o": 42, "e": "h3k9", "t": "prices", "k": "EUR/USD"}
    assert body == b'{"bid": 1.08}'


def test_a_topic_or_key_with_quotes_and_newlines_stays_on_one_json_line() -> None:
    message = make_message(b"\x00\n\xff", seq=1, time=0.0, topic='a"b\nc', key="é", offset=1)
    assert message.opcode == OP_BINARY
    header, body = split(message.v1_payload)
    assert header == {"o": 1, "e": "", "t": 'a"b\nc', "k": "é"}
    assert body == b"\x00\n\xff", "only the first line feed splits header from payload"


def test_a_message_without_topic_or_key_leaves_them_out_and_one_in_no_stream_is_empty() -> None:
    assert v1_header(make_message("x", seq=1, time=0.0, offset=5, epoch="e")) == b'{"o":5,"e":"e"}'
    assert v1_header(make_message("x", seq=1, time=0.0, droppable=False)) == b"{}"


def test_a_batch_lists_the_place_of_every_message_it_carries() -> None:
    parts = tuple(
        make_message(str(n), seq=n, time=0.0, topic=topic, offset=offset, epoch="e")
        for n, (topic, offset) in enumerate([("a", 40), (None, 3), ("a", 45)])
    )
    batch = Batched(OP_TEXT, b"0\n1\n2", parts=parts)
    header, body = split(batch.v1_payload)
    assert header == {"b": [[40, "e", "a"], [3, "e", ""], [45, "e", "a"]]}
    assert body == b"0\n1\n2"


def test_v1_frames_are_built_once_per_parameter_set_and_shared() -> None:
    message = Message(OP_TEXT, b"hello", seq=1, time=0.0, topic="t", offset=1, epoch="e")
    plain = message.v1_frame()
    assert plain is message.v1_frame()
    params = DeflateParams(15)
    compressed = message.v1_frame(params)
    assert compressed is message.v1_frame(params)
    assert compressed != plain
    assert plain[2:] == message.v1_payload  # a short frame: two header bytes, the payload
