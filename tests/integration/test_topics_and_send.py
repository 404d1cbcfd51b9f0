"""Topics, the subscribe() form and what a client sends: a subscriber's own lane."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from wsfanout import Hub, Subscriber, SubscriberClosedError, SubscriberStats
from wsfanout.lowlevel import DEFAULT_MAX_BYTES
from wsfanout.policies import DropNewest, DropOldest

from .wsnet import Body, Client, Net, Route, relay_tasks

GUARD = 20.0
ENDS = itertools.count()
SIZE = 512


async def round_trip(
    net: Net, clients: dict[str, Client], messages: list[tuple[str, str | None]]
) -> dict[str, list[str]]:
    """Publish ``(text, topic)`` pairs then an untopiced end marker; return what each got."""
    before = {name: len(client.messages) for name, client in clients.items()}
    end = f"end {next(ENDS)}"
    for text, topic in messages:
        net.hub.publish(text, topic=topic)
    net.hub.publish(end)
    for client in clients.values():
        await client.latest(lambda m: m == end, end)
    return {
        name: [m for m in client.texts()[before[name] :] if m != end]
        for name, client in clients.items()
    }


async def test_a_topic_reaches_only_its_subscribers_and_wildcard_subscribers(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        clients = {
            "prices": await net.connect("prices", topics={"prices"}),
            "news": await net.connect("news", topics={"news"}),
            "both": await net.connect("both", topics={"prices", "news"}),
            "nothing": await net.connect("nothing", topics=set()),
            "all": await net.connect("all", topics=None),
        }
        assert net.hub.publish("p0", topic="prices") == 3
        assert net.hub.publish("nobody listens", topic="weather") == 1
        got = await round_trip(
            net, clients, [("p1", "prices"), ("n1", "news"), ("w1", "weather"), ("x1", None)]
        )
        assert got == {
            "prices": ["p0", "p1", "x1"],
            "news": ["n1", "x1"],
            "both": ["p0", "p1", "n1", "x1"],
            "nothing": ["x1"],
            "all": ["p0", "nobody listens", "p1", "n1", "w1", "x1"],
        }


async def test_topics_change_while_the_subscriber_runs(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        clients = {
            "a": await net.connect("a", topics={"prices"}),
            "b": await net.connect("b", topics={"news"}),
            "c": await net.connect("c", topics={"prices", "news"}),
            "d": await net.connect("d", topics=None),
        }
        round_ = [("p", "prices"), ("n", "news"), ("w", "weather"), ("x", None)]
        got = await round_trip(net, clients, round_)
        assert got == {
            "a": ["p", "x"],
            "b": ["n", "x"],
            "c": ["p", "n", "x"],
            "d": ["p", "n", "w", "x"],
        }

        clients["a"].sub.subscribe("news", "weather")
        clients["b"].sub.set_topics({"prices"})
        clients["c"].sub.unsubscribe("prices", "never subscribed")
        clients["d"].sub.set_topics({"weather"})
        assert clients["a"].sub.topics == frozenset({"prices", "news", "weather"})
        assert clients["d"].sub.topics == frozenset({"weather"})
        got = await round_trip(net, clients, round_)
        assert got == {
            "a": ["p", "n", "w", "x"],
            "b": ["p", "x"],
            "c": ["n", "x"],
            "d": ["w", "x"],
        }

        clients["c"].sub.unsubscribe("news")
        clients["d"].sub.set_topics(None)
        clients["d"].sub.subscribe("ignored: already receives everything")
        assert clients["d"].sub.topics is None
        got = await round_trip(net, clients, round_)
        assert got == {
            "a": ["p", "n", "w", "x"],
            "b": ["p", "x"],
            "c": ["x"],
            "d": ["p", "n", "w", "x"],
        }


async def test_a_subscriber_that_left_keeps_no_topic_entry(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        stayer = await net.connect("stayer", topics={"prices"})
        leaver = await net.connect("leaver", topics={"prices", "news"})
        assert net.hub.publish("p", topic="prices") == 2
        await leaver.ws.close()
        await leaver.route.finished()
        assert net.hub.publish("p", topic="prices") == 1
        assert net.hub.publish("n", topic="news") == 0
        await stayer.received(2)


def subscribe_body(policy: DropNewest) -> Body:
    """A handler in the context-manager form: it reads the client itself."""

    async def body(hub: Hub, route: Route, ws: ServerConnection) -> SubscriberStats:
        async with hub.subscribe(ws, policy=policy) as sub:
            route.joined.set_result(sub)
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
        return sub.stats()

    return body


async def test_send_is_ordered_with_publishes_and_never_dropped_when_the_queue_is_full(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        policy = DropNewest(max_messages=8)
        reader = await net.connect("reader", policy=policy, body=subscribe_body(policy))
        stalled = await net.connect(
            "stalled", policy=policy, stalled=True, body=subscribe_body(policy)
        )
        timeline: list[str] = []
        for i in range(400):
            if i % 100 == 50:
                # The stalled client's queue is full of published messages by now.
                for client in (reader, stalled):
                    client.sub.send(f"private {client.name} {i}".ljust(SIZE))
                timeline.append(f"private * {i}")
            net.hub.publish(f"public {i}".ljust(SIZE))
            timeline.append(f"public {i}")
            if i % 8 == 7:
                # The reader keeps up as it goes: a burst beyond its bound of 8 messages,
                # the write limit and the kernel's low-water mark would be dropped.
                await reader.received(len(timeline))
        assert stalled.sub.stats().queued_messages == 8
        stalled.read()
        for client in (reader, stalled):
            await client.drained()
            ours = [m.rstrip().replace(f" {client.name} ", " * ") for m in client.texts()]
            assert [m for m in timeline if m in set(ours)] == ours, (
                "order differs from the timeline"
            )
            privates = [m for m in ours if m.startswith("private")]
            assert privates == [m for m in timeline if m.startswith("private")]
        assert [m.rstrip() for m in reader.texts()] == [
            m.replace(" * ", " reader ") for m in timeline
        ]
        stats = stalled.sub.stats()
        assert stats.dropped_newest > 0
        assert stats.dropped_oldest > 0, "no private message arrived in a full queue"
        assert stats.peak_messages == 8
        assert stats.offered == 404
        assert stats.offered == stats.sent + stats.dropped


async def test_sending_more_than_the_queue_can_hold_closes_the_subscriber_instead(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        policy = DropNewest(max_messages=8)
        stalled = await net.connect(
            "stalled", policy=policy, stalled=True, body=subscribe_body(policy)
        )
        sub = stalled.sub
        sent = 0
        while sub.stats().queued_messages < 8 and sent < 1000:
            sub.send("private".ljust(SIZE))
            sent += 1
        assert sub.stats().queued_messages == 8, "the stalled client's queue never filled"
        sub.send("one too many".ljust(SIZE))
        assert sub.closed
        with pytest.raises(SubscriberClosedError, match=r" is closed$"):
            sub.send("after the close")
        stats = await stalled.route.finished()
        assert stats.close is not None
        assert (stats.close.code, stats.close.reason) == (1013, "queue full")
        assert stats.close.cause == (
            f"a {SIZE}-byte message did not fit: 8 messages, {8 * SIZE} bytes queued "
            f"(max_messages=8, max_bytes={DEFAULT_MAX_BYTES})"
        )
        assert stats.disconnected == 9
        assert stats.offered == sent + 1 == stats.sent + stats.dropped
        assert net.hub.stats().closed_by_policy == 1
        assert len(net.hub) == 0


async def test_serve_hands_what_the_client_sends_to_on_message(net: Net) -> None:
    async def on_message(sub: Subscriber, data: Data) -> None:
        # A tiny protocol: "+topic" subscribes, "-topic" unsubscribes, and is acknowledged.
        assert isinstance(data, str)
        if data.startswith("+"):
            sub.subscribe(data[1:])
        elif data.startswith("-"):
            sub.unsubscribe(data[1:])
        sub.send(f"ok {data}")

    async with asyncio.timeout(GUARD):
        client = await net.connect("chat", topics=set(), on_message=on_message)
        assert net.hub.publish("p0", topic="prices") == 0
        await client.ws.send("+prices")
        await client.latest(lambda m: m == "ok +prices", "the acknowledgement")
        assert net.hub.publish("p1", topic="prices") == 1
        await client.ws.send("-prices")
        await client.latest(lambda m: m == "ok -prices", "the acknowledgement")
        assert net.hub.publish("p2", topic="prices") == 0
        net.hub.publish("everyone")
        await client.latest(lambda m: m == "everyone", "the untopiced message")
        assert client.messages == ["ok +prices", "p1", "ok -prices", "everyone"]


async def test_serve_keeps_reading_so_pings_are_answered_after_many_client_messages(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        client = await net.connect("talkative")
        # Unread, more than websockets' default max_queue (16) would pause the server's reads.
        for i in range(100):
            await client.ws.send(f"chatter {i}")
        pong = await client.ws.ping()
        latency = await pong
        assert latency >= 0
        net.hub.publish("still subscribed")
        await client.received(1)


async def test_leaving_the_subscribe_block_cancels_the_relay_and_forgets_the_subscriber(
    net: Net,
) -> None:
    leave = asyncio.Event()

    async def body(hub: Hub, route: Route, ws: ServerConnection) -> SubscriberStats:
        async with hub.subscribe(ws, policy=DropOldest(max_messages=16)) as sub:
            route.joined.set_result(sub)
            await leave.wait()
        return sub.stats()

    async with asyncio.timeout(GUARD):
        stalled = await net.connect("stalled", stalled=True, body=body)
        # 16 queued messages of 4 KiB are more than the write buffer takes past its
        # high-water mark, so some are still queued when the block exits.
        for i in range(300):
            net.hub.publish(f"{i}".ljust(4096))
        assert stalled.sub.stats().queued_messages == 16
        # The kicked link is pumped once the publishes' iteration ends (timers.py): on
        # a full write buffer it hands over to a relay task. One yield, no timer.
        await asyncio.sleep(0)
        assert len(relay_tasks()) == 1
        leave.set()
        stats = await stalled.route.finished()
        assert relay_tasks() == []
        assert len(net.hub) == 0
        assert stats.disconnected > 0
        assert stats.queued_messages == 0
        assert stats.offered == 300 == stats.sent + stats.dropped
        with pytest.raises(SubscriberClosedError):
            stalled.sub.send("after leaving")
        assert net.hub.publish("nobody") == 0
