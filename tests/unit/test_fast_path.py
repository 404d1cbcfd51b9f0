"""The inlined fast path (``Fanout.fan_out``) does exactly what the readable one does.

``Fanout.fan_out`` inlines ``Link.offer`` (and the shell contract's ``write_buffer``)
for speed. Here both run on the same inputs: connections in every state the contract
distinguishes (open or closing, transport closing, a fragmented send in progress,
buffers below, between and over the watermarks, plain or with a shared compressed
encoding), every kind of policy, and bursts that cork. What each connection is
written, what each outbox counted and which subscribers were kicked or closed must be
the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfanout import Policy
from wsfanout._shell.fanout import Fanout
from wsfanout._shell.link import Link
from wsfanout.lowlevel import make_message
from wsfanout.policies import (
    DEFAULT_POLICY,
    Batch,
    Disconnect,
    DropNewest,
    DropOldest,
    Notify,
    SkipToLatest,
    Throttle,
)

LOW, HIGH = 4096, 16384


class ScriptedTransport(asyncio.Transport):
    """A transport whose buffer size and closing state the test sets; it records writes."""

    def __init__(self, buffered: int, closing: bool) -> None:
        super().__init__()
        self.buffered = buffered
        self.closing = closing
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (LOW, HIGH)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the test's watermarks are fixed

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


@attrs.frozen
class Peer:
    """One connection's state when the burst is published."""

    buffered: int
    open: bool
    transport_closing: bool
    sending: bool
    deflate: bool
    policy: Policy


POLICIES = [
    DEFAULT_POLICY,
    DropOldest(max_messages=2),
    DropNewest(max_bytes=5000),
    SkipToLatest(),
    Throttle(rate=10.0),
    Batch(max_messages=4, max_delay=0.01),
    Disconnect(max_messages=1),
    DropOldest(max_messages=2) | Notify(),
    SkipToLatest() | Throttle(rate=10.0) | Notify(format="json-binary"),
]

peers = st.builds(
    Peer,
    buffered=st.sampled_from([0, LOW - 1, LOW, LOW + 1, HIGH, HIGH + 1]) | st.integers(0, HIGH),
    open=st.booleans(),
    transport_closing=st.booleans(),
    sending=st.booleans(),
    deflate=st.booleans(),
    policy=st.sampled_from(POLICIES),
)
bursts = st.lists(
    # payload size, text or binary, lossless
    st.tuples(st.integers(0, 6000), st.booleans(), st.booleans()),
    min_size=1,
    max_size=6,
)


def connection(peer: Peer, loop: asyncio.AbstractEventLoop) -> ServerConnection:
    protocol = ServerProtocol()
    protocol.state = State.OPEN if peer.open else State.CLOSING
    if peer.deflate:
        protocol.extensions = [PerMessageDeflate(False, True, 15, 15)]
    ws = ServerConnection(protocol, None)  # type: ignore[arg-type]
    # Connection's own connection_made: the server's would start a handler.
    Connection.connection_made(ws, ScriptedTransport(peer.buffered, peer.transport_closing))
    if peer.sending:
        ws.send_in_progress = loop.create_future()
    return ws


async def run(
    peers: list[Peer], burst: list[tuple[int, bool, bool]], inlined: bool
) -> list[tuple[object, ...]]:
    loop = asyncio.get_running_loop()
    fanout = Fanout(cork=True)
    links = []
    for peer in peers:
        link = Link(fanout, connection(peer, loop), peer.policy, None, close_timeout=1.0)
        fanout.attach(link)
        links.append(link)
    now = loop.time()
    for n, (size, text, lossless) in enumerate(burst):
        data: str | bytes = "x" * size if text else b"x" * size
        message = make_message(
            data, seq=n, time=now, droppable=not lossless, offset=n + 1, epoch="e"
        )
        if inlined:
            fanout.deliver(message, now)
        else:
            for link in list(fanout.index.members):
                link.offer(message, now)
    fanout.corker.end_tick()  # the end of the loop iteration: corked frames leave
    outcome: list[tuple[object, ...]] = []
    for link in links:
        transport = link.transport
        assert isinstance(transport, ScriptedTransport)
        outcome.append(
            (
                tuple(transport.writes),
                link.outbox.stats(now),
                link.relay is not None,
                link.attached,
                link.held_bytes,
            )
        )
        if link.relay is not None:
            link.relay.cancel()
    await asyncio.gather(*(link.relay for link in links if link.relay), return_exceptions=True)
    return outcome


@settings(max_examples=200, deadline=None)
@given(peers=st.lists(peers, min_size=1, max_size=5), burst=bursts)
def test_the_inlined_fast_path_writes_and_counts_as_the_readable_one(
    peers: list[Peer], burst: list[tuple[int, bool, bool]]
) -> None:
    async def both() -> None:
        assert await run(peers, burst, inlined=True) == await run(peers, burst, inlined=False)

    asyncio.run(both())


def test_the_comparison_sees_a_fast_path_that_ignores_a_closing_transport() -> None:
    """A fast path that forgot a rule of the contract must write differently."""

    def forgetful_write_buffer(self: Link) -> int:
        return self.transport.get_write_buffer_size() + self.held_bytes

    peer = Peer(0, True, True, False, False, DEFAULT_POLICY)
    burst = [(10, True, False)]

    async def compare() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        inlined = await run([peer], burst, inlined=True)
        original = Link.write_buffer
        Link.write_buffer = forgetful_write_buffer  # type: ignore[method-assign]
        try:
            readable = await run([peer], burst, inlined=False)
        finally:
            Link.write_buffer = original  # type: ignore[method-assign]
        return inlined, readable

    inlined, readable = asyncio.run(compare())
    assert inlined != readable
    assert inlined[0][0] == (), "the inlined path must not write to a closing transport"
    assert readable[0][0] != ()
