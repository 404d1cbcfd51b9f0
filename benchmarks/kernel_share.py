"""What the server holds for one stalled client, kernel included, with default socket options.

Issue 11's measurement, as a new user would make it: the README's server (a ``Hub``
behind websockets' ``serve()`` with its defaults) on 127.0.0.1, one raw TCP client that
does the opening handshake and stops reading, 1 KiB messages published one per loop
iteration. Prints, with the hub's default ``TCP_NOTSENT_LOWAT`` and with it off:

- under ``DropOldest(max_messages=64) | Disconnect(max_lag=2.0)``, the most the server
  held for the client (queue + write buffer + what the kernel has not sent) until
  1,000 messages were dropped, the same at the end with the kernel's whole send queue
  (unacknowledged bytes too), and how many messages were counted as sent;
- under ``SkipToLatest()``, how many stale frames the client reads, once it resumes,
  before the newest message (stalled until 3,000 were skipped).

Linux only (it reads ``SIOCOUTQ``)::

    .venv/bin/python -m benchmarks.kernel_share
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from websockets.asyncio.server import ServerConnection, serve

from wsfanout import Hub, Policy, Subscriber
from wsfanout._shell.hub import DEFAULT_NOTSENT_LOWAT
from wsfanout._shell.sockets import kernel_unsent, send_queue
from wsfanout.policies import Disconnect, DropOldest, SkipToLatest

SIZE = 1024
README_POLICY = DropOldest(max_messages=64) | Disconnect(max_lag=2.0)
T = TypeVar("T")


def numbered(index: int) -> str:
    head = f"{index:07d}|"
    return head + "x" * (SIZE - len(head))


class RawClient:
    """A WebSocket client on a plain socket (default options) that reads only when told
    to; tests/integration/test_kernel_bound.py uses it too."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionError("the server closed during the handshake")
            client.buffer += chunk
        head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"the server refused the upgrade: {head[:80]!r}")
        return client

    async def read_until(self, wanted: Callable[[bytes], bool]) -> list[bytes]:
        """Read frames until one whose payload satisfies ``wanted``; return their payloads."""
        loop = asyncio.get_running_loop()
        payloads: list[bytes] = []
        while True:
            while (frame := self._take()) is not None:
                payloads.append(frame)
                if wanted(frame):
                    return payloads
            chunk = await loop.sock_recv(self.sock, 1 << 16)
            if not chunk:
                raise ConnectionError(f"the connection closed after {len(payloads)} frames")
            self.buffer += chunk

    def _take(self) -> bytes | None:
        data = self.buffer
        if len(data) < 2:
            return None
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + length:
            return None
        self.buffer = data[start + length :]
        return data[start : start + length]

    def close(self) -> None:
        self.sock.close()


async def one_client(
    hub: Hub, policy: Policy, run: Callable[[Hub, Subscriber, RawClient], Awaitable[T]]
) -> T:
    """Start the README's server with ``policy``, connect one raw client, ``run`` it."""
    joined: asyncio.Queue[Subscriber] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        def found() -> None:
            for subscriber in hub.subscribers:
                if subscriber.websocket is websocket:
                    joined.put_nowait(subscriber)

        asyncio.get_running_loop().call_soon(found)
        await hub.serve(websocket, policy=policy)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await RawClient.connect(port)
        try:
            subscriber = await joined.get()
            return await run(hub, subscriber, client)
        finally:
            client.close()
            await hub.aclose(timeout=0.5)


def held(subscriber: Subscriber, kernel: Callable[[object], int | None] = kernel_unsent) -> int:
    """Queue + write buffer + what the kernel has not sent (``kernel_unsent``), or its
    whole send queue, sent but unacknowledged bytes included (``send_queue``)."""
    transport = subscriber.websocket.transport
    in_kernel = kernel(transport.get_extra_info("socket")) or 0
    return subscriber.stats().queued_bytes + transport.get_write_buffer_size() + in_kernel


async def stall(hub: Hub, subscriber: Subscriber, dropped: int) -> int:
    """Publish until ``dropped`` messages were lost (or the subscriber closed); return the
    most the server held for it meanwhile."""
    peak = index = 0
    while subscriber.stats().dropped < dropped and not subscriber.closed and index < 50_000:
        hub.publish(numbered(index))
        index += 1
        peak = max(peak, held(subscriber))
        await asyncio.sleep(0)  # a yield, as a publisher awaiting its source does
    return peak


async def bound(hub: Hub, subscriber: Subscriber, client: RawClient) -> tuple[int, int, int]:
    peak = await stall(hub, subscriber, 1000)
    return peak, held(subscriber, send_queue), subscriber.stats().sent


async def stale(hub: Hub, subscriber: Subscriber, client: RawClient) -> int:
    await stall(hub, subscriber, 3000)
    newest = "newest".ljust(SIZE, "!")
    hub.publish(newest)
    frames = await client.read_until(lambda payload: payload == newest.encode())
    return len(frames) - 1


HEADER = (
    "| hub | README policy: peak held (queue + buffer + kernel unsent) | at the end, with "
    "the kernel's whole send queue | counted sent | SkipToLatest: stale frames read |"
)


async def main() -> None:
    high = 32768  # websockets' default write_limit
    limit = 64 * SIZE + high + SIZE + 4 + DEFAULT_NOTSENT_LOWAT
    print(f"declared: bound 64 KiB + write limit 32 KiB + a frame + low-water mark = {limit:,} B")
    print(HEADER)
    print("|---|---|---|---|---|")
    for name, lowat in (("Hub() (notsent_lowat=16384)", True), ("Hub(notsent_lowat=None)", False)):
        hub = Hub() if lowat else Hub(notsent_lowat=None)
        peak, end, sent = await one_client(hub, README_POLICY, bound)
        hub = Hub() if lowat else Hub(notsent_lowat=None)
        frames = await one_client(hub, SkipToLatest(), stale)
        print(f"| {name} | {peak:,} B | {end:,} B | {sent:,} | {frames:,} |")


if __name__ == "__main__":
    asyncio.run(main())
