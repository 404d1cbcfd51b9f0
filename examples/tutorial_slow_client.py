"""A client that reads ten messages per second: the tutorial's slow subscriber.

Run ``python examples/tutorial_slow_client.py`` while examples/tutorial_server.py runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def read_slowly(host: str, port: int, pause: float = 0.1, limit: int | None = None) -> None:
    """Print one message every ``pause`` seconds, ``limit`` messages at most."""
    # On loopback nothing is slow but us: a small receive buffer, set before connecting,
    # makes this client slow as a bad network would. Without it, the socket and
    # websockets would first take hundreds of kilobytes of prices into this process.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    async with connect(f"ws://{host}:{port}/slow", sock=sock, max_queue=1) as websocket:
        try:
            count = 0
            async for message in websocket:
                print(message)
                count += 1
                if count == limit:
                    break
                await asyncio.sleep(pause)
        except ConnectionClosed as closed:
            print(f"connection closed: {closed}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(read_slowly("localhost", int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
