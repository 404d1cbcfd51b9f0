"""The backplane's wire format: what a message is in Redis, in its stream and on pub/sub.

Theory of operation
-------------------
A hub encodes each message it publishes once into a *head* (opcode and key) and the
payload, copied exactly once on its way in. The publish script (``scripts.py``) stores
both in the topic's stream, under the offset Redis assigns, and publishes, on the
topic's channel::

    magic "\\x00WF\\x01S" | epoch | " " | offset (decimal) | " " | head | payload
    head: opcode (1 byte; bit 0x80 set: lossless) | key length (4 bytes big-endian,
          0xFFFFFFFF: no key) | key

so every hub learns the message with its place in the stream. A payload without the
magic marker came from some other Redis client (``redis-cli PUBLISH``): it is
delivered as it is, text if it is valid UTF-8, binary otherwise, in no stream.
"""

from __future__ import annotations

import struct

import attrs

from .._core.frames import OP_BINARY, OP_TEXT

__all__ = [
    "LOSSLESS",
    "MAGIC",
    "STREAM",
    "Foreign",
    "Malformed",
    "Numbered",
    "decode",
    "decode_head",
    "decode_numbered",
    "encode_head",
]

MAGIC = b"\x00WF\x01"
STREAM = MAGIC + b"S"
"""The start of every message a hub's publish script puts on pub/sub."""
LOSSLESS = 0x80
"""Set in a head's opcode byte: the message is lossless on every hub."""
NO_KEY = 0xFFFFFFFF

_HEAD = struct.Struct("!BI")  # opcode, key length
_OPCODES = frozenset({OP_TEXT, OP_BINARY})
_NO_KEY_HEADS = {
    opcode | flag: _HEAD.pack(opcode | flag, NO_KEY)
    for opcode in _OPCODES
    for flag in (0, LOSSLESS)
}


def encode_head(opcode: int, key: str | None, lossless: bool = False) -> bytes:
    """A message's head: its opcode (with :data:`LOSSLESS` set for a lossless
    message) and its key."""
    if lossless:
        opcode |= LOSSLESS
    if key is None:
        return _NO_KEY_HEADS[opcode]
    raw = key.encode()
    return _HEAD.pack(opcode, len(raw)) + raw


def decode_head(head: bytes) -> tuple[int, str | None, bool, int]:
    """``(opcode, key, lossless, head length)`` of bytes that start with a head;
    ValueError if not."""
    if len(head) < _HEAD.size:
        raise ValueError(f"{len(head)} bytes is shorter than a head")
    opcode, key_length = _HEAD.unpack_from(head)
    lossless = bool(opcode & LOSSLESS)
    opcode &= ~LOSSLESS
    if opcode not in _OPCODES:
        raise ValueError(f"unknown opcode {opcode:#04x}")
    if key_length == NO_KEY:
        return opcode, None, lossless, _HEAD.size
    end = _HEAD.size + key_length
    if len(head) < end:
        raise ValueError(f"key of {key_length} bytes overruns the message")
    try:
        key = head[_HEAD.size : end].decode()
    except UnicodeDecodeError:
        raise ValueError("key is not UTF-8") from None
    return opcode, key, lossless, end


@attrs.frozen
class Numbered:
    """A message as Redis numbered it: its place in its topic's stream and its content."""

    epoch: str
    offset: int
    opcode: int
    key: str | None
    payload: bytes
    lossless: bool = False


@attrs.frozen
class Foreign:
    """A payload from a Redis client that is not a hub: delivered as it is."""

    opcode: int
    payload: bytes


@attrs.frozen
class Malformed:
    """A payload with the magic marker that does not parse; ``reason`` says where."""

    reason: str


Decoded = Numbered | Foreign | Malformed

Fields = tuple[str, int, int, str | None, bytes, bool]
"""A numbered message's fields, as :class:`Numbered` holds them."""

_MAX_KEY = 4096
"""Longest key a message may carry (longer: malformed)."""


def decode_numbered(
    buffer: bytes | bytearray, view: bytes | memoryview, start: int, end: int
) -> Fields | None:
    """The fields of a well-formed numbered message lying at ``buffer[start:end]``
    (``view`` is the same bytes, as a memoryview for a bytearray: the payload is copied
    once, from it); None if it is anything else, which :func:`decode` then tells.

    The receiver's path for every message: it parses in place, in the connection's
    buffer, and builds no object but the fields; it agrees with :func:`decode` on every
    input (tests/redis/test_redis_wire.py).
    """
    if not buffer.startswith(STREAM, start, end):
        return None
    at = start + len(STREAM)
    space = buffer.find(b" ", at, end)
    if space < 0:
        return None
    second = buffer.find(b" ", space + 1, end)
    if second < 0:
        return None
    epoch = buffer[at:space]
    offset = buffer[space + 1 : second]
    if not epoch.isalnum() or not offset.isdigit() or len(offset) > 18:
        return None
    head = second + 1
    if end - head < _HEAD.size:
        return None
    opcode, key_length = _HEAD.unpack_from(buffer, head)
    lossless = bool(opcode & LOSSLESS)
    opcode &= ~LOSSLESS
    if opcode not in _OPCODES:
        return None
    payload = head + _HEAD.size
    key: str | None = None
    if key_length != NO_KEY:
        if key_length > _MAX_KEY or payload + key_length > end:
            return None
        try:
            key = buffer[payload : payload + key_length].decode()
        except UnicodeDecodeError:
            return None
        payload += key_length
    return epoch.decode(), int(offset), opcode, key, bytes(view[payload:end]), lossless


def decode(raw: bytes) -> Decoded:
    """Parse one pub/sub payload; never raises."""
    if not raw.startswith(MAGIC):
        try:
            raw.decode()
        except UnicodeDecodeError:
            return Foreign(OP_BINARY, raw)
        return Foreign(OP_TEXT, raw)
    if not raw.startswith(STREAM):
        return Malformed(f"unknown kind {raw[4:5]!r}")
    start = len(STREAM)
    space = raw.find(b" ", start)
    second = raw.find(b" ", space + 1) if space > 0 else -1
    if second < 0:
        return Malformed("no epoch and offset")
    epoch, offset = raw[start:space], raw[space + 1 : second]
    if not epoch.isalnum() or not offset.isdigit() or len(offset) > 18:
        return Malformed(f"bad epoch {epoch[:16]!r} or offset {offset[:20]!r}")
    try:
        opcode, key, lossless, length = decode_head(
            raw[second + 1 : second + 1 + _MAX_KEY + _HEAD.size]
        )
    except ValueError as exc:
        return Malformed(str(exc))
    payload = raw[second + 1 + length :]
    return Numbered(epoch.decode(), int(offset), opcode, key, payload, lossless)
