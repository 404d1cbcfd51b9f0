"""The kernel's side of a subscriber's connection: the low-water mark the hub sets, and
what the kernel reports, on real sockets of 127.0.0.1 and on Unix sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.asyncio.server import ServerConnection, serve, unix_serve

from wsfanout import ConfigError, Decision, Hub, Snapshot, as_policy
from wsfanout._shell.hub import DEFAULT_NOTSENT_LOWAT
from wsfanout._shell.sockets import (
    NOTSENT_LOWAT,
    is_tcp,
    kernel_unsent,
    kernel_view,
    send_queue,
    set_notsent_lowat,
    tcp_info,
)
from wsfanout.policies import DropOldest

GUARD = 20.0

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reports these")


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (server, client) pair of TCP sockets on 127.0.0.1, default options."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with server, client:
        yield server, client


def lowat(sock: socket.socket) -> int:
    assert NOTSENT_LOWAT is not None
    value: int = sock.getsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT)
    return value


# -- the functions, one socket at a time ---------------------------------------------------


def test_tcp_sockets_are_told_apart_from_unix_ones(tcp_pair: tuple[socket.socket, ...]) -> None:
    server, _ = tcp_pair
    assert is_tcp(server)
    left, right = socket.socketpair()
    with left, right:
        assert not is_tcp(left)
    assert not is_tcp(None)


@linux
def test_the_low_water_mark_is_set_on_tcp_and_refused_elsewhere(
    tcp_pair: tuple[socket.socket, ...],
) -> None:
    server, _ = tcp_pair
    assert set_notsent_lowat(server, 4096)
    assert lowat(server) == 4096
    left, right = socket.socketpair()
    with left, right:
        assert not set_notsent_lowat(left, 4096)
    server.close()
    assert not set_notsent_lowat(server, 4096)


@linux
def test_the_kernel_reports_what_it_has_not_sent_to_a_client_that_stopped_reading(
    tcp_pair: tuple[socket.socket, ...],
) -> None:
    server, _client = tcp_pair
    set_notsent_lowat(server, 16384)
    server.setblocking(False)
    accepted = 0
    try:
        while True:  # until the kernel refuses: the client reads nothing
            accepted += server.send(b"x" * 4096)
    except BlockingIOError:
        pass
    unsent = kernel_unsent(server)
    queued = send_queue(server)
    info = tcp_info(server)
    assert unsent is not None
    assert queued is not None
    assert info is not None
    # Far less than the megabytes of a socket without the mark: the mark, plus at most
    # the segment the kernel was filling when it reached it.
    assert 16384 <= unsent <= 16384 + 65536, unsent
    assert info.notsent_bytes == unsent
    assert unsent <= queued <= accepted
    assert info.delivery_rate is not None
    assert info.delivery_rate > 0
    assert info.rtt > 0
    # The client's kernel acknowledged what it took (its application read nothing), and
    # its receive window is what it still has room for.
    assert 0 < info.bytes_acked <= accepted - unsent
    assert info.snd_wnd is not None
    view = kernel_view(server)
    assert view is not None
    assert view.unsent == unsent
    assert view.acked is not None
    assert info.bytes_acked <= view.acked <= accepted - unsent
    assert view.delivery_rate is not None
    assert view.delivery_rate > 0


@linux
def test_what_the_kernel_cannot_tell_is_none(tcp_pair: tuple[socket.socket, ...]) -> None:
    left, right = socket.socketpair()
    with left, right:
        assert (kernel_unsent(left), send_queue(left), tcp_info(left)) == (None, None, None)
        assert kernel_view(left) is None
    server, _ = tcp_pair
    server.close()
    assert (kernel_unsent(server), send_queue(server), tcp_info(server)) == (None, None, None)


# -- the hub -------------------------------------------------------------------------------


async def _subscribed_socket(hub: Hub) -> tuple[int, int]:
    """The low-water mark of a TCP connection subscribed to ``hub``, and the default."""
    values: asyncio.Queue[int] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        async with hub.subscribe(websocket):
            values.put_nowait(lowat(websocket.transport.get_extra_info("socket")))
            await websocket.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}"):
            subscribed = await values.get()
    with socket.create_server(("127.0.0.1", 0)) as plain:
        default = lowat(plain)
    return subscribed, default


@linux
async def test_the_hub_sets_the_low_water_mark_on_every_tcp_subscriber(loop_guard: None) -> None:
    async with asyncio.timeout(GUARD):
        subscribed, default = await _subscribed_socket(Hub())
        assert subscribed == DEFAULT_NOTSENT_LOWAT == 16384
        assert (await _subscribed_socket(Hub(notsent_lowat=4096)))[0] == 4096
        # Off: the socket keeps what the system gave it.
        assert (await _subscribed_socket(Hub(notsent_lowat=None)))[0] == default


async def test_the_hub_says_whether_the_low_water_mark_is_in_force() -> None:
    stats = Hub().stats()
    assert stats.notsent_lowat_supported is (NOTSENT_LOWAT is not None)
    assert stats.notsent_lowat == (16384 if NOTSENT_LOWAT is not None else None)
    off = Hub(notsent_lowat=None).stats()
    assert (off.notsent_lowat, off.notsent_lowat_supported) == (None, NOTSENT_LOWAT is not None)


@pytest.mark.parametrize(
    ("value", "constraint"),
    [
        (0, "notsent_lowat=0 must be a number of bytes >= 1, or None"),
        (-1, "notsent_lowat=-1 must be a number of bytes >= 1, or None"),
        (True, "notsent_lowat=True must be a number of bytes >= 1, or None"),
        ("16k", "notsent_lowat='16k' must be a number of bytes >= 1, or None"),
        (2**31, "notsent_lowat=2147483648 must be a number of bytes >= 1, or None"),
    ],
)
def test_a_bad_low_water_mark_is_refused_naming_it(value: object, constraint: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{constraint}$") as info:
        Hub(notsent_lowat=value)  # type: ignore[arg-type]
    assert (info.value.name, info.value.value) == ("notsent_lowat", value)


async def test_a_unix_socket_subscriber_works_without_the_kernel_view(loop_guard: None) -> None:
    seen: list[int | None] = []

    def records(snapshot: Snapshot) -> Decision:
        seen.append(snapshot.kernel_unsent)
        return Decision()

    hub = Hub(policy=as_policy(records) | DropOldest(max_messages=4))
    joined: asyncio.Queue[None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        asyncio.get_running_loop().call_soon(joined.put_nowait, None)
        await hub.serve(websocket)

    async with asyncio.timeout(GUARD):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "hub.sock")
            async with unix_serve(handler, path), unix_connect(path) as client:
                await joined.get()
                for n in range(3):
                    hub.publish(f"m{n}")
                assert [await client.recv() for _ in range(3)] == ["m0", "m1", "m2"]
                subscriber = hub.subscribers[0]
                assert subscriber.stats().sent == 3
            await hub.aclose(timeout=0.5)
    assert seen == [None, None, None]  # asked on the fast path: nothing read, nothing failed


@linux
async def test_a_policy_behind_sees_the_kernels_unsent_bytes(loop_guard: None) -> None:
    seen: list[int | None] = []

    def records(snapshot: Snapshot) -> Decision:
        seen.append(snapshot.kernel_unsent)
        return Decision()

    hub = Hub(policy=as_policy(records) | DropOldest(max_messages=16))
    joined: asyncio.Queue[None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        asyncio.get_running_loop().call_soon(joined.put_nowait, None)
        await hub.serve(websocket)

    async with asyncio.timeout(GUARD), serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        sock = socket.create_connection(("127.0.0.1", port))
        with sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await joined.get()
            subscriber = hub.subscribers[0]
            index = 0
            while not subscriber.stats().dropped:  # the client never reads
                hub.publish("x" * 1024)
                index += 1
                await asyncio.sleep(0)  # a publisher's yield
                assert index < 10_000
            await hub.aclose(timeout=0.5)
    behind = [value for value in seen if value is not None]
    assert behind, seen
    assert max(behind) >= DEFAULT_NOTSENT_LOWAT


@linux
async def test_a_policy_behind_sees_the_kernels_delivery_rate(loop_guard: None) -> None:
    """A websockets client (default options) that reads one message in four published:
    the subscriber falls behind, and its policy sees the kernel's delivery rate, that of
    the connection (loopback: far faster than the client reads), not of its reader."""
    seen: list[float | None] = []

    def records(snapshot: Snapshot) -> Decision:
        seen.append(snapshot.delivery_rate)
        return Decision()

    hub = Hub(policy=as_policy(records) | DropOldest(max_messages=64))
    joined: asyncio.Queue[None] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        asyncio.get_running_loop().call_soon(joined.put_nowait, None)
        await hub.serve(websocket)

    payload = "x" * 4096
    async with asyncio.timeout(GUARD), serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            await joined.get()
            subscriber = hub.subscribers[0]
            start = asyncio.get_running_loop().time()
            published = read = 0
            while subscriber.stats().drain_rate is None:  # until it fell behind and waited
                hub.publish(payload)
                published += 1
                if published % 4 == 0:
                    await client.recv()
                    read += 1
                await asyncio.sleep(0)
                assert published < 200_000
            elapsed = asyncio.get_running_loop().time() - start
            await hub.aclose(timeout=0.5)
    rates = [rate for rate in seen if rate is not None]
    assert rates, seen
    # Of the order of the link, not of the reader: above what the client read per second
    # on average, and below 100 GB/s.
    reading = read * len(payload) / elapsed
    assert all(reading < rate < 1e11 for rate in rates), (reading, rates)
