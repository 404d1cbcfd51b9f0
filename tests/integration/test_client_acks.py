"""Acknowledgements (docs/protocol.md, "Acknowledgements") from the Python client,
``wsfanout.client``, to a small real websockets server of the test's on 127.0.0.1 that
sends an ``ack-request``, data and control frames, and reads the ``ack`` frames back
(``harness.ack_peer``). The server and the client run on one event loop, so they share
its clock: the pacing bounds need no slack but float rounding."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from harness.ack_peer import GUARD, AckPeer, request
from harness.polling import until
from wsfanout import Hub, select_subprotocol
from wsfanout.client import Client, Gap, Received
from wsfanout.policies import Adaptive, ConflateByKey

EPSILON = 1e-6
"""Float rounding of loop times, far below any interval here."""

pytestmark = pytest.mark.usefixtures("loop_guard")

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLES = {
    json.loads(example)["type"]: example.strip()
    for example in re.findall(r"^```json\n(.*?)^```$", PROTOCOL.read_text(), re.M | re.S)
}
"""The protocol page's control frames, by type, exactly as the page writes them."""


def data(offset: int, payload: str, topic: str = "p", epoch: str = "E") -> str:
    header = json.dumps({"o": offset, "e": epoch, "t": topic}, separators=(",", ":"))
    return f"{header}\n{payload}"


def control(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))


class Site:
    """A websockets server offering ``wsfanout.v1``: each connection becomes a
    :class:`AckPeer` the test scripts, kept open until the client closes it."""

    def __init__(self) -> None:
        self.uri = ""
        self.peers: asyncio.Queue[AckPeer] = asyncio.Queue()

    async def handler(self, ws: ServerConnection) -> None:
        peer = AckPeer(ws)
        self.peers.put_nowait(peer)
        await peer.read()

    async def peer(self) -> AckPeer:
        async with asyncio.timeout(GUARD):
            return await self.peers.get()


class App:
    """The application: takes every event as soon as it comes, and says when it did."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: asyncio.Queue[tuple[float, Received | Gap]] = asyncio.Queue()
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async for event in self.client:
            self.events.put_nowait((loop.time(), event))

    async def received(self, count: int) -> list[tuple[float, Received | Gap]]:
        async with asyncio.timeout(GUARD):
            return [await self.events.get() for _ in range(count)]


@contextlib.asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[Site, Client, App]]:
    site = Site()
    async with serve(site.handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as ws:
        site.uri = f"ws://127.0.0.1:{ws.sockets[0].getsockname()[1]}/"
        client = Client(site.uri, **options)
        app = App(client)
        try:
            yield site, client, app
        finally:
            await client.close()
            async with asyncio.timeout(GUARD):
                await app.task


async def test_the_request_example_is_answered_as_the_ack_example_is_written() -> None:
    async with running() as (site, _, _):
        peer = await site.peer()
        await peer.send(EXAMPLES["ack-request"])
        assert (await peer.ack())[1] == 1
        assert peer.texts == [EXAMPLES["ack"].replace("1234", "1")]


async def test_acks_count_every_frame_taken_control_frames_and_the_request_included() -> None:
    async with running() as (site, client, app):
        peer = await site.peer()
        # Taken before the request: they count, since counting starts at the first frame.
        await peer.send(data(1, "m1"), control(type="heartbeat", offsets={"p": ["E", 1]}))
        await app.received(1)
        await peer.send(request(0.05))
        first = await peer.ack()
        assert first[1] == 3  # at once: no ack was sent before
        await peer.send(
            control(type="gap", t="p", e="E", ranges=[[2, 3]], count=2),
            data(4, "m4"),
            control(type="level", level=1, name="drop-oldest", **{"from": 0}),
            '{"b":[[5,"E","p"],[6,"E","p"]]}\nm5m6',  # a batch is one frame
            control(type="from-the-future"),
            data(7, "m7"),
        )
        await app.received(4)  # the gap, m4, the batch, m7
        acks = [first, *await peer.ack_of(9)]
        assert acks[-1][1] == 9
        peer.assert_paced(acks, 0.05, EPSILON)
    assert client.stats().acks == len(acks)
    assert client.stats().errors == 0
    assert peer.other == []


async def test_the_first_ack_goes_at_once_and_one_owed_waits_out_the_interval() -> None:
    async with running() as (site, _, app):
        peer = await site.peer()
        await peer.send(request(60))
        _, n = await peer.ack()  # well before 60 s: at once
        assert n == 1
        await peer.send(data(1, "m1"), data(2, "m2"))
        await app.received(2)
        # Owed, due 60 s after the first. A shorter interval brings the due time forward.
        await peer.send(request(0.2))
        later, n = await peer.ack()
        assert n == 4
        assert later - peer.sent_at[1] >= 0.2 - EPSILON
        assert peer.acks.empty()


async def test_the_owed_ack_is_sent_while_the_client_waits_for_frames() -> None:
    interval = 0.5
    async with running() as (site, client, app):
        peer = await site.peer()
        await peer.send(request(interval))
        first, _ = await peer.ack()
        await peer.send(data(1, "m1"), data(2, "m2"))
        (_, m1), (took, m2) = await app.received(2)
        assert isinstance(m1, Received)
        assert isinstance(m2, Received)
        # The first ack was sent after the request was: m2 was taken within the interval
        # of it, so the ack of m2 is owed, not due at once.
        assert took < peer.sent_at[1] + interval, "the machine is too slow for this test"
        # The server sends nothing more until it hears: the client, waiting in recv()
        # for a next frame, must send what it owes when the interval has passed.
        arrived, n = await peer.ack()
        assert n == 3
        assert arrived - peer.sent_at[1] >= interval - EPSILON
        # Not much later: the timer, not some later event, sent it (the slack is for a
        # loaded machine, a lot on 127.0.0.1 in one process).
        assert arrived - first < interval + 1.0
        await peer.send(data(3, "m3"))  # the connection is alive and well
        await app.received(1)
    assert client.stats().acks == 2


async def test_a_null_interval_stops_acks() -> None:
    interval = 0.05
    async with running() as (site, _, app):
        peer = await site.peer()
        await peer.send(request(interval))
        first, n = await peer.ack()
        assert n == 1
        await peer.send(request(None), data(1, "m1"))
        await app.received(1)
        # Let the interval pass, three times over, on the loop the client runs on: a
        # client that went on acknowledging would have sent the ack it owed (frames 2
        # and 3), its timer due before this one.
        await asyncio.sleep(first + 3 * interval - asyncio.get_running_loop().time())
        await peer.send(request(interval))
        _, n = await peer.ack()
        assert n == 4  # at once, and the first since the null: nothing was sent between


MALFORMED = [
    request("0.05"),
    request(0),
    request(-1),
    request(True),
    '{"type":"ack-request","interval":NaN}',
    '{"type":"ack-request","interval":Infinity}',
    control(type="ack-request"),
    request([0.05]),
]
"""Requests no server sends: each is an error, and changes nothing."""


async def test_malformed_requests_are_errors_and_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wsfanout.client")
    interval = 0.05
    async with running() as (site, client, app):
        peer = await site.peer()
        # Before any request: none of them starts acks.
        await peer.send(*MALFORMED, data(1, "m1"))
        await app.received(1)
        await peer.send(request(interval))
        _, n = await peer.ack()
        total = len(MALFORMED) + 2
        assert n == total  # the first ack: the malformed counted as frames taken
        # While acking: none of them stops acks.
        await peer.send(*MALFORMED, data(2, "m2"))
        await app.received(1)
        assert (await peer.ack_of(2 * total - 1))[-1][1] == 2 * total - 1
        assert client.stats().errors == 2 * len(MALFORMED)
    logged = [r.getMessage() for r in caplog.records if r.name == "wsfanout.client"]
    assert sum("interval='0.05' is not a number > 0" in line for line in logged) == 2
    for value in ("0", "-1", "True", "nan", "inf", "[0.05]"):
        assert sum(f"interval={value} is not a number > 0" in line for line in logged) == 2
    assert sum("ack-request has no interval" in line for line in logged) == 2


async def test_a_reconnection_counts_from_its_first_frame_again() -> None:
    async with running(min_delay=0.01, max_delay=0.02) as (site, client, app):
        first = await site.peer()
        await first.send(request(0.05), data(1, "m1"), data(2, "m2"))
        await app.received(2)
        assert (await first.ack_of(3))[-1][1] == 3
        await first.ws.close(1013, "too slow")
        second = await site.peer()
        # A new connection: no ack until this server asks, and the count starts over.
        await second.send(data(3, "m3"), request(0.05))
        await app.received(1)
        assert (await second.ack())[1] == 2
        await second.send(data(4, "m4"))
        await app.received(1)
        assert (await second.ack())[1] == 3
    assert client.stats().connections == 2


async def test_acks_leave_the_heartbeat_deadline_working() -> None:
    async with running(heartbeat_timeout=0.3, min_delay=0.01, max_delay=0.02) as (
        site,
        client,
        app,
    ):
        first = await site.peer()
        await first.send(request(0.1), data(1, "m1"))
        await app.received(1)
        assert (await first.ack_of(2))[-1][1] == 2
        # Then silence, though the connection is open: the client gives it up.
        second = await site.peer()
        await first.ws.wait_closed()
        assert first.ws.close_code == 4000
        assert first.ws.close_reason == "heartbeat timeout"
        await second.send(data(2, "m2"))
        await app.received(1)
        assert second.acks.empty()  # the new connection was not asked
    assert client.stats().timeouts >= 1


async def test_an_ack_on_a_closing_connection_is_its_end_not_an_error() -> None:
    async with running(min_delay=0.01, max_delay=0.02) as (site, client, app):
        first = await site.peer()
        # The request and the close arrive together: the ack goes to a closing connection.
        await first.send(request(0.05))
        await first.ws.close(1013, "too slow")
        second = await site.peer()
        await second.send(data(1, "m1"))
        await app.received(1)
    assert client.stats().connections == 2


async def test_against_a_hub_that_paces_to_acks_the_client_gets_it_all_and_owes_nothing() -> None:
    # The hub's side of issue 13: Adaptive holds what is queued while more than a window
    # is untaken, so a client that did not send the ack it owes while it waits would
    # wait for ever; the one that does gets all 200, and the hub sees nothing untaken.
    hub = Hub(close_timeout=0.5)

    async def handler(ws: ServerConnection) -> None:
        await hub.serve(ws, policy=ConflateByKey() | Adaptive())

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        client = Client(uri)
        app = App(client)
        try:
            await client.wait_connected()
            (subscriber,) = await until(lambda: list(hub.subscribers), GUARD)
            await until(lambda: subscriber.stats().unacked is not None, GUARD)
            for index in range(200):  # 1 kB each, each its own key: nothing conflates
                hub.publish(f"{index:04d}" + "x" * 996, key=str(index), topic="p")
            # Adaptive batches them: one Received per frame, its messages joined by lines.
            indices: list[str] = []
            while len(indices) < 200:
                ((_, event),) = await app.received(1)
                assert isinstance(event, Received)
                assert isinstance(event.data, str)
                indices += [line[:4] for line in event.data.split("\n")]
            assert indices == [f"{index:04d}" for index in range(200)]
            await until(lambda: subscriber.stats().unacked == 0, GUARD)
            assert client.stats().acks >= 2
        finally:
            await client.close()
            async with asyncio.timeout(GUARD):
                await app.task
            await hub.aclose(timeout=1.0)
