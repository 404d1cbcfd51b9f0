"""Resuming after a reconnect, heartbeats and dead connections: a real websockets server
with a hub and history, and the Python client (``wsfanout.client``), on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from harness.polling import until
from wsfanout import SUBPROTOCOL, History, Hub, Position, select_subprotocol
from wsfanout.client import Client, Gap, Received
from wsfanout.policies import DropNewest, DropOldest, Throttle

GUARD = 10.0
"""Seconds after which a wait is a hang."""

V1 = [Subprotocol(SUBPROTOCOL)]
HISTORY = History()


class Server:
    """A hub behind a websockets server offering ``wsfanout.v1``; counts connections."""

    def __init__(self, hub: Hub, topics: list[str] | None) -> None:
        self.hub = hub
        self.topics = topics
        self.uri = ""
        self.connections = 0
        self._joined = asyncio.Condition()

    async def handler(self, websocket: ServerConnection) -> None:
        async with self._joined:
            self.connections += 1
            self._joined.notify_all()
        await self.hub.serve(websocket, topics=self.topics)

    async def wait_connections(self, count: int) -> None:
        async with asyncio.timeout(GUARD), self._joined:
            await self._joined.wait_for(lambda: self.connections >= count)

    async def wait_subscribers(self, count: int) -> None:
        await until(lambda: len(self.hub) >= count)

    async def wait_gone(self) -> None:
        await until(lambda: len(self.hub) == 0)

    async def wait_resumed(self, count: int) -> None:
        await until(lambda: self.hub.stats().resumed >= count)


@contextlib.asynccontextmanager
async def serving(
    history: History | None = HISTORY, topics: list[str] | None = None, **options: Any
) -> AsyncIterator[Server]:
    hub = Hub(history=history, close_timeout=1.0, **options)
    server = Server(hub, topics)
    async with serve(
        server.handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol
    ) as ws_server:
        server.uri = f"ws://127.0.0.1:{ws_server.sockets[0].getsockname()[1]}/"
        try:
            yield server
        finally:
            await hub.aclose()


async def events(client: Client, count: int) -> list[Received | Gap]:
    async with asyncio.timeout(GUARD):
        return [await client.recv() for _ in range(count)]


def payloads(items: list[Received | Gap]) -> list[str | bytes]:
    return [item.data for item in items if isinstance(item, Received)]


async def test_a_client_that_reconnects_gets_what_it_missed_once_in_order_then_live() -> None:
    async with serving(topics=["p"]) as server, Client(server.uri, min_delay=0.01) as client:
        connecting = asyncio.create_task(client.recv())
        await server.wait_subscribers(1)
        server.hub.publish("m1", topic="p")
        first = await asyncio.wait_for(connecting, GUARD)
        assert isinstance(first, Received)
        assert first.offset == 1
        await client.drop()  # the network fails under the client
        for n in range(2, 8):
            server.hub.publish(f"m{n}", topic="p")  # published while it is away
        got = await events(client, 6)
        await server.wait_resumed(1)
        server.hub.publish("m8", topic="p")
        got += await events(client, 1)
        stats = client.stats()
    assert payloads(got) == [f"m{n}" for n in range(2, 9)]
    assert [item.offset for item in got if isinstance(item, Received)] == list(range(2, 9))
    assert (stats.received, stats.lost, stats.gaps, stats.reconnects) == (8, 0, 0, 1)
    hub_stats = server.hub.stats()
    assert (hub_stats.resumed, hub_stats.replayed, hub_stats.history_missed) == (1, 6, 0)


async def test_what_history_no_longer_holds_is_reported_with_its_exact_range() -> None:
    async with serving(History(max_messages=3), topics=["p"]) as server:
        first = Client(server.uri)
        receiving = asyncio.create_task(first.recv())
        await server.wait_subscribers(1)
        server.hub.publish("m1", topic="p")
        await asyncio.wait_for(receiving, GUARD)
        where = first.positions()
        await first.close()
        await server.wait_gone()
        for n in range(2, 11):
            server.hub.publish(f"m{n}", topic="p")
        async with Client(server.uri, since=where) as client:
            got = await events(client, 4)
    gap = got[0]
    assert isinstance(gap, Gap)
    assert (gap.ranges, gap.count, gap.source, dict(gap.reasons)) == (
        ((2, 7),),
        6,
        "notice",
        {"history": 6},
    )
    assert payloads(got) == ["m8", "m9", "m10"]
    assert server.hub.stats().history_missed == 6 == client.stats().lost


async def test_a_hub_restarted_without_history_tells_the_client_its_epoch_changed() -> None:
    async with serving(topics=["p"]) as old:
        client = Client(old.uri)
        receiving = asyncio.create_task(client.recv())
        await old.wait_subscribers(1)
        old.hub.publish("before", topic="p")
        await asyncio.wait_for(receiving, GUARD)
        where = client.positions()
        await client.close()
    async with serving(topics=["p"]) as new:
        new.hub.publish("after", topic="p")
        async with Client(new.uri, since=where) as resumed:
            got = await events(resumed, 2)
    change = got[0]
    assert isinstance(change, Gap)
    assert (change.source, change.previous, change.count) == ("epoch", where[0], None)
    assert payloads(got) == ["after"]
    assert resumed.stats().epoch_changes == 1


async def test_the_replay_goes_through_the_subscribers_policy_and_holes_are_found() -> None:
    # Twenty messages replayed at once to a client under DropOldest(max_messages=4) and a
    # throttle: its queue keeps the newest, as for any burst, and the client finds each
    # message dropped as a hole in the offsets (this policy sends no notices).
    policy = DropOldest(max_messages=4) | Throttle(rate=200)
    async with serving(topics=["p"], policy=policy) as server:
        first = Client(server.uri)
        receiving = asyncio.create_task(first.recv())
        await server.wait_subscribers(1)
        server.hub.publish("start", topic="p")
        await asyncio.wait_for(receiving, GUARD)
        where = first.positions()
        await first.close()
        await server.wait_gone()
        for n in range(20):
            server.hub.publish(f"m{n}", topic="p")
        async with Client(server.uri, since=where) as client:
            got: list[Received | Gap] = []
            async with asyncio.timeout(GUARD):
                while not got or not isinstance(got[-1], Received) or got[-1].offset < 21:
                    got.append(await client.recv())
        dropped = server.hub.stats().dropped_oldest
    offsets = [item.offset for item in got if isinstance(item, Received)]
    lost = [
        o for item in got if isinstance(item, Gap) for a, b in item.ranges for o in range(a, b + 1)
    ]
    assert offsets == [2, 18, 19, 20, 21]  # the first at once, then the newest four
    assert sorted(offsets + lost) == list(range(2, 22))
    assert dropped == len(lost) == 15
    assert [item.source for item in got if isinstance(item, Gap)] == ["offsets"]


async def test_a_bad_since_closes_the_connection_with_1008_naming_it() -> None:
    async with serving(topics=["p"]) as server:
        async with connect(server.uri + "?since=p:e1:x", subprotocols=V1) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), GUARD)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008,
            "since='p:e1:x' has an offset that is not a number >= 0",
        )
        # Nothing else is affected: a good client is served as before.
        async with Client(server.uri) as client:
            receiving = asyncio.create_task(client.recv())
            await server.wait_subscribers(1)
            server.hub.publish("still fine", topic="p")
            assert (await asyncio.wait_for(receiving, GUARD)).data == "still fine"  # type: ignore[union-attr]


async def test_an_idle_v1_subscriber_gets_heartbeats_naming_its_last_offsets() -> None:
    async with serving(topics=["p"], heartbeat=0.05) as server:
        server.hub.publish("one", topic="p")
        server.hub.publish("other", topic="q")  # not its topic: not in its heartbeats
        async with connect(server.uri, subprotocols=V1) as ws:
            async with asyncio.timeout(GUARD):
                beat = json.loads(await ws.recv())
                again = json.loads(await ws.recv())
        async with connect(server.uri) as raw:  # raw framing: no control frames at all
            await server.wait_subscribers(1)
            server.hub.publish("two", topic="p")
            assert await asyncio.wait_for(raw.recv(), GUARD) == "two"
    assert beat["type"] == again["type"] == "heartbeat"
    assert list(beat["offsets"]) == ["p"]
    assert beat["offsets"]["p"][1] == 1


async def test_a_heartbeat_reveals_a_loss_at_the_tail_to_the_client() -> None:
    # DropNewest refuses what arrives while the throttle holds the queue: the tail of the
    # burst is lost silently (no Notify stage), and no later message shows it. Only the
    # heartbeat sent once the client has read the rest and gone idle does.
    policy = DropNewest(max_messages=2) | Throttle(rate=100)
    async with serving(topics=["p"], heartbeat=0.05, policy=policy) as server:
        async with Client(server.uri) as client:
            receiving = asyncio.create_task(client.recv())
            await server.wait_subscribers(1)
            server.hub.publish("first", topic="p")
            assert isinstance(await asyncio.wait_for(receiving, GUARD), Received)
            for n in range(10):
                server.hub.publish(f"m{n}", topic="p")
            got = await events(client, 3)
        dropped = server.hub.stats().dropped_newest
    assert [item.offset for item in got[:2]] == [2, 3]  # type: ignore[union-attr]
    gap = got[2]
    assert isinstance(gap, Gap)
    assert (gap.source, gap.ranges, gap.count) == ("heartbeat", ((4, 11),), 8)
    assert dropped == 8


async def test_a_connection_that_brings_nothing_is_given_up_and_replaced() -> None:
    async with serving(topics=["p"], heartbeat=None) as server:
        client = Client(server.uri, heartbeat_timeout=0.1, min_delay=0.01)
        receiving = asyncio.create_task(client.recv())
        await server.wait_connections(2)  # silent for 0.1 s: dead, so it reconnected
        server.hub.publish("alive", topic="p")
        await server.wait_subscribers(1)
        server.hub.publish("again", topic="p")
        first = await asyncio.wait_for(receiving, GUARD)
        await client.close()
    assert isinstance(first, Received)
    assert client.stats().timeouts >= 1
    assert client.stats().reconnects >= 1


async def test_positions_given_as_objects_or_text_resume_alike() -> None:
    async with serving(topics=["p"]) as server:
        for n in range(1, 4):
            server.hub.publish(f"m{n}", topic="p")
        async with connect(server.uri, subprotocols=V1) as probe:
            server.hub.publish("m4", topic="p")
            frame = await asyncio.wait_for(probe.recv(), GUARD)
            assert isinstance(frame, str)
            epoch = json.loads(frame.split("\n")[0])["e"]
        async with Client(server.uri, since=[Position("p", epoch, 2)]) as client:
            got = await events(client, 2)
    assert payloads(got) == ["m3", "m4"]


async def test_a_reconnect_storm_reads_history_once_per_starting_point() -> None:
    async with serving(topics=["p"]) as server:
        for n in range(1, 21):
            server.hub.publish(f"m{n}", topic="p")
        async with connect(server.uri, subprotocols=V1) as probe:
            server.hub.publish("m21", topic="p")
            frame = await asyncio.wait_for(probe.recv(), GUARD)
            assert isinstance(frame, str)
            epoch = json.loads(frame.split("\n")[0])["e"]
        starts = [5] * 150 + [15] * 50
        crowd = [
            await connect(f"{server.uri}?since=p:{epoch}:{start}", subprotocols=V1)
            for start in starts
        ]
        try:
            received: list[list[int]] = []
            for ws in crowd:
                offsets: list[int] = []
                async with asyncio.timeout(GUARD):
                    while not offsets or offsets[-1] < 21:
                        frame = await ws.recv()
                        assert isinstance(frame, str)
                        if "\n" in frame:  # a data frame; the resume frame has no line feed
                            offsets.append(json.loads(frame.split("\n")[0])["o"])
                received.append(offsets)
            stats = server.hub.stats()
        finally:
            for ws in crowd:
                await ws.close()
    assert received == [list(range(start + 1, 22)) for start in starts]
    assert (stats.resumed, stats.replayed, stats.history_reads) == (200, 150 * 16 + 50 * 6, 2)
