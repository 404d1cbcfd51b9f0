"""WebSocket frame bytes, built once per message and shared by every connection.

A server's frames are not masked (RFC 6455, section 5.1), so a data frame on a
connection that negotiated no extension is the same bytes for every client: the
header is computed once per message and the payload is never copied per client.
Connections with extensions (permessage-deflate) go through websockets' own encoder.
"""

from __future__ import annotations

import struct

__all__ = ["OP_BINARY", "OP_TEXT", "encode_frame"]

OP_TEXT = 0x1
OP_BINARY = 0x2

_FIN = 0x80
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """Return a complete unmasked, unfragmented frame carrying ``payload``."""
    length = len(payload)
    first = _FIN | opcode
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = _LEN16.pack(first, 126, length)
    else:
        header = _LEN64.pack(first, 127, length)
    return header + payload
