"""Gap notices, lossless messages and policy changes with a real websockets server and
real clients on 127.0.0.1, with default socket options.

A client that must fall behind either stops reading (websockets then stops reading its
socket after ``max_queue`` messages, and the kernel's buffers fill before the server's
queue does), or sits behind a ``Throttle`` that makes messages queue on the server
while it reads. Every wait is on an event or a count, with ``GUARD`` against a hang.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data, Subprotocol

from harness.v1_reader import Reader
from test_docs_examples import run_page
from wsfanout import SUBPROTOCOL, Hub, Policy, Subscriber, select_subprotocol
from wsfanout._shell.hub import OnMessage
from wsfanout.files import load_policy
from wsfanout.policies import (
    Disconnect,
    DropOldest,
    GapNotice,
    Notify,
    SkipToLatest,
    Throttle,
)

GUARD = 10.0
V1 = Subprotocol(SUBPROTOCOL)
FILLER = base64.b64encode(random.Random(11).randbytes(49152)).decode()
"""A lossy message of 64 KiB that does not compress (clients negotiate permessage-deflate),
so that the kernel's buffers fill in a few hundred."""


@attrs.define
class Route:
    policy: Policy
    on_message: OnMessage | None = None
    joined: asyncio.Future[Subscriber] = attrs.field(
        factory=lambda: asyncio.get_running_loop().create_future()
    )


class Site:
    """A hub behind a websockets server; each path is served as its route says."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.routes: dict[str, Route] = {}
        self.uri = ""

    def route(self, path: str, policy: Policy, on_message: OnMessage | None = None) -> Route:
        self.routes[path] = Route(policy, on_message)
        return self.routes[path]

    async def handler(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        route = self.routes[websocket.request.path]
        async with self.hub.subscribe(websocket, policy=route.policy) as subscriber:
            route.joined.set_result(subscriber)
            with contextlib.suppress(ConnectionClosed):
                async for message in websocket:
                    if route.on_message is not None:
                        await route.on_message(subscriber, message)


@contextlib.asynccontextmanager
async def site_of(hub: Hub) -> AsyncIterator[Site]:
    site = Site(hub)
    async with serve(site.handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as server:
        site.uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield site
        finally:
            await hub.aclose(timeout=1.0)


async def read_until(
    websocket: ClientConnection, done: Callable[[list[Data]], bool]
) -> tuple[list[Data], int | None, str | None]:
    """Read until ``done(received)`` or the connection closes; the close code and reason."""
    received: list[Data] = []
    with contextlib.suppress(ConnectionClosed):
        while not done(received):
            received.append(await websocket.recv())
    return received, websocket.close_code, websocket.close_reason


def payload(frame: Data) -> str:
    """The payload of a ``wsfanout.v1`` Text frame, after its header."""
    assert isinstance(frame, str), frame
    return frame.split("\n", 1)[1]


async def stall(site: Site, subscriber: Subscriber) -> int:
    """Publish filler until the subscriber's queue holds some: the client has stopped
    reading and every buffer between is full. Returns how many were published."""
    for count in range(1, 2000):
        site.hub.publish(FILLER)
        if subscriber.stats().queued_messages:
            return count
        await asyncio.sleep(0)  # let the loop write to the socket: a yield, not a wait
    raise AssertionError("the subscriber never fell behind")


# -- gap notices ------------------------------------------------------------------------


async def test_a_v1_client_reads_each_loss_announced_before_the_next_message() -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        route = site.route("/feed", DropOldest(max_messages=2) | Throttle(rate=20.0) | Notify())
        async with connect(site.uri + "/feed", subprotocols=[V1]) as websocket:
            subscriber = await route.joined
            for n in range(10):
                hub.publish(json.dumps({"n": n}), topic="prices")
            tracker = Reader()
            frames, _, _ = await read_until(websocket, lambda got: len(got) == 4)
            kinds = [tracker.feed(frame) for frame in frames]
            stats = subscriber.stats()
    assert kinds == ["data", "gap", "data", "data"]
    assert [gap.ranges for gap in tracker.gaps] == [((2, 8),)]
    assert all(gap.source == "notice" for gap in tracker.gaps)
    assert tracker.lost == stats.dropped_oldest == 7
    position = tracker.position("prices")
    assert position is not None
    assert position.offset == 10


async def test_a_raw_client_gets_notices_in_the_applications_own_format() -> None:
    def as_event(notice: GapNotice) -> str:
        return json.dumps({"event": "missed", "count": notice.count})

    hub = Hub()
    policy = SkipToLatest() | Throttle(rate=20.0) | Notify(format=as_event)
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        route = site.route("/raw", policy)
        async with connect(site.uri + "/raw") as websocket:
            await route.joined
            for n in range(6):
                hub.publish(f"state {n}")
            frames, _, _ = await read_until(websocket, lambda got: len(got) == 3)
    assert frames == ["state 0", '{"event": "missed", "count": 4}', "state 5"]


async def test_a_client_that_stalled_under_the_event_feed_preset_gets_one_notice_for_it() -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        route = site.route("/events", load_policy("event-feed"))
        async with connect(site.uri + "/events", subprotocols=[V1]) as websocket:
            subscriber = await route.joined
            await stall(site, subscriber)
            for n in range(3000):  # far more than the preset's 1000 or 1 MiB
                hub.publish(f"event {n}")
            hub.publish("end")
            tracker = Reader()
            frames, _, _ = await read_until(
                websocket, lambda got: bool(got) and str(got[-1]).endswith("\nend")
            )
            for frame in frames:
                tracker.feed(frame)
            stats = subscriber.stats()
    assert stats.dropped_oldest > 0
    assert len(tracker.gaps) == 1, tracker.gaps
    assert tracker.gaps[0].source == "notice"
    assert tracker.lost == stats.dropped_oldest


# -- lossless messages ------------------------------------------------------------------


async def test_lossless_messages_reach_a_client_that_stalled_and_lossy_ones_make_room() -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        route = site.route("/mixed", DropOldest(max_messages=8))
        async with connect(site.uri + "/mixed") as websocket:
            subscriber = await route.joined
            await stall(site, subscriber)
            for n in range(20):
                hub.publish(f"lossy {n}")
                if n % 4 == 0:
                    hub.publish(f"lossless {n // 4}", lossless=True)
            hub.publish("end", lossless=True)
            received, _, _ = await read_until(websocket, lambda got: bool(got) and got[-1] == "end")
            stats = subscriber.stats()
    lossless = [m for m in received if isinstance(m, str) and m.startswith("lossless")]
    assert lossless == [f"lossless {n}" for n in range(5)]
    assert stats.dropped_oldest > 0
    assert stats.close is None


async def test_a_client_that_cannot_hold_its_lossless_messages_is_closed_not_left_short() -> None:
    # The close frame waits behind what the client has not read: a long close_timeout
    # (a guard) lets it read everything and see the code.
    hub = Hub(close_timeout=GUARD)
    async with asyncio.timeout(2 * GUARD), site_of(hub) as site:
        route = site.route("/strict", DropOldest(max_messages=4))
        async with connect(site.uri + "/strict") as websocket:
            subscriber = await route.joined
            await stall(site, subscriber)
            published = 0
            while not subscriber.closed and published < 1000:
                hub.publish(f"lossless {published}", lossless=True)
                published += 1
            assert subscriber.closed, "lossless messages were dropped to make room"
            received, code, reason = await read_until(websocket, lambda got: False)
            stats = subscriber.stats()
    lossless = [m for m in received if isinstance(m, str) and m.startswith("lossless")]
    # What arrived is every lossless message up to some point, in order; then the close.
    assert lossless == [f"lossless {n}" for n in range(len(lossless))]
    assert len(lossless) < published
    assert (code, reason) == (1013, "queue full")
    assert stats.close is not None
    assert "did not fit: 4 messages" in stats.close.cause


# -- changing policies ----------------------------------------------------------------------


async def test_a_client_asks_for_a_downgrade_with_the_documented_recipe() -> None:
    recipe: dict[str, Any] = run_page("how-to/change-policy.md")
    hub = Hub()
    full = DropOldest(max_messages=256) | Disconnect(max_lag=30.0)
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        route = site.route("/feed", full, on_message=recipe["on_message"])
        async with connect(site.uri + "/feed") as websocket:
            subscriber = await route.joined
            hub.publish("before")
            assert await websocket.recv() == "before"
            await websocket.send(json.dumps({"type": "policy", "preset": "chat"}))  # refused
            await websocket.send(json.dumps({"type": "policy", "preset": "dashboard"}))
            answer = await websocket.recv()
            assert json.loads(answer) == {"type": "policy", "preset": "dashboard"}
            assert subscriber.policy == load_policy("dashboard")
            hub.publish("after")
            assert await websocket.recv() == "after"
            stats = subscriber.stats()
    assert (stats.offered, stats.sent, stats.dropped) == (3, 3, 0)


async def test_the_hub_downgrades_the_subscribers_of_a_topic_while_messages_flow() -> None:
    hub = Hub()
    full = Throttle(rate=10.0) | DropOldest(max_messages=100)
    light = SkipToLatest() | Throttle(rate=10.0) | Notify()
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        prices = site.route("/prices", full)
        news = site.route("/news", full)
        async with (
            connect(site.uri + "/prices", subprotocols=[V1]) as on_prices,
            connect(site.uri + "/news", subprotocols=[V1]) as on_news,
        ):
            prices_sub, news_sub = await prices.joined, await news.joined
            prices_sub.set_topics({"prices"})
            news_sub.set_topics({"news"})
            for n in range(1, 21):
                hub.publish(str(n), topic="prices")
                hub.publish(str(n), topic="news")
            # Both queued 19 behind their throttle; only the prices subscriber changes.
            assert hub.set_policy(light, current=full, topic="prices") == 1
            assert prices_sub.policy == light
            assert news_sub.policy == full
            tracker = Reader()
            frames, _, _ = await read_until(on_prices, lambda got: len(got) == 3)
            for frame in frames:
                tracker.feed(frame)
            news_frames, _, _ = await read_until(on_news, lambda got: len(got) == 2)
    assert [payload(frame) for frame in (frames[0], frames[2])] == ["1", "20"]
    assert [gap.ranges for gap in tracker.gaps] == [((2, 19),)]
    assert [payload(frame) for frame in news_frames] == ["1", "2"]
