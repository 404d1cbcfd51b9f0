"""A reader of what Redis sends a subscribed connection: RESP frames, parsed in place.

Theory of operation
-------------------
The connection receives straight into :meth:`PushReader.get_buffer` (``recv_into``,
no copy), says how many bytes came with :meth:`PushReader.received`, then calls
:meth:`PushReader.next` until it returns None (no complete frame left). A published
message comes back as ``(channel, start, end)``: its data is not copied but lies in
:attr:`PushReader.buffer` (and :attr:`PushReader.view`) at ``start:end``, valid until
the next ``get_buffer()``; the caller copies what it keeps (the payload, once). Every
other frame (a subscription's confirmation, a ``PING``'s answer, ``+OK``, an error
reply) is a :class:`Reply`.

Frames are RESP2 arrays (``*``) or RESP3 pushes (``>``) of bulk strings, simple strings
and integers, and top-level simple strings and errors: what a connection in subscribed
mode is sent, in either protocol. The connection that uses this never sends ``HELLO 3``,
so it speaks RESP2; the RESP3 forms are read all the same. A ``pmessage`` of the one
pattern given to the reader takes a short path (one prefix comparison); everything else
takes the general one, which is also the only one that reports errors. Bytes that are
not RESP raise :class:`RespError` naming what was wrong and where: the stream cannot be
resynchronised after that, so the caller drops the connection.
"""

from __future__ import annotations

import attrs

__all__ = ["MAX_BULK", "Message", "PushReader", "Reply", "RespError", "command"]

MAX_BULK = 512 * 1024 * 1024
"""The longest bulk string accepted: Redis' own default ``proto-max-bulk-len``."""
MIN_READ = 64 * 1024
"""Free room the buffer offers each read; it grows past its size for a longer frame."""
_MAX_DIGITS = 20
_MAX_LINE = 4096
_SUBSCRIPTIONS = frozenset({b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe"})

Message = tuple[bytes, int, int]
"""A published message: its channel, and where its data lies in the reader's buffer."""


class RespError(ValueError):
    """The connection sent bytes that are not the RESP a subscribed connection gets."""


@attrs.frozen
class Reply:
    """A frame that is not a published message.

    ``kind`` is ``"subscribe"``, ``"psubscribe"``, ``"unsubscribe"`` or
    ``"punsubscribe"`` (a confirmation: ``name`` the channel or pattern, ``count``
    the connection's subscriptions after it), ``"pong"`` (``name``: the PING's
    argument), ``"ok"`` (a simple string other than PONG: ``name``) or ``"error"``
    (an error reply: ``name`` its text).
    """

    kind: str
    name: bytes = b""
    count: int = 0


def command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class PushReader:
    """Parses the frames of one connection from one growing buffer (see the module).

    ``pattern`` is the pattern the connection subscribes to: its ``pmessage`` frames
    take the short path. ``size`` is the buffer's usual size and ``min_read`` the least
    room each read is offered (small values: for tests). The caller's duties: receive
    into ``get_buffer()``, report with ``received()``, then call ``next()`` until None,
    using a message's ``start:end`` before the next ``get_buffer()``.
    """

    def __init__(
        self, pattern: bytes = b"", size: int = 256 * 1024, min_read: int = MIN_READ
    ) -> None:
        self._min_read = min_read
        self.buffer = bytearray(max(size, 2 * min_read))
        """Where frames are read from; replaced (not resized) when it grows."""
        self.view = memoryview(self.buffer)
        """A view of :attr:`buffer`, to copy a message's data without a second copy."""
        self._size = len(self.buffer)
        self._pos = 0
        self._end = 0
        self._base = 0
        """Bytes of the stream before the buffer's start: errors name stream positions."""
        self._prefix = b"*4\r\n$8\r\npmessage\r\n$%d\r\n%s\r\n$" % (len(pattern), pattern)

    @property
    def pending(self) -> int:
        """Bytes received and not yet parsed into a frame."""
        return self._end - self._pos

    def get_buffer(self) -> memoryview:
        """Where to receive next: the free end of the buffer, at least ``min_read`` bytes
        (moving the unparsed tail to the front, or growing, first)."""
        buffer = self.buffer
        pos, end = self._pos, self._end
        if pos == end:
            self._base += pos
            self._pos = self._end = pos = end = 0
            if len(buffer) > self._size:  # a long frame made it grow: shrink back
                self.buffer = buffer = bytearray(self._size)
                self.view = memoryview(buffer)
        if len(buffer) - end < self._min_read:
            unread = end - pos
            if unread + self._min_read <= len(buffer) // 2:
                buffer[:unread] = buffer[pos:end]
            else:
                grown = bytearray(max(2 * len(buffer), unread + self._min_read))
                grown[:unread] = buffer[pos:end]
                self.buffer = buffer = grown
                self.view = memoryview(grown)
            self._base += pos
            self._pos, self._end = 0, unread
        return self.view[self._end :]

    def received(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of what ``get_buffer()`` returned."""
        if not 0 <= nbytes <= len(self.buffer) - self._end:
            raise ValueError(f"nbytes={nbytes} is not within the buffer offered")
        self._end += nbytes

    def feed(self, data: bytes) -> None:
        """Copy ``data`` in, for callers that receive bytes (and for tests)."""
        while data:
            room = self.get_buffer()
            taken = min(len(room), len(data))
            room[:taken] = data[:taken]
            self.received(taken)
            data = data[taken:]

    def next(self) -> Message | Reply | None:
        """The next complete frame, or None until more bytes come; raises
        :class:`RespError` on bytes that are not such a frame."""
        buffer = self.buffer
        pos = self._pos
        end = self._end
        if pos >= end:
            return None
        prefix = self._prefix
        if buffer.startswith(prefix, pos, end):
            # The short path: "$<n>\r\n<channel>\r\n$<n>\r\n<data>\r\n" after the prefix.
            at = pos + len(prefix)
            crlf = buffer.find(b"\r\n", at, at + _MAX_DIGITS)
            digits = buffer[at:crlf]
            if crlf > 0 and digits.isdigit():
                channel = crlf + 2
                channel_end = channel + int(digits)
                if buffer.startswith(b"\r\n$", channel_end, end):
                    at = channel_end + 3
                    crlf = buffer.find(b"\r\n", at, at + _MAX_DIGITS)
                    digits = buffer[at:crlf]
                    if crlf > 0 and digits.isdigit():
                        start = crlf + 2
                        stop = start + int(digits)
                        if buffer.startswith(b"\r\n", stop, end):
                            self._pos = stop + 2
                            return bytes(self.view[channel:channel_end]), start, stop
        return self._general(pos, end)

    # -- the general path -------------------------------------------------------------

    def _where(self, at: int) -> str:
        """A place in the buffer as a place in the connection's stream, for errors."""
        return f"byte {self._base + at}"

    def _line(self, at: int, end: int, what: str) -> int | None:
        """Where the CRLF ending the line at ``at`` is (None: not received yet)."""
        crlf = self.buffer.find(b"\r\n", at, min(end, at + _MAX_LINE + 2))
        if crlf < 0:
            if end - at > _MAX_LINE:
                raise RespError(f"{what} at {self._where(at)} has no CRLF in {_MAX_LINE} bytes")
            if self.buffer.find(b"\n", at, end) >= 0:
                raise RespError(f"{what} at {self._where(at)} ends with LF and no CR")
            return None
        return crlf

    def _number(self, at: int, crlf: int, what: str, signed: bool = False) -> int:
        digits = bytes(self.buffer[at:crlf])
        body = digits[1:] if signed and digits.startswith(b"-") else digits
        if not body.isdigit() or len(body) > _MAX_DIGITS:
            raise RespError(f"{what} {digits[:24]!r} at {self._where(at)} is not a number")
        return int(digits)

    def _element(self, at: int, end: int) -> tuple[int, int, int, int] | None:
        """One element of an array at ``at``: ``(type byte, start, stop, next)``, the
        content at ``start:stop`` (an integer's digits, a bulk's data); None if not all
        received."""
        buffer = self.buffer
        if at >= end:
            return None
        kind = buffer[at]
        if kind == 0x24:  # $ bulk string
            crlf = self._line(at + 1, end, "bulk length")
            if crlf is None:
                return None
            length = self._number(at + 1, crlf, "bulk length")
            if length > MAX_BULK:
                raise RespError(f"bulk length {length} at {self._where(at)} is over {MAX_BULK}")
            start = crlf + 2
            stop = start + length
            if stop + 2 > end:
                return None
            if buffer[stop : stop + 2] != b"\r\n":
                raise RespError(
                    f"bulk string of {length} bytes at {self._where(at)} is not followed by CRLF"
                )
            return kind, start, stop, stop + 2
        if kind in (0x2B, 0x3A):  # + simple string, : integer
            crlf = self._line(at + 1, end, "simple string" if kind == 0x2B else "integer")
            if crlf is None:
                return None
            if kind == 0x3A:
                self._number(at + 1, crlf, "integer", signed=True)
            return kind, at + 1, crlf, crlf + 2
        raise RespError(
            f"element of type {bytes([kind])!r} at {self._where(at)} is not a bulk string, "
            "simple string or integer"
        )

    def _general(self, pos: int, end: int) -> Message | Reply | None:
        buffer = self.buffer
        kind = buffer[pos]
        if kind in (0x2B, 0x2D):  # +OK / +PONG (RESP3's PING answer), -ERR ...
            crlf = self._line(pos + 1, end, "simple string" if kind == 0x2B else "error")
            if crlf is None:
                return None
            text = bytes(buffer[pos + 1 : crlf])
            self._pos = crlf + 2
            if kind == 0x2D:
                return Reply("error", text)
            return Reply("pong") if text == b"PONG" else Reply("ok", text)
        if kind not in (0x2A, 0x3E):  # * array (RESP2), > push (RESP3)
            raise RespError(
                f"frame at {self._where(pos)} starts with {bytes([kind])!r}, not an array (*), "
                "push (>), simple string (+) or error (-)"
            )
        crlf = self._line(pos + 1, end, "array length")
        if crlf is None:
            return None
        count = self._number(pos + 1, crlf, "array length")
        if not 1 <= count <= 4:
            raise RespError(f"array of {count} elements at {self._where(pos)}: not a pub/sub frame")
        elements: list[tuple[int, int, int]] = []
        at = crlf + 2
        for _ in range(count):
            element = self._element(at, end)
            if element is None:
                return None
            elements.append(element[:3])
            at = element[3]
        frame = self._interpret(pos, elements)
        self._pos = at
        return frame

    def _interpret(self, pos: int, elements: list[tuple[int, int, int]]) -> Message | Reply:
        buffer = self.buffer
        name = bytes(buffer[elements[0][1] : elements[0][2]])
        shape = bytes(element[0] for element in elements)
        if name == b"message" and shape == b"$$$":
            (_, start, stop), (_, data, data_end) = elements[1], elements[2]
            return bytes(buffer[start:stop]), data, data_end
        if name == b"pmessage" and shape == b"$$$$":
            (_, start, stop), (_, data, data_end) = elements[2], elements[3]
            return bytes(buffer[start:stop]), data, data_end
        if name in _SUBSCRIPTIONS and shape[:2] == b"$$" and shape[2:] == b":":
            (_, start, stop), (_, digits, digits_end) = elements[1], elements[2]
            return Reply(name.decode(), bytes(buffer[start:stop]), int(buffer[digits:digits_end]))
        if name == b"pong" and shape == b"$$":
            return Reply("pong", bytes(buffer[elements[1][1] : elements[1][2]]))
        readable = shape.decode("ascii", "replace")
        raise RespError(
            f"frame at {self._where(pos)}: {name[:32]!r} with elements {readable!r} "
            "is not a pub/sub message, confirmation or pong"
        )
