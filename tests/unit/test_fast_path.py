"""The inlined fast path (``Fanout.fan_out``) does exactly what the readable one does.

``Fanout.fan_out`` inlines ``Link.offer`` (and the shell contract's ``write_buffer``,
and ``sockets.send_now``) for speed. Here both run on the same inputs: connections in
every state the contract distinguishes (open or closing, transport closing, a
fragmented message half-sent, buffers below, between and over the watermarks, plain
or with a shared compressed encoding), on a scripted transport or on asyncio's own
socket transport (written to directly while it buffers nothing), every kind of
policy, and bursts that cork. What each connection is written, in which writes, what
each outbox counted and which subscribers were kicked or closed must be the same.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfanout import Policy
from wsfanout._shell import fanout as fanout_module
from wsfanout._shell import sockets
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
    direct: bool = False
    """On asyncio's own socket transport (a socket pair), not a scripted one."""


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
    direct=st.booleans(),
)
bursts = st.lists(
    # payload size, text or binary, lossless
    st.tuples(st.integers(0, 6000), st.booleans(), st.booleans()),
    min_size=1,
    max_size=6,
)


def hold(transport: asyncio.Transport, nbytes: int) -> None:
    """``nbytes`` held unsent in asyncio's transport, as if the kernel had refused them
    (no writer is registered, so they stay: what the test reads back)."""
    if nbytes:
        buffer = transport._buffer  # type: ignore[attr-defined]
        if isinstance(buffer, bytearray):  # Python 3.11
            buffer.extend(bytes(nbytes))
        else:  # a deque of chunks from 3.12 on
            buffer.append(memoryview(bytes(nbytes)))


async def socket_transport(peer: Peer) -> tuple[asyncio.Transport, socket.socket]:
    """asyncio's own transport on one end of a socket pair, in ``peer``'s state."""
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    hold(transport, peer.buffered)
    return transport, theirs


async def connection(
    peer: Peer, loop: asyncio.AbstractEventLoop
) -> tuple[ServerConnection, socket.socket | None]:
    protocol = ServerProtocol()
    protocol.state = State.OPEN if peer.open else State.CLOSING
    if peer.deflate:
        protocol.extensions = [PerMessageDeflate(False, True, 15, 15)]
    ws = ServerConnection(protocol, None)  # type: ignore[arg-type]
    theirs = None
    if peer.direct:
        transport, theirs = await socket_transport(peer)
        transport.set_protocol(ws)
    else:
        transport = ScriptedTransport(peer.buffered, peer.transport_closing)
    # Connection's own connection_made: the server's would start a handler.
    Connection.connection_made(ws, transport)
    transport.set_write_buffer_limits(high=HIGH, low=LOW)
    if peer.sending:  # as websockets' send() of an iterable between two fragments
        ws.send_in_progress = loop.create_future()
        protocol.expect_continuation_frame = True
    return ws, theirs


@contextmanager
def recorded_writes(links: list[Link]) -> Iterator[dict[Link, list[bytes]]]:
    """Every chunk written to each link's connection, one per system call or write():
    what a scripted transport records, and for asyncio's transport, what is written
    straight to its socket and what goes through its ``write()``."""
    writes: dict[Link, list[bytes]] = {link: [] for link in links}
    by_fd = {link.fd: writes[link] for link in links if link.fd is not None}

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        sent = os.write(fd, data)
        by_fd[fd].append(bytes(data)[:sent])
        return sent

    for link in links:
        transport = link.transport
        if isinstance(transport, ScriptedTransport):
            writes[link] = transport.writes
            continue
        real_write = transport.write

        def through(data: Any, real_write: Any = real_write, into: Any = writes[link]) -> None:
            into.append(bytes(data))
            real_write(data)

        transport.write = through  # type: ignore[method-assign]
    with (
        mock.patch.object(fanout_module, "write", recording_write),
        mock.patch.object(sockets, "write", recording_write),
    ):
        yield writes


async def run(
    peers: list[Peer], burst: list[tuple[int, bool, bool]], inlined: bool
) -> list[tuple[object, ...]]:
    loop = asyncio.get_running_loop()
    fanout = Fanout(cork=True)
    links = []
    ends = []
    for peer in peers:
        ws, theirs = await connection(peer, loop)
        link = Link(fanout, ws, peer.policy, None, close_timeout=1.0)
        assert (link.fd is not None) == peer.direct
        if peer.direct and peer.transport_closing:
            link.transport.close()  # after the link took its socket: it must look again
        fanout.attach(link)
        links.append(link)
        ends.append(theirs)
    now = loop.time()
    with recorded_writes(links) as writes:
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
        outcome.append(
            (
                tuple(writes[link]),
                link.transport.get_write_buffer_size(),
                link.outbox.stats(now),
                link.relay is not None,
                link.attached,
                link.held_bytes,
            )
        )
        if link.relay is not None:
            link.relay.cancel()
    await asyncio.gather(*(link.relay for link in links if link.relay), return_exceptions=True)
    for link, theirs in zip(links, ends, strict=True):
        if theirs is not None:
            link.transport.abort()
            theirs.close()
    await asyncio.sleep(0)  # the aborted transports' connection_lost
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


def test_the_comparison_sees_a_direct_write_that_jumps_what_the_transport_holds() -> None:
    """Writing straight to the socket while asyncio's transport holds bytes reorders the
    stream: the comparison must see it."""

    def jumping_send(self: Link, data: bytes) -> None:
        assert self.fd is not None
        sockets.send_now(self.transport, self.fd, data)

    peer = Peer(LOW - 100, True, False, False, False, DEFAULT_POLICY, direct=True)
    burst = [(10, True, False)]

    async def compare() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        inlined = await run([peer], burst, inlined=True)
        original = Link.send
        Link.send = jumping_send  # type: ignore[method-assign]
        try:
            readable = await run([peer], burst, inlined=False)
        finally:
            Link.send = original  # type: ignore[method-assign]
        return inlined, readable

    inlined, readable = asyncio.run(compare())
    assert inlined != readable
    # The inlined path queues the frame behind the held bytes in the transport.
    assert inlined[0][1] == LOW - 100 + 12  # a 2-byte header and 10 bytes


@pytest.mark.parametrize("inlined", [True, False])
async def test_a_frame_published_as_a_fragmented_send_ends_follows_the_frames_it_held(
    inlined: bool,
) -> None:
    """Frames corked behind a fragmented send() leave when its future's callbacks run;
    a message published in between (send() has returned) must queue behind them."""
    loop = asyncio.get_running_loop()
    fanout = Fanout(cork=True)
    peer = Peer(0, True, False, False, False, DEFAULT_POLICY)
    ws, _ = await connection(peer, loop)
    link = Link(fanout, ws, peer.policy, None, close_timeout=1.0)
    fanout.attach(link)

    def publish(n: int) -> None:
        message = make_message(f"message {n}", seq=n, time=loop.time())
        if inlined:
            fanout.deliver(message, loop.time())
        else:
            link.offer(message, loop.time())

    publish(0)  # written at once
    publish(1)  # corked behind it
    sending: asyncio.Future[None] = loop.create_future()
    ws.send_in_progress = sending  # the application's fragmented send() begins
    ws.protocol.expect_continuation_frame = True
    fanout.corker.end_tick()  # message 1 waits for the send to end
    ws.protocol.expect_continuation_frame = False  # the send ends, as websockets ends it
    sending.set_result(None)
    ws.send_in_progress = None
    publish(2)  # before the send's callbacks run
    await asyncio.sleep(0)
    fanout.corker.end_tick()
    transport = link.transport
    assert isinstance(transport, ScriptedTransport)
    # Short text frames: a two-byte header, then the payload.
    assert [len(chunk) for chunk in transport.writes] == [11, 22]
    assert b"".join(transport.writes) == b"".join(b"\x81\x09message %d" % n for n in range(3))
