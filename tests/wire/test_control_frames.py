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

from wsfanout import SUBPROTOCOL, Hub, select_subprotocol
from wsfanout.policies import DropOldest, Notify, Throttle

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


@pytest.mark.parametrize("compression", [None, "deflate"])
@pytest.mark.parametrize("framing", ["raw", "v1"])
async def test_a_gap_notice_is_the_stages_format_raw_and_the_protocols_json_in_v1(
    hub_server: Start, framing: str, compression: str | None
) -> None:
    # Behind the throttle, a queue of one: the second message is evicted by the third.
    hub = Hub(
        close_timeout=1.0,
        policy=DropOldest(max_messages=1) | Throttle(rate=50.0) | Notify(format="json-binary"),
    )
    running = await hub_server(hub, select_subprotocol=select_subprotocol, compression=compression)
    offer = [Subprotocol(SUBPROTOCOL)] if framing == "v1" else None
    url = f"ws://127.0.0.1:{running.port}/"
    async with connect(url, subprotocols=offer, compression=compression) as ws:
        await running.next_subscriber()
        for n in range(3):
            running.hub.publish(f"m{n}", topic="t")
        received = [await asyncio.wait_for(ws.recv(), 10) for _ in range(3)]
    notice = received[1]
    if framing == "raw":
        assert received[0::2] == ["m0", "m2"]
        assert isinstance(notice, bytes), "json-binary: a Binary frame"
    else:
        assert [str(frame).split("\n", 1)[1] for frame in received[0::2]] == ["m0", "m2"]
        assert isinstance(notice, str), "wsfanout.v1: the protocol's JSON, as Text"
    value = json.loads(notice)
    assert (value["type"], value["t"], value["ranges"], value["reasons"]) == (
        "gap",
        "t",
        [[2, 2]],
        {"dropped_oldest": 1},
    )
