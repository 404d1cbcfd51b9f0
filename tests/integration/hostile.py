"""Hostile peers on real sockets with default options, and what the kernel holds for them.

A :class:`RawPeer` does the opening handshake by hand on a non-blocking socket and
then does only what its test says: flood pings, or never read again (its receive
window closes and stays closed while the socket stays open). :func:`server_side_queued`
reads ``/proc/net/tcp``: the bytes the kernel still holds in the send queues of a
port's connections, orphans included, which no transport can see.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from pathlib import Path

__all__ = [
    "RawPeer",
    "masked_frame",
    "server_side_queued",
    "sockstat",
]


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (FIN set, masked, as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class RawPeer:
    """A WebSocket client written by hand on a non-blocking socket with default options."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0

    @classmethod
    async def connect(cls, port: int, path: str = "/") -> RawPeer:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = await loop.sock_recv(sock, 1)  # byte by byte: nothing past the head
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {response!r}")
            response += chunk
        if not response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {response!r}")
        return cls(sock)

    @property
    def local_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)
        self.sent += len(data)

    async def flood_pings(self, total: int, payload: bytes = b"p" * 125) -> None:
        """Send pings (never reading a pong) until ``total`` bytes are sent."""
        chunk = masked_frame(0x9, payload) * (65536 // (len(payload) + 6))
        while self.sent < total:
            await self.send(chunk)

    def close(self) -> None:
        self.sock.close()


def _tcp_rows() -> list[list[str]]:
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(name)
        if path.exists():
            rows += [line.split() for line in path.read_text().splitlines()[1:]]
    return rows


def server_side_queued(port: int) -> tuple[int, int]:
    """(connections, bytes in their send queues) of the sockets whose local port is
    ``port``, listening socket excepted: a closed connection still listed is an orphan."""
    count = total = 0
    for row in _tcp_rows():
        local, state, queues = row[1], row[3], row[4]
        if int(local.rsplit(":", 1)[1], 16) != port or state == "0A":  # 0A: LISTEN
            continue
        count += 1
        total += int(queues.split(":")[0], 16)
    return count, total


def sockstat() -> dict[str, int]:
    """The TCP line of ``/proc/net/sockstat``: inuse, orphan, tw, alloc, mem (pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields), 2)}
    raise AssertionError("no TCP line in /proc/net/sockstat")
