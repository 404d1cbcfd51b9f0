"""The unit that queues hold: a payload encoded once and shared by every subscriber.

A message is encoded at most once per form a connection needs, and each form is
cached on the message, so every subscriber that needs it shares the same bytes: the
plain frame, a compressed frame per set of deflate parameters, and the same two for
the ``wsfanout.v1`` framing, whose payload is a one-line JSON header (offset, epoch,
topic, key), a line feed, then the published payload (docs/protocol.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .frames import OP_BINARY, OP_TEXT, encode_frame

if TYPE_CHECKING:
    from .deflate import DeflateParams

__all__ = [
    "CONTROL_SEQ",
    "Batched",
    "Merged",
    "Message",
    "encode_payload",
    "make_control",
    "make_message",
    "v1_header",
]

CONTROL_SEQ = -1
"""The ``seq`` of every control frame: it is in no queue and numbers nothing."""


_new_message = object.__new__


class Message:
    """One published message, immutable once built.

    Queues of different subscribers reference the same object, so a byte bound
    counts bytes a queue references, not copies. ``droppable=False`` marks a message
    no policy may evict (a subscriber's own :meth:`Subscriber.send`). ``offset`` and
    ``epoch`` place it in its topic's stream (0 and ``""`` for a message that is in
    none, such as one sent to a single subscriber). A ``control`` frame (a notice, a
    heartbeat) is written as it is in every framing, with no header of its own.
    """

    __slots__ = (
        "_deflated",
        "_frame",
        "_v1",
        "control",
        "droppable",
        "epoch",
        "key",
        "offset",
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
    offset: int
    epoch: str
    control: bool
    _frame: bytes | None
    _deflated: dict[DeflateParams, bytes] | None
    _v1: dict[DeflateParams | None, bytes] | None

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
        offset: int = 0,
        epoch: str = "",
        control: bool = False,
    ) -> None:
        self.opcode = opcode
        self.payload = payload
        self.seq = seq
        self.time = time
        self.topic = topic
        self.key = key
        self.droppable = droppable
        self.offset = offset
        self.epoch = epoch
        self.control = control
        self._frame = None
        self._deflated = None
        self._v1 = None

    @property
    def size(self) -> int:
        """Payload bytes, the unit of byte bounds."""
        return len(self.payload)

    def retimed(self, time: float) -> Message:
        """This message offered anew at ``time``: a replay to a client that resumes, whose
        lag counts from then, not from the publish. It shares every frame encoded for the
        original, now or later, so a crowd that resumes encodes each message once."""
        if self._deflated is None:
            self._deflated = {}
        if self._v1 is None:
            self._v1 = {}
        # Attribute by attribute: copy.copy of a slotted object costs ten times more, and
        # a storm of clients resuming replays each message once per client.
        twin = _new_message(Message)
        twin.opcode = self.opcode
        twin.payload = self.payload
        twin.seq = self.seq
        twin.time = time
        twin.topic = self.topic
        twin.key = self.key
        twin.droppable = self.droppable
        twin.offset = self.offset
        twin.epoch = self.epoch
        twin.control = self.control
        twin._frame = self.frame  # encoded here, so that the twin shares it
        twin._deflated = self._deflated  # the same dicts: encoded once for both
        twin._v1 = self._v1
        return twin

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

    @property
    def v1_opcode(self) -> int:
        """The opcode in the ``wsfanout.v1`` framing: the message's own (a gap notice's
        is Text, whatever its ``raw`` format)."""
        return self.opcode

    @property
    def v1_payload(self) -> bytes:
        """The payload in the ``wsfanout.v1`` framing: the header, a line feed, the payload
        (a control frame's payload alone)."""
        if self.control:
            return self.payload
        return v1_header(self) + b"\n" + self.payload

    def v1_frame(self, params: DeflateParams | None = None) -> bytes:
        """The ``wsfanout.v1`` frame, plain or compressed under ``params``, built on first
        use and shared by every connection that needs it."""
        cache = self._v1
        if cache is None:
            cache = self._v1 = {}
        frame = cache.get(params)
        if frame is None:
            if self.control:
                return self.frame if params is None else self.deflated(params)
            payload = self.v1_payload
            if params is None:
                frame = encode_frame(self.opcode, payload)
            else:
                frame = params.frame(self.opcode, payload)
            cache[params] = frame
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


class Merged(Message):
    """One key's updates folded into one queued message (``ConflateByKey(reduce=...)``).

    It stands in the queue for the newest update it folds (its ``seq``, ``time``,
    ``offset``, ``topic`` and ``key`` are that update's) and carries the fold as its
    payload; ``folded`` are the published messages it folds, in publish order, so a
    simulator or a test can tell what the client received. It belongs to one
    subscriber's queue, and its frames are encoded for that subscriber alone.
    """

    __slots__ = ("folded",)

    folded: tuple[Message, ...]

    def __init__(self, newest: Message, payload: bytes, *, folded: tuple[Message, ...]) -> None:
        super().__init__(
            newest.opcode,
            payload,
            seq=newest.seq,
            time=newest.time,
            topic=newest.topic,
            key=newest.key,
            droppable=newest.droppable,
            offset=newest.offset,
            epoch=newest.epoch,
        )
        self.folded = folded

    def __repr__(self) -> str:
        seqs = ",".join(str(part.seq) for part in self.folded)
        return f"<Merged key={self.key!r} seqs={seqs} {self.size}B>"


def merge_messages(older: Message, newer: Message, reduce: Callable[[Any, Any], Any]) -> Message:
    """``newer`` with ``older`` folded into it by ``reduce`` (see ``reducers.py``). They
    must be of one kind (text or binary): the queue never merges two of different kinds."""
    assert older.opcode == newer.opcode
    merged = reduce(older.data(), newer.data())
    if newer.opcode == OP_TEXT:
        if not isinstance(merged, str):
            raise TypeError(f"reduce returned {type(merged).__name__} for a text message, not str")
        payload = merged.encode()
    else:
        if not isinstance(merged, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"reduce returned {type(merged).__name__} for a binary message, not bytes"
            )
        payload = bytes(merged)
    folded = older.folded if isinstance(older, Merged) else (older,)
    return Merged(newer, payload, folded=(*folded, newer))


def v1_header(message: Message) -> bytes:
    """The one-line JSON header of ``message`` in the ``wsfanout.v1`` framing.

    ``{"o":42,"e":"h3k9q2mv","t":"prices","k":"EURUSD"}``: the offset and epoch, the
    topic unless it has none, the key if any; a message in no stream has ``{}``; a
    batch lists its messages' ``[offset, epoch, topic]`` under ``"b"``.
    """
    if isinstance(message, Batched):
        places = [[part.offset, part.epoch, part.topic or ""] for part in message.parts]
        return b'{"b":' + _dumps(places) + b"}"
    if not message.offset:
        return b"{}"
    header = f'{{"o":{message.offset},"e":{_quote(message.epoch)}'
    if message.topic is not None:
        header += f',"t":{_quote(message.topic)}'
    if message.key is not None:
        header += f',"k":{_quote(message.key)}'
    return (header + "}").encode()


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def make_control(data: str | bytes, *, time: float) -> Message:
    """A control frame: Text for a ``str`` (a JSON notice), Binary for bytes."""
    if isinstance(data, str):
        return Message(OP_TEXT, data.encode(), seq=CONTROL_SEQ, time=time, control=True)
    if isinstance(data, bytes):
        return Message(OP_BINARY, data, seq=CONTROL_SEQ, time=time, control=True)
    raise TypeError(f"a control frame must be str or bytes, not {type(data).__name__}")


def encode_payload(data: object) -> tuple[int, bytes]:
    """The opcode and payload of ``data``: a ``str`` as UTF-8 text, bytes-like as binary.

    Raises ``TypeError`` for anything else, and ``ValueError`` for a ``str`` that is
    not Unicode text (a lone surrogate such as ``"\\ud800"`` has no UTF-8 form, and a
    Text frame must be UTF-8).
    """
    if isinstance(data, str):
        try:
            return OP_TEXT, data.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"message has a lone surrogate {data[exc.start]!r} at index {exc.start}: "
                "a Text frame must be UTF-8 (publish bytes for binary data)"
            ) from None
    if isinstance(data, bytes):
        return OP_BINARY, data
    if isinstance(data, (bytearray, memoryview)):
        # Copy once so a caller reusing its buffer cannot change what is queued.
        return OP_BINARY, bytes(data)
    raise TypeError(f"message must be str or bytes-like, not {type(data).__name__}")


def make_message(
    data: object,
    *,
    seq: int,
    time: float,
    topic: str | None = None,
    key: str | None = None,
    droppable: bool = True,
    offset: int = 0,
    epoch: str = "",
) -> Message:
    """Encode ``data`` once: ``str`` becomes a Text frame, bytes-like a Binary frame."""
    opcode, payload = encode_payload(data)
    return Message(
        opcode,
        payload,
        seq=seq,
        time=time,
        topic=topic,
        key=key,
        droppable=droppable,
        offset=offset,
        epoch=epoch,
    )
