"""Frames built once per message are byte for byte what websockets itself would send."""

from __future__ import annotations

import pytest
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfanout._core.frames import encode_frame
from wsfanout.lowlevel import OP_BINARY, OP_TEXT, Message, make_message

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70_000]


def websockets_frame(opcode: int, payload: bytes) -> bytes:
    """What a websockets server connection without extensions writes for one message."""
    protocol = ServerProtocol(state=State.OPEN, max_size=None)
    if opcode == OP_TEXT:
        protocol.send_text(payload)
    else:
        protocol.send_binary(payload)
    return b"".join(protocol.data_to_send())


def test_the_reference_is_a_real_websockets_frame() -> None:
    # Guard the comparison itself: an unmasked final text frame "hi" is 81 02 68 69.
    assert websockets_frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert websockets_frame(OP_BINARY, b"hi") != websockets_frame(OP_TEXT, b"hi")


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_encode_frame_matches_websockets(opcode: int, length: int) -> None:
    payload = bytes(n % 251 for n in range(length)) if opcode == OP_BINARY else b"a" * length
    assert encode_frame(opcode, payload) == websockets_frame(opcode, payload)


@pytest.mark.parametrize("length", LENGTHS)
def test_message_frame_matches_websockets_for_text(length: int) -> None:
    message = make_message("z" * length, seq=1, time=0.0)
    assert message.frame == websockets_frame(OP_TEXT, b"z" * length)


@pytest.mark.parametrize("length", LENGTHS)
def test_message_frame_matches_websockets_for_binary(length: int) -> None:
    payload = bytes(n % 7 for n in range(length))
    message = make_message(payload, seq=1, time=0.0)
    assert message.frame == websockets_frame(OP_BINARY, payload)


def test_the_length_of_text_counts_utf8_bytes() -> None:
    message = make_message("é" * 63, seq=1, time=0.0)  # 63 characters, 126 bytes
    assert message.size == 126
    assert message.frame[:4] == b"\x81\x7e\x00\x7e"
    assert message.frame == websockets_frame(OP_TEXT, ("é" * 63).encode())


def test_the_frame_is_built_once_and_shared() -> None:
    message = make_message("shared", seq=1, time=0.0)
    assert message.frame is message.frame


def test_str_becomes_text_and_bytes_like_becomes_binary() -> None:
    text = make_message("héllo", seq=1, time=2.5, topic="t", key="k")
    assert (text.opcode, text.payload, text.text) == (OP_TEXT, "héllo".encode(), True)
    assert text.data() == "héllo"
    assert (text.seq, text.time, text.topic, text.key, text.droppable) == (1, 2.5, "t", "k", True)
    for data in (b"\x00\x01", bytearray(b"\x00\x01"), memoryview(b"\x00\x01")):
        binary = make_message(data, seq=2, time=0.0, droppable=False)
        assert (binary.opcode, binary.payload, binary.text) == (OP_BINARY, b"\x00\x01", False)
        assert type(binary.payload) is bytes
        assert binary.data() == b"\x00\x01"
        assert not binary.droppable


def test_a_reused_buffer_cannot_change_a_queued_message() -> None:
    buffer = bytearray(b"abc")
    message = make_message(buffer, seq=1, time=0.0)
    buffer[0] = ord("X")
    assert message.payload == b"abc"
    assert message.frame == websockets_frame(OP_BINARY, b"abc")


@pytest.mark.parametrize(
    ("data", "name"),
    [(42, "int"), (None, "NoneType"), ([b"a"], "list"), ({"a": 1}, "dict"), (3.5, "float")],
)
def test_make_message_rejects_other_types_naming_them(data: object, name: str) -> None:
    with pytest.raises(TypeError, match=rf"^message must be str or bytes-like, not {name}$"):
        make_message(data, seq=1, time=0.0)


def test_repr_of_a_message_says_what_it_is() -> None:
    assert repr(make_message("abc", seq=7, time=0.0)) == "<Message seq=7 text 3B>"
    assert repr(Message(OP_BINARY, b"", seq=8, time=0.0)) == "<Message seq=8 binary 0B>"
