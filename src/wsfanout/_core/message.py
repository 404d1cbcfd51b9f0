"""The unit that queues hold: a payload encoded once and shared by every subscriber."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .frames import OP_BINARY, OP_TEXT, encode_frame

if TYPE_CHECKING:
    from .deflate import DeflateParams

__all__ = ["Batched", "Message", "make_message"]


class Message:
    """One published message, immutable once built.

    Queues of different subscribers reference the same object, so a byte bound
    counts bytes a queue references, not copies. ``droppable=False`` marks a message
    no policy may evict (a subscriber's own :meth:`Subscriber.send`).
    """

    __slots__ = (
        "_deflated",
        "_frame",
        "droppable",
        "key",
        "opcode",
        "payload",
        "seq",
        "time",
        "topic",
    )

    opcode: int
    payload: bytes
    topic: str | None
    key: str | None
    seq: int
    time: float
    droppable: bool
    _frame: bytes | None
    _deflated: dict[DeflateParams, bytes] | None

    def __init__(
        self,
        opcode: int,
        payload: bytes,
        *,
        seq: int,
        time: float,
        topic: str | None = None,
        key: str | None = None,
        droppable: bool = True,
    ) -> None:
        self.opcode = opcode
        self.payload = payload
        self.seq = seq
        self.time = time
        self.topic = topic
        self.key = key
        self.droppable = droppable
        self._frame = None
        self._deflated = None

    @property
    def size(self) -> int:
        """Payload bytes, the unit of byte bounds."""
        return len(self.payload)

    @property
    def text(self) -> bool:
        return self.opcode == OP_TEXT

    @property
    def frame(self) -> bytes:
        """The frame for connections without extensions, encoded on first use."""
        frame = self._frame
        if frame is None:
            frame = self._frame = encode_frame(self.opcode, self.payload)
        return frame

    def deflated(self, params: DeflateParams) -> bytes:
        """The frame compressed under ``params``, compressed on first use and shared by
        every connection that negotiated them without context takeover."""
        cache = self._deflated
        if cache is None:
            cache = self._deflated = {}
        frame = cache.get(params)
        if frame is None:
            frame = cache[params] = params.frame(self.opcode, self.payload)
        return frame

    def data(self) -> str | bytes:
        """The payload as the client receives it: ``str`` for text, ``bytes`` for binary."""
        return self.payload.decode() if self.opcode == OP_TEXT else self.payload

    def __repr__(self) -> str:
        return f"<Message seq={self.seq} {'text' if self.text else 'binary'} {self.size}B>"


class Batched(Message):
    """A frame that carries several queued messages, joined by a batch's ``combine``.

    ``parts`` are the messages it carries, in queue order, so a simulator or a test can
    tell which messages a client received; only batched frames pay for it.
    """

    __slots__ = ("parts",)

    parts: tuple[Message, ...]

    def __init__(self, opcode: int, payload: bytes, *, parts: tuple[Message, ...]) -> None:
        first = parts[0]
        super().__init__(opcode, payload, seq=first.seq, time=first.time)
        self.parts = parts

    def __repr__(self) -> str:
        seqs = ",".join(str(part.seq) for part in self.parts)
        return f"<Batched seqs={seqs} {'text' if self.text else 'binary'} {self.size}B>"


def make_message(
    data: object,
    *,
    seq: int,
    time: float,
    topic: str | None = None,
    key: str | None = None,
    droppable: bool = True,
) -> Message:
    """Encode ``data`` once: ``str`` becomes a Text frame, bytes-like a Binary frame."""
    if isinstance(data, str):
        return Message(
            OP_TEXT, data.encode(), seq=seq, time=time, topic=topic, key=key, droppable=droppable
        )
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, (bytearray, memoryview)):
        # Copy once so a caller reusing its buffer cannot change what is queued.
        payload = bytes(data)
    else:
        raise TypeError(f"message must be str or bytes-like, not {type(data).__name__}")
    return Message(
        OP_BINARY, payload, seq=seq, time=time, topic=topic, key=key, droppable=droppable
    )
