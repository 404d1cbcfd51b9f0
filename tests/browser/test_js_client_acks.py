"""wsfanout.js acknowledges (docs/protocol.md, "Acknowledgements"): in Chromium, against
a scripted server that sends an ``ack-request``, data and control frames, and reads the
``ack`` frames back (``harness.ack_peer``).

The server measures on its own clock, the page on the browser's: the pacing bounds of
``AckPeer.assert_paced`` hold in real time whatever the two clocks read, and the
tolerance is the page's: Chromium coarsens ``performance.now()`` to 0.1 ms (with
jitter) on a page that is not cross-origin isolated, so two readings of an interval
may each be off by that much; 2 ms covers them with room to spare.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from websockets.asyncio.server import ServerConnection

from harness.ack_peer import AckPeer, request
from harness.polling import until
from wsfanout import Hub
from wsfanout.policies import Adaptive, ConflateByKey

from .chromium import GUARD, Page
from .jsclient import (
    Site,
    control,
    data,
    events,
    hub_site,
    open_page,
    script_site,
    start,
    stats,
)
from .jsclient import wait_events as wait
from .test_js_client_protocol import CONTROL_EXAMPLES

TOLERANCE = 0.002
"""Seconds: the page's clock granularity, twice over, with room (see above)."""

FAST = {"minDelay": 20, "maxDelay": 80}

T = TypeVar("T")


class Peers:
    """Each connection of the scripted site, as an :class:`AckPeer` reading its acks."""

    def __init__(self, site: Site) -> None:
        self.queue: asyncio.Queue[AckPeer] = asyncio.Queue()
        site.handler = self.accept

    async def accept(self, connection: ServerConnection) -> None:
        peer = AckPeer(connection)
        self.queue.put_nowait(peer)
        await peer.read()

    async def next(self) -> AckPeer:
        async with asyncio.timeout(GUARD):
            return await self.queue.get()


@contextlib.asynccontextmanager
async def acking(page: Page, **options: Any) -> AsyncIterator[tuple[Peers, AckPeer]]:
    """The page's client started with ``options`` on a scripted site, and the server's
    side of its first connection; the block must end within :data:`GUARD`."""
    async with asyncio.timeout(GUARD), script_site() as site:
        peers = Peers(site)
        await open_page(page, site)
        await start(page, **options)
        yield peers, await peers.next()


async def test_the_request_example_is_answered_as_the_ack_example_is_written(
    page: Page,
) -> None:
    async with acking(page) as (_, peer):
        await peer.send(CONTROL_EXAMPLES["ack-request"])
        assert (await peer.ack())[1] == 1
        assert peer.texts == [CONTROL_EXAMPLES["ack"].replace("1234", "1")]


async def test_acks_count_every_frame_dispatched_control_frames_and_the_request_included(
    page: Page,
) -> None:
    async with acking(page) as (_, peer):
        await peer.send(data(1, "E", "p", "m1"), control(type="heartbeat", offsets={"p": ["E", 1]}))
        await wait(page, "heartbeat", 1)
        await peer.send(request(0.05))
        first = await peer.ack()
        assert first[1] == 3  # at once: no ack was sent before
        await peer.send(
            control(type="gap", t="p", e="E", ranges=[[2, 3]], count=2),
            data(4, "E", "p", "m4"),
            control(type="level", level=1, name="drop-oldest", **{"from": 0}),
            '{"b":[[5,"E","p"],[6,"E","p"]]}\nm5m6',  # a batch is one frame
            control(type="from-the-future"),
            data(7, "E", "p", "m7"),
        )
        acks = [first, *await peer.ack_of(9)]
        assert acks[-1][1] == 9
        peer.assert_paced(acks, 0.05, TOLERANCE)
        await wait(page, "message", 4)
        counted = await stats(page)
        assert (counted["acks"], counted["errors"]) == (len(acks), 0)
        assert peer.other == []


async def test_the_first_ack_goes_at_once_and_one_owed_waits_out_the_interval(
    page: Page,
) -> None:
    async with acking(page) as (_, peer):
        await peer.send(request(60))
        _, n = await peer.ack()  # well before 60 s: at once
        assert n == 1
        await peer.send(data(1, "E", "p", "m1"), data(2, "E", "p", "m2"))
        await wait(page, "message", 2)
        # Owed, due 60 s after the first. A shorter interval brings the due time forward.
        await peer.send(request(0.2))
        later, n = await peer.ack()
        assert n == 4
        assert later - peer.sent_at[1] >= 0.2 - TOLERANCE
        assert peer.acks.empty()


async def test_the_owed_ack_is_sent_by_a_timer_while_no_frame_comes(page: Page) -> None:
    interval = 0.5
    async with acking(page) as (_, peer):
        await peer.send(request(interval))
        first, _ = await peer.ack()
        await peer.send(data(1, "E", "p", "m1"), data(2, "E", "p", "m2"))
        await wait(page, "message", 2)
        # Both were dispatched before the server learnt so, within the interval of the
        # first ack (sent after the request was): the ack of m2 is owed, not due at once.
        took = asyncio.get_running_loop().time()
        assert took < peer.sent_at[1] + interval, "the machine is too slow for this test"
        # The server sends nothing more until it hears.
        arrived, n = await peer.ack()
        assert n == 3
        assert arrived - peer.sent_at[1] >= interval - TOLERANCE
        assert arrived - first < interval + 1.0  # the timer sent it, not a later event
        assert (await stats(page))["acks"] == 2


async def test_a_null_interval_stops_acks(page: Page) -> None:
    interval = 0.05
    async with acking(page) as (_, peer):
        await peer.send(request(interval))
        first, n = await peer.ack()
        assert n == 1
        await peer.send(request(None), data(1, "E", "p", "m1"))
        await wait(page, "message", 1)
        # Let the interval pass, ten times over: a client that went on acknowledging
        # would have sent the ack it owed (frames 2 and 3) by now, its timer given
        # nine intervals to run late on a loaded machine.
        await asyncio.sleep(first + 10 * interval - asyncio.get_running_loop().time())
        await page.settle()
        await peer.send(request(interval))
        _, n = await peer.ack()
        assert n == 4  # at once, and the first since the null: nothing was sent between


MALFORMED = [
    request("0.05"),
    request(0),
    request(-1),
    request(True),
    request([0.05]),
    control(type="ack-request"),
]
"""Requests no server sends: each is an error event, and changes nothing."""


async def test_malformed_requests_are_errors_and_change_nothing(page: Page) -> None:
    async with acking(page) as (_, peer):
        await peer.send(*MALFORMED, data(1, "E", "p", "m1"))
        await wait(page, "message", 1)
        await peer.send(request(0.05))
        _, n = await peer.ack()
        total = len(MALFORMED) + 2
        assert n == total  # the first ack: the malformed counted as frames taken
        await peer.send(*MALFORMED, data(2, "E", "p", "m2"))
        assert (await peer.ack_of(2 * total - 1))[-1][1] == 2 * total - 1
        errors = await events(page, "error")
        assert [error["reason"] for error in errors] == ["malformed ack-request"] * (
            2 * len(MALFORMED)
        )
        assert errors[0]["data"] == {"type": "ack-request", "interval": "0.05"}
        assert await events(page, "control") == []


async def test_a_reconnection_counts_from_its_first_frame_again(page: Page) -> None:
    async with acking(page, **FAST) as (peers, first):
        await first.send(request(0.05), data(1, "E", "p", "m1"), data(2, "E", "p", "m2"))
        assert (await first.ack_of(3))[-1][1] == 3
        await first.ws.close(1013, "too slow")
        second = await peers.next()
        # A new connection: no ack until this server asks, and the count starts over.
        await second.send(data(3, "E", "p", "m3"), request(0.05))
        assert (await second.ack())[1] == 2
        await second.send(data(4, "E", "p", "m4"))
        assert (await second.ack())[1] == 3
        assert first.other == second.other == []


async def test_acks_leave_the_dead_connection_deadline_working(page: Page) -> None:
    async with acking(page, timeout=300, **FAST) as (peers, first):
        await first.send(request(0.1), data(1, "E", "p", "m1"))
        assert (await first.ack_of(2))[-1][1] == 2
        # Then silence, though the connection is open: the client gives it up.
        second = await peers.next()
        await first.ws.wait_closed()
        assert (first.ws.close_code, first.ws.close_reason) == (4000, "heartbeat timeout")
        await second.send(data(2, "E", "p", "m2"))
        await wait(page, "message", 2)
        await page.settle()
        assert second.acks.empty()  # the new connection was not asked


async def test_against_a_hub_that_paces_to_acks_the_page_gets_it_all_and_owes_nothing(
    page: Page,
) -> None:
    # Adaptive holds what is queued while more than a window is untaken: a page that did
    # not send the ack it owes while nothing comes would wait for ever.
    hub = Hub(policy=ConflateByKey() | Adaptive())
    async with asyncio.timeout(GUARD), hub_site(hub) as site:
        await open_page(page, site)
        await start(page)
        await wait(page, "open", 1)
        (subscriber,) = await until(lambda: list(hub.subscribers), GUARD)
        await until(lambda: subscriber.stats().unacked is not None, GUARD)
        for index in range(200):  # 1 kB each, each its own key: nothing conflates
            hub.publish(f"{index:04d}" + "x" * 996, key=str(index), topic="p")
        # Batched: one message event per frame, the messages joined by lines.
        await page.wait_for(
            "of('message').flatMap((m) => m.detail.data.split('\\n')).length >= 200"
        )
        indices = await page.evaluate(
            "of('message').flatMap((m) => m.detail.data.split('\\n').map((l) => l.slice(0, 4)))"
        )
        assert indices == [f"{index:04d}" for index in range(200)]
        await until(lambda: subscriber.stats().unacked == 0, GUARD)
        assert (await stats(page))["acks"] >= 2
