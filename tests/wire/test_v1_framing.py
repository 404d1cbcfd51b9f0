"""The ``wsfanout.v1`` framing on real connections: a client that offers the
subprotocol gets every message with its header, in every encoding; one that does not
gets the payloads untouched, from the same hub at the same time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.typing import Subprotocol
from wire_helpers import hub_servers

from wsfanout import SUBPROTOCOL, Hub, select_subprotocol
from wsfanout.exceptions import ConfigError

Start = Callable[..., Any]

V1 = [Subprotocol(SUBPROTOCOL)]

SHARED = ServerPerMessageDeflateFactory(server_no_context_takeover=True)
TAKEOVER = ServerPerMessageDeflateFactory()


@pytest.fixture
async def hub_server() -> AsyncIterator[Start]:
    async with hub_servers() as start:
        yield start


def split(data: str | bytes) -> tuple[dict[str, Any], str | bytes]:
    if isinstance(data, str):
        header, _, body = data.partition("\n")
        return json.loads(header), body
    raw_header, _, raw_body = data.partition(b"\n")
    return json.loads(raw_header), raw_body


async def receive(ws: ClientConnection, count: int) -> list[str | bytes]:
    return [await asyncio.wait_for(ws.recv(), 10) for _ in range(count)]


@pytest.mark.parametrize(
    ("extensions", "compression"),
    [(None, None), ([SHARED], "deflate"), ([TAKEOVER], "deflate")],
    ids=["plain", "shared-deflate", "context-takeover"],
)
async def test_a_v1_client_reads_each_message_after_its_header_in_every_encoding(
    hub_server: Start, extensions: list[Any] | None, compression: str | None
) -> None:
    running = await hub_server(subprotocols=V1, compression=None, extensions=extensions)
    url = f"ws://127.0.0.1:{running.port}/"
    async with connect(url, subprotocols=V1, compression=compression) as ws:
        subscriber = await running.next_subscriber()
        assert ws.subprotocol == SUBPROTOCOL
        hub: Hub = running.hub
        hub.publish("p1", topic="prices", key="EURUSD")
        hub.publish(b"\x00\n\x01", topic="news")
        hub.publish("p2", topic="prices")
        hub.publish("all")
        subscriber.send("only you")
        framed = [split(data) for data in await receive(ws, 5)]
    epoch = framed[0][0]["e"]
    assert isinstance(epoch, str)
    assert epoch
    assert framed == [
        ({"o": 1, "e": epoch, "t": "prices", "k": "EURUSD"}, "p1"),
        ({"o": 1, "e": framed[1][0]["e"], "t": "news"}, b"\x00\n\x01"),
        ({"o": 2, "e": epoch, "t": "prices"}, "p2"),
        ({"o": 1, "e": framed[3][0]["e"]}, "all"),
        ({}, "only you"),
    ]


async def test_a_raw_client_beside_a_v1_client_gets_the_payloads_untouched(
    hub_server: Start,
) -> None:
    running = await hub_server(select_subprotocol=select_subprotocol, compression=None)
    url = f"ws://127.0.0.1:{running.port}/"
    async with connect(url, subprotocols=V1) as framed, connect(url) as raw:
        await running.next_subscriber()
        await running.next_subscriber()
        assert raw.subprotocol is None
        for n in range(3):
            running.hub.publish(f"m{n}", topic="t")
        assert await receive(raw, 3) == ["m0", "m1", "m2"]
        offsets = [split(data)[0]["o"] for data in await receive(framed, 3)]
        assert offsets == [1, 2, 3]


async def test_offsets_go_on_while_nobody_listens(hub_server: Start) -> None:
    running = await hub_server(subprotocols=V1, compression=None)
    assert running.hub.publish("unheard", topic="t") == 0
    async with connect(f"ws://127.0.0.1:{running.port}/", subprotocols=V1) as ws:
        await running.next_subscriber()
        running.hub.publish("heard", topic="t")
        (data,) = await receive(ws, 1)
    assert split(data) == ({"o": 2, "e": split(data)[0]["e"], "t": "t"}, "heard")


async def test_an_unknown_framing_is_refused_naming_it(hub_server: Start) -> None:
    hub = Hub(close_timeout=1.0)
    errors: list[BaseException] = []

    async def handler(ws: Any) -> None:
        try:
            await hub.serve(ws, framing="v2")
        except ConfigError as error:
            errors.append(error)

    from websockets.asyncio.server import serve

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.wait_closed()
    assert [str(error) for error in errors] == [
        "framing='v2' is not a framing (expected one of ('raw', 'v1'))"
    ]
    await hub.aclose()
