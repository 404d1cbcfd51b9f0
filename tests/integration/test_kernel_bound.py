"""The kernel's share of a stalled client, bounded on a server set up as the README shows.

A raw TCP client on 127.0.0.1, with default socket options, does the opening handshake
and stops reading: its receive window closes, and whatever the server accepted for it
stays in the server's kernel, in the transport's write buffer and in the queue. The
hub's default ``TCP_NOTSENT_LOWAT`` keeps the kernel's part near the low-water mark, so
the policy sees the stall and its bounds hold. The same measurements with the option
off show what the kernel would hold (megabytes), so the checks can fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.kernel_share import RawClient
from wsfanout import Hub, Policy, Subscriber
from wsfanout._shell.hub import DEFAULT_NOTSENT_LOWAT
from wsfanout._shell.sockets import kernel_unsent, send_queue
from wsfanout.files import load_policy
from wsfanout.policies import Disconnect, DropOldest, SkipToLatest

GUARD = 20.0
"""Generous upper bound on a test's duration; it only stops a hung test."""

SIZE = 1024
FRAME = SIZE + 4  # a 1 KiB text frame's header is 4 bytes
SEGMENT = 65536
"""What the kernel may accept past the low-water mark: it fills the segment it is
building before it refuses more (``gso_max_size``, 64 KiB; about 50 KiB measured)."""


def numbered(index: int, size: int = SIZE) -> str:
    head = f"{index:07d}|"
    return head + "x" * (size - len(head))


@attrs.frozen
class Held:
    """What the server holds for one subscriber, in bytes."""

    queued: int
    """Payload bytes in its queue."""
    buffered: int
    """Its transport's write buffer."""
    unsent: int
    """What its kernel has not sent (SIOCOUTQNSD)."""
    send_queue: int
    """Its kernel's whole send queue (SIOCOUTQ): unsent, and sent but not yet
    acknowledged, which a client whose window just closed acknowledges soon after."""

    @property
    def total(self) -> int:
        """Queue, write buffer and kernel unsent: what the declared bound covers."""
        return self.queued + self.buffered + self.unsent


class Server:
    """The README's server: a hub, websockets' serve() with its defaults, one policy."""

    def __init__(self, hub: Hub, policy: Policy) -> None:
        self.hub = hub
        self.policy = policy
        self.connections: list[ServerConnection] = []
        self.joined: asyncio.Queue[Subscriber] = asyncio.Queue()

    async def handler(self, websocket: ServerConnection) -> None:
        self.connections.append(websocket)
        asyncio.get_running_loop().call_soon(self._joined, websocket)
        await self.hub.serve(websocket, policy=self.policy)

    def _joined(self, websocket: ServerConnection) -> None:
        for subscriber in self.hub.subscribers:
            if subscriber.websocket is websocket:
                self.joined.put_nowait(subscriber)

    def held(self, subscriber: Subscriber) -> Held:
        """What the server holds for one subscriber now."""
        transport = subscriber.websocket.transport
        sock = transport.get_extra_info("socket")
        unsent, queue = kernel_unsent(sock), send_queue(sock)
        assert unsent is not None, "this platform does not report the kernel's unsent bytes"
        assert queue is not None, "this platform does not report the kernel's send queue"
        return Held(
            subscriber.stats().queued_bytes, transport.get_write_buffer_size(), unsent, queue
        )


Start = Callable[..., Awaitable[tuple[Server, RawClient]]]
"""``await start(policy, hub=None)``: a README-shaped server and a raw client joined to it."""


@pytest.fixture
async def serving(loop_guard: None) -> AsyncIterator[Start]:
    """Start README-shaped servers on 127.0.0.1, each with one raw client."""
    started: list[tuple[Server, WsServer, RawClient]] = []

    async def start(policy: Policy, *, hub: Hub | None = None) -> tuple[Server, RawClient]:
        server = Server(Hub() if hub is None else hub, policy)
        ws_server = await serve(server.handler, "127.0.0.1", 0)
        port = ws_server.sockets[0].getsockname()[1]
        client = await RawClient.connect(port)
        started.append((server, ws_server, client))
        return server, client

    yield start
    for server, ws_server, client in started:
        client.close()
        await server.hub.aclose(timeout=0.5)
        ws_server.close()
        await ws_server.wait_closed()


README_POLICY = DropOldest(max_messages=64) | Disconnect(max_lag=2.0)


async def stall(
    server: Server, subscriber: Subscriber, until: Callable[[], bool], what: str
) -> int:
    """Publish 1 KiB messages, one per loop iteration as a real publisher yields, until
    ``until()`` holds for the stalled subscriber; return the most the server held for it
    (queue, write buffer, kernel unsent) at any point meanwhile."""
    peak = 0
    index = 0
    while not until():
        server.hub.publish(numbered(index))
        index += 1
        peak = max(peak, server.held(subscriber).total)
        await asyncio.sleep(0)  # a yield, as a publisher awaiting its source does
        assert index < 20_000, f"not {what} after {index} messages"
    return peak


def dropped(subscriber: Subscriber, count: int) -> Callable[[], bool]:
    return lambda: subscriber.stats().dropped >= count


async def test_a_stalled_client_costs_the_bound_plus_the_write_limit_and_the_low_water_mark(
    serving: Start,
) -> None:
    async with asyncio.timeout(GUARD):
        server, _client = await serving(README_POLICY)
        subscriber = await server.joined.get()
        peak = await stall(server, subscriber, dropped(subscriber, 1000), "1000 dropped")
        _, high = subscriber.websocket.transport.get_write_buffer_limits()
        bound = 64 * SIZE + high + FRAME + DEFAULT_NOTSENT_LOWAT + SEGMENT
        assert peak <= bound, f"held {peak} bytes, more than {bound}"
        held = server.held(subscriber)
        assert held.queued == 64 * SIZE  # the policy holds its bound, and sees the stall
        assert held.buffered > high  # the write buffer filled: the kernel stopped taking
        assert held.unsent <= DEFAULT_NOTSENT_LOWAT + SEGMENT

        # Once the client has acknowledged what reached it, the kernel's whole send queue
        # is what it has not sent: everything the server holds is within the bound.
        def acknowledged() -> bool:
            held = server.held(subscriber)
            return held.send_queue == held.unsent

        peak = max(peak, await stall(server, subscriber, acknowledged, "acknowledged"))
        held = server.held(subscriber)
        assert peak <= bound, f"held {peak} bytes, more than {bound}"
        assert held.queued + held.buffered + held.send_queue <= bound, held
        # What was counted as sent is what the kernel and the client's buffer took: a
        # few hundred messages, not thousands.
        assert subscriber.stats().sent < 400, subscriber.stats()


async def test_without_the_low_water_mark_the_kernel_holds_megabytes(
    serving: Start,
) -> None:
    # What the measurement above would show without the hub's setting: the check fails.
    async with asyncio.timeout(GUARD):
        server, _client = await serving(README_POLICY, hub=Hub(notsent_lowat=None))
        subscriber = await server.joined.get()
        await stall(server, subscriber, dropped(subscriber, 100), "100 dropped")
        held = server.held(subscriber)
        assert held.unsent > 1_000_000, held
        assert subscriber.stats().sent > 1000


async def test_the_readme_policy_cuts_a_stalled_client_once_it_lags_two_seconds(
    serving: Start,
) -> None:
    async with asyncio.timeout(GUARD):
        server, _client = await serving(README_POLICY)
        subscriber = await server.joined.get()
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while not subscriber.closed:
            server.hub.publish(numbered(index))
            index += 1
            await asyncio.sleep(0.001)  # about 1,000 messages a second, a steady source
        elapsed = loop.time() - start
        close = subscriber.stats().close
        assert close is not None
        assert close.cause.startswith("lag "), close
        assert 2.0 <= elapsed < 4.0, elapsed


async def test_a_skip_to_latest_client_that_resumes_reads_a_few_hundred_stale_frames(
    serving: Start,
) -> None:
    async with asyncio.timeout(GUARD):
        server, client = await serving(SkipToLatest())
        subscriber = await server.joined.get()
        await stall(server, subscriber, dropped(subscriber, 3000), "3000 dropped")
        newest = "newest".ljust(SIZE, "!")
        server.hub.publish(newest)
        frames = await client.read_until(lambda payload: payload == newest.encode())
        stale = len(frames) - 1
        assert stale <= 300, f"read {stale} stale frames before the newest"
        # What it read first is what the buffers took before the stall showed, in order,
        # skipping ahead where the queue kept only the latest; the newest replaced
        # whatever waited in the queue at the end.
        indices = [int(payload.split(b"|")[0]) for payload in frames[:-1]]
        assert indices == sorted(set(indices))


async def test_the_market_data_preset_cuts_a_stalled_client_at_its_lag_limit(
    serving: Start,
) -> None:
    # conflate-by-key | throttle 20/s | disconnect at 5 s of lag. Throttled to 20 frames
    # a second, a stalled client fills its buffers slowly: without the low-water mark the
    # kernel took 4 MiB of it and the client looked healthy for minutes.
    async with asyncio.timeout(GUARD):
        server, _client = await serving(load_policy("market-data"))
        subscriber = await server.joined.get()
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while not subscriber.closed:
            server.hub.publish(numbered(index, 4096), key=f"symbol-{index % 50}")
            index += 1
            await asyncio.sleep(0.005)  # 200 quotes a second over 50 symbols
        elapsed = loop.time() - start
        close = subscriber.stats().close
        assert close is not None
        assert close.cause.startswith("lag "), close
        assert elapsed < 10.0, elapsed
