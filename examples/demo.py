"""A small crowd on one machine: three fast clients and one that stops reading.

Run with ``make demo``. The server publishes a tick every millisecond for three
seconds. Every client has the same policy, which keeps at most 64 queued messages,
drops the oldest past that, and closes a client that has missed messages for a second:
the stalled client holds a bounded queue and is closed, while the fast clients receive
every tick, in order.
"""

from __future__ import annotations

import asyncio
import json
import socket

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsfanout import Hub, Subscriber
from wsfanout.policies import Disconnect, DropOldest

DURATION = 3.0
INTERVAL = 0.001
PAYLOAD = "x" * 512


async def fast_client(uri: str, name: str, received: dict[str, list[int]]) -> None:
    ticks = received.setdefault(name, [])
    async with connect(f"{uri}/{name}", compression=None) as ws:
        try:
            async for message in ws:
                ticks.append(json.loads(message)["tick"])
        except ConnectionClosed:
            pass


async def stalled_client(uri: str) -> ClientConnection:
    """Connect with a tiny receive buffer and never read."""
    host, port = uri.removeprefix("ws://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    ws = await connect(f"{uri}/stalled", sock=sock, compression=None, max_queue=1)
    return ws


def name_of(subscriber: Subscriber) -> str:
    request = subscriber.websocket.request
    return request.path.strip("/") if request is not None else "?"


async def main() -> None:
    hub = Hub(close_timeout=1.0)
    everyone_joined = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        # Keep the kernel from hiding a slow client behind megabytes of loopback buffer.
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        policy = DropOldest(max_messages=64) | Disconnect(max_lag=1.0)
        async with hub.subscribe(ws, policy=policy):
            if len(hub) == 4:
                everyone_joined.set()
            try:
                async for _ in ws:  # keep reading so close frames are processed
                    pass
            except ConnectionClosed:  # the stalled client is aborted: no close frame
                pass

    received: dict[str, list[int]] = {}
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        uri = f"ws://127.0.0.1:{port}"
        readers = [asyncio.create_task(fast_client(uri, f"fast-{i}", received)) for i in range(3)]
        stalled = await stalled_client(uri)
        await everyone_joined.wait()
        subscribers = sorted(hub.subscribers, key=name_of)
        published = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + DURATION
        while loop.time() < end:
            hub.publish(json.dumps({"tick": published, "pad": PAYLOAD}))
            published += 1
            await asyncio.sleep(INTERVAL)
        print(f"published {published} ticks of {len(PAYLOAD) + 20} bytes in {DURATION:.0f} s\n")
        print(f"{'subscriber':<12}{'sent':>8}{'dropped':>9}{'peak queue':>12}  closed because")
        for sub in subscribers:
            stats = sub.stats()
            name = name_of(sub)
            why = stats.close.cause if stats.close else "-"
            print(f"{name:<12}{stats.sent:>8}{stats.dropped:>9}{stats.peak_messages:>12}  {why}")
        await hub.aclose(code=1001)
        await asyncio.gather(*readers)
        stalled.transport.abort()  # it never reads, so it cannot see the server is gone
        await stalled.wait_closed()
    print()
    for name, ticks in sorted(received.items()):
        in_order = ticks == list(range(len(ticks)))
        print(f"{name} received {len(ticks)} of {published} ticks, in order: {in_order}")


if __name__ == "__main__":
    asyncio.run(main())
