"""Acknowledgements end to end: a real hub behind a real websockets server, and real
websockets clients that speak ``wsfanout.v1`` by hand (docs/protocol.md,
"Acknowledgements"), so that each test says exactly what the client sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data, Subprotocol

from harness.polling import until
from wsfanout import SUBPROTOCOL, ConfigError, Hub, Policy, Subscriber, select_subprotocol
from wsfanout.lowlevel import window
from wsfanout.metrics import HubCollector
from wsfanout.policies import Adaptive, ConflateByKey, DropOldest

GUARD = 10.0
V1 = Subprotocol(SUBPROTOCOL)
PACED = ConflateByKey() | Adaptive()
REQUEST = '{"type":"ack-request","interval":0.05}'


class Site:
    """A hub behind a websockets server: ``Hub.serve`` for every connection, with the
    policy of its path; what reaches the application's ``on_message`` is kept."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.uri = ""
        self.policies: dict[str, Policy] = {}
        self.joined: dict[str, asyncio.Future[Subscriber]] = {}
        self.heard: list[tuple[str, Data]] = []

    def route(self, path: str, policy: Policy) -> asyncio.Future[Subscriber]:
        self.policies[path] = policy
        joined = self.joined[path] = asyncio.get_running_loop().create_future()
        return joined

    async def handler(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        path = websocket.request.path
        joined = self.joined[path]

        def attached() -> None:
            for subscriber in self.hub.subscribers:
                if subscriber.websocket is websocket and not joined.done():
                    joined.set_result(subscriber)

        async def heard(subscriber: Subscriber, message: Data) -> None:
            self.heard.append((path, message))

        asyncio.get_running_loop().call_soon(attached)
        await self.hub.serve(websocket, policy=self.policies[path], on_message=heard)


@pytest.fixture
async def site(loop_guard: None) -> AsyncIterator[Site]:
    site = Site(Hub(close_timeout=0.5))
    async with serve(site.handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as server:
        site.uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield site
        finally:
            await site.hub.aclose(timeout=1.0)


async def join(
    site: Site, path: str, policy: Policy, *, v1: bool = True
) -> tuple[ClientConnection, Subscriber]:
    joined = site.route(path, policy)
    protocols = [V1] if v1 else None
    client = await connect(site.uri + path, subprotocols=protocols, compression=None)
    async with asyncio.timeout(GUARD):
        return client, await joined


def indices_in(frames: list[Data]) -> list[int]:
    """The numbers of the messages in ``frames`` (batches split at their lines)."""
    return [int(line[:4]) for frame in frames for line in payload_of(frame).split("\n")]


def payload_of(frame: Data) -> str:
    assert isinstance(frame, str)
    return frame.split("\n", 1)[1]


async def test_a_client_is_held_to_its_window_until_it_acknowledges_and_gets_it_all(
    site: Site,
) -> None:
    client, subscriber = await join(site, "/paced", PACED)
    async with asyncio.timeout(GUARD):
        assert await client.recv() == REQUEST  # the first frame of the connection
        await client.send('{"type":"ack","n":1}')
    await until(lambda: subscriber.stats().unacked is not None)
    # 200 messages of 1 kB, each its own key: nothing conflates, the window holds.
    for index in range(200):
        site.hub.publish(f"{index:04d}" + "x" * 996, key=str(index))
    stats = subscriber.stats()
    assert stats.queued_messages > 0
    assert stats.unacked is not None
    # Written while at most a window was untaken: a window, and the frame that crossed it.
    assert window(None) < stats.unacked <= window(None) + 1024
    # The operator sees it, per policy name.
    assert site.hub.monitor.policies()["custom"].unacked == stats.unacked
    families = {family.name: family for family in HubCollector(site.hub).collect()}
    (sample,) = families["wsfanout_unacked_bytes"].samples
    assert (sample.labels, sample.value) == ({"policy": "custom"}, stats.unacked)
    frames: list[Data] = []
    async with asyncio.timeout(GUARD):
        while len(frames) < stats.frames:
            frames.append(await client.recv())
        # Nothing more comes until it acknowledges: take each frame, say so, and more
        # comes, until all 200 have.
        while len(indices_in(frames)) < 200:
            await client.send(json.dumps({"type": "ack", "n": 1 + len(frames)}))
            frames.append(await client.recv())
        await client.send(json.dumps({"type": "ack", "n": 1 + len(frames)}))
    assert indices_in(frames) == list(range(200))
    assert site.heard == []  # acknowledgements never reach the application
    await until(lambda: subscriber.stats().unacked == 0)
    await client.close()


async def test_a_client_that_does_not_acknowledge_is_paced_as_before(site: Site) -> None:
    client, subscriber = await join(site, "/silent", PACED)
    for index in range(200):
        site.hub.publish(f"{index:04d}" + "x" * 996, key=str(index))
    frames: list[Data] = []
    async with asyncio.timeout(GUARD):
        assert await client.recv() == REQUEST
        while len(indices_in(frames)) < 200:
            frames.append(await client.recv())
    assert indices_in(frames) == list(range(200))
    assert subscriber.stats().unacked is None
    await client.close()


async def test_a_malformed_acknowledgement_closes_that_client_alone_naming_it(
    site: Site,
) -> None:
    bad, _ = await join(site, "/bad", PACED)
    good, _ = await join(site, "/good", DropOldest())
    await bad.send('{"type":"ack","n":-3}')
    async with asyncio.timeout(GUARD):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await bad.recv()
    assert (bad.close_code, bad.close_reason) == (1008, "ack n=-3 is not a whole number >= 0")
    site.hub.publish("still here")
    async with asyncio.timeout(GUARD):
        assert payload_of(await good.recv()) == "still here"
    await good.close()


async def test_only_v1_acknowledgements_are_the_protocol_s_and_other_messages_pass(
    site: Site,
) -> None:
    v1, _ = await join(site, "/v1", DropOldest())
    raw, _ = await join(site, "/raw", PACED, v1=False)
    await v1.send('{"type":"ack","n":0}')  # not asked, ignored: the protocol's all the same
    await v1.send('{"type":"hello"}')
    await raw.send('{"type":"ack","n":0}')  # a raw client's messages are the application's
    await until(lambda: len(site.heard) == 2)
    assert sorted(site.heard) == [("/raw", '{"type":"ack","n":0}'), ("/v1", '{"type":"hello"}')]
    site.hub.publish("first")
    async with asyncio.timeout(GUARD):
        assert await raw.recv() == "first"  # raw: never asked, nothing but the payload
    await v1.close()
    await raw.close()


async def test_a_change_of_policy_asks_and_stops_asking(site: Site) -> None:
    client, subscriber = await join(site, "/change", DropOldest())
    subscriber.policy = PACED
    subscriber.policy = DropOldest()
    site.hub.publish("after")
    async with asyncio.timeout(GUARD):
        assert await client.recv() == REQUEST
        assert await client.recv() == '{"type":"ack-request","interval":null}'
        assert payload_of(await client.recv()) == "after"
    assert subscriber.stats().unacked is None
    await client.close()


async def test_a_subscribe_block_that_hands_messages_over_gets_acknowledgements(
    site: Site,
) -> None:
    hub = site.hub
    joined: asyncio.Future[Subscriber] = asyncio.get_running_loop().create_future()
    heard: list[Data] = []

    async def handler(websocket: ServerConnection) -> None:
        async with hub.subscribe(websocket, policy=PACED, acks=True) as subscriber:
            joined.set_result(subscriber)
            with contextlib.suppress(ConnectionClosed):
                async for message in websocket:
                    if not subscriber.hear(message):
                        heard.append(message)

    async def silent(websocket: ServerConnection) -> None:
        async with hub.subscribe(websocket, policy=PACED) as subscriber:
            assert subscriber.hear('{"type":"ack","n":0}')  # the protocol's, not asked
            with contextlib.suppress(ConnectionClosed):
                await websocket.wait_closed()

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", subprotocols=[V1]) as client:
            async with asyncio.timeout(GUARD):
                assert await client.recv() == REQUEST
                subscriber = await joined
                await client.send('{"type":"ack","n":1}')
                await client.send("hello")
            await until(lambda: subscriber.stats().unacked == 0 and heard == ["hello"])
    async with serve(silent, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", subprotocols=[V1]) as client:
            site.hub.publish("not asked")
            async with asyncio.timeout(GUARD):
                assert payload_of(await client.recv()) == "not asked"  # no request first


async def test_subscribe_refuses_an_acks_that_is_not_a_bool(site: Site) -> None:
    async def handler(websocket: ServerConnection) -> None:
        with pytest.raises(ConfigError, match=r"^acks='yes' must be True or False$"):
            async with site.hub.subscribe(websocket, acks="yes"):  # type: ignore[arg-type]
                pass

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            await client.wait_closed()
