"""The backplane's wire format: one Redis pub/sub payload per message or heartbeat.

Theory of operation
-------------------
Every payload a hub publishes starts with a fixed prefix: a magic marker, the kind
(data or heartbeat), the hub's id and its epoch. The prefix is built once per hub, so
encoding a message costs one concatenation: prefix, sequence number, opcode, key and
the payload, which is copied exactly once on its way in. A payload without the magic
marker came from some other Redis client (``redis-cli PUBLISH``): it is delivered as
it is, text if it is valid UTF-8, binary otherwise, with no sequence accounting.

Layout (integers big-endian)::

    magic "\\x00WF\\x01" | kind "D" or "H" | id length (1 byte) | hub id (UTF-8)
    | epoch (8 bytes) | seq (8 bytes)
    data only: | opcode (1 byte; bit 0x80 set: lossless) | key length (4 bytes, 0xFFFFFFFF:
               no key) | key | payload

A heartbeat's ``seq`` is the highest sequence number its hub has settled: every data
message up to it has been written to Redis or dropped, so a receiver that saw less
has lost the difference, even when nothing follows.
"""

from __future__ import annotations

import struct

import attrs

from .._core.frames import OP_BINARY, OP_TEXT

__all__ = [
    "LOSSLESS",
    "MAGIC",
    "Data",
    "Foreign",
    "Heartbeat",
    "Malformed",
    "Prefixes",
    "decode",
    "encode_data",
    "encode_heartbeat",
    "prefixes",
]

MAGIC = b"\x00WF\x01"
LOSSLESS = 0x80
"""Set in a data message's opcode byte: the message is lossless on every hub."""
DATA = ord("D")
HEARTBEAT = ord("H")
NO_KEY = 0xFFFFFFFF
MAX_HUB_ID_BYTES = 255

_EPOCH_SEQ = struct.Struct("!QQ")
_DATA_HEAD = struct.Struct("!QBI")  # seq, opcode, key length
_SEQ = struct.Struct("!Q")
_OPCODES = frozenset({OP_TEXT, OP_BINARY})


@attrs.frozen
class Prefixes:
    """The constant part of every payload one hub publishes, built once."""

    data: bytes
    heartbeat: bytes


def prefixes(hub_id: str, epoch: int) -> Prefixes:
    """Build the prefixes of a hub; ``hub_id`` must fit in 255 UTF-8 bytes."""
    raw = hub_id.encode()
    if not 1 <= len(raw) <= MAX_HUB_ID_BYTES:
        raise ValueError(f"hub_id={hub_id!r} must be 1 to {MAX_HUB_ID_BYTES} bytes in UTF-8")
    tail = bytes((len(raw),)) + raw + epoch.to_bytes(8, "big")
    return Prefixes(MAGIC + b"D" + tail, MAGIC + b"H" + tail)


def encode_data(
    prefix: bytes, seq: int, opcode: int, key: str | None, payload: bytes, lossless: bool = False
) -> bytes:
    """One data message: ``prefix`` from :func:`prefixes`, then the message."""
    if lossless:
        opcode |= LOSSLESS
    if key is None:
        return prefix + _DATA_HEAD.pack(seq, opcode, NO_KEY) + payload
    raw = key.encode()
    return prefix + _DATA_HEAD.pack(seq, opcode, len(raw)) + raw + payload


def encode_heartbeat(prefix: bytes, settled: int) -> bytes:
    """A heartbeat saying that every sequence number up to ``settled`` is settled."""
    return prefix + _SEQ.pack(settled)


@attrs.frozen
class Data:
    hub_id: str
    epoch: int
    seq: int
    opcode: int
    key: str | None
    payload: bytes
    lossless: bool = False


@attrs.frozen
class Heartbeat:
    hub_id: str
    epoch: int
    seq: int
    """Every data message of this hub and epoch up to ``seq`` was written or dropped."""


@attrs.frozen
class Foreign:
    """A payload from a Redis client that is not a hub: delivered as it is."""

    opcode: int
    payload: bytes


@attrs.frozen
class Malformed:
    """A payload with the magic marker that does not parse; ``reason`` says where."""

    reason: str


Decoded = Data | Heartbeat | Foreign | Malformed


def decode(raw: bytes) -> Decoded:
    """Parse one Redis payload; never raises."""
    if not raw.startswith(MAGIC):
        try:
            raw.decode()
        except UnicodeDecodeError:
            return Foreign(OP_BINARY, raw)
        return Foreign(OP_TEXT, raw)
    size = len(raw)
    if size < 6:
        return Malformed(f"{size} bytes is shorter than a header")
    kind = raw[4]
    id_end = 6 + raw[5]
    if size < id_end + 16:
        return Malformed(f"{size} bytes is shorter than its header")
    try:
        hub_id = raw[6:id_end].decode()
    except UnicodeDecodeError:
        return Malformed("hub id is not UTF-8")
    epoch, seq = _EPOCH_SEQ.unpack_from(raw, id_end)
    if kind == HEARTBEAT:
        if size != id_end + 16:
            return Malformed(f"heartbeat of {size} bytes has trailing bytes")
        return Heartbeat(hub_id, epoch, seq)
    if kind != DATA:
        return Malformed(f"unknown kind {kind:#04x}")
    start = id_end + 8
    if size < start + _DATA_HEAD.size:
        return Malformed(f"{size} bytes is shorter than a data header")
    seq, opcode, key_length = _DATA_HEAD.unpack_from(raw, start)
    lossless = bool(opcode & LOSSLESS)
    opcode &= ~LOSSLESS
    if opcode not in _OPCODES:
        return Malformed(f"unknown opcode {opcode:#04x}")
    start += _DATA_HEAD.size
    key: str | None = None
    if key_length != NO_KEY:
        if size < start + key_length:
            return Malformed(f"key of {key_length} bytes overruns the payload")
        try:
            key = raw[start : start + key_length].decode()
        except UnicodeDecodeError:
            return Malformed("key is not UTF-8")
        start += key_length
    return Data(hub_id, epoch, seq, opcode, key, raw[start:], lossless)
