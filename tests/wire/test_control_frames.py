"""Control frames on a real connection: written as they are in either framing, before
messages queued behind them, and counted as no message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol
from wire_helpers import hub_servers

from wsfanout import SUBPROTOCOL, select_subprotocol

Start = Callable[..., Any]


@pytest.fixture
async def hub_server() -> AsyncIterator[Start]:
    async with hub_servers() as start:
        yield start


@pytest.mark.parametrize("framing", ["raw", "v1"])
async def test_a_control_frame_arrives_as_sent_before_what_follows(
    hub_server: Start, framing: str
) -> None:
    running = await hub_server(select_subprotocol=select_subprotocol, compression=None)
    offer = [Subprotocol(SUBPROTOCOL)] if framing == "v1" else None
    url = f"ws://127.0.0.1:{running.port}/"
    async with connect(url, subprotocols=offer, compression=None) as ws:
        subscriber = await running.next_subscriber()
        link = subscriber._link  # the shell's side: control frames are not public API yet
        link.send_control('{"type":"gap","count":0}')
        running.hub.publish("after")
        received = [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)]
        stats = subscriber.stats()
    assert received[0] == '{"type":"gap","count":0}'
    assert json.loads(str(received[0])) == {"type": "gap", "count": 0}
    assert str(received[1]).endswith("after")
    assert (stats.offered, stats.sent, stats.frames) == (1, 1, 1)
