"""Reading gated on writing: a connection whose write buffer is full is not read.

Theory of operation
-------------------
websockets answers every ping with a pong written into the transport, and closes and
pings need no application call, so a client that sends pings and never reads fills
the server's write buffer without bound (about 25 MB/s from one connection on
loopback). Nothing the hub writes is involved, so no policy can see it. The remedy is
TCP's own: while the transport's write buffer is over its high-water mark (the
connection's ``paused`` flag, which asyncio sets through ``pause_writing``), the
server stops reading from that connection. Its receive window then fills, and the
peer's pings wait in the peer's own send buffer, at the peer's cost.

A read already under way is not undone: a chunk that arrives while writes are
paused (at most one per resume of websockets' own read flow control, each at most
asyncio's read size, 256 KiB) is held unprocessed and fed to websockets once the
buffer drains. So the most a client can add to its write buffer, whatever it sends,
is the pongs of one read: the buffer stays under the high-water mark plus 256 KiB,
beside what the hub itself writes (bounded by the subscriber's policy).

websockets has no hook for this, so the hub gives each connection it serves a
subclass of the connection's own class that adds it (:func:`gate_reading`), and
gives the class back when the subscription ends (:func:`ungate_reading`). The
subclass adds no attribute to idle connections; the same marker tells the hub that a
connection is already subscribed.
"""

from __future__ import annotations

from websockets.asyncio.connection import Connection

_GATED: dict[type[Connection], type[Connection]] = {}
"""The gated subclass of each connection class, made once."""


def _gated_class(base: type[Connection]) -> type[Connection]:
    """``base`` with reading gated on writing; one class per connection class.

    A plain subclass (no mixin, no slot), so that a connection's class can be swapped
    for it and back.
    """
    made = _GATED.get(base)
    if made is not None:
        return made

    def data_received(self: Connection, data: bytes) -> None:
        held: list[bytes] | None = self.__dict__.get("_held_input")
        if self.paused or held:
            # Writes are paused (or earlier input still waits): hold this chunk and stop
            # reading, so nothing more comes in until the write buffer drains.
            if held is None:
                held = self.__dict__["_held_input"] = []
            held.append(data)
            _pause(self)
            return
        base.data_received(self, data)
        if self.paused:
            _pause(self)

    def resume_writing(self: Connection) -> None:
        base.resume_writing(self)
        self.loop.call_soon(feed_held, self)

    def feed_held(self: Connection) -> None:
        """The write buffer drained: process what was held, then read again."""
        held: list[bytes] | None = self.__dict__.pop("_held_input", None)
        if self.transport.is_closing():
            return
        while held:
            if self.paused:  # the held pongs filled the buffer again: wait once more
                self.__dict__["_held_input"] = held
                return
            base.data_received(self, held.pop(0))
        if not self.paused:
            _resume(self)

    def connection_lost(self: Connection, exc: Exception | None) -> None:
        self.__dict__.pop("_held_input", None)
        base.connection_lost(self, exc)

    namespace = {
        "data_received": data_received,
        "resume_writing": resume_writing,
        "connection_lost": connection_lost,
        "_wsfanout_base": base,
    }
    gated = _GATED[base] = type(base.__name__, (base,), namespace)
    gated.__qualname__ = base.__qualname__
    gated.__module__ = base.__module__
    return gated


def _pause(websocket: Connection) -> None:
    websocket.__dict__["_gate_paused"] = True
    websocket.transport.pause_reading()  # idempotent: websockets' resume may have undone it


def _resume(websocket: Connection) -> None:
    """Read again, if the gate stopped reading and websockets' own flow control agrees."""
    if websocket.__dict__.pop("_gate_paused", None) and not websocket.recv_messages.paused:
        websocket.transport.resume_reading()


def is_gated(websocket: Connection) -> bool:
    """Whether a hub serves this connection (its reading is gated)."""
    return "_wsfanout_base" in vars(type(websocket))


def gate_reading(websocket: Connection) -> None:
    """Stop reading from ``websocket`` while its write buffer is over the high-water mark."""
    websocket.__class__ = _gated_class(type(websocket))


def ungate_reading(websocket: Connection) -> None:
    """Give ``websocket`` its own class back, with any input held processed first."""
    cls = type(websocket)
    base = vars(cls).get("_wsfanout_base")
    if base is None:
        return
    held = websocket.__dict__.pop("_held_input", None)
    websocket.__class__ = base
    if websocket.transport.is_closing():
        websocket.__dict__.pop("_gate_paused", None)
        return
    for chunk in held or ():
        websocket.data_received(chunk)
    _resume(websocket)
