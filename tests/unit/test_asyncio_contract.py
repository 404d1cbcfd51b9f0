"""What wsfanout relies on in asyncio's socket transport, and ``send_now`` against ``write()``.

The fast path writes straight to the socket of asyncio's own transport while it buffers
nothing, and reads the transport's closing flag and buffer as its ``write()`` does
(``_shell/sockets.py``, ``Fanout.fan_out``). None of that is asyncio's documented API,
so this module checks it on real sockets and fails with a plain explanation if a
Python release changes it. Then ``send_now`` and ``transport.write()`` are run side by
side on twin connections: what the peer receives, what the transport buffers, its
flow control and how it fails must be the same.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from wsfanout import Hub
from wsfanout._shell.sockets import _SOCKET_TRANSPORT, direct_fd, send_now

GUARD = 10.0
SMALL = 4096
"""A socket buffer small enough to fill at once (the kernel may double it)."""


def contract(holds: bool, what: str) -> None:
    """Fail with an explanation, not a bare assert, when asyncio changed."""
    if not holds:
        pytest.fail(
            f"Python {sys.version.split()[0]} broke an assumption of wsfanout's direct "
            f"socket writes: {what}. Review _shell/sockets.py and Fanout.fan_out.",
            pytrace=False,
        )


class Recorder(asyncio.Protocol):
    """What the transport tells its protocol."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


@asynccontextmanager
async def tcp(
    *, small: bool = False
) -> AsyncIterator[tuple[asyncio.Transport, Recorder, socket.socket]]:
    """asyncio's transport on the server end of a loopback TCP connection, and the
    client's socket (non-blocking, never read unless the test reads it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.socket()
    if small:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
    peer.connect(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    if small:
        # The socket option is the subject here: a send buffer that fills at once makes
        # the kernel take part of a write, the case send_now must hand on to write().
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL)
    peer.setblocking(False)
    transport, recorder = await asyncio.get_running_loop().connect_accepted_socket(
        Recorder, accepted
    )
    try:
        yield transport, recorder, peer
    finally:
        transport.abort()
        peer.close()
        await asyncio.wait_for(asyncio.shield(recorder.lost), GUARD)


def received(peer: socket.socket) -> bytes:
    """Everything the peer can read now, without waiting."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def drained(transport: asyncio.Transport, peer: socket.socket) -> bytes:
    """Read until the transport has written all it buffered; everything read."""
    chunks = []
    async with asyncio.timeout(GUARD):
        while True:
            chunks.append(received(peer))
            if not transport.get_write_buffer_size():
                chunks.append(received(peer))
                return b"".join(chunks)
            await asyncio.sleep(0)


def fill(fd: int) -> int:
    """Write to ``fd`` until the kernel takes no more; return how much it took."""
    taken = 0
    while True:
        try:
            taken += os.write(fd, b"\0" * 65536)
        except BlockingIOError:
            return taken


def wait_for_reset(sock: socket.socket) -> None:
    """Block until the peer's reset has reached ``sock`` (an event, with a guard)."""
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP)
    assert poller.poll(GUARD * 1000), "the reset did not arrive"


# -- the contract ------------------------------------------------------------------------


async def test_websockets_serves_tcp_on_the_transport_written_to_directly() -> None:
    hub = Hub()

    async def handler(ws: ServerConnection) -> None:
        await hub.serve(ws)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            async with asyncio.timeout(GUARD):
                while not len(hub):  # noqa: ASYNC110 - the hub has no join event
                    await asyncio.sleep(0)
            (subscriber,) = hub.subscribers
            transport = subscriber.websocket.transport
            contract(
                _SOCKET_TRANSPORT is not None and type(transport) is _SOCKET_TRANSPORT,
                "the default loop serves TCP on asyncio.selector_events._SelectorSocketTransport",
            )
            hub.publish("hello")
            contract(await client.recv() == "hello", "a message written directly arrives")
        await hub.aclose()


async def test_is_closing_is_the_closing_flag_and_the_socket_outlives_it() -> None:
    for end in ("close", "abort"):
        async with tcp() as (transport, recorder, _):
            sock = transport.get_extra_info("socket")
            contract(transport.is_closing() is transport._closing is False, "open: not closing")  # type: ignore[attr-defined]
            getattr(transport, end)()
            contract(
                transport.is_closing() is transport._closing is True,  # type: ignore[attr-defined]
                f"{end}() sets _closing, which is_closing() returns",
            )
            contract(sock.fileno() != -1, f"the socket stays open in the call to {end}()")
            await asyncio.wait_for(asyncio.shield(recorder.lost), GUARD)
            contract(sock.fileno() == -1, f"the socket is closed once {end}() completes")


async def test_the_buffer_is_empty_exactly_when_nothing_is_buffered() -> None:
    async with tcp(small=True) as (transport, _, peer):
        contract(not transport._buffer and not transport.get_write_buffer_size(), "empty at first")  # type: ignore[attr-defined]
        transport.write(b"x" * 1_000_000)
        contract(
            bool(transport._buffer) and transport.get_write_buffer_size() > 0,  # type: ignore[attr-defined]
            "what the kernel refused is in _buffer and counted by get_write_buffer_size()",
        )
        assert len(await drained(transport, peer)) == 1_000_000
        contract(not transport._buffer, "_buffer is empty once written out")  # type: ignore[attr-defined]


async def test_write_on_an_empty_buffer_sends_at_once() -> None:
    async with tcp() as (transport, _, peer):
        transport.write(b"now")
        contract(received(peer) == b"now", "write() sends before the loop runs again")


# -- send_now against write() ------------------------------------------------------------


async def test_send_now_sends_at_once_and_buffers_nothing() -> None:
    async with tcp() as (transport, _, peer):
        fd = direct_fd(transport)
        assert fd is not None
        send_now(transport, fd, b"hello")
        assert received(peer) == b"hello"
        assert transport.get_write_buffer_size() == 0


async def test_send_now_buffers_what_the_kernel_refused_as_write_does() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    outcomes = []
    for direct in (True, False):
        async with tcp(small=True) as (transport, recorder, peer):
            transport.set_write_buffer_limits(high=65536)
            fd = direct_fd(transport)
            assert fd is not None
            if direct:
                send_now(transport, fd, data)
            else:
                transport.write(data)
            buffered = transport.get_write_buffer_size()
            assert 0 < buffered < len(data)  # the kernel took some: a partial send
            paused = recorder.paused
            assert await drained(transport, peer) == data  # in order, nothing lost
            outcomes.append((paused, recorder.resumed))
    assert outcomes[0] == outcomes[1] == (1, 1)  # flow control: paused over high, resumed


async def test_send_now_on_a_full_socket_buffers_it_all_as_write_does() -> None:
    for direct in (True, False):
        async with tcp(small=True) as (transport, _, peer):
            fd = direct_fd(transport)
            assert fd is not None
            taken = fill(fd)
            if direct:
                send_now(transport, fd, b"after")
            else:
                transport.write(b"after")
            assert transport.get_write_buffer_size() == len(b"after")
            assert (await drained(transport, peer))[taken:] == b"after"


async def test_send_now_on_a_reset_connection_fails_it_as_write_does() -> None:
    lost = []
    for direct in (True, False):
        async with tcp() as (transport, recorder, peer):
            fd = direct_fd(transport)
            assert fd is not None
            transport.pause_reading()  # so that the write, not a read, meets the reset
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
            wait_for_reset(transport.get_extra_info("socket"))
            if direct:
                send_now(transport, fd, b"x")
            else:
                transport.write(b"x")
            assert transport.is_closing()
            exc = await asyncio.wait_for(asyncio.shield(recorder.lost), GUARD)
            lost.append(type(exc))
    # write() reports the reset itself; send_now's write() meets the broken pipe after it.
    assert lost == [BrokenPipeError, ConnectionResetError]


def test_other_transports_are_written_through_write() -> None:
    class Other(asyncio.Transport):
        def is_closing(self) -> bool:
            return False

    assert direct_fd(Other()) is None


async def test_a_closing_transport_is_not_written_directly() -> None:
    async with tcp() as (transport, _, _peer):
        transport.close()
        assert direct_fd(transport) is None
