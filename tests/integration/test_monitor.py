"""``hub.monitor``: counters per policy name, how subscribers ended, and the timings,
on a real server with real clients (default socket options).

A client that stops reading here is a websockets client with ``read=False`` and no
compression: the kernel takes a few megabytes for it before its write buffer grows,
so the tests publish 64 KiB messages until its policy acts, counting, never sleeping.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.server import ServerConnection

from wsfanout import ConfigError, Hub, Policy, SubscriberStats
from wsfanout._core.stats import SUMMED
from wsfanout.policies import Above, Disconnect, DropOldest, Escalate, Level

from .wsnet import Client, Net, Route, served

GUARD = 15.0
BIG = "x" * 16384
"""A message big enough that a client which stops reading shows within ~100 of them, and
smaller than the write limit, so that a client that reads keeps up one at a time."""


async def not_reading(net: Net, name: str, policy: Policy, policy_name: str) -> Client:
    """A client that stops reading at once, uncompressed. Its 4 KiB receive buffer
    stands in for a slow network: a websockets client with default options that does
    not read keeps taking megabytes into its own kernel and library, which the hub's
    low-water mark no longer hides (the server keeps default options)."""
    return await net.connect(
        name, policy=policy, policy_name=policy_name, stalled=True, compression=None
    )


async def behind(net: Net, client: Client, until_dropped: int = 1) -> int:
    """Publish big messages until ``client``'s policy has dropped some; how many."""
    published = 0
    while client.sub.stats().dropped < until_dropped:
        assert published < 20_000, "the client never fell behind"
        net.hub.publish(BIG)
        published += 1
        # Let the other clients' reads run after each: with the hub's low-water mark the
        # kernel no longer absorbs a burst for a client that reads.
        await asyncio.sleep(0)
    return published


async def test_each_policy_name_has_its_own_counters_and_they_add_up_to_the_hub_s() -> None:
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5)) as net:
        chat = [await net.connect("chat", policy_name="chat") for _ in range(2)]
        plain = await net.connect("plain")
        custom = await net.connect("custom", policy=DropOldest(max_messages=64))
        for n in range(10):
            net.hub.publish(f"m{n}")
        for client in (*chat, plain, custom):
            await client.received(10)
        assert plain.sub.policy_name == "default"
        assert custom.sub.policy_name == "custom"
        assert chat[0].sub.policy_name == "chat"
        policies = net.hub.monitor.policies()
        assert list(policies) == ["chat", "custom", "default"]
        hub_stats = net.hub.stats()
        assert {(p.notsent_lowat, p.notsent_lowat_supported) for p in policies.values()} == {
            (hub_stats.notsent_lowat, hub_stats.notsent_lowat_supported)
        }
        assert [(p.subscribers, p.opened, p.sent, p.offered) for p in policies.values()] == [
            (2, 2, 20, 20),
            (1, 1, 10, 10),
            (1, 1, 10, 10),
        ]
        await chat[1].ws.close()
        await chat[1].route.finished()
        chat_now = net.hub.monitor.policies()["chat"]
        assert (chat_now.subscribers, chat_now.opened, chat_now.sent) == (1, 2, 20)
        assert chat_now.closes == (("client", 1),)
        total = net.hub.stats()
        for field in (*SUMMED, "dropped", "closed_by_policy"):
            summed = sum(getattr(p, field) for p in net.hub.monitor.policies().values())
            assert summed == getattr(total, field), field


async def test_a_subscriber_off_the_fast_path_shows_its_queue_write_buffer_and_drops() -> None:
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5)) as net:
        fast = await net.connect("fast", policy_name="chat", compression=None)
        stalled = await not_reading(net, "stalled", DropOldest(max_messages=8), "feed")
        published = await behind(net, stalled)
        feed = net.hub.monitor.policies()["feed"]
        stats = stalled.sub.stats()
        assert feed.behind == 1
        assert feed.subscribers == 1
        assert feed.queued_messages == stats.queued_messages == 8
        assert feed.queued_bytes == 8 * len(BIG)
        assert feed.dropped_oldest == stats.dropped_oldest >= 1
        assert feed.write_buffer == stalled.sub.write_buffer > 0
        assert feed.max_lag == pytest.approx(stats.lag, abs=0.5)
        chat = net.hub.monitor.policies()["chat"]
        assert (chat.behind, chat.dropped) == (0, 0)
        total = net.hub.stats()
        for field in SUMMED:
            summed = sum(getattr(p, field) for p in net.hub.monitor.policies().values())
            assert summed == getattr(total, field), field
        await fast.received(published)


async def close_in_body(hub: Hub, route: Route, ws: ServerConnection) -> SubscriberStats:
    """A handler that ends the subscription while the connection stays open."""
    async with hub.subscribe(ws, policy_name="app") as subscriber:
        route.joined.set_result(subscriber)
        await ws.recv()  # the client says when
    return subscriber.stats()


async def test_how_each_subscriber_ended_is_counted_and_remembered() -> None:
    hub = Hub(close_timeout=0.5)
    async with asyncio.timeout(GUARD), served(hub) as net:
        started = time.time()
        leaving = await net.connect("leaving", policy_name="chat")
        await leaving.ws.close(1000, "bye now")
        await leaving.route.finished()

        cut = await not_reading(net, "cut", Disconnect(max_messages=4), "strict")
        while not cut.sub.closed:
            hub.publish(BIG)
        await cut.route.finished()

        vanished = await net.connect("vanished", policy_name="chat")
        vanished.ws.transport.abort()
        await vanished.route.finished()

        app = await net.connect("app", body=close_in_body)
        await app.ws.send("done")
        await app.route.finished()

        staying = await net.connect("staying", policy_name="chat")
        await hub.aclose()
        await staying.route.finished()

        closed = hub.monitor.closed
        assert [(c.path.split("-")[0], c.policy_name, c.ended, c.code) for c in closed] == [
            ("/leaving", "chat", "client", 1000),
            ("/cut", "strict", "1013", 1013),
            ("/vanished", "chat", "lost", None),
            ("/app", "app", "app", None),
            ("/staying", "chat", "1001", 1001),
        ]
        assert closed[0].cause == "bye now"
        assert closed[1].stats.close is not None
        assert closed[1].stats.disconnected > 0
        assert (
            closed[1].cause == closed[1].stats.close.cause == "5 messages queued > max_messages=4"
        )
        assert closed[2].cause == "connection lost without a closing handshake"
        assert closed[3].cause == "the application ended the subscription"
        assert closed[4].cause == "hub closed"
        for record, client in zip(closed, (leaving, cut, vanished, app, staying), strict=True):
            assert record.id == str(client.route.server_ws.id)
            assert record.remote == "{}:{}".format(*client.ws.local_address[:2])
            assert started <= record.closed_at <= time.time()
        closes = {name: dict(p.closes) for name, p in hub.monitor.policies().items()}
        assert closes == {
            "app": {"app": 1},
            "chat": {"1001": 1, "client": 1, "lost": 1},
            "strict": {"1013": 1},
        }
        assert hub.monitor.policies()["strict"].closed_by_policy == 1


async def test_the_ring_keeps_the_latest_closed_subscribers_and_counts_them_all() -> None:
    for history in (2, 0):
        hub = Hub(close_timeout=0.5, closed_history=history)
        async with asyncio.timeout(GUARD), served(hub) as net:
            for n in range(3):
                client = await net.connect(f"c{n}")
                await client.ws.close()
                await client.route.finished()
            assert [c.path.split("-")[0] for c in hub.monitor.closed] == ["/c1", "/c2"][
                2 - history :
            ]
            assert hub.monitor.policies()["default"].closes == (("client", 3),)


async def test_messages_of_the_fast_path_waited_zero_and_queued_ones_are_timed() -> None:
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5, timings=True)) as net:
        fast = await net.connect("fast", policy_name="chat", compression=None)
        for n in range(20):
            net.hub.publish(f"m{n}")
        await fast.received(20)
        timings = net.hub.monitor.timings()
        assert timings is not None
        waits = timings.queue_wait["chat"]
        assert (waits.count, waits.counts[0], waits.sum) == (20, 20, 0.0)

        slow = await not_reading(net, "slow", DropOldest(max_messages=8), "feed")
        published = await behind(net, slow)
        slow.read()
        await slow.drained()
        await fast.received(20 + published)
        timings = net.hub.monitor.timings()
        assert timings is not None
        waits = timings.queue_wait["feed"]
        sent = slow.sub.stats().sent
        assert waits.count == sent
        assert waits.count > waits.counts[0], "the queued messages waited"
        assert waits.sum > 0
        assert timings.queue_wait["chat"].count == timings.queue_wait["chat"].counts[0]


async def test_a_burst_s_corked_frames_are_timed_from_publish_to_write() -> None:
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5, timings=True)) as net:
        client = await net.connect("reader", compression=None)
        net.hub.publish("alone")
        await client.received(1)
        timings = net.hub.monitor.timings()
        assert timings is not None
        assert timings.publish.count == timings.publish_to_write.count == 1
        for n in range(50):  # one loop iteration: every frame after the first is corked
            net.hub.publish(f"burst {n}")
        during = net.hub.monitor.timings()
        assert during is not None
        assert during.publish.count == 51
        assert during.publish_to_write.count == 2, "corked frames are timed when they leave"
        await client.received(51)
        after = net.hub.monitor.timings()
        assert after is not None
        assert after.publish_to_write.count == 51
        # Each corked frame left after its publish returned: its wait is the longer one.
        assert after.publish_to_write.sum >= after.publish.sum


async def test_a_hub_without_timings_reports_none_and_still_counts() -> None:
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5, timings=False)) as net:
        client = await net.connect("c")
        net.hub.publish("m")
        await client.received(1)
        assert net.hub.monitor.timings() is None
        assert net.hub.monitor.start_timings() is False
        assert net.hub.monitor.timings() is None
        assert net.hub.monitor.policies()["default"].sent == 1


async def test_timings_start_when_asked_and_count_only_what_came_after() -> None:
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5)) as net:
        client = await net.connect("c", compression=None)
        for n in range(5):
            net.hub.publish(f"before {n}")
        await client.received(5)
        assert net.hub.monitor.timings() is None  # nobody asked: nothing recorded
        assert net.hub.monitor.start_timings() is True
        assert net.hub.monitor.start_timings() is True  # idempotent
        for n in range(3):
            net.hub.publish(f"after {n}")
            await client.received(6 + n)
        timings = net.hub.monitor.timings()
        assert timings is not None
        assert timings.publish.count == 3
        assert timings.queue_wait["default"].count == 3  # not the 5 sent before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy_name": ""}, r"^policy_name='' must be a non-empty printable str$"),
        ({"policy_name": "a\nb"}, r"^policy_name='a\\nb' must be a non-empty printable str$"),
        ({"policy_name": 7}, r"^policy_name=7 must be a non-empty printable str$"),
        ({"policy_name": "x" * 257}, r"^policy_name='x{257}' must be at most 256 characters$"),
        ({"closed_history": -1}, r"^closed_history=-1 must be >= 0$"),
        ({"closed_history": "5"}, r"^closed_history='5' must be an int >= 0$"),
        ({"timings": "yes"}, r"^timings='yes' must be True, False or None$"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Hub(**kwargs)  # type: ignore[arg-type]
    assert refused.value.name == next(iter(kwargs))


async def test_a_bad_policy_name_in_serve_is_refused_before_subscribing() -> None:
    async def body(hub: Hub, route: Route, ws: ServerConnection) -> SubscriberStats:
        with pytest.raises(ConfigError, match=r"^policy_name='' must be"):
            await hub.serve(ws, policy_name="")
        route.joined.set_result(None)  # type: ignore[arg-type]
        return SubscriberStats()

    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5)) as net:
        client = await net.connect("bad", body=body, read=False)
        await client.route.finished()
        assert len(net.hub) == 0
        assert net.hub.monitor.policies() == {}


async def test_a_ladder_s_steps_are_counted_per_policy_name_present_and_past() -> None:
    ladder = Escalate(
        levels=[
            Level(DropOldest(max_messages=64)),
            Level(DropOldest(max_messages=2), up=Above("queued_messages", 4)),
        ]
    )
    async with asyncio.timeout(GUARD), served(Hub(close_timeout=0.5)) as net:
        stalled = await not_reading(net, "stalled", ladder, "feed")
        published = 0
        while stalled.sub.stats().level == 0:
            assert published < 20_000, "the client never fell behind"
            net.hub.publish(BIG)
            published += 1
            if published % 8 == 0:
                await asyncio.sleep(0)
        feed = net.hub.monitor.policies()["feed"]
        assert (feed.steps_up, feed.steps_down, feed.stepped_up) == (1, 0, 1)
        stalled.ws.transport.abort()  # it reads nothing: no closing handshake
        await stalled.route.finished()
        gone = net.hub.monitor.policies()["feed"]
        assert (gone.steps_up, gone.steps_down, gone.stepped_up) == (1, 0, 0)
