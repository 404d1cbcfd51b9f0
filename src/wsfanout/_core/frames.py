"""WebSocket frame bytes, built once per message and shared by every connection.

A server's frames are not masked (RFC 6455, section 5.1), so a data frame on a
connection that negotiated no extension is the same bytes for every client: the
header is computed once per message and the payload is never copied per client.
Compressed frames are shared too where the compression is stateless (see _deflate.py).
"""

from __future__ import annotations

import struct

__all__ = ["FRAMINGS", "OP_BINARY", "OP_TEXT", "SUBPROTOCOL", "encode_frame", "frame_size"]

OP_TEXT = 0x1
OP_BINARY = 0x2

SUBPROTOCOL = "wsfanout.v1"
"""The WebSocket subprotocol a client offers to get the ``wsfanout.v1`` framing."""

FRAMINGS = ("raw", "v1")
"""What a subscriber receives: the payloads as published, or each with its header
(offset, epoch, topic, key) and control frames (docs/protocol.md)."""

_FIN = 0x80
_RSV1 = 0x40
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def frame_size(length: int) -> int:
    """The bytes of an unmasked frame carrying ``length`` payload bytes, header included."""
    return length + (2 if length < 126 else 4 if length < 65536 else 10)


def encode_frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """Return a complete unmasked, unfragmented frame carrying ``payload``.

    ``rsv1`` marks a message compressed by permessage-deflate (RFC 7692).
    """
    length = len(payload)
    first = _FIN | _RSV1 | opcode if rsv1 else _FIN | opcode
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = _LEN16.pack(first, 126, length)
    else:
        header = _LEN64.pack(first, 127, length)
    return header + payload
