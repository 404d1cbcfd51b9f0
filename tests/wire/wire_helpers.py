"""Helpers for tests/wire: a server running a hub, a raw client recording every byte.

The raw client does the opening handshake by hand, so the test controls exactly which
permessage-deflate parameters it offers, and then keeps whatever the server writes,
unparsed, for comparison with what websockets itself would have written.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfanout import Hub, Subscriber

TIMEOUT = 10.0
"""A guard against a hang, never a synchronisation: every wait ends on data or an event."""


class RawClient:
    """A WebSocket client that sends nothing after the handshake and records the bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.response = b""

    @classmethod
    async def connect(cls, port: int, offer: str | None, path: str = "/") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if offer is not None:
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        client.response = head
        return client

    async def read_exactly(self, count: int) -> bytes:
        """The next ``count`` bytes the server wrote."""
        data = await asyncio.wait_for(self.reader.readexactly(count), TIMEOUT)
        self.received += data
        return data

    async def read_to_eof(self) -> bytes:
        data = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        self.received += data
        return data

    def close(self) -> None:
        self.writer.close()


class HubServer:
    """A websockets server whose handler subscribes every connection to one hub."""

    def __init__(self, hub: Hub, server: Server) -> None:
        self.hub = hub
        self.server = server
        self.joined: asyncio.Queue[Subscriber] = asyncio.Queue()

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def next_subscriber(self) -> Subscriber:
        return await asyncio.wait_for(self.joined.get(), TIMEOUT)


@contextlib.asynccontextmanager
async def hub_servers() -> AsyncIterator[Callable[..., Any]]:
    """Yield a function that starts a server with ``serve()`` keyword arguments; every
    server started is closed on exit."""
    started: list[HubServer] = []

    async def start(hub: Hub | None = None, **kwargs: Any) -> HubServer:
        the_hub = hub if hub is not None else Hub(close_timeout=1.0)
        holder: list[HubServer] = []

        async def handler(ws: ServerConnection) -> None:
            async with the_hub.subscribe(ws) as subscriber:
                await holder[0].joined.put(subscriber)
                await ws.wait_closed()

        server = await serve(handler, "127.0.0.1", 0, ping_interval=None, **kwargs)
        running = HubServer(the_hub, server)
        holder.append(running)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.server.close()
            await running.hub.aclose(timeout=1.0)
            await running.server.wait_closed()


def reference_protocol(subscriber: Subscriber) -> ServerProtocol:
    """A fresh websockets protocol with the extensions this subscriber negotiated, in
    the state the connection's own protocol was in before its first data frame."""
    protocol = ServerProtocol()
    protocol.state = State.OPEN
    extensions: list[Extension] = []
    for extension in subscriber.websocket.protocol.extensions:
        assert isinstance(extension, PerMessageDeflate)
        extensions.append(
            PerMessageDeflate(
                extension.remote_no_context_takeover,
                extension.local_no_context_takeover,
                extension.remote_max_window_bits,
                extension.local_max_window_bits,
                dict(extension.compress_settings),
            )
        )
    protocol.extensions = extensions
    return protocol


def websockets_bytes(protocol: ServerProtocol, messages: Sequence[str | bytes]) -> bytes:
    """What websockets writes for ``messages`` on a connection with ``protocol``."""
    for message in messages:
        if isinstance(message, str):
            protocol.send_text(message.encode())
        else:
            protocol.send_binary(message)
    return b"".join(protocol.data_to_send())


def parse_frames(data: bytes) -> list[Frame]:
    """Split unmasked server frames (for assertions on opcodes and order)."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        length = second & 0x7F
        start = pos + 2
        if length == 126:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif length == 127:
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            start = pos + 10
        end = start + length
        frames.append(
            Frame(
                Opcode(first & 0x0F),
                data[start:end],
                fin=bool(first & 0x80),
                rsv1=bool(first & 0x40),
            )
        )
        pos = end
    return frames


def c_loadgen() -> Path:
    """The C load generator, built by ``make loadgen``; the test is skipped only if no C
    compiler is there and none could be installed, and fails if the source does not build."""
    from benchmarks.scale import build_loadgen

    try:
        return build_loadgen()
    except SystemExit as exc:
        if shutil.which("cc") is None:
            pytest.skip(f"no C compiler: cc is missing and make could not install gcc ({exc})")
        raise AssertionError(str(exc)) from None
