"""The server's side of one ``wsfanout.v1`` connection in the acknowledgement tests: it
numbers the frames it sends, records each ``ack`` it reads, and checks their pacing.

Timing is measured on the server's clock (the test's event loop), and two facts need no
clock shared with the client:

- an ack counts frames the client took, and it took frame ``k`` after the server began
  sending it: an ack of ``n`` was sent no earlier than ``sent_at[n]``;
- two acks are sent at least ``interval`` apart, and an ack arrives after it was sent:
  ack ``j + 1`` arrives no earlier than ``sent_at[n_j] + interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

GUARD = 10.0
"""Seconds after which waiting for an ack is a hang."""

Ack = tuple[float, int]
"""An ack as the server read it: (its loop time, ``n``)."""


def request(interval: Any) -> str:
    """An ``ack-request`` control frame."""
    return json.dumps({"type": "ack-request", "interval": interval}, separators=(",", ":"))


class AckPeer:
    """Send frames with :meth:`send`; run :meth:`read` as the connection's reader."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.sent_at: list[float] = [0.0]
        """``sent_at[k]``: when frame ``k`` (from 1) began to be sent."""
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.texts: list[str] = []
        """Each ack as the client wrote it."""
        self.other: list[str | bytes] = []
        """What the client sent that is not an ack."""

    @property
    def sent(self) -> int:
        return len(self.sent_at) - 1

    async def send(self, *frames: str) -> None:
        loop = asyncio.get_running_loop()
        for frame in frames:
            self.sent_at.append(loop.time())
            await self.ws.send(frame)

    async def ack(self) -> Ack:
        """The next ack the client sends; a hang past :data:`GUARD` fails."""
        async with asyncio.timeout(GUARD):
            return await self.acks.get()

    async def ack_of(self, n: int) -> list[Ack]:
        """Every ack up to the first that counts ``n`` frames."""
        got = [await self.ack()]
        while got[-1][1] < n:
            got.append(await self.ack())
        return got

    async def read(self) -> None:
        """Read what the client sends until the connection closes."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                value = json.loads(message) if isinstance(message, str) else None
                if isinstance(value, dict) and value.get("type") == "ack":
                    assert isinstance(message, str)
                    self.texts.append(message)
                    self.acks.put_nowait((loop.time(), value["n"]))
                else:
                    self.other.append(message)

    def assert_paced(self, acks: list[Ack], interval: float, tolerance: float) -> None:
        """Each ack counts no more than was sent, counts never go down, and each ack
        arrived at least ``interval`` (less ``tolerance``: the client's clock and
        rounding) after the frame the one before it counted began to be sent."""
        for (_, before), (arrived, n) in itertools.pairwise(acks):
            assert before <= n
            assert arrived - self.sent_at[before] >= interval - tolerance, (before, n)
        assert all(n <= self.sent for _, n in acks)
